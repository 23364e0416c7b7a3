//! `ingest.v1.IngestEvents/Stream`: producers stream batches of events; every request is
//! answered by exactly one ack, in request order, once its events are durable. A reader
//! task puts each request's events on the pipeline channel (waiting when it is full, so
//! a fast producer is slowed by HTTP/2 flow control) and queues the request's ack
//! receiver; the response stream yields those acks in order. On shutdown the reader
//! stops taking requests, the acks already owed are still sent, then the stream ends.
use std::{pin::Pin, sync::Arc, time::Instant};

use futures::Stream;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::{Request, Response, Status, Streaming};
use tracing::debug;

use crate::{
    ack::{Ack, AckResult, GrpcAck, Incoming, Payload, RequestAck},
    grpc::auth::require_bearer,
    proto::ingest::v1::{ingest_events_server::IngestEvents, IngestAck, IngestRequest},
};

/// Requests a stream may have in flight (read, not yet acked) before reading pauses.
const IN_FLIGHT_REQUESTS: usize = 64;

/// The producer-facing service.
pub struct Ingest {
    pub tx: mpsc::Sender<Incoming>,
    pub streams: Arc<Semaphore>,
    pub max_streams: usize,
    pub max_events_per_request: usize,
    pub producer_token: Option<String>,
    pub stop: CancellationToken,
    pub tracker: TaskTracker,
}

type AckStream = Pin<Box<dyn Stream<Item = Result<IngestAck, Status>> + Send>>;

#[tonic::async_trait]
impl IngestEvents for Ingest {
    type StreamStream = AckStream;

    async fn stream(
        &self,
        req: Request<Streaming<IngestRequest>>,
    ) -> Result<Response<AckStream>, Status> {
        if let Some(token) = &self.producer_token {
            require_bearer(req.metadata(), token)?;
        }
        if self.stop.is_cancelled() {
            return Err(Status::unavailable("server is shutting down"));
        }
        let permit = self.streams.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "too many concurrent IngestEvents streams (GRPC_MAX_STREAMS={})",
                self.max_streams
            ))
        })?;
        let (ack_tx, ack_rx) = mpsc::channel(IN_FLIGHT_REQUESTS);
        let reader = Reader {
            inbound: req.into_inner(),
            tx: self.tx.clone(),
            acks: ack_tx,
            max_events: self.max_events_per_request,
            stop: self.stop.clone(),
            _permit: permit,
        };
        self.tracker.spawn(reader.run());
        Ok(Response::new(Box::pin(ack_stream(ack_rx))))
    }
}

/// A message over GRPC_MAX_MESSAGE_BYTES is RESOURCE_EXHAUSTED, as gRPC specifies
/// (tonic's decoder says OUT_OF_RANGE); other errors pass through.
fn inbound_error(status: Status) -> Status {
    if status.code() == tonic::Code::OutOfRange && status.message().contains("too large") {
        Status::resource_exhausted(format!("{} (GRPC_MAX_MESSAGE_BYTES)", status.message()))
    } else {
        status
    }
}

/// Yields each queued ack once it is ready, in queue order; ends after an error.
fn ack_stream(
    rx: mpsc::Receiver<oneshot::Receiver<AckResult>>,
) -> impl Stream<Item = Result<IngestAck, Status>> + Send {
    futures::stream::unfold((rx, false), |(mut rx, failed)| async move {
        if failed {
            return None;
        }
        let pending = rx.recv().await?;
        let result = pending
            .await
            .unwrap_or_else(|_| Err(Status::internal("ack lost")));
        let failed = result.is_err();
        Some((result, (rx, failed)))
    })
}

struct Reader {
    inbound: Streaming<IngestRequest>,
    tx: mpsc::Sender<Incoming>,
    acks: mpsc::Sender<oneshot::Receiver<AckResult>>,
    max_events: usize,
    stop: CancellationToken,
    _permit: OwnedSemaphorePermit,
}

impl Reader {
    async fn run(mut self) {
        loop {
            let msg = tokio::select! {
                biased;
                _ = self.stop.cancelled() => break,
                msg = self.inbound.message() => msg,
            };
            match msg {
                Ok(Some(request)) => {
                    if !self.submit(request).await {
                        break;
                    }
                }
                Ok(None) => break,
                Err(status) => {
                    debug!(%status, "producer stream ended with an error");
                    // Answer in order after the acks already owed, so the producer
                    // learns why its stream ended.
                    let (req, rx) = RequestAck::new(0, 1);
                    req.abort(inbound_error(status));
                    let _ = self.acks.send(rx).await;
                    break;
                }
            }
        }
    }

    /// Queues one request's ack and its events; false when the stream must end.
    async fn submit(&mut self, request: IngestRequest) -> bool {
        let IngestRequest { seq, events } = request;
        if events.len() > self.max_events {
            let (req, rx) = RequestAck::new(seq, 1);
            req.abort(Status::resource_exhausted(format!(
                "request {seq} has {} events; at most {} allowed (GRPC_MAX_EVENTS_PER_REQUEST)",
                events.len(),
                self.max_events
            )));
            let _ = self.acks.send(rx).await;
            return false;
        }
        let (req, rx) = RequestAck::new(seq, events.len());
        if self.acks.send(rx).await.is_err() {
            return false;
        }
        let received = Instant::now();
        for (index, event) in events.into_iter().enumerate() {
            let item = Incoming {
                payload: Payload::Decoded(event),
                ack: Ack::Grpc(GrpcAck {
                    request: req.clone(),
                    index: index as u32,
                }),
                received,
            };
            if self.tx.send(item).await.is_err() {
                req.abort(Status::unavailable(format!(
                    "server is shutting down; request {seq} was not fully taken, resend it"
                )));
                return false;
            }
        }
        true
    }
}

//! `ingest.v1.IngestEvents/Stream`: producers stream batches of events; every request is
//! answered by exactly one ack, in request order, once its events are durable. A reader
//! task puts each request's events on the pipeline channel (waiting when it is full, so
//! a fast producer is slowed by HTTP/2 flow control) and queues the request's ack
//! receiver; the response stream yields those acks in order.
//!
//! A stream ends, always after the acks already owed: OK when the producer half-closed
//! it; UNAVAILABLE when the server shuts down first (the status counts the requests
//! that arrived and were not read; the producer resends every request without an ack)
//! and when it has been idle — no request, nothing owed and no request waiting for
//! the byte budget — for `GRPC_STREAM_IDLE_TIMEOUT`.
//!
//! A request's bytes stay reserved in the byte budget (`grpc::budget`) until its ack is
//! resolved, and a request over GRPC_MAX_EVENTS_PER_REQUEST is refused by its count
//! before any of its events is sliced out.
use std::{
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use futures::{FutureExt, Stream};
use secrecy::SecretString;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::{Request, Response, Status, Streaming};
use tracing::debug;

use crate::{
    event::{Ack, GrpcAck, Incoming, LostAcks, RequestAck, RequestResult},
    grpc::{
        auth::AuthFailures,
        budget::{Budget, Held},
        shares::{Share, Shares},
        wire::ScannedRequest,
    },
    proto::{ingest::v1::IngestAck, raw_ingest_events::ingest_events_server::IngestEvents},
    telemetry,
};

/// Requests a stream may have in flight (read, not yet acked) before reading pauses.
const IN_FLIGHT_REQUESTS: usize = 64;

/// The producer-facing service.
pub struct Ingest {
    pub tx: mpsc::Sender<Incoming>,
    pub streams: Arc<Semaphore>,
    pub max_streams: usize,
    /// Each connection's share of `streams`.
    pub shares: Arc<Shares>,
    pub max_events_per_request: usize,
    pub budget: Budget,
    pub producer_token: Option<SecretString>,
    /// Where refused tokens are logged and counted.
    pub auth_failures: AuthFailures,
    pub idle_timeout: Duration,
    pub stop: CancellationToken,
    pub tracker: TaskTracker,
    /// Where a request's lost acks are counted.
    pub lost: LostAcks,
}

type AckStream = Pin<Box<dyn Stream<Item = Result<IngestAck, Status>> + Send>>;

/// What a stream owes its producer, in order.
enum Owed {
    /// The ack of one request, once its events are resolved, and the request's
    /// reservation in the byte budget, released with it.
    Ack(
        oneshot::Receiver<RequestResult>,
        Option<OwnedSemaphorePermit>,
    ),
    /// The status the stream ends with.
    End(Status),
}

#[tonic::async_trait]
impl IngestEvents for Ingest {
    type StreamStream = AckStream;

    async fn stream(
        &self,
        req: Request<Streaming<ScannedRequest>>,
    ) -> Result<Response<AckStream>, Status> {
        if let Some(token) = &self.producer_token {
            self.auth_failures.require_bearer(&req, token)?;
        }
        if self.stop.is_cancelled() {
            return Err(Status::unavailable("server is shutting down"));
        }
        let share = self.shares.take(req.remote_addr()).ok_or_else(|| {
            Status::resource_exhausted(format!(
                "this connection holds its share of IngestEvents streams \
                 (GRPC_MAX_STREAMS_PER_CONNECTION={})",
                self.shares.per_connection()
            ))
        })?;
        let permit = self.streams.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "too many concurrent IngestEvents streams (GRPC_MAX_STREAMS={})",
                self.max_streams
            ))
        })?;
        let (owed_tx, owed_rx) = mpsc::channel(IN_FLIGHT_REQUESTS);
        let unacked = Arc::new(AtomicUsize::new(0));
        let parent = telemetry::enabled().then(|| {
            let header = |k| req.metadata().get(k).and_then(|v| v.to_str().ok());
            telemetry::remote_parent(header("traceparent"), header("tracestate"))
        });
        let held = req.extensions().get::<Held>().cloned().unwrap_or_default();
        let reader = Reader {
            parent,
            held,
            budget: self.budget.clone(),
            inbound: req.into_inner(),
            tx: self.tx.clone(),
            owed: owed_tx,
            unacked: unacked.clone(),
            max_events: self.max_events_per_request,
            lost: self.lost.clone(),
            idle_timeout: self.idle_timeout,
            stop: self.stop.clone(),
            _slot: (permit, share),
        };
        self.tracker.spawn(reader.run());
        Ok(Response::new(Box::pin(ack_stream(owed_rx, unacked))))
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

/// Yields each owed ack once it is ready, in order; ends after an error status.
fn ack_stream(
    rx: mpsc::Receiver<Owed>,
    unacked: Arc<AtomicUsize>,
) -> impl Stream<Item = Result<IngestAck, Status>> + Send {
    futures::stream::unfold((rx, false), move |(mut rx, ended)| {
        let unacked = unacked.clone();
        async move {
            if ended {
                return None;
            }
            let result = match rx.recv().await? {
                Owed::Ack(pending, _reserved) => {
                    let result = match pending.await {
                        Ok(Ok(ack)) => Ok(ack),
                        Ok(Err(why)) => Err(Status::unavailable(why)),
                        Err(_) => Err(Status::internal("ack lost")),
                    };
                    unacked.fetch_sub(1, Ordering::SeqCst);
                    result
                }
                Owed::End(status) => Err(status),
            };
            let ended = result.is_err();
            Some((result, (rx, ended)))
        }
    })
}

struct Reader {
    /// The producer's trace context from the stream's metadata (while traces are on).
    parent: Option<opentelemetry::Context>,
    inbound: Streaming<ScannedRequest>,
    /// The byte-budget reservations of this stream's messages, taken one per request.
    held: Held,
    budget: Budget,
    tx: mpsc::Sender<Incoming>,
    owed: mpsc::Sender<Owed>,
    /// Requests read whose ack the producer has not been sent yet.
    unacked: Arc<AtomicUsize>,
    max_events: usize,
    lost: LostAcks,
    idle_timeout: Duration,
    stop: CancellationToken,
    /// The stream's GRPC_MAX_STREAMS slot and its place in its connection's share.
    _slot: (OwnedSemaphorePermit, Share),
}

impl Reader {
    async fn run(mut self) {
        let end = loop {
            let msg = tokio::select! {
                biased;
                _ = self.stop.cancelled() => break self.shutdown_status(),
                msg = self.inbound.message() => msg,
                _ = tokio::time::sleep(self.idle_timeout) => {
                    if self.unacked.load(Ordering::SeqCst) == 0 && !self.held.waiting() {
                        break Some(Status::unavailable(format!(
                            "stream idle for {} s without a request (GRPC_STREAM_IDLE_TIMEOUT); open a new one to send more",
                            self.idle_timeout.as_secs_f64()
                        )));
                    }
                    continue;
                }
            };
            match msg {
                Ok(Some(request)) => {
                    if let Err(status) = self.submit(request).await {
                        break Some(status);
                    }
                }
                Ok(None) => break None,
                Err(status) => {
                    debug!(%status, "producer stream ended with an error");
                    break Some(inbound_error(status));
                }
            }
        };
        if let Some(status) = end {
            // After the acks already owed, so the producer learns why its stream ended.
            // A producer that stopped reading its acks cannot hold this task.
            tokio::select! {
                _ = self.owed.send(Owed::End(status)) => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// The status a stream ends with at shutdown: OK when the producer had half-closed
    /// and every request was read; otherwise UNAVAILABLE, counting the requests that
    /// arrived and were not read (a producer still sending must never take the end of
    /// the stream for success).
    fn shutdown_status(&mut self) -> Option<Status> {
        let mut unread = 0u64;
        loop {
            match self.inbound.message().now_or_never() {
                Some(Ok(Some(_))) => unread += 1,
                Some(Ok(None)) if unread == 0 => return None,
                _ => break,
            }
        }
        Some(Status::unavailable(format!(
            "server is shutting down: {unread} request(s) that arrived on this stream were not \
             read; every request without an ack must be resent"
        )))
    }

    /// Queues one request's ack and its events; an error status ends the stream.
    async fn submit(&mut self, request: ScannedRequest) -> Result<(), Status> {
        let reserved = self.held.take(self.budget.cost(request.wire_len()));
        let (seq, count) = (request.seq, request.count);
        if count > self.max_events {
            return Err(Status::resource_exhausted(format!(
                "request {seq} has {count} events; at most {} allowed (GRPC_MAX_EVENTS_PER_REQUEST)",
                self.max_events
            )));
        }
        let (req, rx) = RequestAck::new(seq, count, self.lost.clone());
        self.unacked.fetch_add(1, Ordering::SeqCst);
        tokio::select! {
            sent = self.owed.send(Owed::Ack(rx, reserved)) => {
                if sent.is_err() {
                    return Err(Status::cancelled("the producer went away"));
                }
            }
            _ = self.stop.cancelled() => {
                return Err(Status::unavailable(format!(
                    "server is shutting down: request {seq} was not taken; every request without an ack must be resent"
                )));
            }
        }
        let received = Instant::now();
        let trace = self.parent.as_ref().and_then(|parent| {
            let span = tracing::info_span!(
                target: telemetry::SPANS,
                "ingest.request",
                otel.kind = "server",
                ingest.seq = seq as i64,
                ingest.events = count as i64,
            );
            telemetry::mark(span, parent.clone())
        });
        for (index, payload) in request.events().enumerate() {
            let item = Incoming {
                payload,
                valid: None,
                ack: Ack::Grpc(GrpcAck::new(req.clone(), index as u32)),
                received,
                trace: trace.clone(),
            };
            if let Err(unsent) = self.tx.send(item).await {
                unsent.0.ack.release();
                let why = format!(
                    "server is shutting down: request {seq} was not fully taken; every request without an ack must be resent"
                );
                req.abandon(why.clone());
                return Err(Status::unavailable(why));
            }
        }
        Ok(())
    }
}

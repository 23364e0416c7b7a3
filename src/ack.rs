//! What travels through the pipeline: an event (raw bytes or decoded) plus the handle
//! that acknowledges it to its source once its outcome is final. Kafka acks mark the
//! offset done in the partition's tracker; gRPC acks fill in their request's
//! `IngestAck`, which is sent when the request's last event is resolved.
use std::{
    sync::{Arc, Mutex},
    time::Instant,
};

use tokio::sync::oneshot;

use crate::{
    proto::{ingest::v1 as pb, sales::v1::SalesEvent},
    source::offsets::OffsetTracker,
    stats::{Outcome, Source},
};

/// The bytes of a Kafka message, or an event a gRPC producer sent decoded.
#[derive(Debug)]
pub enum Payload {
    Encoded(Vec<u8>),
    Decoded(SalesEvent),
}

/// One event entering the pipeline.
#[derive(Debug)]
pub struct Incoming {
    pub payload: Payload,
    pub ack: Ack,
    pub received: Instant,
}

/// Resolves an event's outcome back to its source.
#[derive(Debug)]
pub enum Ack {
    Kafka(KafkaAck),
    Grpc(GrpcAck),
}

/// A consumed Kafka message's coordinates and its partition's offset tracker.
#[derive(Debug)]
pub struct KafkaAck {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    pub generation: u64,
    pub tracker: Arc<Mutex<OffsetTracker>>,
}

/// An event's position in a gRPC request.
#[derive(Debug)]
pub struct GrpcAck {
    pub request: Arc<RequestAck>,
    pub index: u32,
}

impl Ack {
    /// Which source the event came from.
    pub fn source(&self) -> Source {
        match self {
            Ack::Kafka(_) => Source::Kafka,
            Ack::Grpc(_) => Source::Grpc,
        }
    }

    /// Hands the final outcome back to the source.
    pub fn resolve(self, outcome: Outcome) {
        match self {
            Ack::Kafka(k) => k.tracker.lock().expect("offset tracker lock").resolved(
                k.partition,
                k.generation,
                k.offset,
            ),
            Ack::Grpc(g) => g.request.resolve(g.index, outcome),
        }
    }
}

/// Resolves many acks (a written batch), taking each offset tracker's lock once for
/// its run of Kafka acks instead of once per event.
pub fn resolve_all(acks: impl IntoIterator<Item = (Ack, Outcome)>) {
    let mut kafka: Vec<KafkaAck> = Vec::new();
    for (ack, outcome) in acks {
        match ack {
            Ack::Kafka(k) => kafka.push(k),
            grpc => grpc.resolve(outcome),
        }
    }
    let mut rest = kafka.as_slice();
    while let Some(first) = rest.first() {
        let run = rest
            .iter()
            .take_while(|k| Arc::ptr_eq(&k.tracker, &first.tracker))
            .count();
        let mut tracker = first.tracker.lock().expect("offset tracker lock");
        for k in &rest[..run] {
            tracker.resolved(k.partition, k.generation, k.offset);
        }
        rest = &rest[run..];
    }
}

/// The ack of one IngestEvents request, sent when its last event is resolved.
pub type AckResult = Result<pb::IngestAck, tonic::Status>;

/// Collects the outcomes of one gRPC request's events.
#[derive(Debug)]
pub struct RequestAck {
    inner: Mutex<RequestInner>,
}

#[derive(Debug)]
struct RequestInner {
    remaining: usize,
    ack: pb::IngestAck,
    tx: Option<oneshot::Sender<AckResult>>,
}

impl RequestAck {
    /// A request of `events` events; the receiver yields its ack.
    pub fn new(seq: u64, events: usize) -> (Arc<Self>, oneshot::Receiver<AckResult>) {
        let (tx, rx) = oneshot::channel();
        let this = Arc::new(RequestAck {
            inner: Mutex::new(RequestInner {
                remaining: events,
                ack: pb::IngestAck {
                    seq,
                    ..Default::default()
                },
                tx: Some(tx),
            }),
        });
        if events == 0 {
            this.finish_if_done(&mut this.inner.lock().expect("request lock"));
        }
        (this, rx)
    }

    fn resolve(&self, index: u32, outcome: Outcome) {
        let mut inner = self.inner.lock().expect("request lock");
        match outcome {
            Outcome::Stored => inner.ack.accepted += 1,
            Outcome::Duplicate => inner.ack.duplicates += 1,
            Outcome::Rejected(r) => inner.ack.rejected.push(pb::Rejection {
                index,
                reason: r.reason.code().to_string(),
                detail: r.detail,
            }),
        }
        inner.remaining = inner.remaining.saturating_sub(1);
        self.finish_if_done(&mut inner);
    }

    fn finish_if_done(&self, inner: &mut RequestInner) {
        if inner.remaining == 0 {
            if let Some(tx) = inner.tx.take() {
                let mut ack = std::mem::take(&mut inner.ack);
                ack.rejected.sort_by_key(|r| r.index);
                let _ = tx.send(Ok(ack));
            }
        }
    }

    /// Answers the request with an error instead (e.g. the server is shutting down
    /// before all of its events were taken); later outcomes are ignored.
    pub fn abort(&self, status: tonic::Status) {
        if let Some(tx) = self.inner.lock().expect("request lock").tx.take() {
            let _ = tx.send(Err(status));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::{Reason, Rejection};

    #[tokio::test]
    async fn request_ack_is_sent_after_the_last_event_with_sorted_rejections() {
        let (req, mut rx) = RequestAck::new(7, 3);
        let ack = |i| {
            Ack::Grpc(GrpcAck {
                request: req.clone(),
                index: i,
            })
        };
        let bad = Outcome::Rejected(Rejection {
            reason: Reason::InvalidTs,
            detail: "x".into(),
        });
        ack(2).resolve(bad.clone());
        ack(0).resolve(Outcome::Stored);
        assert!(rx.try_recv().is_err(), "one event still open");
        ack(1).resolve(bad);
        let got = rx.await.unwrap().unwrap();
        assert_eq!((got.seq, got.accepted, got.duplicates), (7, 1, 0));
        let idx: Vec<_> = got.rejected.iter().map(|r| r.index).collect();
        assert_eq!(idx, vec![1, 2]);
        assert_eq!(got.rejected[0].reason, "invalid_ts");
    }

    #[test]
    fn resolve_all_resolves_kafka_and_grpc_acks() {
        let tracker = Arc::new(Mutex::new(OffsetTracker::default()));
        let g = tracker.lock().unwrap().assign(0);
        let mut acks = Vec::new();
        for offset in 0..3 {
            tracker.lock().unwrap().received(0, offset);
            let k = KafkaAck {
                topic: "t".into(),
                partition: 0,
                offset,
                generation: g,
                tracker: tracker.clone(),
            };
            acks.push((Ack::Kafka(k), Outcome::Stored));
        }
        let (req, mut rx) = RequestAck::new(1, 1);
        acks.push((
            Ack::Grpc(GrpcAck {
                request: req,
                index: 0,
            }),
            Outcome::Duplicate,
        ));
        resolve_all(acks);
        assert_eq!(tracker.lock().unwrap().committable(0), Some(3));
        assert_eq!(rx.try_recv().unwrap().unwrap().duplicates, 1);
    }

    #[tokio::test]
    async fn empty_request_is_acked_at_once_and_abort_wins_over_late_outcomes() {
        let (_req, rx) = RequestAck::new(1, 0);
        assert_eq!(rx.await.unwrap().unwrap().seq, 1);
        let (req, rx) = RequestAck::new(2, 2);
        req.abort(tonic::Status::unavailable("shutting down"));
        Ack::Grpc(GrpcAck {
            request: req.clone(),
            index: 0,
        })
        .resolve(Outcome::Stored);
        assert_eq!(
            rx.await.unwrap().unwrap_err().code(),
            tonic::Code::Unavailable
        );
    }
}

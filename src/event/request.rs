//! One gRPC request's (or re-drive chunk's) acks: `RequestAck` collects the outcomes of
//! its events and sends its `IngestAck` once the last one is in, or abandons the request
//! when an ack is lost or the server stops first; `LostAcks` counts the acks dropped
//! unresolved (`ingest_acks_lost_total{source}`).
use std::sync::{Arc, Mutex};

use prometheus::IntCounter;
use tokio::sync::oneshot;
use tracing::error;

use super::{Outcome, Source};
use crate::proto::ingest::v1 as pb;

/// How one IngestEvents request ends: its ack, or the reason it was abandoned (the
/// server stopped before taking all of its events; the producer resends it).
pub type RequestResult = Result<pb::IngestAck, String>;

/// Collects the outcomes of one gRPC request's events.
#[derive(Debug)]
pub struct RequestAck {
    inner: Mutex<RequestInner>,
    /// `ingest_acks_lost_total` by source.
    lost: LostAcks,
}

/// The counters of acks dropped unresolved, by source (`ingest_acks_lost_total`).
#[derive(Clone, Debug)]
pub struct LostAcks {
    pub kafka: IntCounter,
    pub grpc: IntCounter,
}

impl LostAcks {
    /// The counter of `source`.
    pub fn of(&self, source: Source) -> &IntCounter {
        match source {
            Source::Kafka => &self.kafka,
            Source::Grpc => &self.grpc,
        }
    }
}

#[derive(Debug)]
struct RequestInner {
    remaining: usize,
    ack: pb::IngestAck,
    tx: Option<oneshot::Sender<RequestResult>>,
}

impl RequestAck {
    /// A request of `events` events; the receiver yields its ack. A lost ack of one of
    /// them is counted in `lost`.
    pub fn new(
        seq: u64,
        events: usize,
        lost: LostAcks,
    ) -> (Arc<Self>, oneshot::Receiver<RequestResult>) {
        let (tx, rx) = oneshot::channel();
        let this = Arc::new(RequestAck {
            lost,
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

    pub(super) fn resolve(&self, index: u32, outcome: Outcome) {
        let mut inner = self.inner.lock().expect("request lock");
        match &outcome {
            Outcome::Stored => inner.ack.accepted += 1,
            Outcome::Duplicate => inner.ack.duplicates += 1,
            Outcome::Updated => inner.ack.updated += 1,
            refused => {
                let (reason, detail) = refused.refusal().expect("a refused outcome");
                inner.ack.rejected.push(pb::Rejection {
                    index,
                    reason: reason.to_string(),
                    detail: detail.to_string(),
                });
            }
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

    /// The ack of event `index` was dropped unresolved: reported, and the request is
    /// abandoned so that its producer resends it (every event has an idempotent `_id`
    /// or is a new document).
    pub(super) fn lost(&self, index: u32, source: Source) {
        self.lost.of(source).inc();
        error!(
            index,
            "an event's ack was dropped unresolved; its request is abandoned"
        );
        self.abandon(format!(
            "the outcome of event {index} was lost (a write task ended without one); \
             resend the request"
        ));
    }

    /// Abandons the request (the server is stopping before all of its events were
    /// taken); later outcomes are ignored.
    pub fn abandon(&self, why: String) {
        if let Some(tx) = self.inner.lock().expect("request lock").tx.take() {
            let _ = tx.send(Err(why));
        }
    }
}

//! Where events end up: MongoDB for valid ones, the dead-letter destinations for the
//! rest. `Store` is the pipeline's production `Sink`.
pub mod dead_letter;
pub mod mongo;

use prost::Message;

use crate::{
    pipeline::{DeadLetter, Pending, Sink},
    proto::sales::v1::SalesEvent,
    stats::Outcome,
    validate::{Reason, Rejection},
};

pub use dead_letter::DeadLetters;
pub use mongo::{DocResult, MongoWriter};

/// MongoDB writer plus dead letters.
pub struct Store {
    pub writer: MongoWriter,
    pub dead_letters: DeadLetters,
}

impl Sink for Store {
    async fn write(&self, batch: Vec<Pending>) -> Vec<(Pending, Outcome)> {
        let results = self.writer.write(&batch).await;
        let mut out = Vec::with_capacity(batch.len());
        for (pending, result) in batch.into_iter().zip(results) {
            let outcome = match result {
                DocResult::Stored => Outcome::Stored,
                DocResult::Duplicate => Outcome::Duplicate,
                DocResult::Failed(message) => {
                    let rejection = Rejection {
                        reason: Reason::WriteFailed,
                        detail: message,
                    };
                    let letter = DeadLetter {
                        payload: reencode(&pending),
                        rejection: rejection.clone(),
                        origin: pending.ack.origin(),
                    };
                    self.dead_letters.send(&letter).await;
                    Outcome::Rejected(rejection)
                }
            };
            out.push((pending, outcome));
        }
        out
    }

    async fn dead_letter(&self, letter: DeadLetter) {
        self.dead_letters.send(&letter).await;
    }
}

/// A stored-shape event back to Protobuf, for dead-lettering a write failure.
fn reencode(p: &Pending) -> Vec<u8> {
    let ts = chrono::DateTime::from_timestamp_millis(p.event.ts_millis)
        .map(|t| t.to_rfc3339())
        .unwrap_or_default();
    SalesEvent {
        sku: p.event.sku.clone(),
        qty: p.event.qty,
        price: p.event.price,
        ts,
        event_id: p.id.clone(),
    }
    .encode_to_vec()
}

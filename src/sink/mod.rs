//! Where events end up: MongoDB for valid ones (`document` says how they are stored),
//! the dead-letter destinations for the rest. `Store` is the pipeline's production `Sink`.
pub mod dead_letter;
pub mod document;
pub mod mongo;
pub mod retry;
pub mod upsert;

use crate::{
    event::{DeadLetter, Outcome, Pending},
    pipeline::Sink,
};

pub use dead_letter::DeadLetters;
pub use mongo::{DocResult, MongoWriter};
pub use upsert::WriteMode;

/// MongoDB writer plus dead letters.
pub struct Store {
    pub writer: MongoWriter,
    pub dead_letters: DeadLetters,
}

impl Sink for Store {
    async fn write(&self, batch: Vec<Pending>) -> Vec<(Pending, Outcome)> {
        let results = self.writer.write(&batch).await;
        let mut letters = Vec::new();
        let out: Vec<_> = batch
            .into_iter()
            .zip(results)
            .map(|(pending, result)| {
                let outcome = match result {
                    DocResult::Stored => Outcome::Stored,
                    DocResult::Duplicate => Outcome::Duplicate,
                    DocResult::Updated => Outcome::Updated,
                    DocResult::Failed(message) | DocResult::Retry(message) => {
                        letters.push(DeadLetter {
                            payload: pending.payload.clone(),
                            reason: crate::event::WRITE_FAILED,
                            detail: message.clone(),
                            origin: pending.ack.origin(),
                        });
                        Outcome::Failed(message)
                    }
                };
                (pending, outcome)
            })
            .collect();
        if !letters.is_empty() {
            self.dead_letters.send(letters).await;
        }
        out
    }

    async fn dead_letter(&self, letters: Vec<DeadLetter>) {
        self.dead_letters.send(letters).await;
    }
}

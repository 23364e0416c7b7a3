//! The pipeline's tasks: a batch write or a delivery of dead letters, each holding one
//! of the `WRITE_CONCURRENCY` slots it shares with the others, each resolving its
//! events' acks once their outcome is durable.
use tokio::sync::OwnedSemaphorePermit;

use super::{Pipeline, Sink};
use crate::event::{self, Ack, DeadLetter, Outcome, Pending};

/// A refused event waiting for its dead letter to be durable before it is acked.
pub(super) struct Refused {
    pub(super) letter: DeadLetter,
    pub(super) ack: Ack,
    pub(super) outcome: Outcome,
    pub(super) received: std::time::Instant,
}

impl<S: Sink> Pipeline<S> {
    /// Waits for a slot: this is where backpressure holds the loop.
    async fn slot(&self) -> OwnedSemaphorePermit {
        self.slots
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed")
    }

    /// Writes a batch in a task of its own once a slot is free (and, in upsert mode,
    /// once the earlier batches holding its ids have ended), then resolves its acks.
    pub(super) async fn spawn_write(&mut self, batch: Vec<Pending>) {
        let permit = self.slot().await;
        let mut turn = self.in_flight.as_mut().map(|f| {
            f.register(
                batch
                    .iter()
                    .filter(|p| !p.event.event_id().is_empty())
                    .map(|p| p.id.as_str()),
            )
        });
        let (sink, metrics) = (self.sink.clone(), self.metrics.clone());
        self.tasks.spawn(async move {
            let size = batch.len();
            if let Some(turn) = &mut turn {
                turn.wait().await;
            }
            let results = sink.write(batch).await;
            if let Some(turn) = turn {
                let _ = turn.done.send(true);
            }
            drop(permit);
            metrics.batch_written(size);
            let done = std::time::Instant::now();
            event::resolve_all(results.into_iter().map(|(pending, outcome)| {
                let took = done.saturating_duration_since(pending.received);
                metrics.event_resolved(pending.ack.source(), &outcome, took);
                (pending.ack, outcome)
            }));
        });
    }

    /// Makes the collected dead letters durable in a task of its own once a slot is
    /// free, then resolves their acks.
    pub(super) async fn spawn_dead_letters(&mut self) {
        let refused = std::mem::take(&mut self.refused);
        let permit = self.slot().await;
        let (sink, metrics) = (self.sink.clone(), self.metrics.clone());
        self.tasks.spawn(async move {
            let (letters, rest): (Vec<_>, Vec<_>) = refused
                .into_iter()
                .map(|r| (r.letter, (r.ack, r.outcome, r.received)))
                .unzip();
            sink.dead_letter(letters).await;
            drop(permit);
            for (ack, outcome, received) in rest {
                metrics.event_resolved(ack.source(), &outcome, received.elapsed());
                ack.resolve(outcome);
            }
        });
    }
}

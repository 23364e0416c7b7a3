//! Where events end up: MongoDB for valid ones (`document` says how they are stored),
//! the dead-letter destinations for the rest. `Store` is the pipeline's production `Sink`.
pub mod classify;
pub mod dead_letter;
pub mod dlq_topic;
pub mod document;
pub mod legacy;
pub mod mongo;
pub mod retry;
pub mod upsert;

use tracing::{field::Empty, Instrument, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::{
    event::{DeadLetter, Outcome, Pending},
    pipeline::Sink,
    telemetry,
};

pub use classify::DocResult;
pub use dead_letter::DeadLetters;
pub use mongo::MongoWriter;
pub use upsert::WriteMode;

/// MongoDB writer plus dead letters.
pub struct Store {
    pub writer: MongoWriter,
    pub dead_letters: DeadLetters,
}

impl Sink for Store {
    async fn write(&self, batch: Vec<Pending>) -> Vec<(Pending, Outcome)> {
        let span = write_span(&batch);
        // The writer's own span, made inside this one, is its child.
        let results = span
            .in_scope(|| self.writer.write(&batch))
            .instrument(span.clone())
            .await;
        if !span.is_disabled() {
            let count =
                |want: fn(&DocResult) -> bool| results.iter().filter(|r| want(r)).count() as i64;
            span.record("ingest.stored", count(|r| *r == DocResult::Stored));
            span.record("ingest.duplicates", count(|r| *r == DocResult::Duplicate));
            span.record("ingest.updated", count(|r| *r == DocResult::Updated));
            let failed = count(|r| matches!(r, DocResult::Failed(_) | DocResult::Retry(_)));
            span.record("ingest.failed", failed);
        }
        drop(span);
        let mut letters = Vec::new();
        let out: Vec<_> = batch
            .into_iter()
            .zip(results)
            .map(|(pending, result)| {
                let outcome = match result {
                    DocResult::Stored => Outcome::Stored,
                    DocResult::Duplicate => Outcome::Duplicate,
                    DocResult::Updated => Outcome::Updated,
                    DocResult::Failed(message)
                    | DocResult::Retry(message)
                    | DocResult::DuplicateKey(message) => Outcome::Failed(message),
                };
                if let Outcome::Failed(_) = &outcome {
                    let (payload, origin) = (pending.payload.clone(), pending.ack.origin());
                    letters.extend(DeadLetter::of(payload, origin, &outcome));
                }
                (pending, outcome)
            })
            .collect();
        if !letters.is_empty() {
            self.dead_letter(letters).await;
        }
        out
    }

    async fn dead_letter(&self, letters: Vec<DeadLetter>) {
        let span = tracing::info_span!(
            target: telemetry::SPANS,
            parent: None,
            "dead_letter.send",
            otel.kind = "producer",
            ingest.dead_letters = letters.len() as i64,
        );
        self.dead_letters.send(letters).instrument(span).await;
    }
}

/// The span of one batch write (disabled without an exporter): a child of the first
/// traced event's span, linked to the other traces in the batch (at most 128), with the
/// batch size; the outcome counts are recorded when the write ends.
fn write_span(batch: &[Pending]) -> Span {
    let span = tracing::info_span!(
        target: telemetry::SPANS,
        parent: None,
        "mongodb.insert_many",
        otel.kind = "client",
        db.system.name = "mongodb",
        db.operation.batch.size = batch.len() as i64,
        ingest.stored = Empty,
        ingest.duplicates = Empty,
        ingest.updated = Empty,
        ingest.failed = Empty,
    );
    if !span.is_disabled() {
        let mut traced = batch.iter().filter_map(|p| p.trace.as_ref());
        if let Some(parent) = traced.next() {
            let _ = span.set_parent(parent.clone());
        }
        telemetry::link(&span, traced);
    }
    span
}

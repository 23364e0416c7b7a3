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

use opentelemetry::{
    trace::{Span, SpanKind},
    Context, KeyValue,
};

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
        let mut span = telemetry::enabled().then(|| write_span(&batch)).flatten();
        let results = self.writer.write(&batch).await;
        if let Some(span) = span.as_mut() {
            let count =
                |want: fn(&DocResult) -> bool| results.iter().filter(|r| want(r)).count() as i64;
            span.set_attributes([
                KeyValue::new("ingest.stored", count(|r| *r == DocResult::Stored)),
                KeyValue::new("ingest.duplicates", count(|r| *r == DocResult::Duplicate)),
                KeyValue::new("ingest.updated", count(|r| *r == DocResult::Updated)),
                KeyValue::new(
                    "ingest.failed",
                    count(|r| matches!(r, DocResult::Failed(_) | DocResult::Retry(_))),
                ),
            ]);
            span.end();
        }
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
                        Outcome::Failed(message)
                    }
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
        let span = telemetry::start(
            "dead_letter.send",
            SpanKind::Producer,
            &Context::new(),
            &[],
            vec![KeyValue::new("ingest.dead_letters", letters.len() as i64)],
        );
        self.dead_letters.send(letters).await;
        if let Some(mut span) = span {
            span.end();
        }
    }
}

/// The span of one batch write: a child of the first traced event's span, linked to
/// the other traces in the batch (at most 128), with the batch size.
fn write_span(batch: &[Pending]) -> Option<opentelemetry::global::BoxedSpan> {
    let mut traced = batch.iter().filter_map(|p| p.trace.as_ref());
    let parent = traced.next().cloned().unwrap_or_default();
    let links: Vec<&Context> = traced.take(128).collect();
    telemetry::start(
        "mongodb.insert_many",
        SpanKind::Client,
        &parent,
        &links,
        vec![
            KeyValue::new("db.system.name", "mongodb"),
            KeyValue::new("db.operation.batch.size", batch.len() as i64),
        ],
    )
}

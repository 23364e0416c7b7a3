//! Spans of the Kafka source (only while traces are exported): one per message that
//! carries a W3C trace context, one per batch of messages taken in one wake-up.
use std::collections::VecDeque;

use opentelemetry::{trace::SpanKind, KeyValue};
use rdkafka::message::{BorrowedMessage, Headers, Message};

use crate::{event::Incoming, telemetry};

/// A message's span, when it carries a W3C `traceparent` header: a child of the
/// producer's span, so the producer's trace reaches the write of this event.
pub fn message_trace(
    m: &BorrowedMessage<'_>,
    partition: i32,
    offset: i64,
) -> Option<opentelemetry::Context> {
    let headers = m.headers()?;
    let header = |name: &str| {
        headers
            .iter()
            .find(|h| h.key == name)
            .and_then(|h| h.value)
            .and_then(|v| std::str::from_utf8(v).ok())
    };
    let parent = telemetry::remote_parent(Some(header("traceparent")?), header("tracestate"));
    telemetry::mark(
        "kafka.message",
        SpanKind::Consumer,
        &parent,
        vec![
            KeyValue::new("messaging.destination.partition.id", partition.to_string()),
            KeyValue::new("messaging.kafka.offset", offset),
        ],
    )
}

/// One span per batch of messages taken in one wake-up (the last `taken` of `backlog`),
/// linked to the traces of the messages that carried one.
pub fn batch_span(backlog: &VecDeque<Incoming>, taken: usize) {
    let traced: Vec<&opentelemetry::Context> = backlog
        .iter()
        .rev()
        .take(taken)
        .filter_map(|i| i.trace.as_ref())
        .take(128)
        .collect();
    let attributes = vec![KeyValue::new("messaging.batch.message_count", taken as i64)];
    if let Some(mut span) = telemetry::start(
        "kafka.batch",
        SpanKind::Consumer,
        &opentelemetry::Context::new(),
        &traced,
        attributes,
    ) {
        opentelemetry::trace::Span::end(&mut span);
    }
}

//! Spans of the Kafka source (disabled unless traces are exported): one per message
//! that carries a W3C trace context, one per batch of messages taken in one wake-up.
use std::collections::VecDeque;

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
    let span = tracing::info_span!(
        target: telemetry::SPANS,
        "kafka.message",
        otel.kind = "consumer",
        messaging.destination.partition.id = %partition,
        messaging.kafka.offset = offset,
    );
    telemetry::mark(span, parent)
}

/// One span per batch of messages taken in one wake-up (the last `taken` of `backlog`),
/// linked to the traces of the messages that carried one.
pub fn batch_span(backlog: &VecDeque<Incoming>, taken: usize) {
    let span = tracing::info_span!(
        target: telemetry::SPANS,
        parent: None,
        "kafka.batch",
        otel.kind = "consumer",
        messaging.batch.message_count = taken as i64,
    );
    if !span.is_disabled() {
        let traced = backlog.iter().rev().take(taken);
        telemetry::link(&span, traced.filter_map(|i| i.trace.as_ref()));
    }
}

//! The subscriber `install` builds, with and without an exporter: which spans reach the
//! exporter, with which names, kinds, attributes, parents and links.
use std::sync::{Arc, Mutex};

use opentelemetry::{
    trace::{SpanKind, TraceId},
    KeyValue, Value,
};
use opentelemetry_sdk::{
    error::OTelSdkResult,
    trace::{SpanData, SpanExporter},
};
use tracing::{debug_span, info_span, Subscriber};

use super::*;

/// Every span the exporter got, in the order they ended.
#[derive(Clone, Debug, Default)]
struct Collected(Arc<Mutex<Vec<SpanData>>>);

impl SpanExporter for Collected {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.0.lock().unwrap().extend(batch);
        Ok(())
    }
}

impl Collected {
    fn named(&self, name: &str) -> SpanData {
        let spans = self.0.lock().unwrap();
        let found = spans.iter().find(|s| s.name == name).cloned();
        found.unwrap_or_else(|| panic!("no span {name} in {:?}", self.names()))
    }

    fn names(&self) -> Vec<String> {
        let spans = self.0.lock().unwrap();
        spans.iter().map(|s| s.name.to_string()).collect()
    }
}

fn subscriber(filter: &str, traces: &Traces) -> impl Subscriber + Send + Sync {
    tracing_subscriber::registry().with(layers(EnvFilter::new(filter), LogFormat::Text, traces))
}

fn exporting_to(collected: &Collected) -> Traces {
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(collected.clone())
        .build();
    Traces(Some(Exporter {
        provider,
        shown: String::new(),
    }))
}

const PRODUCER: &str = "00-4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b-1111111111111111-01";
const OTHER: &str = "00-7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c-2222222222222222-01";

#[test]
fn without_an_exporter_the_exporters_spans_are_disabled_even_when_logs_take_everything() {
    tracing::subscriber::with_default(subscriber("trace", &Traces::off()), || {
        assert!(!enabled());
        let span = info_span!(target: SPANS, "mongodb.insert_many", db.system.name = "mongodb");
        assert!(span.is_disabled());
        let parent = remote_parent(Some(PRODUCER), None);
        assert!(mark(info_span!(target: SPANS, "ingest.request"), parent).is_none());
        assert!(
            !info_span!("write").is_disabled(),
            "the log layer keeps the crate's own spans"
        );
    });
}

#[test]
fn a_producers_context_reaches_the_write_and_the_writers_own_span() {
    let collected = Collected::default();
    let traces = exporting_to(&collected);
    // Logs off: what reaches the exporter does not depend on RUST_LOG.
    tracing::subscriber::with_default(subscriber("off", &traces), || {
        assert!(enabled());
        let request = info_span!(
            target: SPANS,
            "ingest.request",
            otel.kind = "server",
            ingest.seq = 7i64,
        );
        let cx = mark(request, remote_parent(Some(PRODUCER), None)).expect("exporting");
        let other = mark(
            info_span!(target: SPANS, "kafka.message", otel.kind = "consumer"),
            remote_parent(Some(OTHER), None),
        )
        .expect("exporting");
        let write = info_span!(
            target: SPANS,
            parent: None,
            "mongodb.insert_many",
            otel.kind = "client",
            ingest.stored = tracing::field::Empty,
        );
        write.set_parent(cx).unwrap();
        link(&write, [&other, &Context::new()].into_iter());
        write.in_scope(|| info_span!("write").in_scope(|| ()));
        write.record("ingest.stored", 3i64);
        drop(write);
        debug_span!("below_info").in_scope(|| ());
    });

    let request = collected.named("ingest.request");
    let producer_trace = TraceId::from_hex("4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b").unwrap();
    assert_eq!(request.span_context.trace_id(), producer_trace);
    assert_eq!(request.parent_span_id.to_string(), "1111111111111111");
    assert_eq!(request.span_kind, SpanKind::Server);
    assert!(request
        .attributes
        .contains(&KeyValue::new("ingest.seq", Value::I64(7))));

    let write = collected.named("mongodb.insert_many");
    assert_eq!(write.span_context.trace_id(), producer_trace);
    assert_eq!(write.parent_span_id, request.span_context.span_id());
    assert_eq!(write.span_kind, SpanKind::Client);
    assert!(write
        .attributes
        .contains(&KeyValue::new("ingest.stored", Value::I64(3))));
    let message = collected.named("kafka.message");
    let linked: Vec<_> = write
        .links
        .links
        .iter()
        .map(|l| l.span_context.clone())
        .collect();
    assert_eq!(
        linked,
        vec![message.span_context.clone()],
        "the invalid one is skipped"
    );

    let writer = collected.named("write");
    assert_eq!(writer.parent_span_id, write.span_context.span_id());
    assert!(
        !collected.names().iter().any(|n| n == "below_info"),
        "{:?}",
        collected.names()
    );
}

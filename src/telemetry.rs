//! Logging and traces. Logging: one subscriber, text or JSON, filtered by RUST_LOG
//! (librdkafka's and the MongoDB driver's `log` records flow into it too). Traces: with
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) set, spans are
//! exported over OTLP/gRPC, configured by the standard `OTEL_*` variables (checked by
//! `otel_env`); without it no span is created anywhere, so the hot path pays one relaxed
//! load per batch.
mod otel_env;

use std::sync::{
    atomic::{AtomicBool, Ordering},
    OnceLock,
};

use opentelemetry::{
    global::{self, BoxedTracer},
    propagation::{Extractor, TextMapPropagator},
    trace::{Span, SpanKind, TraceContextExt, Tracer},
    Context, KeyValue,
};
use opentelemetry_sdk::{propagation::TraceContextPropagator, trace::SdkTracerProvider, Resource};
use tracing_subscriber::{fmt, EnvFilter};

use crate::config::LogFormat;

/// Installs the global subscriber writing to stderr; returns false if one was already
/// installed (tests install one per process).
pub fn init(filter: &str, format: LogFormat) -> bool {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().try_init().is_ok(),
        LogFormat::Text => builder.try_init().is_ok(),
    }
}

static ENABLED: AtomicBool = AtomicBool::new(false);
static TRACER: OnceLock<BoxedTracer> = OnceLock::new();

/// The service name spans carry when `OTEL_SERVICE_NAME` is unset.
const SERVICE_NAME: &str = "sales-ingest";

/// The trace exporter while it runs; `shutdown` flushes the spans still buffered.
pub struct Traces(Option<SdkTracerProvider>);

impl Traces {
    /// Flushes and stops the exporter.
    pub fn shutdown(self) {
        if let Some(provider) = self.0 {
            ENABLED.store(false, Ordering::Relaxed);
            if let Err(e) = provider.shutdown() {
                tracing::warn!(error = %e, "flushing the trace exporter failed");
            }
        }
    }
}

/// Starts the OTLP trace exporter when an OTLP endpoint is configured, after checking
/// the `OTEL_*` variables it reads; must run inside the tokio runtime (the exporter's
/// gRPC channel lives on it). Err names the variable.
pub fn init_traces() -> Result<Traces, String> {
    let endpoint = [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .into_iter()
    .find_map(|v| {
        std::env::var(v)
            .ok()
            .filter(|s| !s.trim().is_empty())
            .map(|s| (v, s))
    });
    let Some((var, url)) = endpoint else {
        return Ok(Traces(None));
    };
    if url
        .parse::<tonic::codegen::http::Uri>()
        .map_or(true, |u| u.scheme().is_none())
    {
        return Err(format!(
            "invalid value for {var}: `{}` is not an absolute URL (e.g. http://collector:4317)",
            crate::config::mask_url_password(&url)
        ));
    }
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    if url[scheme_end..]
        .split(['/', '?'])
        .next()
        .is_some_and(|a| a.contains('@'))
    {
        return Err(format!(
            "invalid value for {var}: `{}` carries credentials, which OTLP/gRPC does not \
             send (and libraries log endpoints); put them in OTEL_EXPORTER_OTLP_HEADERS",
            crate::config::mask_url_password(&url)
        ));
    }
    otel_env::check(|name| std::env::var(name).ok())?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
        .map_err(|e| format!("invalid value for {var}: {e}"))?;
    let name = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| SERVICE_NAME.into());
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name(name).build())
        .build();
    global::set_tracer_provider(provider.clone());
    let _ = TRACER.set(global::tracer("sales-ingest"));
    ENABLED.store(true, Ordering::Relaxed);
    let shown = crate::config::mask_url_password(&url);
    tracing::info!(endpoint = %shown, "exporting traces over OTLP/gRPC");
    Ok(Traces(Some(provider)))
}

/// Whether spans are being exported.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

fn tracer() -> Option<&'static BoxedTracer> {
    enabled().then(|| TRACER.get()).flatten()
}

/// The W3C trace context a producer sent (`traceparent`, `tracestate`), as the parent
/// of the spans that follow; an empty context when there is none or it is malformed.
pub fn remote_parent(traceparent: Option<&str>, tracestate: Option<&str>) -> Context {
    struct Headers<'a>(Option<&'a str>, Option<&'a str>);
    impl Extractor for Headers<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            match key {
                "traceparent" => self.0,
                "tracestate" => self.1,
                _ => None,
            }
        }
        fn keys(&self) -> Vec<&str> {
            vec!["traceparent", "tracestate"]
        }
    }
    TraceContextPropagator::new().extract(&Headers(traceparent, tracestate))
}

/// A span of `kind` named `name` under `parent` (a root span when `parent` carries
/// none), with `attributes` and links to `links`; None while traces are off.
pub fn start(
    name: &'static str,
    kind: SpanKind,
    parent: &Context,
    links: &[&Context],
    attributes: Vec<KeyValue>,
) -> Option<opentelemetry::global::BoxedSpan> {
    let tracer = tracer()?;
    let links = links
        .iter()
        .map(|c| c.span().span_context().clone())
        .filter(|sc| sc.is_valid())
        .map(opentelemetry::trace::Link::with_context)
        .collect();
    Some(
        tracer
            .span_builder(name)
            .with_kind(kind)
            .with_attributes(attributes)
            .with_links(links)
            .start_with_context(tracer, parent),
    )
}

/// A span that ends at once, as the parent context of what follows it.
pub fn mark(
    name: &'static str,
    kind: SpanKind,
    parent: &Context,
    attributes: Vec<KeyValue>,
) -> Option<Context> {
    let mut span = start(name, kind, parent, &[], attributes)?;
    let cx = Context::new().with_remote_span_context(span.span_context().clone());
    span.end();
    Some(cx)
}

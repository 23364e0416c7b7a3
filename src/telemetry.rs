//! Logging and traces, one `tracing` subscriber for both. Logging: text or JSON on
//! stderr, filtered by RUST_LOG (librdkafka's and the MongoDB driver's `log` records
//! flow into it too). Traces: with `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) set, the subscriber gets a second layer,
//! `tracing-opentelemetry`'s, which exports the crate's INFO spans over OTLP/gRPC,
//! configured by the standard `OTEL_*` variables (checked by `otel_env`). The spans made
//! for the exporter alone have the target `SPANS`: the log layer never takes them, so
//! without an exporter no layer wants them and each is disabled at its callsite (one
//! cached interest load), and their fields are never recorded.
mod otel_env;
#[cfg(test)]
mod tests;

use opentelemetry::{
    propagation::{Extractor, TextMapPropagator},
    trace::{TraceContextExt, TracerProvider as _},
    Context,
};
use opentelemetry_sdk::{propagation::TraceContextPropagator, trace::SdkTracerProvider, Resource};
use tracing::{Level, Metadata, Span};
use tracing_log::AsLog;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{
    filter::{filter_fn, FilterExt},
    fmt,
    layer::SubscriberExt,
    EnvFilter, Layer, Registry,
};

use crate::config::LogFormat;

/// The target of the spans made only for the trace exporter (`ingest.request`,
/// `kafka.message`, `kafka.batch`, `mongodb.insert_many`, `dead_letter.send`).
pub const SPANS: &str = "sales_ingest::spans";

/// The service name spans carry when `OTEL_SERVICE_NAME` is unset.
const SERVICE_NAME: &str = "sales-ingest";

/// The trace exporter while it runs (nothing when no OTLP endpoint is set); `shutdown`
/// flushes the spans still buffered.
pub struct Traces(Option<Exporter>);

struct Exporter {
    provider: SdkTracerProvider,
    /// The endpoint, password masked, for the start-up log line.
    shown: String,
}

impl Traces {
    /// No exporter: logs only.
    pub fn off() -> Self {
        Traces(None)
    }

    /// Flushes and stops the exporter.
    pub fn shutdown(self) {
        if let Some(exporter) = self.0 {
            if let Err(e) = exporter.provider.shutdown() {
                tracing::warn!(error = %e, "flushing the trace exporter failed");
            }
        }
    }
}

/// Installs the global subscriber, logs only; returns false if one was already
/// installed (tests install one per process).
pub fn init(filter: &str, format: LogFormat) -> bool {
    install(filter, format, &Traces::off())
}

/// Installs the global subscriber: the log layer writing to stderr and, when `traces`
/// has an exporter, the layer exporting spans to it. False if one was already installed.
pub fn install(filter: &str, format: LogFormat, traces: &Traces) -> bool {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let log_level = filter.max_level_hint();
    let subscriber = tracing_subscriber::registry().with(layers(filter, format, traces));
    if tracing::subscriber::set_global_default(subscriber).is_err() {
        return false;
    }
    // `log` records below the log layer's level are dropped by `log` itself, unseen.
    let log_level = log_level.unwrap_or(tracing::level_filters::LevelFilter::TRACE);
    let _ = tracing_log::LogTracer::builder()
        .with_max_level(log_level.as_log())
        .init();
    if let Some(exporter) = &traces.0 {
        tracing::info!(endpoint = %exporter.shown, "exporting traces over OTLP/gRPC");
    }
    true
}

type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// The log layer (every record `filter` passes, except the exporter's spans) and, with
/// an exporter, the span-exporting layer.
fn layers(filter: EnvFilter, format: LogFormat, traces: &Traces) -> Vec<BoxedLayer> {
    let logs = filter.and(filter_fn(|m| m.target() != SPANS));
    let fmt = fmt::layer().with_writer(std::io::stderr);
    let mut layers = vec![match format {
        LogFormat::Json => fmt.json().with_filter(logs).boxed(),
        LogFormat::Text => fmt.with_filter(logs).boxed(),
    }];
    if let Some(exporter) = &traces.0 {
        layers.push(span_layer(&exporter.provider).boxed());
    }
    layers
}

/// The layer exporting the crate's spans at INFO and above (never log records) to
/// `provider`: span names, `otel.kind` and the fields as attributes, nothing added.
fn span_layer(provider: &SdkTracerProvider) -> impl Layer<Registry> + Send + Sync {
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("sales-ingest"))
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_filter(filter_fn(exported))
}

/// Whether the span exporter takes the span or event `m` describes.
fn exported(m: &Metadata<'_>) -> bool {
    let ours = m.target() == "sales_ingest" || m.target().starts_with("sales_ingest::");
    m.is_span() && ours && *m.level() <= Level::INFO
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
        return Ok(Traces::off());
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
    let shown = crate::config::mask_url_password(&url);
    Ok(Traces(Some(Exporter { provider, shown })))
}

/// Whether spans are being exported: the exporter's layer is installed.
pub fn enabled() -> bool {
    tracing::span_enabled!(target: SPANS, Level::INFO)
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

/// Makes `span` a child of `parent` and ends it at once; its context, as the parent of
/// what follows it. None while `span` is disabled (no exporter).
pub fn mark(span: Span, parent: Context) -> Option<Context> {
    if span.is_disabled() {
        return None;
    }
    let _ = span.set_parent(parent);
    Some(span.context())
}

/// Links `span` to the first 128 of the span contexts in `traces`, skipping invalid ones.
pub fn link<'a>(span: &Span, traces: impl Iterator<Item = &'a Context>) {
    for cx in traces.take(128) {
        let sc = cx.span().span_context().clone();
        if sc.is_valid() {
            span.add_link(sc);
        }
    }
}

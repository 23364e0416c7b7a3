//! How the metrics are made: every metric registered in a fresh registry with its name,
//! help and buckets, and each label set that is known up front at zero, so dashboards
//! see it before the first event.
use prometheus::{
    Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};
use strum::VariantArray;

use super::{reason_codes, Metrics, PauseReason, Status, WriteStatus};
use crate::event::Source;

fn register<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, metric: T) -> T {
    r.register(Box::new(metric.clone()))
        .expect("metric names are unique");
    metric
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(
        r,
        IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
    )
}

/// A counter vector of one label whose known `values` start at zero.
fn zeroed_counters(
    r: &Registry,
    (name, label): (&str, &str),
    help: &str,
    values: impl Iterator<Item = &'static str>,
) -> IntCounterVec {
    let counters = counter_vec(r, name, help, &[label]);
    values.for_each(|v| drop(counters.with_label_values(&[v])));
    counters
}

fn histogram(r: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let opts = HistogramOpts::new(name, help).buckets(buckets);
    register(r, Histogram::with_opts(opts).expect("valid metric"))
}

fn gauge_vec<'a>(
    r: &Registry,
    name: &str,
    help: &str,
    label: &str,
    values: impl Iterator<Item = &'a str>,
) -> IntGaugeVec {
    let g = register(
        r,
        IntGaugeVec::new(Opts::new(name, help), &[label]).expect("valid metric"),
    );
    for v in values {
        g.with_label_values(&[v]);
    }
    g
}

fn int_gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    register(r, IntGauge::new(name, help).expect("valid metric"))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The per-event outcome counters (by source and status, hot-path handles fetched
/// once), the validator's rejections by reason and the insert_many calls by status,
/// every known label set at zero.
fn outcome_counters(r: &Registry) -> ([[IntCounter; 5]; 2], IntCounterVec, IntCounterVec) {
    let processed_vec = counter_vec(
        r,
        "sales_events_processed_total",
        "Events processed, by outcome (stored, duplicate, rejected, failed, updated) and source",
        &["status", "source"],
    );
    let processed = [Source::Kafka, Source::Grpc].map(|source| {
        [
            Status::Stored,
            Status::Duplicate,
            Status::Rejected,
            Status::Failed,
            Status::Updated,
        ]
        .map(|st| processed_vec.with_label_values(&[st.into(), source.as_str()]))
    });
    let rejected_by_reason = counter_vec(
        r,
        "sales_events_rejected_total",
        "Events refused by validation (producer input), by reason code; write refusals are sales_events_processed_total{status=\"failed\"}",
        &["reason"],
    );
    for code in reason_codes() {
        rejected_by_reason.with_label_values(&[code]);
    }
    let writes = counter_vec(
        r,
        "mongodb_writes_total",
        "insert_many calls, by status (success, partial, retry)",
        &["status"],
    );
    for s in WriteStatus::VARIANTS {
        let label: &str = s.into();
        writes.with_label_values(&[label]);
    }
    (processed, rejected_by_reason, writes)
}

/// Kafka lag per partition and the insert_many latency histogram.
fn lag_and_write_latency(r: &Registry) -> (IntGaugeVec, HistogramVec) {
    let lag_messages = register(
        r,
        IntGaugeVec::new(
            Opts::new(
                "kafka_consumer_lag_messages",
                "Messages behind, per partition",
            ),
            &["partition"],
        )
        .expect("valid metric"),
    );
    // Buckets a factor √2 apart (1 ms to 11.6 s), so a quantile read from them is
    // within 41 %.
    let write_duration = register(
        r,
        HistogramVec::new(
            HistogramOpts::new("mongodb_write_duration_seconds", "insert_many latency").buckets(
                prometheus::exponential_buckets(0.001, std::f64::consts::SQRT_2, 28)
                    .expect("buckets"),
            ),
            &["status"],
        )
        .expect("valid metric"),
    );
    (lag_messages, write_duration)
}

/// Schema registry lookups by result, every result at zero.
fn schema_registry_counters(r: &Registry) -> IntCounterVec {
    let lookups = counter_vec(
        r,
        "schema_registry_requests_total",
        "Schema registry lookups, by result (found, not_found, unreadable, error)",
        &["result"],
    );
    for result in ["found", "not_found", "unreadable", "error"] {
        lookups.with_label_values(&[result]);
    }
    lookups
}

impl Metrics {
    /// Registers every metric in a fresh registry, each label set that is known up front
    /// initialised to zero so dashboards see it before the first event.
    pub fn new() -> Self {
        let r = Registry::new();
        let (processed, rejected_by_reason, writes) = outcome_counters(&r);
        let (lag_messages, write_duration) = lag_and_write_latency(&r);
        let (dead_letters, offsets_skipped, acks_lost) = loss_counters(&r);
        Metrics {
            processed,
            rejected_by_reason,
            writes,
            lag_messages,
            write_duration,
            dead_letters,
            offsets_skipped,
            acks_lost,
            schema_registry: schema_registry_counters(&r),
            // The configured dependencies only: health sets them as it reads them.
            up: gauge_vec(
                &r,
                "dependency_up",
                "1 when the dependency is reachable",
                "dependency",
                std::iter::empty(),
            ),
            per_second: register(
                &r,
                Gauge::new("sales_events_per_second", "Events stored per second").expect("valid"),
            ),
            lag_ms: int_gauge(
                &r,
                "kafka_consumer_lag_milliseconds",
                "Age of the newest consumed Kafka message when consumed; grows while messages wait unconsumed; 0 when caught up",
            ),
            processing_duration: histogram(
                &r,
                "event_processing_duration_seconds",
                "Time from receipt to durable outcome, per event",
                prometheus::exponential_buckets(0.0005, 2.0, 16).expect("buckets"),
            ),
            uptime: register(
                &r,
                Gauge::new("service_uptime_seconds", "Seconds since start").expect("valid"),
            ),
            batch_size: histogram(
                &r,
                "mongodb_batch_size",
                "Documents per insert_many",
                batch_size_buckets(),
            ),
            queue_depth: int_gauge(&r, "ingest_queue_depth", "Events waiting in the pipeline"),
            paused: gauge_vec(
                &r,
                "kafka_consumer_paused",
                "1 while fetching is paused, by reason (admin: PauseConsumer, backpressure: pipeline full, shutdown)",
                "reason",
                PauseReason::VARIANTS.iter().map(|p| p.as_str()),
            ),
            registry: r,
        }
    }
}

/// Dead letters by destination, offsets skipped by an offset reset per partition, and
/// acks dropped unresolved by source (every source at zero).
fn loss_counters(r: &Registry) -> (IntCounterVec, IntCounterVec, IntCounterVec) {
    let dead_letters = counter_vec(
        r,
        "dead_letters_total",
        "Events written to a dead-letter destination",
        &["destination"],
    );
    let offsets_skipped = counter_vec(
        r,
        "kafka_offsets_skipped_total",
        "Offsets the consumer skipped, per partition, because an offset reset moved its position (the log no longer held them: auto.offset.reset)",
        &["partition"],
    );
    let acks_lost = zeroed_counters(
        r,
        ("ingest_acks_lost_total", "source"),
        "Acks dropped without an outcome (a write task that died), by source",
        Source::VARIANTS.iter().map(|s| s.as_str()),
    );
    (dead_letters, offsets_skipped, acks_lost)
}

/// `mongodb_batch_size` buckets: 1, 2, 4, … 65,536 and 100,000 (`BATCH_SIZE`'s maximum).
fn batch_size_buckets() -> Vec<f64> {
    let mut b = prometheus::exponential_buckets(1.0, 2.0, 17).expect("buckets");
    b.push(crate::config::MAX_BATCH_SIZE as f64);
    b
}

//! The Prometheus registry and every metric in it. Components record what happened by
//! calling one typed method per event (`event_resolved`, `write_attempt`, …), which
//! updates the metric and, where an operator needs it, logs — so log lines and metrics
//! cannot drift apart. The Python service's six metric names are kept; the rest are
//! added.
use std::time::Duration;

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use strum::VariantArray;

use crate::{
    deps::Dependency,
    event::{LostAcks, Outcome, Source},
    validate::Reason,
};

/// The statuses of `sales_events_processed_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::IntoStaticStr, strum::VariantArray)]
#[strum(serialize_all = "lowercase")]
pub enum Status {
    Stored,
    Duplicate,
    Rejected,
    Failed,
    Updated,
}

impl Status {
    fn of(outcome: &Outcome) -> Self {
        match outcome {
            Outcome::Stored => Status::Stored,
            Outcome::Duplicate => Status::Duplicate,
            Outcome::Rejected(_) => Status::Rejected,
            Outcome::Failed(_) => Status::Failed,
            Outcome::Updated => Status::Updated,
        }
    }
}

/// How one insert_many call ended (`mongodb_writes_total{status}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::IntoStaticStr, strum::VariantArray)]
#[strum(serialize_all = "lowercase")]
pub enum WriteStatus {
    /// Every document stored.
    Success,
    /// A final answer with some documents refused or duplicates.
    Partial,
    /// A transient failure; the batch is written again.
    Retry,
}

/// Why Kafka fetching is paused (`kafka_consumer_paused{reason}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::IntoStaticStr, strum::VariantArray)]
#[strum(serialize_all = "lowercase")]
pub enum PauseReason {
    /// PauseConsumer is in force; ResumeConsumer ends it.
    Admin,
    /// The pipeline is full (MongoDB slow or down); it ends by itself.
    Backpressure,
    /// The service is shutting down.
    Shutdown,
}

impl PauseReason {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// The service's metrics, one registry per application instance (tests run several
/// servers in one process without sharing counts).
pub struct Metrics {
    registry: Registry,
    /// `sales_events_processed_total` by [source][status], fetched once for the hot path.
    processed: [[IntCounter; 5]; 2],
    rejected_by_reason: IntCounterVec,
    pub(crate) per_second: Gauge,
    lag_ms: IntGauge,
    lag_messages: IntGaugeVec,
    writes: IntCounterVec,
    processing_duration: Histogram,
    pub(crate) uptime: Gauge,
    batch_size: Histogram,
    write_duration: HistogramVec,
    queue_depth: IntGauge,
    paused: IntGaugeVec,
    up: IntGaugeVec,
    dead_letters: IntCounterVec,
    offsets_skipped: IntCounterVec,
    schema_registry: IntCounterVec,
    acks_lost: IntCounterVec,
}

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
        let up = register(
            &r,
            IntGaugeVec::new(
                Opts::new("dependency_up", "1 when the dependency is reachable"),
                &["dependency"],
            )
            .expect("valid metric"),
        );
        let dead_letters = counter_vec(
            &r,
            "dead_letters_total",
            "Events written to a dead-letter destination",
            &["destination"],
        );
        let offsets_skipped = counter_vec(
            &r,
            "kafka_offsets_skipped_total",
            "Offsets the consumer skipped, per partition, because an offset reset moved its position (the log no longer held them: auto.offset.reset)",
            &["partition"],
        );
        let schema_registry = schema_registry_counters(&r);
        let acks_lost = zeroed_counters(
            &r,
            ("ingest_acks_lost_total", "source"),
            "Acks dropped without an outcome (a write task that died), by source",
            Source::VARIANTS.iter().map(|s| s.as_str()),
        );
        Metrics {
            acks_lost,
            processed,
            rejected_by_reason,
            per_second: register(
                &r,
                Gauge::new("sales_events_per_second", "Events stored per second").expect("valid"),
            ),
            lag_ms: int_gauge(
                &r,
                "kafka_consumer_lag_milliseconds",
                "Age of the newest consumed Kafka message when consumed; grows while messages wait unconsumed; 0 when caught up",
            ),
            lag_messages,
            writes,
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
                // 1 doubling to 65,536, then BATCH_SIZE's largest value.
                batch_size_buckets(),
            ),
            write_duration,
            queue_depth: int_gauge(&r, "ingest_queue_depth", "Events waiting in the pipeline"),
            paused: gauge_vec(
                &r,
                "kafka_consumer_paused",
                "1 while fetching is paused, by reason (admin: PauseConsumer, backpressure: pipeline full, shutdown)",
                "reason",
                PauseReason::VARIANTS.iter().map(|p| p.as_str()),
            ),
            up,
            dead_letters,
            offsets_skipped,
            schema_registry,
            registry: r,
        }
    }

    /// The counters that acks dropped unresolved report to.
    pub fn lost_acks(&self) -> LostAcks {
        LostAcks {
            kafka: self.acks_lost.with_label_values(&[Source::Kafka.as_str()]),
            grpc: self.acks_lost.with_label_values(&[Source::Grpc.as_str()]),
        }
    }

    /// An event's final outcome and its processing time (received → resolved).
    pub fn event_resolved(&self, source: Source, outcome: &Outcome, took: Duration) {
        let status = Status::of(outcome);
        self.processed[source as usize][status as usize].inc();
        // Producer input only: a write refusal (`write_failed`) is status "failed".
        if let Outcome::Rejected(r) = outcome {
            self.rejected_by_reason
                .with_label_values(&[r.reason.code()])
                .inc();
        }
        self.processing_duration.observe(took.as_secs_f64());
    }

    /// One insert_many call and how long it took.
    pub fn write_attempt(&self, status: WriteStatus, took: Duration) {
        let label: &'static str = status.into();
        self.writes.with_label_values(&[label]).inc();
        self.write_duration
            .with_label_values(&[label])
            .observe(took.as_secs_f64());
    }

    /// A batch that got its final answer.
    pub fn batch_written(&self, size: usize) {
        self.batch_size.observe(size as f64);
    }

    /// A dead letter made durable at `destination` ("kafka" or "mongodb").
    pub fn dead_letter_delivered(&self, destination: &'static str) {
        self.dead_letters.with_label_values(&[destination]).inc();
    }

    /// `count` offsets of `partition` skipped by an offset reset: events that will
    /// never be stored.
    pub fn offsets_skipped(&self, partition: i32, count: i64) {
        self.offsets_skipped
            .with_label_values(&[&partition.to_string()])
            .inc_by(count.max(0) as u64);
    }

    /// A schema registry lookup ended with `result`: "found", "not_found" or "error"
    /// (the registry unreachable or failing; the lookup is retried).
    pub fn schema_registry_request(&self, result: &'static str) {
        self.schema_registry.with_label_values(&[result]).inc();
    }

    /// Events waiting in the pipeline queue.
    pub fn queue_depth(&self, depth: usize) {
        self.queue_depth.set(depth as i64);
    }

    /// The age of the newest consumed Kafka message.
    pub fn kafka_lag_ms(&self, ms: i64) {
        self.lag_ms.set(ms.max(0));
    }

    /// Messages behind per assigned partition (replaces the previous set).
    pub fn partition_lags(&self, lags: impl IntoIterator<Item = (i32, i64)>) {
        self.lag_messages.reset();
        for (partition, lag) in lags {
            self.lag_messages
                .with_label_values(&[&partition.to_string()])
                .set(lag);
        }
    }

    /// Why Kafka fetching is paused, or None while it runs: 1 on that reason only.
    pub fn consumer_paused(&self, reason: Option<PauseReason>) {
        for r in PauseReason::VARIANTS {
            self.paused
                .with_label_values(&[r.as_str()])
                .set((reason == Some(*r)) as i64);
        }
    }

    /// A dependency's reachability as health sees it.
    pub fn dependency_up(&self, dependency: Dependency, up: bool) {
        (self.up.with_label_values(&[dependency.name()])).set(up as i64);
    }

    /// Counts of one source: (stored, duplicate, rejected, failed, updated).
    pub fn counts(&self, source: Source) -> [u64; 5] {
        self.processed[source as usize].each_ref().map(|c| c.get())
    }

    /// Refusals by reason code, those with a count only.
    pub fn rejected_by_reason(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        reason_codes()
            .map(|code| {
                (
                    code,
                    self.rejected_by_reason.with_label_values(&[code]).get(),
                )
            })
            .filter(|(_, n)| *n > 0)
    }

    /// Batches written so far.
    pub fn batches_written(&self) -> u64 {
        self.batch_size.get_sample_count()
    }

    /// The current queue depth.
    pub fn current_queue_depth(&self) -> u64 {
        self.queue_depth.get().max(0) as u64
    }

    /// Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding cannot fail");
        String::from_utf8(buf).expect("prometheus text is UTF-8")
    }
}

/// `mongodb_batch_size` buckets: 1, 2, 4, … 65,536 and 100,000 (`BATCH_SIZE`'s maximum).
fn batch_size_buckets() -> Vec<f64> {
    let mut b = prometheus::exponential_buckets(1.0, 2.0, 17).expect("buckets");
    b.push(crate::config::MAX_BATCH_SIZE as f64);
    b
}

/// Every reason code validation can refuse an event with (`sales_events_rejected_total`).
fn reason_codes() -> impl Iterator<Item = &'static str> {
    Reason::VARIANTS.iter().map(|r| r.code())
}

#[cfg(test)]
mod tests;

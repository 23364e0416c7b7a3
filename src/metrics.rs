//! The Prometheus registry and every metric in it. Components record what happened by
//! calling one typed method per event (`event_resolved`, `write_attempt`, …), so none of
//! them touches a metric handle or a label string. The Python service's six metric
//! names are kept; the rest are added. `build.rs` registers them.
use std::time::Duration;

use prometheus::{
    Encoder, Gauge, Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Registry, TextEncoder,
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

impl Metrics {
    /// The registry, for metrics a component registers itself.
    pub fn registry(&self) -> &Registry {
        &self.registry
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

/// Every reason code validation can refuse an event with (`sales_events_rejected_total`).
fn reason_codes() -> impl Iterator<Item = &'static str> {
    Reason::VARIANTS.iter().map(|r| r.code())
}

mod build;
#[cfg(test)]
mod tests;

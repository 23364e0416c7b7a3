//! Counters, gauges and shared state that GetStats, `/stats` and `/metrics` read. The
//! Prometheus metrics are the source of truth for counts: the Python service's six
//! names are kept, the rest are added. Every event outcome is counted in `record`.
use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Mutex,
    },
    time::{Duration, Instant},
};

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use serde::Serialize;

use crate::validate::Reason;

/// Where an event came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Kafka,
    Grpc,
}

impl Source {
    /// Label value and stored `source` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Kafka => "kafka",
            Source::Grpc => "grpc",
        }
    }
}

/// How an event ended: the ack every source waits for.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Newly stored in MongoDB.
    Stored,
    /// Its `_id` was already stored.
    Duplicate,
    /// Refused (validation or a permanent write error) and dead-lettered.
    Rejected(crate::validate::Rejection),
}

/// Per-partition consumer position, as GetStats reports it.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq)]
pub struct PartitionLag {
    pub partition: i32,
    pub committed_offset: i64,
    pub high_watermark: i64,
    pub lag: i64,
}

/// Counts for one source.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct SourceCounts {
    pub stored: u64,
    pub duplicate: u64,
    pub rejected: u64,
    pub failed: u64,
}

/// Everything GetStats and `/stats` return.
#[derive(Clone, Debug, Serialize)]
pub struct Snapshot {
    pub uptime_seconds: f64,
    pub events_stored: u64,
    pub events_duplicate: u64,
    pub events_rejected: u64,
    pub events_failed: u64,
    pub kafka: SourceCounts,
    pub grpc: SourceCounts,
    pub batches_written: u64,
    pub queue_depth: u64,
    pub events_per_second: f64,
    pub consumer_paused: bool,
    pub kafka_enabled: bool,
    pub kafka_connected: bool,
    pub mongodb_connected: bool,
    pub consumer_lag: i64,
    pub partitions: Vec<PartitionLag>,
    pub rejected_by_reason: BTreeMap<String, u64>,
}

const STATUSES: [&str; 4] = ["stored", "duplicate", "rejected", "failed"];

/// The service's metrics and shared state.
pub struct Stats {
    registry: Registry,
    started: Instant,
    /// `sales_events_processed_total` by [source][status], fetched once for the hot path.
    processed_handles: [[IntCounter; 4]; 2],
    rejected_by_reason: IntCounterVec,
    per_second: Gauge,
    lag_ms: IntGauge,
    lag_messages: IntGaugeVec,
    pub mongodb_writes: IntCounterVec,
    pub processing_duration: Histogram,
    uptime: Gauge,
    pub batch_size: Histogram,
    pub write_duration: HistogramVec,
    queue_depth: IntGauge,
    paused_gauge: IntGauge,
    up: IntGaugeVec,
    pub dead_letters: IntCounterVec,
    batches: AtomicU64,
    pub kafka_enabled: bool,
    pub consumer_paused: AtomicBool,
    pub kafka_connected: AtomicBool,
    pub mongodb_connected: AtomicBool,
    partitions: Mutex<BTreeMap<i32, PartitionLag>>,
    rate: Mutex<RateWindow>,
    /// Why MongoDB was last found unreachable; None while it is reachable.
    pub mongodb_error: Mutex<Option<String>>,
}

struct RateWindow {
    last: Instant,
    last_count: u64,
    value: f64,
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn histogram(r: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
        .expect("valid metric");
    r.register(Box::new(h.clone())).expect("unique metric");
    h
}

fn int_gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn gauge(r: &Registry, name: &str, help: &str) -> Gauge {
    let g = Gauge::new(name, help).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

impl Stats {
    /// Registers every metric in a fresh registry (one per application instance, so
    /// tests running several servers in one process do not share counts).
    pub fn new(kafka_enabled: bool) -> Self {
        let r = Registry::new();
        let processed = counter_vec(
            &r,
            "sales_events_processed_total",
            "Events processed, by outcome (stored, duplicate, rejected, failed) and source",
            &["status", "source"],
        );
        let processed_handles = [Source::Kafka, Source::Grpc]
            .map(|s| STATUSES.map(|st| processed.with_label_values(&[st, s.as_str()])));
        let rejected_by_reason = counter_vec(
            &r,
            "sales_events_rejected_total",
            "Events refused, by reason code",
            &["reason"],
        );
        for reason in Reason::ALL {
            rejected_by_reason.with_label_values(&[reason.code()]);
        }
        let mongodb_writes = counter_vec(
            &r,
            "mongodb_writes_total",
            "insert_many calls, by status (success, partial, retry)",
            &["status"],
        );
        for s in ["success", "partial", "retry"] {
            mongodb_writes.with_label_values(&[s]);
        }
        let lag_messages = IntGaugeVec::new(
            Opts::new(
                "kafka_consumer_lag_messages",
                "Messages behind, per partition",
            ),
            &["partition"],
        )
        .expect("valid metric");
        r.register(Box::new(lag_messages.clone()))
            .expect("unique metric");
        let write_duration = HistogramVec::new(
            // Buckets a factor √2 apart (1 ms to 11.6 s), so a quantile read from them
            // is within 41 % (a factor 2 made the p99 at 60 ms read as "≤ 128 ms").
            HistogramOpts::new("mongodb_write_duration_seconds", "insert_many latency").buckets(
                prometheus::exponential_buckets(0.001, std::f64::consts::SQRT_2, 28)
                    .expect("buckets"),
            ),
            &["status"],
        )
        .expect("valid metric");
        r.register(Box::new(write_duration.clone()))
            .expect("unique metric");
        let up = IntGaugeVec::new(
            Opts::new("dependency_up", "1 when the dependency is reachable"),
            &["dependency"],
        )
        .expect("valid metric");
        r.register(Box::new(up.clone())).expect("unique metric");
        let dead_letters = counter_vec(
            &r,
            "dead_letters_total",
            "Events written to a dead-letter destination",
            &["destination"],
        );
        Stats {
            processed_handles,
            rejected_by_reason,
            per_second: gauge(&r, "sales_events_per_second", "Events stored per second"),
            lag_ms: int_gauge(
                &r,
                "kafka_consumer_lag_milliseconds",
                "Age of the newest consumed Kafka message when it was consumed",
            ),
            lag_messages,
            mongodb_writes,
            processing_duration: histogram(
                &r,
                "event_processing_duration_seconds",
                "Time from receipt to durable outcome, per event",
                prometheus::exponential_buckets(0.0005, 2.0, 16).expect("buckets"),
            ),
            uptime: gauge(&r, "service_uptime_seconds", "Seconds since start"),
            batch_size: histogram(
                &r,
                "mongodb_batch_size",
                "Documents per insert_many",
                prometheus::exponential_buckets(1.0, 2.0, 15).expect("buckets"),
            ),
            write_duration,
            queue_depth: int_gauge(&r, "ingest_queue_depth", "Events waiting in the pipeline"),
            paused_gauge: int_gauge(
                &r,
                "kafka_consumer_paused",
                "1 while PauseConsumer is in force",
            ),
            up,
            dead_letters,
            batches: AtomicU64::new(0),
            kafka_enabled,
            consumer_paused: AtomicBool::new(false),
            kafka_connected: AtomicBool::new(false),
            mongodb_connected: AtomicBool::new(false),
            partitions: Mutex::new(BTreeMap::new()),
            rate: Mutex::new(RateWindow {
                last: Instant::now(),
                last_count: 0,
                value: 0.0,
            }),
            started: Instant::now(),
            mongodb_error: Mutex::new(None),
            registry: r,
        }
    }

    /// Counts one event's outcome and its processing time (received → resolved).
    pub fn record(&self, source: Source, outcome: &Outcome, took: Duration) {
        let s = source as usize;
        match outcome {
            Outcome::Stored => self.processed_handles[s][0].inc(),
            Outcome::Duplicate => self.processed_handles[s][1].inc(),
            Outcome::Rejected(r) => {
                let status = if r.reason == Reason::WriteFailed {
                    3
                } else {
                    2
                };
                self.processed_handles[s][status].inc();
                self.rejected_by_reason
                    .with_label_values(&[r.reason.code()])
                    .inc();
            }
        }
        self.processing_duration.observe(took.as_secs_f64());
    }

    /// Counts one finished insert_many.
    pub fn batch_written(&self, size: usize) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.batch_size.observe(size as f64);
    }

    /// Sets the pipeline queue depth gauge.
    pub fn set_queue_depth(&self, depth: usize) {
        self.queue_depth.set(depth as i64);
    }

    /// Records the age of the newest consumed Kafka message.
    pub fn set_kafka_lag_ms(&self, ms: i64) {
        self.lag_ms.set(ms.max(0));
    }

    /// Replaces the per-partition positions.
    pub fn set_partitions(&self, parts: impl IntoIterator<Item = PartitionLag>) {
        let mut map = self.partitions.lock().expect("partitions lock");
        map.clear();
        self.lag_messages.reset();
        for p in parts {
            self.lag_messages
                .with_label_values(&[&p.partition.to_string()])
                .set(p.lag);
            map.insert(p.partition, p);
        }
    }

    /// Sets a flag and its gauge.
    pub fn set_paused(&self, paused: bool) {
        self.consumer_paused.store(paused, Ordering::Relaxed);
        self.paused_gauge.set(paused as i64);
    }

    /// Sets a dependency's reachability; returns whether it changed.
    pub fn set_up(&self, dependency: &str, up: bool) -> bool {
        let flag = match dependency {
            "kafka" => &self.kafka_connected,
            _ => &self.mongodb_connected,
        };
        self.up.with_label_values(&[dependency]).set(up as i64);
        flag.swap(up, Ordering::Relaxed) != up
    }

    fn counts(&self, source: Source) -> SourceCounts {
        let h = &self.processed_handles[source as usize];
        SourceCounts {
            stored: h[0].get(),
            duplicate: h[1].get(),
            rejected: h[2].get(),
            failed: h[3].get(),
        }
    }

    /// Updates the events-per-second gauge from the stored count; called once a second.
    pub fn tick(&self) {
        let stored = self.counts(Source::Kafka).stored + self.counts(Source::Grpc).stored;
        let mut w = self.rate.lock().expect("rate lock");
        let dt = w.last.elapsed();
        if dt >= Duration::from_millis(500) {
            w.value = (stored - w.last_count) as f64 / dt.as_secs_f64();
            w.last_count = stored;
            w.last = Instant::now();
        }
        self.per_second.set(w.value);
        self.uptime.set(self.started.elapsed().as_secs_f64());
    }

    /// All figures at this moment.
    pub fn snapshot(&self) -> Snapshot {
        let kafka = self.counts(Source::Kafka);
        let grpc = self.counts(Source::Grpc);
        let partitions: Vec<_> = self
            .partitions
            .lock()
            .expect("partitions lock")
            .values()
            .copied()
            .collect();
        let rejected_by_reason = Reason::ALL
            .iter()
            .map(|r| {
                let n = self.rejected_by_reason.with_label_values(&[r.code()]).get();
                (r.code().to_string(), n)
            })
            .filter(|(_, n)| *n > 0)
            .collect();
        Snapshot {
            uptime_seconds: self.started.elapsed().as_secs_f64(),
            events_stored: kafka.stored + grpc.stored,
            events_duplicate: kafka.duplicate + grpc.duplicate,
            events_rejected: kafka.rejected + grpc.rejected,
            events_failed: kafka.failed + grpc.failed,
            kafka,
            grpc,
            batches_written: self.batches.load(Ordering::Relaxed),
            queue_depth: self.queue_depth.get().max(0) as u64,
            events_per_second: self.rate.lock().expect("rate lock").value,
            consumer_paused: self.consumer_paused.load(Ordering::Relaxed),
            kafka_enabled: self.kafka_enabled,
            kafka_connected: self.kafka_connected.load(Ordering::Relaxed),
            mongodb_connected: self.mongodb_connected.load(Ordering::Relaxed),
            consumer_lag: partitions.iter().map(|p| p.lag.max(0)).sum(),
            partitions,
            rejected_by_reason,
        }
    }

    /// Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        self.uptime.set(self.started.elapsed().as_secs_f64());
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding cannot fail");
        String::from_utf8(buf).expect("prometheus text is UTF-8")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::Rejection;

    #[test]
    fn outcomes_are_counted_by_source_status_and_reason() {
        let stats = Stats::new(true);
        let now = Duration::from_millis(3);
        stats.record(Source::Kafka, &Outcome::Stored, now);
        stats.record(Source::Grpc, &Outcome::Duplicate, now);
        let bad = Rejection {
            reason: Reason::InvalidQty,
            detail: "qty 0".into(),
        };
        stats.record(Source::Grpc, &Outcome::Rejected(bad), now);
        let failed = Rejection {
            reason: Reason::WriteFailed,
            detail: "too big".into(),
        };
        stats.record(Source::Kafka, &Outcome::Rejected(failed), now);
        let s = stats.snapshot();
        assert_eq!(
            (
                s.events_stored,
                s.events_duplicate,
                s.events_rejected,
                s.events_failed
            ),
            (1, 1, 1, 1)
        );
        assert_eq!(s.kafka.stored, 1);
        assert_eq!(s.grpc.rejected, 1);
        assert_eq!(s.rejected_by_reason["invalid_qty"], 1);
        let text = stats.render();
        assert!(
            text.contains(r#"sales_events_processed_total{source="grpc",status="duplicate"} 1"#)
        );
        assert!(text.contains(r#"sales_events_rejected_total{reason="invalid_qty"} 1"#));
    }

    #[test]
    fn consumer_lag_sums_partitions() {
        let stats = Stats::new(true);
        stats.set_partitions([
            PartitionLag {
                partition: 0,
                committed_offset: 5,
                high_watermark: 10,
                lag: 5,
            },
            PartitionLag {
                partition: 1,
                committed_offset: 7,
                high_watermark: 7,
                lag: 0,
            },
        ]);
        let s = stats.snapshot();
        assert_eq!(s.consumer_lag, 5);
        assert_eq!(s.partitions.len(), 2);
        assert!(stats
            .render()
            .contains(r#"kafka_consumer_lag_messages{partition="0"} 5"#));
    }
}

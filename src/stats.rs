//! GetStats' figures. The snapshot is the proto message `GetStatsResponse` itself:
//! GetStats returns it, `/stats` serves it as JSON with the proto field names (serde is
//! derived on the generated type) and ingestctl prints the same, so one type carries
//! the shape everywhere. Counts come from the Prometheus metrics; dependency states from
//! the one table of them (`deps`); partition positions from the Kafka source; the re-drive
//! figures from the running re-drive (`redrive`).
use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use tokio::sync::{mpsc, watch};

use crate::{
    deps::{Dependencies, Dependency},
    event::{Incoming, Source},
    metrics::{Metrics, PauseReason},
    proto::ingest::v1::{GetStatsResponse, PartitionLag, SourceCounts},
};

/// The live figures GetStats and `/stats` return.
pub struct Stats {
    metrics: Arc<Metrics>,
    deps: Dependencies,
    started: Instant,
    /// What PauseConsumer asked for (written by the admin service).
    admin_paused: watch::Receiver<bool>,
    /// Whether the Kafka source has fetching paused (written by the source only).
    fetch_paused: AtomicBool,
    /// Why: 0 not paused, else 1 + the `PauseReason` index (written by the source only).
    pause_reason: AtomicU8,
    /// Positions per assigned partition (written by the Kafka source only).
    partitions: Mutex<Vec<PartitionLag>>,
    rate: Mutex<RateWindow>,
    /// The pipeline channel, to read its depth from (set once it exists).
    queues: Mutex<Vec<mpsc::Sender<Incoming>>>,
    /// Whether a re-drive runs (at most one at a time), and its figures so far.
    redrive_running: AtomicBool,
    redrive_examined: AtomicU64,
    redrive_stored: AtomicU64,
}

struct RateWindow {
    last: Instant,
    last_count: u64,
    value: f64,
}

impl Stats {
    /// Figures over `metrics` and the dependency states.
    pub fn new(
        metrics: Arc<Metrics>,
        deps: Dependencies,
        admin_paused: watch::Receiver<bool>,
    ) -> Self {
        let now = Instant::now();
        Stats {
            metrics,
            deps,
            started: now,
            admin_paused,
            fetch_paused: AtomicBool::new(false),
            pause_reason: AtomicU8::new(0),
            partitions: Mutex::default(),
            rate: Mutex::new(RateWindow {
                last: now,
                last_count: 0,
                value: 0.0,
            }),
            queues: Mutex::new(Vec::new()),
            redrive_running: AtomicBool::new(false),
            redrive_examined: AtomicU64::new(0),
            redrive_stored: AtomicU64::new(0),
        }
    }

    /// A pipeline channel whose depth counts in `ingest_queue_depth` (the sum over the
    /// channels watched). The depth is read at every tick, so it keeps moving while the
    /// pipeline is blocked.
    pub fn watch_queue(&self, tx: mpsc::Sender<Incoming>) {
        self.queues.lock().expect("queues lock").push(tx);
    }

    /// Marks a re-drive as running, its figures zero; false when one already runs.
    pub fn begin_redrive(&self) -> bool {
        let started = self
            .redrive_running
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok();
        if started {
            self.redrive_progress(0, 0);
        }
        started
    }

    /// The running re-drive's figures so far.
    pub fn redrive_progress(&self, examined: u64, stored: u64) {
        self.redrive_examined.store(examined, Ordering::Relaxed);
        self.redrive_stored.store(stored, Ordering::Relaxed);
    }

    /// The re-drive has ended; its last figures stay.
    pub fn end_redrive(&self) {
        self.redrive_running.store(false, Ordering::SeqCst);
    }

    /// The metrics the figures are read from.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Whether Kafka is consumed at all.
    pub fn kafka_enabled(&self) -> bool {
        self.deps.has(Dependency::Kafka)
    }

    /// The Kafka source reports whether fetching is paused (by PauseConsumer or by
    /// backpressure).
    pub fn set_fetch_paused(&self, paused: bool) {
        self.fetch_paused.store(paused, Ordering::Relaxed);
    }

    /// The Kafka source reports why fetching is paused (None: it runs).
    pub fn set_pause_reason(&self, reason: Option<PauseReason>) {
        let code = reason.map_or(0, |r| r as u8 + 1);
        if self.pause_reason.swap(code, Ordering::Relaxed) != code {
            self.metrics.consumer_paused(reason);
        }
    }

    /// Why fetching is paused: the source's reason, else "admin" while PauseConsumer
    /// is asked for and not yet applied; None while it runs.
    fn pause_reason(&self) -> Option<PauseReason> {
        use strum::VariantArray;
        match self.pause_reason.load(Ordering::Relaxed) {
            0 => (*self.admin_paused.borrow()).then_some(PauseReason::Admin),
            n => PauseReason::VARIANTS.get(n as usize - 1).copied(),
        }
    }

    /// The Kafka source replaces the per-partition positions.
    pub fn set_partitions(&self, parts: Vec<PartitionLag>) {
        self.metrics
            .partition_lags(parts.iter().map(|p| (p.partition, p.lag)));
        *self.partitions.lock().expect("partitions lock") = parts;
    }

    fn counts(&self, source: Source) -> SourceCounts {
        let [stored, duplicate, rejected, failed, updated] = self.metrics.counts(source);
        SourceCounts {
            stored,
            duplicate,
            rejected,
            failed,
            updated,
        }
    }

    /// Updates the events-per-second and uptime gauges; called several times a second.
    pub fn tick(&self) {
        let depth = (self.queues.lock().expect("queues lock").iter())
            .map(|tx| tx.max_capacity() - tx.capacity())
            .sum();
        self.metrics.queue_depth(depth);
        let stored = self.counts(Source::Kafka).stored + self.counts(Source::Grpc).stored;
        let mut w = self.rate.lock().expect("rate lock");
        let dt = w.last.elapsed();
        if dt >= Duration::from_millis(500) {
            w.value = stored.saturating_sub(w.last_count) as f64 / dt.as_secs_f64();
            w.last_count = stored;
            w.last = Instant::now();
        }
        self.metrics.per_second.set(w.value);
        self.metrics
            .uptime
            .set(self.started.elapsed().as_secs_f64());
    }

    /// Whether a dependency is configured and up.
    fn connected(&self, dependency: Dependency) -> bool {
        self.deps.state(dependency).is_some_and(|s| s.is_up())
    }

    /// All figures at this moment.
    pub fn snapshot(&self) -> GetStatsResponse {
        let kafka = self.counts(Source::Kafka);
        let grpc = self.counts(Source::Grpc);
        let partitions = self.partitions.lock().expect("partitions lock").clone();
        GetStatsResponse {
            uptime_seconds: self.started.elapsed().as_secs_f64(),
            events_stored: kafka.stored + grpc.stored,
            events_duplicate: kafka.duplicate + grpc.duplicate,
            events_rejected: kafka.rejected + grpc.rejected,
            events_failed: kafka.failed + grpc.failed,
            events_updated: kafka.updated + grpc.updated,
            kafka: Some(kafka),
            grpc: Some(grpc),
            batches_written: self.metrics.batches_written(),
            queue_depth: self.metrics.current_queue_depth(),
            events_per_second: self.rate.lock().expect("rate lock").value,
            consumer_paused: self.kafka_enabled()
                && (*self.admin_paused.borrow() || self.fetch_paused.load(Ordering::Relaxed)),
            consumer_paused_reason: self
                .pause_reason()
                .filter(|_| self.kafka_enabled())
                .map_or("", PauseReason::as_str)
                .to_string(),
            kafka_enabled: self.kafka_enabled(),
            kafka_connected: self.connected(Dependency::Kafka),
            mongodb_connected: self.connected(Dependency::Mongodb),
            schema_registry_enabled: self.deps.has(Dependency::SchemaRegistry),
            schema_registry_connected: self.connected(Dependency::SchemaRegistry),
            consumer_lag: partitions.iter().map(|p| p.lag.max(0)).sum(),
            partitions,
            rejected_by_reason: self
                .metrics
                .rejected_by_reason()
                .map(|(code, n)| (code.to_string(), n))
                .collect(),
            redrive_running: self.redrive_running.load(Ordering::SeqCst),
            redrive_examined: self.redrive_examined.load(Ordering::Relaxed),
            redrive_stored: self.redrive_stored.load(Ordering::Relaxed),
            dead_letter_topic: (self.deps.dead_letter_topic())
                .map_or("", |t| t.word())
                .to_string(),
            dead_letter_topic_error: (self.deps.dead_letter_topic())
                .and_then(|t| t.error().map(str::to_string))
                .unwrap_or_default(),
        }
    }

    /// Prometheus text exposition, with the uptime gauge current.
    pub fn render(&self) -> String {
        self.metrics
            .uptime
            .set(self.started.elapsed().as_secs_f64());
        self.metrics.render()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(kafka: bool) -> Stats {
        Stats::new(
            Arc::new(Metrics::new()),
            Dependencies::all_up_for_tests(kafka),
            watch::channel(false).1,
        )
    }

    #[test]
    fn consumer_lag_sums_partitions_and_is_exported() {
        let s = stats(true);
        s.set_partitions(vec![
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
        let snap = s.snapshot();
        assert_eq!(snap.consumer_lag, 5);
        assert_eq!(snap.partitions.len(), 2);
        assert!(s
            .render()
            .contains(r#"kafka_consumer_lag_messages{partition="0"} 5"#));
    }

    #[test]
    fn snapshot_serializes_with_the_proto_field_names() {
        let s = stats(false);
        s.set_fetch_paused(true);
        let json = serde_json::to_value(s.snapshot()).unwrap();
        assert_eq!(json["events_stored"], 0);
        assert_eq!(json["kafka"]["stored"], 0);
        assert_eq!(json["mongodb_connected"], true);
        assert_eq!(json["consumer_paused"], false, "no consumer without Kafka");
        assert_eq!(json["consumer_paused_reason"], "");
        assert!(json["rejected_by_reason"].is_object());
        assert_eq!(json["redrive_running"], false);
    }

    #[test]
    fn the_pause_reason_is_in_the_snapshot_and_the_metric() {
        let s = stats(true);
        assert_eq!(s.snapshot().consumer_paused_reason, "");
        s.set_fetch_paused(true);
        s.set_pause_reason(Some(PauseReason::Backpressure));
        let snap = s.snapshot();
        assert!(snap.consumer_paused);
        assert_eq!(snap.consumer_paused_reason, "backpressure");
        let text = s.render();
        assert!(
            text.contains(r#"kafka_consumer_paused{reason="backpressure"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"kafka_consumer_paused{reason="admin"} 0"#),
            "{text}"
        );
        s.set_pause_reason(Some(PauseReason::Shutdown));
        assert_eq!(s.snapshot().consumer_paused_reason, "shutdown");
        assert!(s
            .render()
            .contains(r#"kafka_consumer_paused{reason="backpressure"} 0"#));
    }

    #[test]
    fn one_redrive_at_a_time_and_its_figures_stay_after_it_ends() {
        let s = stats(true);
        assert!(s.begin_redrive());
        assert!(!s.begin_redrive(), "a second one is refused");
        s.redrive_progress(500, 420);
        let snap = s.snapshot();
        assert!(snap.redrive_running);
        assert_eq!((snap.redrive_examined, snap.redrive_stored), (500, 420));
        s.end_redrive();
        let snap = s.snapshot();
        assert!(!snap.redrive_running);
        assert_eq!(snap.redrive_examined, 500);
        assert!(s.begin_redrive(), "a new one may start");
        assert_eq!(s.snapshot().redrive_examined, 0);
    }
}

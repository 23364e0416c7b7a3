//! The Kafka consumer and what librdkafka calls back into: the `SourceContext` shared by
//! the rebalance and commit callbacks, the statistics callback and the source loop (the
//! pause flag, watermarks and broker states). The rebalance and commit callbacks change
//! no offsets: they send the source what happened (`acks::FromConsumer`), and the
//! revoke callback commits the due offsets the source last published. Also the consumer
//! settings; `reachable.rs` holds `probe`, the one writer of "Kafka reachable", and the
//! consumer errors it reports.
use std::{
    collections::HashMap,
    sync::{atomic::AtomicBool, atomic::Ordering, Arc, Mutex},
    time::Instant,
};

use rdkafka::{
    config::RDKafkaLogLevel,
    consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer},
    error::KafkaResult,
    ClientContext, Offset, Statistics, TopicPartitionList,
};
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

mod reachable;

pub use reachable::probe;
use reachable::Problem;

use crate::{
    config::Config,
    config::SettingError,
    librdkafka::{client_config, creation_error, GroupProtocol},
    source::{
        acks::{ConsumerEvents, Durable, FromConsumer},
        reset::Resets,
    },
};

/// State shared between the consumer's callbacks and the source loop.
pub struct SourceContext {
    pub(super) topic: String,
    /// Where the rebalance and commit callbacks report to the source.
    events: ConsumerEvents,
    /// Their receiving end, until the source takes it.
    pub(super) events_rx: Mutex<Option<mpsc::UnboundedReceiver<FromConsumer>>>,
    /// The due commits as the source last published them (written by `acks` only).
    pub(super) durable: Durable,
    pub(super) fetch_paused: AtomicBool,
    /// partition → (high watermark, committed offset as librdkafka last saw it)
    pub(super) watermarks: Mutex<HashMap<i32, (i64, i64)>>,
    /// Whether a read of the high watermarks from the broker is under way.
    pub(super) refreshing: AtomicBool,
    /// Whether some broker connection was UP in the last statistics, and when those
    /// statistics arrived.
    pub(super) broker_up: Mutex<(bool, Option<Instant>)>,
    /// A consumer error that keeps this member from consuming (the topic missing, the
    /// group refusing it, no authorization); cleared by an assignment or a consumed
    /// message.
    problem: Mutex<Option<Problem>>,
    /// librdkafka's last broker connection failure (refused, TLS handshake, SASL
    /// authentication), as it logged it: why no broker connection is up.
    pub(super) last_failure: Mutex<Option<String>>,
    /// Offset resets librdkafka announced and no message has followed yet.
    pub(super) resets: Resets,
}

impl ClientContext for SourceContext {
    /// librdkafka's log, as tracing events; its last connection failure is kept for
    /// /health, and an offset reset of the topic is noted so the next message of its
    /// partition tells how many offsets it skipped.
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        self.resets.note_log(&self.topic, fac, message);
        use RDKafkaLogLevel as L;
        match level {
            L::Emerg | L::Alert | L::Critical | L::Error => {
                if fac == "FAIL" {
                    *self.last_failure.lock().expect("last_failure lock") = Some(message.into());
                }
                error!(target: "librdkafka", "librdkafka: {fac} {message}")
            }
            L::Warning => warn!(target: "librdkafka", "librdkafka: {fac} {message}"),
            L::Notice | L::Info => info!(target: "librdkafka", "librdkafka: {fac} {message}"),
            L::Debug => debug!(target: "librdkafka", "librdkafka: {fac} {message}"),
        }
    }

    fn stats(&self, statistics: Statistics) {
        let up = statistics
            .brokers
            .values()
            .any(|b| b.nodeid >= 0 && b.state == "UP");
        *self.broker_up.lock().expect("broker_up lock") = (up, Some(Instant::now()));
        let Some(topic) = statistics.topics.get(&self.topic) else {
            return;
        };
        // A paused partition is not fetched, so its statistics keep the last fetch's
        // high watermark; the source reads newer ones from the broker meanwhile
        // (`refresh_watermarks`), which a stale figure must not undo.
        let paused = self.fetch_paused.load(Ordering::SeqCst);
        let mut w = self.watermarks.lock().expect("watermarks lock");
        for (&p, part) in &topic.partitions {
            if p >= 0 && part.hi_offset >= 0 {
                let known = w.get(&p).map_or(-1, |e| e.0);
                let hi = if paused {
                    known.max(part.hi_offset)
                } else {
                    part.hi_offset
                };
                w.insert(p, (hi, part.committed_offset));
            }
        }
    }
}

impl ConsumerContext for SourceContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let parts: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
            // Commit what is durable before the partitions go to another member. The
            // commit is asynchronous: this callback runs on the polling task, which a
            // broker outage must not hold; librdkafka finishes outstanding commits
            // before it rejoins the group, and the commit callback reports the result.
            // Acks still on their way to the source are not in it: their events are
            // delivered again to the partition's next owner.
            let offsets: Vec<(i32, i64)> = (self.durable.lock().expect("durable lock"))
                .iter()
                .filter(|(p, _)| parts.contains(p))
                .copied()
                .collect();
            if !offsets.is_empty() {
                let result = consumer.commit(&self.offsets_list(&offsets), CommitMode::Async);
                info!(
                    ?offsets,
                    queued = result.is_ok(),
                    "committing durable offsets of revoked partitions"
                );
            }
            info!(partitions = ?parts, "partitions revoked");
            let _ = self.events.send(FromConsumer::Revoked(parts));
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let parts: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
            let _ = self.events.send(FromConsumer::Assigned(parts.clone()));
            if self.fetch_paused.load(Ordering::SeqCst) {
                if let Err(e) = consumer.pause(tpl) {
                    warn!(error = %e, "could not pause newly assigned partitions");
                }
            }
            self.clear_problem();
            info!(partitions = ?parts, paused = self.fetch_paused.load(Ordering::SeqCst), "partitions assigned");
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) => {
                let taken = offsets
                    .elements()
                    .iter()
                    .filter_map(|e| match e.offset() {
                        Offset::Offset(o) => Some((e.partition(), o)),
                        _ => None,
                    })
                    .collect();
                let _ = self.events.send(FromConsumer::Committed(taken));
            }
            Err(e) => warn!(error = %e, "offset commit failed; will retry"),
        }
    }
}

impl SourceContext {
    pub(super) fn offsets_list(&self, offsets: &[(i32, i64)]) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        for &(p, o) in offsets {
            tpl.add_partition_offset(&self.topic, p, Offset::Offset(o))
                .expect("valid offset");
        }
        tpl
    }
}

/// KAFKA_SESSION_TIMEOUT_MS, KAFKA_HEARTBEAT_INTERVAL_MS and KAFKA_PARTITION_ASSIGNMENT
/// when unset (classic protocol).
const SESSION_TIMEOUT_MS: u32 = 10_000;
const HEARTBEAT_INTERVAL_MS: u32 = 3_000;
const PARTITION_ASSIGNMENT: &str = "cooperative-sticky";

/// The consumer type the source uses.
pub type IngestConsumer = StreamConsumer<SourceContext>;

/// Creates the consumer (subscribed, not yet polled). Errors are configuration errors.
pub fn consumer(cfg: &Config) -> Result<Arc<IngestConsumer>, SettingError> {
    let (events, events_rx) = mpsc::unbounded_channel();
    let ctx = SourceContext {
        topic: cfg.kafka_topic.clone(),
        events,
        events_rx: Mutex::new(Some(events_rx)),
        durable: Durable::default(),
        fetch_paused: AtomicBool::new(false),
        watermarks: Mutex::default(),
        refreshing: AtomicBool::new(false),
        broker_up: Mutex::new((false, None)),
        problem: Mutex::new(None),
        last_failure: Mutex::new(None),
        resets: Resets::default(),
    };
    let settings = settings(cfg);
    let mut config = client_config(cfg, &settings);
    // librdkafka logs offset resets as warnings; the source counts them from the log.
    if (config.log_level as i32) < RDKafkaLogLevel::Warning as i32 {
        config.set_log_level(RDKafkaLogLevel::Warning);
    }
    let consumer: IngestConsumer = config
        .create_with_context(ctx)
        .map_err(|e| creation_error(cfg, &settings, e))?;
    consumer
        .subscribe(&[&cfg.kafka_topic])
        .map_err(|e| SettingError::caused("KAFKA_TOPIC", e.to_string(), e))?;
    Ok(Arc::new(consumer))
}

/// The consumer's own librdkafka settings; `librdkafka::client_config` adds the
/// bootstrap servers, the security settings and KAFKA_PROPERTIES.
fn settings(cfg: &Config) -> Vec<(&'static str, String)> {
    let mut settings = vec![
        ("group.id", cfg.kafka_group_id.clone()),
        ("group.protocol", cfg.kafka_group_protocol.name().into()),
        ("enable.auto.commit", "false".into()),
        ("enable.auto.offset.store", "false".into()),
        ("auto.offset.reset", "earliest".into()),
        // Records of open or aborted transactions are never delivered (librdkafka's
        // default, stated because the service relies on it).
        ("isolation.level", "read_committed".into()),
        ("enable.partition.eof", "false".into()),
        (
            "max.poll.interval.ms",
            cfg.kafka_max_poll_interval_ms.to_string(),
        ),
        ("statistics.interval.ms", "1000".into()),
        // A broker that comes back is reconnected within 2 s (librdkafka backs off up
        // to 10 s by default).
        ("reconnect.backoff.max.ms", "2000".into()),
        // A topic created after start-up (or new partitions) is noticed within 10 s;
        // librdkafka's default is 5 minutes.
        ("topic.metadata.refresh.interval.ms", "10000".into()),
        // Bounded prefetch (memory) and short broker waits (latency at low rates).
        ("queued.max.messages.kbytes", "16384".into()),
        ("fetch.wait.max.ms", "100".into()),
    ];
    // The consumer protocol leaves these to the broker (start-up refuses them set).
    if cfg.kafka_group_protocol == GroupProtocol::Classic {
        settings.extend([
            (
                "session.timeout.ms",
                cfg.kafka_session_timeout_ms
                    .unwrap_or(SESSION_TIMEOUT_MS)
                    .to_string(),
            ),
            (
                "heartbeat.interval.ms",
                cfg.kafka_heartbeat_interval_ms
                    .unwrap_or(HEARTBEAT_INTERVAL_MS)
                    .to_string(),
            ),
            (
                "partition.assignment.strategy",
                cfg.kafka_partition_assignment
                    .clone()
                    .unwrap_or_else(|| PARTITION_ASSIGNMENT.into()),
            ),
        ]);
    }
    settings
}

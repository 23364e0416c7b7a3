//! The Kafka consumer and what librdkafka calls back into: the `SourceContext` shared by
//! the rebalance and commit callbacks, the statistics callback and the source loop (the
//! offset tracker, the pause flag, watermarks and broker states); the consumer and
//! dead-letter producer settings; and `probe`, the one writer of "Kafka reachable".
use std::{
    collections::HashMap,
    sync::{atomic::AtomicBool, atomic::Ordering, Arc, Mutex},
    time::{Duration, Instant},
};

use rdkafka::{
    consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer},
    error::KafkaResult,
    ClientContext, Offset, Statistics, TopicPartitionList,
};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    config::Config,
    deps::{State, StateWriter},
    kafka_client::client_config,
    sink::dead_letter::{DeliveryContext, DlqProducer},
    source::offsets::OffsetTracker,
};

/// State shared between the consumer's callbacks and the source loop.
pub struct SourceContext {
    pub(super) topic: String,
    pub(super) tracker: Arc<Mutex<OffsetTracker>>,
    pub(super) fetch_paused: AtomicBool,
    /// partition → (high watermark, committed offset as librdkafka last saw it)
    pub(super) watermarks: Mutex<HashMap<i32, (i64, i64)>>,
    /// Whether a read of the high watermarks from the broker is under way.
    pub(super) refreshing: AtomicBool,
    /// Whether some broker connection was UP in the last statistics, and when those
    /// statistics arrived.
    pub(super) broker_up: Mutex<(bool, Option<Instant>)>,
}

impl ClientContext for SourceContext {
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
            let offsets = {
                let t = self.tracker.lock().expect("tracker lock");
                t.to_commit()
                    .into_iter()
                    .filter(|(p, _)| parts.contains(p))
                    .collect::<Vec<_>>()
            };
            if !offsets.is_empty() {
                let result = consumer.commit(&self.offsets_list(&offsets), CommitMode::Async);
                info!(
                    ?offsets,
                    queued = result.is_ok(),
                    "committing durable offsets of revoked partitions"
                );
            }
            let mut t = self.tracker.lock().expect("tracker lock");
            for p in &parts {
                t.revoke(*p);
            }
            info!(partitions = ?parts, "partitions revoked");
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let parts: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
            {
                let mut t = self.tracker.lock().expect("tracker lock");
                for p in &parts {
                    t.assign(*p);
                }
            }
            if self.fetch_paused.load(Ordering::SeqCst) {
                if let Err(e) = consumer.pause(tpl) {
                    warn!(error = %e, "could not pause newly assigned partitions");
                }
            }
            info!(partitions = ?parts, paused = self.fetch_paused.load(Ordering::SeqCst), "partitions assigned");
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) => {
                let mut t = self.tracker.lock().expect("tracker lock");
                for e in offsets.elements() {
                    if let Offset::Offset(o) = e.offset() {
                        t.mark_committed(e.partition(), o);
                    }
                }
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

/// The consumer type the source uses.
pub type IngestConsumer = StreamConsumer<SourceContext>;

/// Creates the consumer (subscribed, not yet polled). Errors are configuration errors.
pub fn consumer(cfg: &Config) -> KafkaResult<Arc<IngestConsumer>> {
    let ctx = SourceContext {
        topic: cfg.kafka_topic.clone(),
        tracker: Arc::default(),
        fetch_paused: AtomicBool::new(false),
        watermarks: Mutex::default(),
        refreshing: AtomicBool::new(false),
        broker_up: Mutex::new((false, None)),
    };
    let settings = [
        ("group.id", cfg.kafka_group_id.clone()),
        ("enable.auto.commit", "false".into()),
        ("enable.auto.offset.store", "false".into()),
        ("auto.offset.reset", "earliest".into()),
        ("enable.partition.eof", "false".into()),
        (
            "session.timeout.ms",
            cfg.kafka_session_timeout_ms.to_string(),
        ),
        (
            "heartbeat.interval.ms",
            cfg.kafka_heartbeat_interval_ms.to_string(),
        ),
        (
            "max.poll.interval.ms",
            cfg.kafka_max_poll_interval_ms.to_string(),
        ),
        (
            "partition.assignment.strategy",
            cfg.kafka_partition_assignment.clone(),
        ),
        ("statistics.interval.ms", "1000".into()),
        // Bounded prefetch (memory) and short broker waits (latency at low rates).
        ("queued.max.messages.kbytes", "16384".into()),
        ("fetch.wait.max.ms", "100".into()),
    ];
    let consumer: IngestConsumer = client_config(cfg, &settings).create_with_context(ctx)?;
    consumer.subscribe(&[&cfg.kafka_topic])?;
    Ok(Arc::new(consumer))
}

/// Creates the dead-letter producer. `message.timeout.ms` bounds how long a delivery
/// report can take, so a refusing topic costs at most that per attempt.
pub fn producer(cfg: &Config) -> KafkaResult<DlqProducer> {
    let settings = [
        ("message.timeout.ms", "10000".into()),
        ("linger.ms", "5".into()),
    ];
    client_config(cfg, &settings).create_with_context(DeliveryContext)
}

/// Publishes broker reachability, once a second, from librdkafka's own view of its
/// broker connections (the statistics it emits every second): a broker connection is
/// UP, and statistics are fresh. It adds no request of its own. The one writer of
/// "Kafka reachable".
pub async fn probe(consumer: Arc<IngestConsumer>, state: StateWriter, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let (up, at) = *consumer.context().broker_up.lock().expect("broker_up lock");
        let fresh = at.is_some_and(|t| t.elapsed() < Duration::from_secs(5));
        state.set(match (up, fresh) {
            (true, true) => State::Up,
            (false, _) => State::Down("no broker connection is up".into()),
            (true, false) => State::Down("no statistics from librdkafka for 5 s".into()),
        });
    }
}

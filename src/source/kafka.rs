//! The Kafka source: a consumer-group member on `KAFKA_TOPIC` that hands every message
//! to the pipeline with an ack tied to its partition's offset tracker, and commits only
//! what is resolved (auto-commit and auto offset store are off). It never blocks on a
//! full pipeline: `backpressure` decides when fetching pauses, and polling goes on, so
//! the group session survives long MongoDB outages. The same pause serves
//! PauseConsumer, and is re-applied to partitions assigned later.
use std::{
    collections::{HashMap, VecDeque},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use rdkafka::{
    consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer},
    error::KafkaResult,
    message::{BorrowedMessage, Message},
    ClientContext, Offset, Statistics, TopicPartitionList,
};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::{
    config::Config,
    deps::{State, StateWriter},
    event::{Ack, Incoming, KafkaAck},
    kafka_client::client_config,
    proto::ingest::v1::PartitionLag,
    sink::dead_letter::{DeliveryContext, DlqProducer},
    source::{
        backpressure::{Backpressure, BACKLOG_MAX},
        offsets::OffsetTracker,
    },
    stats::Stats,
};

/// State shared between the consumer's callbacks and the source loop.
pub struct SourceContext {
    topic: String,
    tracker: Arc<Mutex<OffsetTracker>>,
    fetch_paused: AtomicBool,
    /// partition → (high watermark, committed offset as librdkafka last saw it)
    watermarks: Mutex<HashMap<i32, (i64, i64)>>,
    /// Whether some broker connection was UP in the last statistics, and when those
    /// statistics arrived.
    broker_up: Mutex<(bool, Option<Instant>)>,
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
        let mut w = self.watermarks.lock().expect("watermarks lock");
        for (&p, part) in &topic.partitions {
            if p >= 0 && part.hi_offset >= 0 {
                w.insert(p, (part.hi_offset, part.committed_offset));
            }
        }
    }
}

impl ConsumerContext for SourceContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let parts: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
            // Commit what is durable before the partitions go to another member.
            let offsets = {
                let t = self.tracker.lock().expect("tracker lock");
                t.to_commit()
                    .into_iter()
                    .filter(|(p, _)| parts.contains(p))
                    .collect::<Vec<_>>()
            };
            if !offsets.is_empty() {
                let result = consumer.commit(&self.offsets_list(&offsets), CommitMode::Sync);
                info!(
                    ?offsets,
                    ok = result.is_ok(),
                    "committed durable offsets of revoked partitions"
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
    fn offsets_list(&self, offsets: &[(i32, i64)]) -> TopicPartitionList {
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

/// The running source.
pub struct KafkaSource {
    pub consumer: Arc<IngestConsumer>,
    pub tx: mpsc::Sender<Incoming>,
    pub admin_paused: watch::Receiver<bool>,
    pub stats: Arc<Stats>,
    topic: Arc<str>,
}

impl KafkaSource {
    /// A source feeding `tx`.
    pub fn new(
        consumer: Arc<IngestConsumer>,
        tx: mpsc::Sender<Incoming>,
        admin_paused: watch::Receiver<bool>,
        stats: Arc<Stats>,
    ) -> Self {
        let topic = Arc::from(consumer.context().topic.as_str());
        Self {
            consumer,
            tx,
            admin_paused,
            stats,
            topic,
        }
    }

    fn ctx(&self) -> &SourceContext {
        self.consumer.context()
    }

    /// Consumes until `stop`; then waits for `drained` (every taken event resolved),
    /// commits the final offsets and leaves the group.
    pub async fn run(mut self, stop: CancellationToken, drained: CancellationToken) {
        // One message stream for the whole run (`recv()` would register and drop a
        // waker slot per message).
        let consumer = self.consumer.clone();
        let mut messages = consumer.stream();
        let mut backlog: VecDeque<Incoming> = VecDeque::new();
        let mut commit_tick = tokio::time::interval(Duration::from_secs(1));
        let mut poll_tick = tokio::time::interval(Duration::from_millis(200));
        let mut pressure = Backpressure::default();
        'run: loop {
            while let Some(item) = backlog.pop_front() {
                match self.tx.try_send(item) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(item)) => {
                        backlog.push_front(item);
                        break;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => break 'run,
                }
            }
            let admin = *self.admin_paused.borrow();
            let now = tokio::time::Instant::now();
            if let Some(paused) = pressure.update(backlog.len(), admin, now) {
                self.set_fetch_paused(paused);
            }
            let take_messages = pressure.take_messages(backlog.len());
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                _ = commit_tick.tick() => {
                    self.commit_async();
                    self.publish_lag();
                }
                permit = self.tx.reserve(), if !backlog.is_empty() => match permit {
                    Ok(permit) => permit.send(backlog.pop_front().expect("backlog not empty")),
                    Err(_) => break,
                },
                _ = self.admin_paused.changed() => {}
                _ = poll_tick.tick() => {}
                msg = messages.next(), if take_messages => match msg {
                    Some(Ok(m)) => {
                        // Take what else librdkafka has ready without waiting, stamped
                        // with one clock reading.
                        let now = Instant::now();
                        let mut newest = m.timestamp().to_millis();
                        backlog.push_back(self.incoming(&m, now));
                        while backlog.len() < BACKLOG_MAX {
                            match messages.next().now_or_never() {
                                Some(Some(Ok(m))) => {
                                    newest = m.timestamp().to_millis().or(newest);
                                    backlog.push_back(self.incoming(&m, now));
                                }
                                Some(Some(Err(e))) => {
                                    debug!(error = %e, "consumer error");
                                    break;
                                }
                                _ => break,
                            }
                        }
                        if let Some(ts) = newest {
                            let now_ms = chrono::Utc::now().timestamp_millis();
                            self.stats.metrics().kafka_lag_ms(now_ms - ts);
                        }
                    }
                    Some(Err(e)) => {
                        debug!(error = %e, "consumer error");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    None => break,
                },
            }
        }
        self.set_fetch_paused(true);
        drop(backlog);
        drained.cancelled().await;
        self.commit_final().await;
        self.publish_lag();
        self.consumer.unsubscribe();
        info!("Kafka source stopped; final offsets committed");
    }

    fn incoming(&self, m: &BorrowedMessage<'_>, received: Instant) -> Incoming {
        let (partition, offset) = (m.partition(), m.offset());
        let generation = self
            .ctx()
            .tracker
            .lock()
            .expect("tracker lock")
            .received(partition, offset);
        Incoming {
            payload: Bytes::copy_from_slice(m.payload().unwrap_or_default()),
            ack: Ack::Kafka(KafkaAck {
                topic: self.topic.clone(),
                partition,
                offset,
                generation,
                tracker: self.ctx().tracker.clone(),
            }),
            received,
        }
    }

    fn set_fetch_paused(&self, paused: bool) {
        self.ctx().fetch_paused.store(paused, Ordering::SeqCst);
        self.stats.set_fetch_paused(paused);
        let assignment = match self.consumer.assignment() {
            Ok(a) => a,
            Err(e) => return warn!(error = %e, "reading the assignment failed"),
        };
        let result = if paused {
            self.consumer.pause(&assignment)
        } else {
            self.consumer.resume(&assignment)
        };
        match result {
            Ok(()) => debug!(paused, partitions = assignment.count(), "fetching toggled"),
            Err(e) => warn!(error = %e, paused, "pause/resume failed"),
        }
    }

    /// Commits every partition whose durable offset advanced; the commit callback
    /// records what the broker took.
    fn commit_async(&self) {
        let offsets = self.ctx().tracker.lock().expect("tracker lock").to_commit();
        if offsets.is_empty() {
            return;
        }
        let tpl = self.ctx().offsets_list(&offsets);
        if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
            warn!(error = %e, "offset commit failed; will retry");
        }
    }

    /// The last commit, synchronous, on a blocking thread so a broker outage cannot
    /// hold a runtime worker (the shutdown timeout bounds the wait).
    async fn commit_final(&self) {
        let offsets = self.ctx().tracker.lock().expect("tracker lock").to_commit();
        if offsets.is_empty() {
            return;
        }
        let consumer = self.consumer.clone();
        let tpl = self.ctx().offsets_list(&offsets);
        let result =
            tokio::task::spawn_blocking(move || consumer.commit(&tpl, CommitMode::Sync)).await;
        match result {
            Ok(Ok(())) => {
                let mut t = self.ctx().tracker.lock().expect("tracker lock");
                for (p, o) in offsets {
                    t.mark_committed(p, o);
                }
            }
            Ok(Err(e)) => {
                warn!(error = %e, "final offset commit failed; those events will be redelivered")
            }
            Err(e) => warn!(error = %e, "final offset commit did not finish"),
        }
    }

    /// Publishes committed offset, high watermark and lag per assigned partition.
    fn publish_lag(&self) {
        let parts = {
            let t = self.ctx().tracker.lock().expect("tracker lock");
            let w = self.ctx().watermarks.lock().expect("watermarks lock");
            t.assigned()
                .into_iter()
                .map(|p| {
                    let (hi, seen_committed) = w.get(&p).copied().unwrap_or((-1, -1));
                    let committed = t.committed(p).unwrap_or(seen_committed);
                    let lag = if hi >= 0 {
                        (hi - committed.max(0)).max(0)
                    } else {
                        0
                    };
                    PartitionLag {
                        partition: p,
                        committed_offset: committed,
                        high_watermark: hi,
                        lag,
                    }
                })
                .collect()
        };
        self.stats.set_partitions(parts);
    }
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

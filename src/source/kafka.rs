//! The Kafka source: a consumer-group member on `KAFKA_TOPIC` that hands every message
//! to the pipeline with an ack tied to its partition's offset tracker, and commits only
//! what is resolved (auto-commit and auto offset store are off). It never blocks on a
//! full pipeline: it keeps a small backlog, pauses fetching on every assigned partition
//! and keeps polling, so the group session survives long MongoDB outages. The same
//! pause serves PauseConsumer, and is re-applied to partitions assigned later.
use std::{
    collections::{HashMap, VecDeque},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use futures::{FutureExt, StreamExt};
use rdkafka::{
    config::ClientConfig,
    consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer},
    error::KafkaResult,
    message::{BorrowedMessage, Message},
    producer::{BaseProducer, DeliveryResult, ProducerContext},
    ClientContext, Offset, Statistics, TopicPartitionList,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::{
    ack::{Ack, Incoming, KafkaAck, Payload},
    config::Config,
    source::offsets::OffsetTracker,
    stats::{PartitionLag, Stats},
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

/// A client configuration: bootstrap servers, this client's own `settings`, then the
/// security settings and KAFKA_PROPERTIES last, so an operator can override anything.
fn client_config(cfg: &Config, settings: &[(&str, String)]) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.kafka_bootstrap_servers);
    for (k, v) in settings {
        c.set(*k, v);
    }
    for (k, v) in cfg.kafka_client_properties() {
        c.set(k, v);
    }
    c
}

/// The variable to blame for a librdkafka configuration error.
pub fn config_variable(error: &rdkafka::error::KafkaError) -> &'static str {
    let msg = error.to_string();
    [
        ("security.protocol", "KAFKA_SECURITY_PROTOCOL"),
        ("sasl.mechanism", "KAFKA_SASL_MECHANISM"),
        ("sasl.username", "KAFKA_SASL_USERNAME"),
        ("sasl.password", "KAFKA_SASL_PASSWORD"),
        ("ssl.ca.location", "KAFKA_SSL_CA_LOCATION"),
        ("bootstrap.servers", "KAFKA_BOOTSTRAP_SERVERS"),
        ("group.id", "KAFKA_GROUP_ID"),
    ]
    .into_iter()
    .find(|(prop, _)| msg.contains(prop))
    .map_or("KAFKA_PROPERTIES", |(_, var)| var)
}

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

/// The outcome of one produced message, as its delivery report tells it.
pub type Delivery = Result<(), String>;

/// Routes each delivery report to the sender the message carried.
pub struct DeliveryContext;

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Box<oneshot::Sender<Delivery>>;

    fn delivery(&self, result: &DeliveryResult<'_>, tx: Self::DeliveryOpaque) {
        let _ = tx.send(result.as_ref().map(|_| ()).map_err(|(e, _)| e.to_string()));
    }
}

/// The dead-letter producer. A `BaseProducer` polled by whoever waits for a delivery
/// (and once a second by [`DeadLetters`](crate::sink::DeadLetters)), not rdkafka's
/// `FutureProducer`: its polling thread spins through the last millisecond of every
/// 100 ms poll (about 1 % of a core, all the time, even with nothing to send).
pub type DlqProducer = BaseProducer<DeliveryContext>;

/// Creates the dead-letter producer. `message.timeout.ms` bounds how long a delivery
/// report can take.
pub fn producer(cfg: &Config) -> KafkaResult<DlqProducer> {
    let settings = [
        ("message.timeout.ms", "30000".into()),
        ("linger.ms", "5".into()),
    ];
    client_config(cfg, &settings).create_with_context(DeliveryContext)
}

/// Messages the source holds when the pipeline is full before it stops taking more.
const BACKLOG_MAX: usize = 1024;
/// How long a full pipeline may block the source before fetching is paused (while
/// paused the consumer keeps polling, so max.poll.interval.ms is never exceeded).
const STALL_BEFORE_PAUSE: Duration = Duration::from_secs(1);

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
    /// commits the final offsets synchronously and leaves the group.
    pub async fn run(mut self, stop: CancellationToken, drained: CancellationToken) {
        // One message stream for the whole run (`recv()` would register and drop a
        // waker slot per message).
        let consumer = self.consumer.clone();
        let mut messages = consumer.stream();
        let mut backlog: VecDeque<Incoming> = VecDeque::new();
        let mut commit_tick = tokio::time::interval(Duration::from_secs(1));
        let mut poll_tick = tokio::time::interval(Duration::from_millis(200));
        let mut fetch_paused = false;
        let mut stalled_since: Option<Instant> = None;
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
            // A full pipeline first just stops this loop taking messages (librdkafka's
            // prefetch queue waits); only a stall longer than STALL_BEFORE_PAUSE pauses
            // the partitions, so that polling can go on and keep the group session
            // alive. Pausing at every full channel would throw the prefetched messages
            // away and fetch them again each time.
            let full = backlog.len() >= BACKLOG_MAX;
            stalled_since = if full {
                stalled_since.or(Some(Instant::now()))
            } else {
                None
            };
            let stalled = stalled_since.is_some_and(|t| t.elapsed() >= STALL_BEFORE_PAUSE);
            let admin = *self.admin_paused.borrow();
            self.stats.set_paused(admin);
            let want = admin || stalled;
            if want != fetch_paused {
                self.set_fetch_paused(want);
                fetch_paused = want;
            }
            let take_messages = !full || fetch_paused;
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                _ = commit_tick.tick() => {
                    self.commit(CommitMode::Async);
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
                            self.stats.set_kafka_lag_ms(now_ms - ts);
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
        self.commit(CommitMode::Sync);
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
            payload: Payload::Encoded(m.payload().unwrap_or_default().to_vec()),
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

    /// Commits every partition whose durable offset advanced.
    fn commit(&self, mode: CommitMode) {
        let offsets = self.ctx().tracker.lock().expect("tracker lock").to_commit();
        if offsets.is_empty() {
            return;
        }
        let tpl = self.ctx().offsets_list(&offsets);
        match self.consumer.commit(&tpl, mode) {
            Ok(()) if matches!(mode, CommitMode::Sync) => {
                let mut t = self.ctx().tracker.lock().expect("tracker lock");
                for (p, o) in offsets {
                    t.mark_committed(p, o);
                }
            }
            Ok(()) => {}
            Err(e) => warn!(error = %e, "offset commit failed; will retry"),
        }
    }

    /// Publishes committed offset, high watermark and lag per assigned partition.
    fn publish_lag(&self) {
        let t = self.ctx().tracker.lock().expect("tracker lock");
        let w = self.ctx().watermarks.lock().expect("watermarks lock");
        let parts = t.assigned().into_iter().map(|p| {
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
        });
        self.stats.set_partitions(parts.collect::<Vec<_>>());
    }
}

/// Publishes broker reachability for health, once a second, from librdkafka's own
/// view of its broker connections (the statistics it emits every second): a broker
/// connection is UP, and statistics are fresh. This adds no request of its own: a
/// metadata request per second from a second thread was the prime suspect of a
/// librdkafka crash seen (rarely) when a broker came back empty on the same address.
pub async fn probe(consumer: Arc<IngestConsumer>, stats: Arc<Stats>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let (up, at) = *consumer.context().broker_up.lock().expect("broker_up lock");
        let fresh = at.is_some_and(|t| t.elapsed() < Duration::from_secs(5));
        let up = up && fresh;
        if stats.set_up("kafka", up) {
            if up {
                info!("Kafka reachable");
            } else {
                warn!("Kafka unreachable");
            }
        }
    }
}

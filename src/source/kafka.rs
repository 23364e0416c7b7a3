//! The Kafka source: a consumer-group member on `KAFKA_TOPIC` that hands every message
//! to the pipeline with an ack tied to its partition's offset tracker, and commits only
//! what is resolved (auto-commit and auto offset store are off). It never blocks on a
//! full pipeline: `backpressure` decides when fetching pauses, and polling goes on, so
//! the group session survives long MongoDB outages. The same pause serves
//! PauseConsumer, and is re-applied to partitions assigned later. SeekConsumer's seeks
//! arrive here as commands and are carried out between messages (`seek`).
use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicBool, AtomicI64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use rdkafka::{
    consumer::{CommitMode, Consumer},
    message::{BorrowedMessage, Message},
};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use crate::source::consumer::{consumer, probe, producer, IngestConsumer, SourceContext};
use crate::{
    event::{Ack, Incoming, KafkaAck},
    proto::ingest::v1::PartitionLag,
    source::{
        backpressure::{Backpressure, BACKLOG_MAX},
        seek::SeekCommand,
        seek_job::SeekJob,
        trace::{batch_span, message_trace},
    },
    stats::Stats,
    telemetry,
};

/// `newest_ms` before any message was consumed.
const NO_TIMESTAMP: i64 = i64::MIN;

/// The running source.
pub struct KafkaSource {
    pub consumer: Arc<IngestConsumer>,
    pub tx: mpsc::Sender<Incoming>,
    pub admin_paused: watch::Receiver<bool>,
    pub stats: Arc<Stats>,
    /// Seeks from SeekConsumer, carried out one at a time.
    pub seeks: mpsc::Receiver<SeekCommand>,
    topic: Arc<str>,
    /// Timestamp (ms) of the newest message consumed, and whether any was consumed
    /// since the last lag publication: the time lag grows while nothing is consumed.
    newest_ms: AtomicI64,
    consumed_since_publish: AtomicBool,
    /// `ingest_acks_lost_total{source="kafka"}`.
    lost: prometheus::IntCounter,
}

impl KafkaSource {
    /// A source feeding `tx`.
    pub fn new(
        consumer: Arc<IngestConsumer>,
        tx: mpsc::Sender<Incoming>,
        admin_paused: watch::Receiver<bool>,
        stats: Arc<Stats>,
        seeks: mpsc::Receiver<SeekCommand>,
    ) -> Self {
        let topic = Arc::from(consumer.context().topic.as_str());
        let lost = stats.metrics().lost_acks().kafka;
        Self {
            lost,
            consumer,
            tx,
            admin_paused,
            stats,
            seeks,
            topic,
            newest_ms: AtomicI64::new(NO_TIMESTAMP),
            consumed_since_publish: AtomicBool::new(false),
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
        let mut seek: Option<SeekJob> = None;
        let mut seeks_open = true;
        let mut seek_tick = tokio::time::interval(Duration::from_millis(20));
        'run: loop {
            while let Some(item) = backlog.pop_front() {
                match self.tx.try_send(item) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(item)) => {
                        backlog.push_front(item);
                        break;
                    }
                    Err(mpsc::error::TrySendError::Closed(item)) => {
                        item.ack.release();
                        break 'run;
                    }
                }
            }
            let admin = *self.admin_paused.borrow();
            let now = tokio::time::Instant::now();
            if let Some(paused) = pressure.update(backlog.len(), admin, now) {
                self.set_fetch_paused(paused, seek.as_ref());
            }
            let take_messages = pressure.take_messages(backlog.len());
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                _ = commit_tick.tick() => {
                    self.commit_async();
                    self.refresh_watermarks();
                    self.publish_lag();
                }
                permit = self.tx.reserve(), if !backlog.is_empty() => match permit {
                    Ok(permit) => permit.send(backlog.pop_front().expect("backlog not empty")),
                    Err(_) => break,
                },
                _ = self.admin_paused.changed() => {}
                command = self.seeks.recv(), if seeks_open && seek.is_none() => match command {
                    Some(command) => seek = Some(SeekJob::begin(command, &self.consumer)),
                    None => seeks_open = false,
                },
                _ = seek_tick.tick(), if seek.is_some() => {}
                _ = poll_tick.tick() => {}
                msg = messages.next(), if take_messages => match msg {
                    Some(Ok(m)) => {
                        // Take what else librdkafka has ready without waiting, stamped
                        // with one clock reading.
                        let now = Instant::now();
                        let mut newest = m.timestamp().to_millis();
                        backlog.push_back(self.incoming(&m, now));
                        let mut taken = 1;
                        while backlog.len() < BACKLOG_MAX {
                            match messages.next().now_or_never() {
                                Some(Some(Ok(m))) => {
                                    newest = m.timestamp().to_millis().or(newest);
                                    backlog.push_back(self.incoming(&m, now));
                                    taken += 1;
                                }
                                Some(Some(Err(e))) => {
                                    self.ctx().note_error(&e);
                                    break;
                                }
                                _ => break,
                            }
                        }
                        if telemetry::enabled() {
                            batch_span(&backlog, taken);
                        }
                        if let Some(ts) = newest {
                            let now_ms = chrono::Utc::now().timestamp_millis();
                            self.stats.metrics().kafka_lag_ms(now_ms - ts);
                            self.newest_ms.store(ts, Ordering::Relaxed);
                        }
                        self.consumed_since_publish.store(true, Ordering::Relaxed);
                        self.ctx().clear_problem();
                    }
                    Some(Err(e)) => {
                        self.ctx().note_error(&e);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    None => break,
                },
            }
            if let Some(job) = seek.take_if(|j| j.drained(&self.consumer) || j.expired()) {
                if job.drained(&self.consumer) {
                    job.finish(&self.consumer).await;
                    self.publish_lag();
                } else {
                    job.abandon(&self.consumer);
                }
            }
        }
        drop(seek);
        self.set_fetch_paused(true, None);
        // Never handed over: delivered again from the last commit.
        for item in backlog {
            item.ack.release();
        }
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
            ack: Ack::Kafka(KafkaAck::new(
                self.topic.clone(),
                (partition, offset, generation),
                self.ctx().tracker.clone(),
                self.lost.clone(),
            )),
            received,
            trace: telemetry::enabled()
                .then(|| message_trace(m, partition, offset))
                .flatten(),
        }
    }

    /// Pauses or resumes fetching on every assigned partition; a resume leaves the
    /// partitions of a seek waiting to drain paused.
    fn set_fetch_paused(&self, paused: bool, seek: Option<&SeekJob>) {
        self.ctx().fetch_paused.store(paused, Ordering::SeqCst);
        self.stats.set_fetch_paused(paused);
        let mut assignment = match self.consumer.assignment() {
            Ok(a) => a,
            Err(e) => return warn!(error = %e, "reading the assignment failed"),
        };
        if let (false, Some(job)) = (paused, seek) {
            let held: Vec<i32> = job.partitions().collect();
            let mut rest = rdkafka::TopicPartitionList::new();
            for e in assignment.elements() {
                if e.topic() != self.topic.as_ref() || !held.contains(&e.partition()) {
                    rest.add_partition(e.topic(), e.partition());
                }
            }
            assignment = rest;
        }
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

    /// While fetching is paused, reads the assigned partitions' high watermarks from
    /// the broker on a blocking thread (one read at a time, 1 s per partition at most),
    /// so the lag figures follow what arrives meanwhile.
    fn refresh_watermarks(&self) {
        let ctx = self.ctx();
        if !ctx.fetch_paused.load(Ordering::SeqCst) || ctx.refreshing.swap(true, Ordering::SeqCst) {
            return;
        }
        let parts = ctx.tracker.lock().expect("tracker lock").assigned();
        let consumer = self.consumer.clone();
        tokio::task::spawn_blocking(move || {
            let ctx = consumer.context();
            for p in parts {
                match consumer.fetch_watermarks(&ctx.topic, p, Duration::from_secs(1)) {
                    Ok((_, hi)) => {
                        let mut w = ctx.watermarks.lock().expect("watermarks lock");
                        let e = w.entry(p).or_insert((-1, -1));
                        e.0 = e.0.max(hi);
                    }
                    Err(e) => {
                        debug!(error = %e, partition = p, "reading the high watermark failed")
                    }
                }
            }
            ctx.refreshing.store(false, Ordering::SeqCst);
        });
    }

    /// Publishes committed offset, high watermark and lag per assigned partition. The
    /// time lag is the newest consumed message's age when it was consumed; while
    /// messages wait and none was consumed since the last publication (paused, held by
    /// backpressure, stalled) it is that message's age now, so it grows with the clock;
    /// with nothing waiting it is 0.
    fn publish_lag(&self) {
        let parts: Vec<PartitionLag> = {
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
        let waiting: i64 = parts.iter().map(|p| p.lag).sum();
        let consumed = self.consumed_since_publish.swap(false, Ordering::Relaxed);
        let newest = self.newest_ms.load(Ordering::Relaxed);
        if waiting == 0 {
            self.stats.metrics().kafka_lag_ms(0);
        } else if !consumed && newest != NO_TIMESTAMP {
            let now_ms = chrono::Utc::now().timestamp_millis();
            self.stats.metrics().kafka_lag_ms(now_ms - newest);
        }
        self.stats.set_partitions(parts);
    }
}

//! The Kafka source: a consumer-group member on `KAFKA_TOPIC` that hands every message
//! to the pipeline with an ack reporting back to this task, which alone owns the
//! offsets (`acks::Offsets`; its loop takes acks before anything else), and commits
//! only what is resolved (auto-commit and auto offset store are off). It never blocks on a
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
    consumer::{CommitMode, Consumer, MessageStream},
    error::KafkaResult,
    message::{BorrowedMessage, Message},
};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use crate::source::consumer::{consumer, probe, IngestConsumer, SourceContext};
use crate::{
    event::{Ack, Incoming},
    metrics::PauseReason,
    proto::ingest::v1::PartitionLag,
    source::{
        acks::{Offsets, Report},
        backpressure::{Backpressure, BACKLOG_MAX},
        seek::SeekCommand,
        seek_job::SeekJob,
        trace::{batch_span, message_trace},
    },
    stats::Stats,
    telemetry,
};

/// What woke the source loop.
enum Wake<'a> {
    Report(Report),
    Stop,
    Commit,
    Seek(Option<SeekCommand>),
    Message(Option<KafkaResult<BorrowedMessage<'a>>>),
    Idle,
}

/// Hands the backlog to the pipeline while it has room; false once the pipeline is
/// gone (the items are released: delivered again from the last commit).
fn hand_over(tx: &mpsc::Sender<Incoming>, backlog: &mut VecDeque<Incoming>) -> bool {
    while let Some(item) = backlog.pop_front() {
        match tx.try_send(item) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(item)) => {
                backlog.push_front(item);
                break;
            }
            Err(mpsc::error::TrySendError::Closed(item)) => {
                item.ack.release();
                return false;
            }
        }
    }
    true
}

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
    /// The offsets, owned here; acks and the callbacks report to them.
    offsets: Offsets,
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
        let events = (consumer.context().events_rx.lock().expect("events lock"))
            .take()
            .expect("one source per consumer");
        let durable = consumer.context().durable.clone();
        let offsets = Offsets::new(events, durable, stats.metrics().lost_acks().kafka);
        Self {
            offsets,
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
        let mut seek_tick = tokio::time::interval(Duration::from_millis(20));
        let mut pressure = Backpressure::default();
        let mut seek: Option<SeekJob> = None;
        let mut seeks_open = true;
        loop {
            if !hand_over(&self.tx, &mut backlog) {
                break;
            }
            let admin = *self.admin_paused.borrow();
            let now = tokio::time::Instant::now();
            if let Some(paused) = pressure.update(backlog.len(), admin, now) {
                self.set_fetch_paused(paused, seek.as_ref());
            }
            self.stats.set_pause_reason(pressure.reason(admin));
            let take_messages = pressure.take_messages(backlog.len());
            self.offsets.apply_consumer();
            // Acks first: they free what the pipeline holds and advance commits.
            let wake = tokio::select! {
                biased;
                report = self.offsets.next() => Wake::Report(report),
                _ = stop.cancelled() => Wake::Stop,
                _ = commit_tick.tick() => Wake::Commit,
                permit = self.tx.reserve(), if !backlog.is_empty() => match permit {
                    Ok(permit) => {
                        permit.send(backlog.pop_front().expect("backlog not empty"));
                        Wake::Idle
                    }
                    Err(_) => Wake::Stop,
                },
                _ = self.admin_paused.changed() => Wake::Idle,
                command = self.seeks.recv(), if seeks_open && seek.is_none() => Wake::Seek(command),
                _ = seek_tick.tick(), if seek.is_some() => Wake::Idle,
                _ = poll_tick.tick() => Wake::Idle,
                msg = messages.next(), if take_messages => Wake::Message(msg),
            };
            match wake {
                Wake::Report(report) => self.offsets.handle(report),
                Wake::Stop => break,
                Wake::Commit => {
                    self.commit_async(seek.is_some());
                    self.refresh_watermarks();
                    self.publish_lag();
                }
                Wake::Seek(Some(command)) => seek = Some(SeekJob::begin(command, &self.consumer)),
                Wake::Seek(None) => seeks_open = false,
                Wake::Message(Some(Ok(m))) => self.take(m, &mut messages, &mut backlog),
                Wake::Message(Some(Err(e))) => {
                    self.ctx().note_error(&e);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Wake::Message(None) => break,
                Wake::Idle => {}
            }
            if let Some(job) = seek.take_if(|j| j.drained(self.offsets.tracker()) || j.expired()) {
                self.end_seek(job).await;
            }
        }
        drop(seek);
        self.set_fetch_paused(true, None);
        self.stats.set_pause_reason(Some(PauseReason::Shutdown));
        // Never handed over: delivered again from the last commit.
        for item in backlog {
            item.ack.release();
        }
        self.finish(drained).await;
    }

    /// After intake stopped: applies acks until the pipeline has drained, commits the
    /// final offsets and leaves the group.
    async fn finish(&mut self, drained: CancellationToken) {
        loop {
            tokio::select! {
                biased;
                report = self.offsets.next() => self.offsets.handle(report),
                _ = drained.cancelled() => break,
            }
        }
        self.offsets.apply_waiting_acks();
        self.commit_final().await;
        self.publish_lag();
        self.consumer.unsubscribe();
        info!("Kafka source stopped; final offsets committed");
    }

    /// Carries out a drained seek, or gives up on one that did not drain in time.
    async fn end_seek(&mut self, job: SeekJob) {
        if job.drained(self.offsets.tracker()) {
            job.finish(&self.consumer, &mut self.offsets).await;
            self.publish_lag();
        } else {
            job.abandon(&self.consumer);
        }
    }

    /// Takes `first` and what else librdkafka has ready without waiting, stamped with
    /// one clock reading.
    fn take(
        &mut self,
        first: BorrowedMessage<'_>,
        messages: &mut MessageStream<'_, SourceContext>,
        backlog: &mut VecDeque<Incoming>,
    ) {
        let now = Instant::now();
        let mut newest = first.timestamp().to_millis();
        backlog.push_back(self.incoming(&first, now));
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
            batch_span(backlog, taken);
        }
        if let Some(ts) = newest {
            let now_ms = chrono::Utc::now().timestamp_millis();
            self.stats.metrics().kafka_lag_ms(now_ms - ts);
            self.newest_ms.store(ts, Ordering::Relaxed);
        }
        self.consumed_since_publish.store(true, Ordering::Relaxed);
        self.ctx().clear_problem();
    }

    fn incoming(&mut self, m: &BorrowedMessage<'_>, received: Instant) -> Incoming {
        let (partition, offset) = (m.partition(), m.offset());
        if let Some((at, skipped)) = self.ctx().resets.skipped(partition, offset) {
            warn!(
                partition,
                from = at,
                to = offset,
                skipped,
                "offset reset (auto.offset.reset): the log no longer held the position; \
                 the skipped events will never be stored"
            );
            self.stats.metrics().offsets_skipped(partition, skipped);
        }
        Incoming {
            payload: Bytes::copy_from_slice(m.payload().unwrap_or_default()),
            valid: None,
            ack: Ack::Kafka(self.offsets.received(&self.topic, partition, offset)),
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
    fn commit_async(&mut self, seeking: bool) {
        if !seeking {
            self.pass_unseen_records();
        }
        let offsets = self.offsets.tracker().to_commit();
        if offsets.is_empty() {
            return;
        }
        let tpl = self.ctx().offsets_list(&offsets);
        if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
            warn!(error = %e, "offset commit failed; will retry");
        }
    }

    /// Moves drained partitions past the records librdkafka consumed without handing
    /// them over (transaction markers, aborted records): its position is then beyond
    /// the last message, and the commit follows it, so no lag waits on them.
    fn pass_unseen_records(&mut self) {
        let Ok(positions) = self.consumer.position() else {
            return;
        };
        let t = self.offsets.tracker_mut();
        for e in positions.elements_for_topic(&self.topic) {
            if let rdkafka::Offset::Offset(o) = e.offset() {
                t.pass_to(e.partition(), o);
            }
        }
    }

    /// The last commit, synchronous, on a blocking thread so a broker outage cannot
    /// hold a runtime worker (the shutdown timeout bounds the wait).
    async fn commit_final(&mut self) {
        let offsets = self.offsets.tracker().to_commit();
        if offsets.is_empty() {
            return;
        }
        let consumer = self.consumer.clone();
        let tpl = self.ctx().offsets_list(&offsets);
        let result =
            tokio::task::spawn_blocking(move || consumer.commit(&tpl, CommitMode::Sync)).await;
        match result {
            Ok(Ok(())) => self.offsets.committed(&offsets),
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
        let parts = self.offsets.tracker().assigned();
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
            let t = self.offsets.tracker();
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

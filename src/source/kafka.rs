//! The Kafka source: a consumer-group member on `KAFKA_TOPIC` that hands every message
//! to the pipeline with an ack reporting back to this task, which alone owns the
//! offsets (`acks::Offsets`; its loop takes acks before anything else), and commits
//! only what is resolved (auto-commit and auto offset store are off). It never blocks on a
//! full pipeline: `backpressure` decides when fetching pauses, and polling goes on, so
//! the group session survives long MongoDB outages. The same pause serves
//! PauseConsumer, and is re-applied to partitions assigned later. SeekConsumer's seeks
//! arrive here as commands and are carried out between messages (`seek`). Its commits
//! are in `commit.rs`, its lag figures in `lag.rs`.
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
    consumer::{Consumer, MessageStream},
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

mod commit;
mod lag;

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

/// What the source loop holds between wake-ups.
struct Intake {
    /// Messages taken and not yet handed to the pipeline.
    backlog: VecDeque<Incoming>,
    pressure: Backpressure,
    /// The seek being carried out, one at a time.
    seek: Option<SeekJob>,
    /// Whether SeekConsumer can still send seeks.
    seeks_open: bool,
}

impl Default for Intake {
    fn default() -> Self {
        Intake {
            backlog: VecDeque::new(),
            pressure: Backpressure::default(),
            seek: None,
            seeks_open: true,
        }
    }
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
        let mut commit_tick = tokio::time::interval(Duration::from_secs(1));
        let mut poll_tick = tokio::time::interval(Duration::from_millis(200));
        let mut seek_tick = tokio::time::interval(Duration::from_millis(20));
        let mut intake = Intake::default();
        while hand_over(&self.tx, &mut intake.backlog) {
            let take_messages = self.apply_backpressure(&mut intake);
            self.offsets.apply_consumer();
            let (backlog, seeking) = (&mut intake.backlog, intake.seek.is_some());
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
                command = self.seeks.recv(), if intake.seeks_open && !seeking => Wake::Seek(command),
                _ = seek_tick.tick(), if seeking => Wake::Idle,
                _ = poll_tick.tick() => Wake::Idle,
                msg = messages.next(), if take_messages => Wake::Message(msg),
            };
            if !self.on_wake(wake, &mut messages, &mut intake).await {
                break;
            }
            let done = |j: &SeekJob| j.drained(self.offsets.tracker()) || j.expired();
            if let Some(job) = intake.seek.take_if(|j| done(j)) {
                self.end_seek(job).await;
            }
        }
        drop(intake.seek);
        self.set_fetch_paused(true, None);
        self.stats.set_pause_reason(Some(PauseReason::Shutdown));
        // Never handed over: delivered again from the last commit.
        for item in intake.backlog {
            item.ack.release();
        }
        self.finish(drained).await;
    }

    /// Pauses or resumes fetching as the backpressure policy says; whether to take
    /// messages now.
    fn apply_backpressure(&self, intake: &mut Intake) -> bool {
        let admin = *self.admin_paused.borrow();
        let now = tokio::time::Instant::now();
        let waiting = intake.backlog.len();
        if let Some(paused) = intake.pressure.update(waiting, admin, now) {
            self.set_fetch_paused(paused, intake.seek.as_ref());
        }
        self.stats.set_pause_reason(intake.pressure.reason(admin));
        intake.pressure.take_messages(waiting)
    }

    /// Acts on what woke the loop; false when intake ends.
    async fn on_wake(
        &mut self,
        wake: Wake<'_>,
        messages: &mut MessageStream<'_, SourceContext>,
        intake: &mut Intake,
    ) -> bool {
        match wake {
            Wake::Report(report) => self.offsets.handle(report),
            Wake::Stop | Wake::Message(None) => return false,
            Wake::Commit => {
                self.commit_async(intake.seek.is_some());
                self.refresh_watermarks();
                self.publish_lag();
            }
            Wake::Seek(Some(command)) => {
                intake.seek = Some(SeekJob::begin(command, &self.consumer));
            }
            Wake::Seek(None) => intake.seeks_open = false,
            Wake::Message(Some(Ok(m))) => self.take(m, messages, &mut intake.backlog),
            Wake::Message(Some(Err(e))) => {
                self.ctx().note_error(&e);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Wake::Idle => {}
        }
        true
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
}

//! The one pipeline: the sources put `Incoming` events on its bounded channels (one for
//! Kafka, one for gRPC and re-drives); this task validates each, batches the valid ones
//! and collects the refused ones, and hands both to the sink — several tasks in flight,
//! bounded by `WRITE_CONCURRENCY` slots that writes and dead-letter deliveries share.
//! When every slot is busy the loop stops taking events, the channels fill and the
//! sources slow down: backpressure, never loss, and never an unbounded number of tasks.
//!
//! Group commit: a partial batch is written as soon as nothing more is ready on the
//! channels and a slot is free, so at low load an event waits one MongoDB round trip;
//! while every slot is busy the batch keeps filling up to `BATCH_SIZE`. `FLUSH_INTERVAL`
//! bounds how long an event may wait, and is never the usual wait. On stop the loop
//! closes the channels, drains them, flushes and waits for every task before returning.
//!
//! With `WRITE_MODE=upsert` a batch holding an event id that an earlier batch still in
//! flight holds waits for that batch, so the last event per id in source order is the
//! one written last (`inflight`).
//!
//! A task that dies (a panic in the sink) is never silent: the loop notices it when it
//! joins the task and fails the service loudly (`Shutdown::fail`: health NOT_SERVING,
//! the shutdown sequence, exit 1). The task's acks are dropped with it, and each
//! reports itself lost (`event`): its Kafka offsets stay uncommitted and are delivered
//! again after the restart, its gRPC requests are abandoned so that producers resend.
//! Retrying in place is not attempted: a sink that panicked once would panic again on
//! the same events.
//!
//! Kafka events come on a channel of their own. A Kafka value whose schema the
//! registry has to be asked about is decoded in a task of its own while the loop takes
//! no more Kafka events (their channel fills and the source pauses fetching, in order),
//! and gRPC events and re-drives go on: a registry that cannot answer holds Kafka only.
//! Re-driven dead letters arrive validated (the re-drive decodes them, waiting for the
//! registry in its own task), so the pipeline validates each event once. The write and
//! dead-letter tasks are in `tasks`.
mod inflight;
mod tasks;

use std::{future::Future, sync::Arc, time::Duration};

use bytes::Bytes;
use tokio::{
    sync::{mpsc, Semaphore},
    task::{JoinError, JoinHandle, JoinSet},
    time::{sleep_until, Instant},
};
use tokio_util::sync::CancellationToken;

use crate::{
    batcher::Batcher,
    doc_id,
    event::{Ack, DeadLetter, Incoming, Origin, Outcome, Pending},
    format::ValueDecoder,
    metrics::Metrics,
    shutdown::Shutdown,
    sink::upsert::WriteMode,
    validate::{Rejection, Rules, ValidEvent},
};

use inflight::InFlight;
use tasks::Refused;

/// The pipeline's input channels.
pub struct Queues {
    /// gRPC events and re-driven dead letters.
    pub others: mpsc::Receiver<Incoming>,
    /// Kafka events (None when Kafka is off).
    pub kafka: Option<mpsc::Receiver<Incoming>>,
}

/// An event decoded, or refused with a reason.
type Checked = Result<ValidEvent, Rejection>;

/// A Kafka event whose value waits for the schema registry, decoded in its own task.
struct Held {
    item: Incoming,
    /// None when stop came first: the event is left unresolved (delivered again).
    task: JoinHandle<Option<Checked>>,
}

/// Where batches and dead letters go. The MongoDB/Kafka implementation is
/// `sink::Store`; unit tests use an in-memory one.
pub trait Sink: Send + Sync + 'static {
    /// Writes a batch, retrying transient errors until it succeeds, and returns each
    /// event's outcome (permanently refused documents already dead-lettered).
    fn write(&self, batch: Vec<Pending>) -> impl Future<Output = Vec<(Pending, Outcome)>> + Send;
    /// Makes dead letters durable, retrying until they are.
    fn dead_letter(&self, letters: Vec<DeadLetter>) -> impl Future<Output = ()> + Send;
}

/// Pipeline tuning.
#[derive(Clone)]
pub struct PipelineConfig {
    pub batch_size: usize,
    pub flush_interval: Duration,
    pub write_concurrency: usize,
    /// The validator's limits and timestamp policy.
    pub rules: Rules,
    /// How Kafka values are unwrapped before validation (`KAFKA_VALUE_FORMAT`).
    pub values: ValueDecoder,
    /// `WRITE_MODE`: in `upsert`, writes of one id keep their source order.
    pub write_mode: WriteMode,
}

struct Pipeline<S> {
    sink: Arc<S>,
    metrics: Arc<Metrics>,
    slots: Arc<Semaphore>,
    tasks: JoinSet<()>,
    batcher: Batcher<Pending>,
    refused: Vec<Refused>,
    batch_size: usize,
    rules: Rules,
    values: ValueDecoder,
    stop: CancellationToken,
    /// Where a task that died is reported.
    shutdown: Shutdown,
    /// Batches in flight by event id (`WRITE_MODE=upsert` only).
    in_flight: Option<InFlight>,
    /// The Kafka event waiting for the schema registry, if any; Kafka intake waits
    /// while there is one.
    held: Option<Held>,
}

/// Runs the pipeline until a shutdown is requested and everything taken is resolved;
/// a task that dies fails the service (`shutdown.fail`).
pub async fn run<S: Sink>(
    queues: Queues,
    sink: Arc<S>,
    metrics: Arc<Metrics>,
    cfg: PipelineConfig,
    shutdown: Shutdown,
) {
    let stop = shutdown.requested.clone();
    let mut p = Pipeline::new(sink, metrics, cfg, shutdown);
    let Queues {
        others: mut rx,
        kafka: mut kafka_rx,
    } = queues;
    let (mut others_open, mut kafka_open) = (true, kafka_rx.is_some());
    let mut closing = false;
    while others_open || kafka_open || p.held.is_some() {
        let deadline = p.batcher.deadline();
        tokio::select! {
            biased;
            Some(joined) = p.tasks.join_next(), if !p.tasks.is_empty() => p.joined(joined),
            _ = stop.cancelled(), if !closing => {
                closing = true;
                rx.close();
                if let Some(k) = &mut kafka_rx {
                    k.close();
                }
            }
            _ = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                p.flush().await;
            }
            checked = async { (&mut p.held.as_mut().expect("held").task).await }, if p.held.is_some() => {
                p.held_done(checked).await;
            }
            item = recv(&mut kafka_rx), if kafka_open && p.held.is_none() => match item {
                Some(item) => p.take_kafka(item, kafka_rx.as_mut().expect("kafka")).await,
                None => kafka_open = false,
            },
            item = rx.recv(), if others_open => match item {
                Some(item) => p.take_others(item, &mut rx).await,
                None => others_open = false,
            },
        }
        let idle = rx.is_empty() && kafka_rx.as_ref().is_none_or(|k| k.is_empty());
        if idle && p.slots.available_permits() > 0 {
            p.flush().await;
        }
    }
    p.flush().await;
    while let Some(joined) = p.tasks.join_next().await {
        p.joined(joined);
    }
}

/// The next Kafka event; pending forever without a Kafka channel.
async fn recv(kafka: &mut Option<mpsc::Receiver<Incoming>>) -> Option<Incoming> {
    match kafka {
        Some(k) => k.recv().await,
        None => std::future::pending().await,
    }
}

impl<S: Sink> Pipeline<S> {
    fn new(sink: Arc<S>, metrics: Arc<Metrics>, cfg: PipelineConfig, shutdown: Shutdown) -> Self {
        let batch_size = cfg.batch_size.max(1);
        Pipeline {
            sink,
            metrics,
            slots: Arc::new(Semaphore::new(cfg.write_concurrency.max(1))),
            tasks: JoinSet::new(),
            batcher: Batcher::new(batch_size, cfg.flush_interval),
            refused: Vec::new(),
            batch_size,
            rules: cfg.rules,
            values: cfg.values,
            stop: shutdown.requested.clone(),
            shutdown,
            in_flight: (cfg.write_mode == WriteMode::Upsert).then(InFlight::default),
            held: None,
        }
    }

    /// The held Kafka event's decode ended: admitted, released at stop, or (its task
    /// died) failing the service.
    async fn held_done(&mut self, checked: Result<Option<Checked>, JoinError>) {
        let Held { item, .. } = self.held.take().expect("held");
        match checked {
            Ok(Some(checked)) => self.admit_checked(item, checked).await,
            Ok(None) => item.ack.release(),
            Err(e) => {
                self.joined(Err(e));
                drop(item);
            }
        }
    }
    /// Admits a Kafka event and what else is ready on its channel, up to one batch per
    /// wake-up; stops early once an event waits for the schema registry.
    async fn take_kafka(&mut self, item: Incoming, rx: &mut mpsc::Receiver<Incoming>) {
        self.admit(item, true).await;
        for _ in 1..self.batch_size {
            if self.held.is_some() {
                break;
            }
            match rx.try_recv() {
                Ok(item) => self.admit(item, true).await,
                Err(_) => break,
            }
        }
    }

    /// Admits a gRPC event or re-drive and what else is ready, up to one batch per
    /// wake-up.
    async fn take_others(&mut self, item: Incoming, rx: &mut mpsc::Receiver<Incoming>) {
        self.admit(item, false).await;
        for _ in 1..self.batch_size {
            match rx.try_recv() {
                Ok(item) => self.admit(item, false).await,
                Err(_) => break,
            }
        }
    }

    /// A task ended: one that died fails the service (its acks report themselves lost).
    fn joined(&self, joined: Result<(), JoinError>) {
        if let Err(e) = joined {
            self.shutdown.fail(format!(
                "a pipeline task died ({e}); its events are delivered again after a restart"
            ));
        }
    }

    /// Validates one event, then [`Self::admit_checked`]. A Kafka event (`from_kafka`)
    /// whose value needs the schema registry is decoded in a task of its own and held.
    async fn admit(&mut self, mut item: Incoming, from_kafka: bool) {
        if let Some(event) = item.valid.take() {
            return self.admit_checked(item, Ok(event)).await;
        }
        if !is_kafka_value(&item.ack) {
            let checked = self.rules.decode(&item.payload);
            return self.admit_checked(item, checked).await;
        }
        if from_kafka && self.values.needs_registry(&item.payload) {
            let (values, rules, stop) =
                (self.values.clone(), self.rules.clone(), self.stop.clone());
            let payload: Bytes = item.payload.clone();
            let task = tokio::spawn(async move { values.decode(&payload, &rules, &stop).await });
            self.held = Some(Held { item, task });
            return;
        }
        // Waits while the schema registry cannot answer; given up only at stop, leaving
        // the event unresolved (its offset is not committed).
        match self
            .values
            .decode(&item.payload, &self.rules, &self.stop)
            .await
        {
            Some(checked) => self.admit_checked(item, checked).await,
            None => item.ack.release(),
        }
    }

    /// A valid event joins the batch (writing it once full), a refused one joins the
    /// dead letters (sent once a batch of them is collected).
    async fn admit_checked(&mut self, item: Incoming, checked: Checked) {
        let Incoming {
            payload,
            valid: _,
            ack,
            received,
            trace,
        } = item;
        match checked {
            Ok(event) => {
                let pending = Pending {
                    id: doc_id::document_id(event.event_id(), ack.coordinates()),
                    event,
                    payload,
                    ack,
                    received,
                    trace,
                };
                if let Some(batch) = self.batcher.push(pending, Instant::now) {
                    self.spawn_write(batch).await;
                }
            }
            Err(rejection) => {
                let outcome = Outcome::Rejected(rejection);
                let letter = DeadLetter::of(payload, ack.origin(), &outcome)
                    .expect("a rejection is a refusal");
                self.refused.push(Refused {
                    letter,
                    ack,
                    outcome,
                    received,
                });
                if self.refused.len() >= self.batch_size {
                    self.spawn_dead_letters().await;
                }
            }
        }
    }

    /// Hands over the partial batch and the collected dead letters, if any.
    async fn flush(&mut self) {
        let batch = self.batcher.take();
        if !batch.is_empty() {
            self.spawn_write(batch).await;
        }
        if !self.refused.is_empty() {
            self.spawn_dead_letters().await;
        }
    }
}

/// Whether the event is a Kafka value (consumed, or a re-driven Kafka dead letter), read
/// in `KAFKA_VALUE_FORMAT`; gRPC events are Protobuf only.
fn is_kafka_value(ack: &Ack) -> bool {
    match ack {
        Ack::Kafka(_) => true,
        Ack::Grpc(_) => false,
        Ack::Redrive(r) => matches!(r.origin, Origin::Kafka { .. }),
    }
}

#[cfg(test)]
mod tests;

//! The one pipeline: both sources put `Incoming` events on one bounded channel; this
//! task validates each, dead-letters rejects, batches the rest and hands full batches
//! to the sink — several batches in flight, bounded by `WRITE_CONCURRENCY`. When every
//! write slot is busy the loop stops taking events, the channel fills and the sources
//! slow down: backpressure, never loss. On stop it closes the channel, drains it,
//! flushes the partial batch and waits for every write before returning.
use std::{future::Future, sync::Arc, time::Duration};

use mongodb::bson::oid::ObjectId;
use prost::Message;
use tokio::{
    sync::{mpsc, Semaphore},
    task::JoinSet,
    time::{sleep_until, Instant},
};
use tokio_util::sync::CancellationToken;

use crate::{
    ack::{Ack, Incoming, Payload},
    batcher::Batcher,
    stats::{Outcome, Stats},
    validate::{self, Rejection, ValidEvent},
};

/// A valid event waiting to be written.
#[derive(Debug)]
pub struct Pending {
    /// The document `_id`: the event id, or one derived from the Kafka coordinates.
    pub id: String,
    pub event: ValidEvent,
    pub ack: Ack,
    pub received: std::time::Instant,
}

/// Where a refused event came from, for the dead-letter record.
#[derive(Clone, Debug, PartialEq)]
pub enum Origin {
    Kafka {
        topic: Arc<str>,
        partition: i32,
        offset: i64,
    },
    Grpc,
}

impl Ack {
    /// The event's origin.
    pub fn origin(&self) -> Origin {
        match self {
            Ack::Kafka(k) => Origin::Kafka {
                topic: k.topic.clone(),
                partition: k.partition,
                offset: k.offset,
            },
            Ack::Grpc(_) => Origin::Grpc,
        }
    }
}

/// A refused event on its way to the dead-letter destination.
#[derive(Clone, Debug)]
pub struct DeadLetter {
    /// The original bytes (Kafka) or the event re-encoded (gRPC, write failures).
    pub payload: Vec<u8>,
    pub rejection: Rejection,
    pub origin: Origin,
}

/// Where batches and dead letters go. The MongoDB/Kafka implementation is
/// `sink::Store`; unit tests use an in-memory one.
pub trait Sink: Send + Sync + 'static {
    /// Writes a batch, retrying transient errors until it succeeds, and returns each
    /// event's outcome (permanently refused documents already dead-lettered).
    fn write(&self, batch: Vec<Pending>) -> impl Future<Output = Vec<(Pending, Outcome)>> + Send;
    /// Stores one dead letter, retrying until it is durable.
    fn dead_letter(&self, letter: DeadLetter) -> impl Future<Output = ()> + Send;
}

/// Pipeline tuning.
#[derive(Clone, Copy, Debug)]
pub struct PipelineConfig {
    pub batch_size: usize,
    pub flush_interval: Duration,
    pub write_concurrency: usize,
}

/// Runs the pipeline until `stop` is cancelled and everything taken is resolved.
pub async fn run<S: Sink>(
    mut rx: mpsc::Receiver<Incoming>,
    sink: Arc<S>,
    stats: Arc<Stats>,
    cfg: PipelineConfig,
    stop: CancellationToken,
) {
    let mut batcher = Batcher::new(cfg.batch_size, cfg.flush_interval);
    let slots = Arc::new(Semaphore::new(cfg.write_concurrency.max(1)));
    let mut tasks = JoinSet::new();
    let mut closing = false;
    loop {
        let deadline = batcher.deadline();
        tokio::select! {
            biased;
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            _ = stop.cancelled(), if !closing => {
                closing = true;
                rx.close();
            }
            _ = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                let batch = batcher.take();
                spawn_write(&mut tasks, &slots, &sink, &stats, batch).await;
            }
            item = rx.recv() => {
                let Some(item) = item else { break };
                stats.set_queue_depth(rx.len());
                if let Some(batch) = admit(item, &mut batcher, &mut tasks, &sink, &stats) {
                    spawn_write(&mut tasks, &slots, &sink, &stats, batch).await;
                }
            }
        }
    }
    let rest = batcher.take();
    if !rest.is_empty() {
        spawn_write(&mut tasks, &slots, &sink, &stats, rest).await;
    }
    while tasks.join_next().await.is_some() {}
    stats.set_queue_depth(0);
}

/// Validates one event: a valid one joins the batch (returning the batch if full), an
/// invalid one is dead-lettered and then acked as rejected.
fn admit<S: Sink>(
    item: Incoming,
    batcher: &mut Batcher<Pending>,
    tasks: &mut JoinSet<()>,
    sink: &Arc<S>,
    stats: &Arc<Stats>,
) -> Option<Vec<Pending>> {
    let Incoming {
        payload,
        ack,
        received,
    } = item;
    let checked = match payload {
        Payload::Encoded(bytes) => validate::decode(&bytes).map_err(|r| (r, bytes)),
        Payload::Decoded(event) => validate::check(event).map_err(|(r, e)| (r, e.encode_to_vec())),
    };
    match checked {
        Ok(event) => {
            let id = document_id(&event, &ack);
            let pending = Pending {
                id,
                event,
                ack,
                received,
            };
            batcher.push(pending, Instant::now)
        }
        Err((rejection, payload)) => {
            let letter = DeadLetter {
                payload,
                rejection: rejection.clone(),
                origin: ack.origin(),
            };
            let (sink, stats) = (sink.clone(), stats.clone());
            tasks.spawn(async move {
                sink.dead_letter(letter).await;
                let outcome = Outcome::Rejected(rejection);
                stats.record(ack.source(), &outcome, received.elapsed());
                ack.resolve(outcome);
            });
            None
        }
    }
}

/// The `_id`: the producer's event id; for a Kafka event without one, its coordinates
/// (so a redelivery can never make a second document); for a gRPC event without one,
/// a fresh ObjectId (such producers get no idempotent retries).
pub fn document_id(event: &ValidEvent, ack: &Ack) -> String {
    if !event.event_id.is_empty() {
        return event.event_id.clone();
    }
    match ack {
        Ack::Kafka(k) => format!("{}:{}:{}", k.topic, k.partition, k.offset),
        Ack::Grpc(_) => ObjectId::new().to_hex(),
    }
}

/// Waits for a write slot (backpressure), then writes the batch in its own task.
async fn spawn_write<S: Sink>(
    tasks: &mut JoinSet<()>,
    slots: &Arc<Semaphore>,
    sink: &Arc<S>,
    stats: &Arc<Stats>,
    batch: Vec<Pending>,
) {
    let permit = slots
        .clone()
        .acquire_owned()
        .await
        .expect("semaphore is never closed");
    let (sink, stats) = (sink.clone(), stats.clone());
    tasks.spawn(async move {
        let size = batch.len();
        let results = sink.write(batch).await;
        drop(permit);
        stats.batch_written(size);
        let done = std::time::Instant::now();
        crate::ack::resolve_all(results.into_iter().map(|(pending, outcome)| {
            let took = done.saturating_duration_since(pending.received);
            stats.record(pending.ack.source(), &outcome, took);
            (pending.ack, outcome)
        }));
    });
}

#[cfg(test)]
#[path = "pipeline_tests.rs"]
mod tests;

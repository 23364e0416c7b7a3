//! RedriveDeadLetters: reads dead letters back from the dead-letter collection
//! (`collection`) and the dead-letter topic (`topic`), re-validates each original
//! payload with the current validator, and puts the valid ones on the pipeline's
//! channel, validated (the pipeline does not validate them again), with a re-drive ack,
//! so they take the same batcher, writer and acks as any event and are stored under the
//! id they would have got when first received (`doc_id`): running it twice stores
//! nothing twice. Collection dead letters that were re-driven are
//! marked `redriven_at` and skipped by later runs; the topic has no marks, its replays
//! come back as duplicates. One re-drive runs at a time per instance; it streams its
//! progress and ends with `done = true`.
mod collection;
mod plan;
mod topic;

use std::{
    collections::HashSet,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use mongodb::{
    bson::{doc, Bson, Document},
    Database,
};
use rdkafka::ClientConfig;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::Status;
use tracing::{info, warn};

pub use plan::{plan, Plan};

use crate::{
    doc_id,
    event::{Ack, Incoming, Origin, RedriveAck, RequestAck},
    format::ValueDecoder,
    proto::ingest::v1::{IngestAck, RedriveProgress, RedriveRequest},
    stats::Stats,
    validate::{Rules, ValidEvent},
};

/// Dead letters handed to the pipeline at once; their outcomes are awaited together.
const CHUNK: usize = 500;
/// Progress is reported at least this often while dead letters are examined.
const REPORT_EVERY: Duration = Duration::from_secs(1);

/// The reason code counted for a dead letter whose payload is missing.
pub const NO_PAYLOAD: &str = "no_payload";
/// The reason code counted for a Kafka dead letter without an event id whose original
/// coordinates are unknown (its `_id` could not be the original one).
pub const NO_COORDINATES: &str = "no_source_coordinates";

/// One dead letter read back.
#[derive(Clone, Debug)]
pub struct Letter {
    /// The original payload.
    pub payload: Bytes,
    /// Where the event first came from; None when the record does not say.
    pub origin: Option<Origin>,
    /// The collection document's `_id` (to mark it); None for the topic.
    pub doc_id: Option<Bson>,
    /// Why the record cannot be re-driven at all, if it cannot.
    pub problem: Option<&'static str>,
}

/// The dead-letter topic, when Kafka is enabled.
#[derive(Clone)]
pub struct TopicSource {
    /// Client settings (bootstrap servers, security, KAFKA_PROPERTIES).
    pub client: ClientConfig,
    pub topic: String,
    /// The main consumer group; each re-drive reads in its own group named after it.
    pub group: String,
}

/// What a re-drive needs: where dead letters are, where events are stored, and the
/// pipeline's channel.
pub struct Redriver {
    pub db: Database,
    pub events_collection: String,
    pub dlq_collection: String,
    pub topic: Option<TopicSource>,
    pub tx: mpsc::Sender<Incoming>,
    /// Reads Kafka values in `KAFKA_VALUE_FORMAT`, as the pipeline does.
    pub values: ValueDecoder,
    /// The validator's rules, the pipeline's own.
    pub rules: Rules,
    pub stats: Arc<Stats>,
    pub stop: CancellationToken,
    pub tasks: TaskTracker,
}

/// The progress stream.
pub type ProgressStream = ReceiverStream<Result<RedriveProgress, Status>>;

impl Redriver {
    /// Starts a re-drive and returns its progress stream; FAILED_PRECONDITION while
    /// another one runs.
    pub fn start(self: &Arc<Self>, req: RedriveRequest) -> Result<ProgressStream, Status> {
        let plan = plan(req, self.topic.is_some())?;
        if !self.stats.begin_redrive() {
            return Err(Status::failed_precondition(
                "a re-drive is already running on this instance; wait for it to finish",
            ));
        }
        info!(?plan, "re-drive started");
        let (out, rx) = mpsc::channel(16);
        let this = self.clone();
        self.tasks.spawn(async move {
            let mut progress = RedriveProgress::default();
            let result = this.drive(&plan, &out, &mut progress).await;
            this.stats.end_redrive();
            match result {
                Ok(()) => {
                    info!(?progress, "re-drive done");
                    progress.done = true;
                    let _ = out.send(Ok(progress)).await;
                }
                Err(status) => {
                    warn!(?progress, error = %status.message(), "re-drive ended early");
                    let _ = out.send(Err(status)).await;
                }
            }
        });
        Ok(ReceiverStream::new(rx))
    }

    /// Re-drives the collection, then the topic, as the plan says.
    async fn drive(
        &self,
        plan: &Plan,
        out: &mpsc::Sender<Result<RedriveProgress, Status>>,
        progress: &mut RedriveProgress,
    ) -> Result<(), Status> {
        let mut report = Reporter::new(out, &self.stats);
        if plan.mongodb {
            let collection = self.db.collection::<Document>(&self.dlq_collection);
            let mut reader = collection::Reader::open(collection, plan).await?;
            progress.skipped += reader.skipped;
            report.maybe(progress).await?;
            while let Some(chunk) = reader.next_chunk(room(plan, progress)).await? {
                let marked = self.chunk(plan, chunk, progress).await?;
                if !plan.dry_run {
                    reader.mark(marked).await?;
                }
                report.maybe(progress).await?;
            }
        }
        if let (true, Some(source)) = (plan.kafka, &self.topic) {
            let mut reader = topic::Reader::open(source, plan, &self.tasks);
            while let Some(chunk) = reader.next_chunk(room(plan, progress)).await? {
                self.chunk(plan, chunk, progress).await?;
                report.maybe(progress).await?;
            }
        }
        Ok(())
    }

    /// Re-validates a payload as its source did, under the configured rules: a Kafka
    /// value in the configured value format, a gRPC event as Protobuf.
    async fn revalidate(
        &self,
        letter: &Letter,
    ) -> Result<Result<ValidEvent, &'static str>, Status> {
        if !matches!(letter.origin, Some(Origin::Kafka { .. })) {
            return Ok(self
                .rules
                .decode(&letter.payload)
                .map_err(|r| r.reason.code()));
        }
        let checked = self
            .values
            .decode(&letter.payload, &self.rules, &self.stop)
            .await
            .ok_or_else(stopping)?;
        Ok(checked.map_err(|r| r.reason.code()))
    }

    /// Re-validates a chunk and re-drives its valid dead letters (in a dry run, looks
    /// up which would be duplicates); returns the collection ids to mark.
    async fn chunk(
        &self,
        plan: &Plan,
        chunk: Vec<Letter>,
        progress: &mut RedriveProgress,
    ) -> Result<Vec<Bson>, Status> {
        if self.stop.is_cancelled() {
            return Err(stopping());
        }
        let valid = self.examine(chunk, progress).await?;
        if plan.dry_run {
            self.count_dry(&valid, progress).await?;
            return Ok(Vec::new());
        }
        let (marked, ack) = self.redrive(valid).await?;
        progress.stored += u64::from(ack.accepted);
        progress.duplicates += u64::from(ack.duplicates);
        progress.updated += u64::from(ack.updated);
        for r in &ack.rejected {
            count(progress, &r.reason);
        }
        Ok(marked)
    }

    /// Re-validates each dead letter of a chunk, counting those still invalid or
    /// without a way to their original `_id`; returns the valid ones with the origin
    /// their `_id` follows from.
    async fn examine(
        &self,
        chunk: Vec<Letter>,
        progress: &mut RedriveProgress,
    ) -> Result<Vec<(Letter, Origin, ValidEvent)>, Status> {
        let mut valid = Vec::new();
        for letter in chunk {
            progress.examined += 1;
            let checked = match letter.problem {
                Some(problem) => Err(problem),
                None => self.revalidate(&letter).await?,
            };
            match (checked, letter.origin.clone()) {
                (Err(reason), _) => count(progress, reason),
                (Ok(event), Some(origin)) => valid.push((letter, origin, event)),
                (Ok(event), None) if !event.event_id().is_empty() => {
                    // The id is the event's own; the origin only labels the document.
                    valid.push((letter, Origin::Grpc, event))
                }
                (Ok(_), None) => count(progress, NO_COORDINATES),
            }
        }
        Ok(valid)
    }

    /// Puts the valid dead letters on the pipeline's channel, validated (the pipeline
    /// does not validate them again), and awaits their outcomes; returns the collection
    /// ids to mark and the chunk's ack.
    async fn redrive(
        &self,
        valid: Vec<(Letter, Origin, ValidEvent)>,
    ) -> Result<(Vec<Bson>, IngestAck), Status> {
        let lost = self.stats.metrics().lost_acks();
        let (request, acked) = RequestAck::new(0, valid.len(), lost);
        let mut marked = Vec::with_capacity(valid.len());
        for (index, (letter, origin, event)) in valid.into_iter().enumerate() {
            marked.extend(letter.doc_id);
            let item = Incoming {
                payload: letter.payload,
                valid: Some(event),
                ack: Ack::Redrive(RedriveAck::new(origin, request.clone(), index as u32)),
                received: std::time::Instant::now(),
                trace: None,
            };
            let permit = tokio::select! {
                permit = self.tx.reserve() => permit.ok(),
                _ = self.stop.cancelled() => None,
            };
            if let Some(permit) = permit {
                permit.send(item);
            } else {
                item.ack.release();
                request.abandon("the server is stopping".into());
                return Err(stopping());
            }
        }
        drop(request);
        // Everything sent is on the pipeline, which resolves it even while stopping.
        let ack = acked
            .await
            .map_err(|_| Status::internal("the re-drive's outcomes were lost"))?
            .map_err(|why| Status::unavailable(format!("re-drive interrupted: {why}")))?;
        Ok((marked, ack))
    }

    /// A dry run's count: a valid event whose id is already stored is a duplicate; the
    /// rest would be stored.
    async fn count_dry(
        &self,
        valid: &[(Letter, Origin, ValidEvent)],
        progress: &mut RedriveProgress,
    ) -> Result<(), Status> {
        let ids: Vec<String> = valid
            .iter()
            .filter_map(|(_, origin, event)| original_id(event, origin))
            .collect();
        let mut stored = HashSet::new();
        if !ids.is_empty() {
            let mut cursor = self
                .db
                .collection::<Document>(&self.events_collection)
                .find(doc! { "_id": { "$in": &ids } })
                .projection(doc! { "_id": 1 })
                .await
                .map_err(mongo_error)?;
            while cursor.advance().await.map_err(mongo_error)? {
                if let Ok(id) = cursor.current().get_str("_id") {
                    stored.insert(id.to_string());
                }
            }
        }
        for (_, origin, event) in valid {
            match original_id(event, origin) {
                Some(id) if stored.contains(&id) => progress.duplicates += 1,
                _ => progress.stored += 1,
            }
        }
        Ok(())
    }
}

/// The `_id` a valid event gets (`doc_id::stable_id`); None for a gRPC event without
/// an id, which gets a fresh one.
fn original_id(event: &ValidEvent, origin: &Origin) -> Option<String> {
    doc_id::stable_id(event.event_id(), origin.coordinates())
}

fn count(progress: &mut RedriveProgress, reason: &str) {
    *progress
        .still_invalid
        .entry(reason.to_string())
        .or_default() += 1;
}

/// How many more dead letters the limit allows in the next chunk.
fn room(plan: &Plan, progress: &RedriveProgress) -> usize {
    let left = plan
        .limit
        .map_or(u64::MAX, |l| l.saturating_sub(progress.examined));
    left.min(CHUNK as u64) as usize
}

fn stopping() -> Status {
    Status::unavailable("the server is stopping; the re-drive stopped (run it again to go on)")
}

fn mongo_error(e: mongodb::error::Error) -> Status {
    Status::unavailable(format!("MongoDB: {}", crate::sink::classify::describe(&e)))
}

/// Sends progress every `CHUNK` examined dead letters or `REPORT_EVERY`, whichever
/// comes first, and keeps the stats' figures current.
struct Reporter<'a> {
    out: &'a mpsc::Sender<Result<RedriveProgress, Status>>,
    stats: &'a Stats,
    last: Instant,
    last_examined: u64,
}

impl<'a> Reporter<'a> {
    fn new(out: &'a mpsc::Sender<Result<RedriveProgress, Status>>, stats: &'a Stats) -> Self {
        Self {
            out,
            stats,
            last: Instant::now(),
            last_examined: 0,
        }
    }

    /// Reports when due; an error when the caller has gone away.
    async fn maybe(&mut self, progress: &RedriveProgress) -> Result<(), Status> {
        self.stats
            .redrive_progress(progress.examined, progress.stored);
        let due = progress.examined >= self.last_examined + CHUNK as u64
            || self.last.elapsed() >= REPORT_EVERY;
        if !due {
            return Ok(());
        }
        self.last = Instant::now();
        self.last_examined = progress.examined;
        self.out
            .send(Ok(progress.clone()))
            .await
            .map_err(|_| Status::cancelled("the caller went away"))
    }
}

//! The source loop's side of SeekConsumer: a `SeekJob` pauses its partitions, waits
//! until every offset in flight on them is resolved (or gives up after
//! `DRAIN_TIMEOUT`, moving nothing), then seeks, restarts each partition's tracker in a
//! new generation at the new offset, resumes fetching and commits the new position.
//! It never commits past an event that is not durable: the old position is drained
//! before the tracker moves.
use std::sync::{atomic::Ordering, Arc};

use rdkafka::{
    consumer::{CommitMode, Consumer},
    Offset, TopicPartitionList,
};
use tokio::time::Instant;
use tonic::Status;
use tracing::{info, warn};

use crate::{
    librdkafka::KAFKA_TIMEOUT,
    proto::ingest::v1::PartitionSeek,
    source::{
        acks::Offsets,
        consumer::IngestConsumer,
        offsets::OffsetTracker,
        seek::{SeekCommand, SeekOutcome, DRAIN_TIMEOUT},
    },
};

/// A seek the source loop is carrying out: its partitions are paused until every
/// offset in flight on them is resolved.
pub struct SeekJob {
    command: SeekCommand,
    deadline: Instant,
}

fn partition_list(topic: &str, partitions: impl IntoIterator<Item = i32>) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition(topic, p);
    }
    tpl
}

impl SeekJob {
    /// Pauses the command's partitions and starts waiting for them to drain.
    pub fn begin(command: SeekCommand, consumer: &IngestConsumer) -> Self {
        let job = SeekJob {
            command,
            deadline: Instant::now() + DRAIN_TIMEOUT,
        };
        let tpl = partition_list(&consumer.context().topic, job.partitions());
        if let Err(e) = consumer.pause(&tpl) {
            warn!(error = %e, "pausing the partitions to seek failed");
        }
        job
    }

    /// The partitions this seek moves.
    pub fn partitions(&self) -> impl Iterator<Item = i32> + '_ {
        self.command.targets.iter().map(|(p, _)| *p)
    }

    /// Whether every offset in flight on the partitions is resolved.
    pub fn drained(&self, offsets: &OffsetTracker) -> bool {
        self.partitions().all(|p| offsets.is_drained(p))
    }

    /// Whether the drain has taken too long.
    pub fn expired(&self) -> bool {
        Instant::now() >= self.deadline
    }

    /// Resumes fetching on the partitions, unless fetching is paused as a whole
    /// (PauseConsumer or backpressure; its resume covers them).
    fn resume(&self, consumer: &IngestConsumer) {
        let ctx = consumer.context();
        if ctx.fetch_paused.load(Ordering::SeqCst) {
            return;
        }
        if let Err(e) = consumer.resume(&partition_list(&ctx.topic, self.partitions())) {
            warn!(error = %e, "resuming the seeked partitions failed");
        }
    }

    /// Gives up: the events in flight did not become durable in time; nothing moved.
    pub fn abandon(self, consumer: &IngestConsumer) {
        self.resume(consumer);
        let parts: Vec<i32> = self.partitions().collect();
        warn!(partitions = ?parts, "seek abandoned: events in flight did not become durable");
        let _ = self.command.reply.send(Err(Status::unavailable(format!(
            "events in flight on partitions {parts:?} did not become durable within {} s \
             (/health says what holds them: MongoDB, the schema registry or the dead-letter \
             collection); nothing was moved",
            DRAIN_TIMEOUT.as_secs()
        ))));
    }

    /// Seeks the drained partitions, restarts their trackers at the new offsets,
    /// resumes fetching and commits the new positions; replies with what moved.
    pub async fn finish(self, consumer: &Arc<IngestConsumer>, offsets: &mut Offsets) {
        let mut lost = Vec::new();
        let mut moves = Vec::new();
        {
            let t = offsets.tracker();
            for &(p, to) in &self.command.targets {
                if t.is_assigned(p) {
                    moves.push((p, t.committable(p).or(t.committed(p)), to));
                } else {
                    lost.push(p);
                }
            }
        }
        let c = consumer.clone();
        let seeks = moves.clone();
        let done = tokio::task::spawn_blocking(move || seek_all(&c, seeks)).await;
        let (mut moved, mut failed) = match done {
            Ok(r) => r,
            Err(e) => (Vec::new(), vec![format!("the seek did not finish: {e}")]),
        };
        {
            // The loop took no message while the seek ran, so each partition is still
            // drained; should one not be, its tracker keeps the old generation, which
            // commits nothing before what it has seen resolved.
            moved.retain(|m| {
                let restarted = offsets.seek(m.partition, m.to_offset).is_some();
                if !restarted {
                    failed.push(format!(
                        "partition {} was seeked but its offsets could not restart",
                        m.partition
                    ));
                }
                restarted
            });
        }
        self.resume(consumer);
        commit(consumer, &moved).await;
        info!(?moved, ?lost, "seek done");
        let reply = if failed.is_empty() {
            Ok(SeekOutcome { moved, lost })
        } else {
            Err(Status::unavailable(format!(
                "{}; partitions moved: {:?}",
                failed.join("; "),
                moved.iter().map(|m| m.partition).collect::<Vec<_>>()
            )))
        };
        let _ = self.command.reply.send(reply);
    }
}

/// Seeks each partition (blocking); the position before is the tracker's, or else the
/// group's committed offset. Returns what moved and the errors.
fn seek_all(
    consumer: &IngestConsumer,
    moves: Vec<(i32, Option<i64>, i64)>,
) -> (Vec<PartitionSeek>, Vec<String>) {
    let topic = &consumer.context().topic;
    let unknown: Vec<i32> = moves
        .iter()
        .filter(|(_, from, _)| from.is_none())
        .map(|(p, _, _)| *p)
        .collect();
    let committed = if unknown.is_empty() {
        None
    } else {
        consumer
            .committed_offsets(partition_list(topic, unknown), KAFKA_TIMEOUT)
            .ok()
    };
    let mut moved = Vec::new();
    let mut failed = Vec::new();
    for (p, from, to) in moves {
        let from = from.unwrap_or_else(|| {
            match committed.as_ref().and_then(|c| c.find_partition(topic, p)) {
                Some(e) => match e.offset() {
                    Offset::Offset(o) => o,
                    _ => -1,
                },
                None => -1,
            }
        });
        match consumer.seek(topic, p, Offset::Offset(to), KAFKA_TIMEOUT) {
            Ok(()) => moved.push(PartitionSeek {
                partition: p,
                from_offset: from,
                to_offset: to,
            }),
            Err(e) => failed.push(format!("seeking partition {p} failed: {e}")),
        }
    }
    (moved, failed)
}

/// Commits the new positions synchronously (on a blocking thread). The tracker keeps
/// listing them as due until a commit report marks them, so the periodic commit
/// repeats them, and retries a failed one.
async fn commit(consumer: &Arc<IngestConsumer>, moved: &[PartitionSeek]) {
    if moved.is_empty() {
        return;
    }
    let offsets: Vec<(i32, i64)> = moved.iter().map(|m| (m.partition, m.to_offset)).collect();
    let tpl = consumer.context().offsets_list(&offsets);
    let c = consumer.clone();
    match tokio::task::spawn_blocking(move || c.commit(&tpl, CommitMode::Sync)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(error = %e, "committing the seeked positions failed; will retry"),
        Err(e) => warn!(error = %e, "committing the seeked positions did not finish"),
    }
}

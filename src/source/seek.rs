//! SeekConsumer: moves this instance's partitions to a new position without leaving an
//! event behind that is not durable. The admin side (`SeekHandle`) checks the request,
//! splits the requested partitions into owned and not owned, and resolves the target
//! to one offset per owned partition (watermarks, offsets_for_times). The source loop
//! carries the seek out (`SeekJob`): it pauses those partitions, waits until every
//! offset already handed to the pipeline is resolved, seeks, restarts each partition's
//! tracker in a new generation at the new offset, commits that offset and resumes
//! fetching (`seek_job`). Replayed events are absorbed by the idempotent `_id`.
use std::{collections::BTreeMap, sync::Arc, time::Duration};

use rdkafka::{consumer::Consumer, Offset, TopicPartitionList};
use tokio::sync::{mpsc, oneshot};
use tonic::Status;
use tracing::info;

use crate::{
    librdkafka::KAFKA_TIMEOUT,
    proto::ingest::v1::{
        self as pb, seek_consumer_request::Target as PbTarget, PartitionSeek, SeekPosition,
    },
    source::consumer::IngestConsumer,
};

/// How long a seek waits for the events in flight on its partitions to become durable.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Where to move the partitions.
#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    Earliest,
    Latest,
    /// The first offset whose message timestamp is at or after these epoch milliseconds.
    Timestamp(i64),
    /// Explicit offsets by partition.
    Offsets(BTreeMap<i32, i64>),
}

/// A checked SeekConsumerRequest.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub target: Target,
    /// The partitions asked for, sorted; None: every partition this instance owns.
    pub partitions: Option<Vec<i32>>,
}

fn invalid(message: impl Into<String>) -> Status {
    Status::invalid_argument(message)
}

/// Checks a request: a target is set, timestamps parse, partitions and offsets are not
/// negative, and listed partitions have an offset when explicit offsets are given.
pub fn plan(req: pb::SeekConsumerRequest) -> Result<Plan, Status> {
    let mut listed = req.partitions;
    if let Some(p) = listed.iter().find(|p| **p < 0) {
        return Err(invalid(format!("partition {p} is negative")));
    }
    listed.sort_unstable();
    listed.dedup();
    let target = match req.target {
        None => {
            return Err(invalid(
                "no target: set position (SEEK_POSITION_EARLIEST or SEEK_POSITION_LATEST), \
                 timestamp (RFC 3339), timestamp_ms or offsets",
            ))
        }
        Some(PbTarget::Position(p)) => match SeekPosition::try_from(p) {
            Ok(SeekPosition::Earliest) => Target::Earliest,
            Ok(SeekPosition::Latest) => Target::Latest,
            _ => {
                return Err(invalid(
                    "position must be SEEK_POSITION_EARLIEST or SEEK_POSITION_LATEST",
                ))
            }
        },
        Some(PbTarget::Timestamp(ts)) => Target::Timestamp(parse_rfc3339(&ts, "timestamp")?),
        Some(PbTarget::TimestampMs(ms)) if ms < 0 => {
            return Err(invalid(format!("timestamp_ms {ms} is before 1970")))
        }
        Some(PbTarget::TimestampMs(ms)) => Target::Timestamp(ms),
        Some(PbTarget::Offsets(o)) => {
            let offsets: BTreeMap<i32, i64> = o.offsets.into_iter().collect();
            if offsets.is_empty() {
                return Err(invalid("offsets is empty: give at least one partition"));
            }
            if let Some((p, o)) = offsets.iter().find(|(p, o)| **p < 0 || **o < 0) {
                return Err(invalid(format!(
                    "offset {o} for partition {p}: partitions and offsets are ≥ 0"
                )));
            }
            if let Some(p) = listed.iter().find(|p| !offsets.contains_key(p)) {
                return Err(invalid(format!(
                    "partition {p} is listed but has no offset in offsets"
                )));
            }
            if listed.is_empty() {
                listed = offsets.keys().copied().collect();
            }
            Target::Offsets(offsets)
        }
    };
    Ok(Plan {
        target,
        partitions: (!listed.is_empty()).then_some(listed),
    })
}

/// An RFC 3339 time as epoch milliseconds; INVALID_ARGUMENT naming `field` otherwise.
pub fn parse_rfc3339(value: &str, field: &str) -> Result<i64, Status> {
    chrono::DateTime::parse_from_rfc3339(value)
        .map(|t| t.timestamp_millis())
        .map_err(|e| {
            invalid(format!(
                "{field} {value:?} is not an RFC 3339 time such as 2026-11-25T10:00:00Z: {e}"
            ))
        })
}

/// What the source loop did: each moved partition, and those revoked meanwhile.
#[derive(Debug, Default)]
pub struct SeekOutcome {
    pub moved: Vec<PartitionSeek>,
    pub lost: Vec<i32>,
}

/// A seek for the source loop: each partition's resolved new offset.
#[derive(Debug)]
pub struct SeekCommand {
    pub targets: Vec<(i32, i64)>,
    pub reply: oneshot::Sender<Result<SeekOutcome, Status>>,
}

/// The admin side of SeekConsumer.
#[derive(Clone)]
pub struct SeekHandle {
    consumer: Arc<IngestConsumer>,
    commands: mpsc::Sender<SeekCommand>,
}

impl SeekHandle {
    /// A handle sending its seeks to the source loop that reads `commands`.
    pub fn new(consumer: Arc<IngestConsumer>, commands: mpsc::Sender<SeekCommand>) -> Self {
        Self { consumer, commands }
    }

    /// Carries out a SeekConsumer request.
    pub async fn seek(
        &self,
        req: pb::SeekConsumerRequest,
    ) -> Result<pb::SeekConsumerResponse, Status> {
        let plan = plan(req)?;
        let topic = self.consumer.context().topic.clone();
        let owned: Vec<i32> = self
            .consumer
            .assignment()
            .map_err(|e| Status::unavailable(format!("reading the assignment failed: {e}")))?
            .elements_for_topic(&topic)
            .iter()
            .map(|e| e.partition())
            .collect();
        let (mine, mut not_owned): (Vec<i32>, Vec<i32>) = match plan.partitions {
            None => (owned.clone(), Vec::new()),
            Some(listed) => listed.into_iter().partition(|p| owned.contains(p)),
        };
        if !not_owned.is_empty() {
            self.check_exist(&topic, &not_owned).await?;
        }
        if mine.is_empty() {
            return Ok(pb::SeekConsumerResponse {
                partitions: Vec::new(),
                not_owned,
            });
        }
        let consumer = self.consumer.clone();
        let target = plan.target;
        let targets = tokio::task::spawn_blocking(move || resolve(&consumer, &target, &mine))
            .await
            .map_err(|e| Status::internal(format!("resolving the target failed: {e}")))??;
        info!(?targets, "seek requested");
        let (reply, answer) = oneshot::channel();
        let stopped = || Status::unavailable("the Kafka source has stopped (shutting down)");
        self.commands
            .send(SeekCommand { targets, reply })
            .await
            .map_err(|_| stopped())?;
        let outcome = answer.await.map_err(|_| stopped())??;
        not_owned.extend(outcome.lost);
        not_owned.sort_unstable();
        Ok(pb::SeekConsumerResponse {
            partitions: outcome.moved,
            not_owned,
        })
    }

    /// Checks that the partitions nobody here owns exist: they may be another
    /// member's, or not exist at all (FAILED_PRECONDITION without the topic,
    /// INVALID_ARGUMENT past its partition count).
    async fn check_exist(&self, topic: &str, partitions: &[i32]) -> Result<(), Status> {
        let (consumer, name) = (self.consumer.clone(), topic.to_string());
        let count = tokio::task::spawn_blocking(move || partition_count(&consumer, &name))
            .await
            .map_err(|e| Status::internal(format!("reading the topic failed: {e}")))??;
        if count == 0 {
            return Err(Status::failed_precondition(format!(
                "topic {topic} does not exist on the brokers"
            )));
        }
        if let Some(&p) = partitions.iter().find(|&&p| p >= count) {
            return Err(Status::invalid_argument(format!(
                "partition {p} does not exist: topic {topic} has {count} partitions (0 to {})",
                count - 1
            )));
        }
        Ok(())
    }
}

/// The topic's partition count, from the brokers' metadata.
fn partition_count(consumer: &IngestConsumer, topic: &str) -> Result<i32, Status> {
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .map_err(|e| kafka_error("reading the topic's metadata failed", e))?;
    let count = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map_or(0, |t| t.partitions().len());
    Ok(count as i32)
}

fn kafka_error(what: &str, e: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("{what}: {e}"))
}

/// The log start and end of a partition.
fn watermarks(consumer: &IngestConsumer, partition: i32) -> Result<(i64, i64), Status> {
    let topic = &consumer.context().topic;
    consumer
        .fetch_watermarks(topic, partition, KAFKA_TIMEOUT)
        .map_err(|e| {
            kafka_error(
                &format!("reading the watermarks of partition {partition}"),
                e,
            )
        })
}

/// One offset per partition for `target` (blocking: librdkafka requests).
fn resolve(
    consumer: &IngestConsumer,
    target: &Target,
    partitions: &[i32],
) -> Result<Vec<(i32, i64)>, Status> {
    let topic = &consumer.context().topic;
    let times = match target {
        Target::Timestamp(ms) => {
            let mut tpl = TopicPartitionList::new();
            for &p in partitions {
                tpl.add_partition_offset(topic, p, Offset::Offset(*ms))
                    .map_err(|e| kafka_error("building the request", e))?;
            }
            Some(
                consumer
                    .offsets_for_times(tpl, KAFKA_TIMEOUT)
                    .map_err(|e| kafka_error("looking up offsets for the timestamp", e))?,
            )
        }
        _ => None,
    };
    partitions
        .iter()
        .map(|&p| {
            let offset = match target {
                Target::Earliest => watermarks(consumer, p)?.0,
                Target::Latest => watermarks(consumer, p)?.1,
                Target::Timestamp(_) => {
                    let found = times
                        .as_ref()
                        .and_then(|t| t.find_partition(topic, p))
                        .map(|e| (e.offset(), e.error()));
                    match found {
                        Some((Offset::Offset(o), Ok(()))) => o,
                        // No message at or after the time: the log end.
                        Some((Offset::End, Ok(()))) => watermarks(consumer, p)?.1,
                        other => {
                            return Err(Status::unavailable(format!(
                                "no offset for the timestamp on partition {p}: {other:?}"
                            )))
                        }
                    }
                }
                Target::Offsets(map) => {
                    let o = map[&p];
                    let (low, high) = watermarks(consumer, p)?;
                    if o < low || o > high {
                        return Err(Status::out_of_range(format!(
                            "offset {o} of partition {p} is outside its log, {low}..={high}"
                        )));
                    }
                    o
                }
            };
            Ok((p, offset))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::{PartitionOffsets, SeekConsumerRequest};
    use tonic::Code;

    fn req(target: PbTarget, partitions: Vec<i32>) -> SeekConsumerRequest {
        SeekConsumerRequest {
            target: Some(target),
            partitions,
        }
    }

    #[test]
    fn targets_are_checked_and_parsed() {
        let p = plan(req(PbTarget::Position(1), vec![2, 0, 2])).unwrap();
        assert_eq!(p.target, Target::Earliest);
        assert_eq!(p.partitions, Some(vec![0, 2]));
        let p = plan(req(
            PbTarget::Timestamp("2026-11-25T10:00:00+01:00".into()),
            vec![],
        ))
        .unwrap();
        assert_eq!(p.target, Target::Timestamp(1_795_597_200_000));
        assert_eq!(p.partitions, None, "empty: every owned partition");
        let p = plan(req(PbTarget::TimestampMs(5), vec![])).unwrap();
        assert_eq!(p.target, Target::Timestamp(5));
        for bad in [
            SeekConsumerRequest::default(),
            req(PbTarget::Position(0), vec![]),
            req(PbTarget::Timestamp("yesterday".into()), vec![]),
            req(PbTarget::TimestampMs(-1), vec![]),
            req(PbTarget::Position(2), vec![-1]),
        ] {
            let err = plan(bad.clone()).unwrap_err();
            assert_eq!(err.code(), Code::InvalidArgument, "{bad:?}");
        }
        let err = plan(req(PbTarget::Timestamp("yesterday".into()), vec![])).unwrap_err();
        assert!(err.message().contains("RFC 3339"), "{}", err.message());
    }

    #[test]
    fn explicit_offsets_name_their_partitions() {
        let offsets = |pairs: &[(i32, i64)]| {
            PbTarget::Offsets(PartitionOffsets {
                offsets: pairs.iter().copied().collect(),
            })
        };
        let p = plan(req(offsets(&[(3, 7), (1, 0)]), vec![])).unwrap();
        assert_eq!(p.partitions, Some(vec![1, 3]));
        assert_eq!(p.target, Target::Offsets([(1, 0), (3, 7)].into()));
        let p = plan(req(offsets(&[(3, 7), (1, 0)]), vec![3])).unwrap();
        assert_eq!(p.partitions, Some(vec![3]), "a listed subset");
        for bad in [
            req(offsets(&[]), vec![]),
            req(offsets(&[(0, -5)]), vec![]),
            req(offsets(&[(0, 5)]), vec![1]),
        ] {
            assert_eq!(plan(bad).unwrap_err().code(), Code::InvalidArgument);
        }
    }
}

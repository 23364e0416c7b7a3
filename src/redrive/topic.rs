//! Re-driving from the dead-letter topic: a consumer of its own, in a consumer group of
//! its own (so the main group's offsets and members are untouched), assigned every
//! partition from its start — or from the first offset at `since` — up to the high
//! watermark each had when the re-drive began. Records are filtered by their `reason`
//! header and their timestamp (the time they were dead-lettered); the original origin
//! comes from the `source_topic`, `source_partition` and `source_offset` headers.
//! librdkafka's calls block, so the reading runs on a blocking thread and hands
//! dead letters over a channel.
use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use bytes::Bytes;
use rdkafka::{
    consumer::{BaseConsumer, Consumer},
    message::{BorrowedMessage, Headers, Message},
    Offset, TopicPartitionList,
};
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;
use tonic::Status;
use tracing::{debug, info};

use super::{Letter, Plan, TopicSource, REPORT_EVERY};
use crate::{event::Origin, librdkafka::KAFKA_TIMEOUT};

/// How long the topic may deliver nothing while partitions are short of their end.
const IDLE_LIMIT: Duration = Duration::from_secs(30);

type Item = Result<Letter, Status>;

/// An open read of the topic.
pub struct Reader {
    rx: mpsc::Receiver<Item>,
}

impl Reader {
    /// Starts reading on a blocking thread of `tasks`; it stops when the reader is
    /// dropped.
    pub fn open(source: &TopicSource, plan: &Plan, tasks: &TaskTracker) -> Self {
        let (tx, rx) = mpsc::channel(1024);
        let (source, plan) = (source.clone(), plan.clone());
        tasks.spawn_blocking(move || {
            if let Err(status) = read(&source, &plan, &tx) {
                let _ = tx.blocking_send(Err(status));
            }
        });
        Self { rx }
    }

    /// The dead letters that arrive within a second, at most `max` (possibly none);
    /// None once the topic is read to its end (or `max` is 0).
    pub async fn next_chunk(&mut self, max: usize) -> Result<Option<Vec<Letter>>, Status> {
        if max == 0 {
            return Ok(None);
        }
        let deadline = tokio::time::Instant::now() + REPORT_EVERY;
        let mut chunk = Vec::new();
        while chunk.len() < max {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(Ok(letter))) => chunk.push(letter),
                Ok(Some(Err(status))) => return Err(status),
                Ok(None) if chunk.is_empty() => return Ok(None),
                Ok(None) | Err(_) => break,
            }
        }
        Ok(Some(chunk))
    }
}

fn kafka_error(what: &str, e: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("dead-letter topic: {what}: {e}"))
}

/// Reads the topic to the ends it had at the start, sending the dead letters the plan
/// takes; returns early once the receiver is gone.
fn read(source: &TopicSource, plan: &Plan, tx: &mpsc::Sender<Item>) -> Result<(), Status> {
    let topic = source.topic.as_str();
    let group = format!("{}-redrive-{:016x}", source.group, rand::random::<u64>());
    let consumer = consumer(source, &group)?;
    let partitions = partitions(&consumer, topic)?;
    let (assignment, ends) = assignment(&consumer, topic, &partitions, plan.since)?;
    info!(topic, %group, ?ends, "reading the dead-letter topic");
    if ends.is_empty() {
        return Ok(());
    }
    consumer
        .assign(&assignment)
        .map_err(|e| kafka_error("assigning the partitions", e))?;
    drain(&consumer, topic, ends, plan, tx)
}

/// A consumer in `group`, a group of its own: nothing committed, nothing stored.
fn consumer(source: &TopicSource, group: &str) -> Result<BaseConsumer, Status> {
    source
        .client
        .clone()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .map_err(|e| kafka_error("creating the consumer", e))
}

/// The topic's partitions (none when it does not exist).
fn partitions(consumer: &BaseConsumer, topic: &str) -> Result<Vec<i32>, Status> {
    let metadata = consumer
        .fetch_metadata(Some(topic), KAFKA_TIMEOUT)
        .map_err(|e| kafka_error("reading metadata", e))?;
    Ok(metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_default())
}

/// Where each partition is read from (its start, or its first offset at `since`) and
/// the high watermark it is read to; partitions with nothing in between are left out.
fn assignment(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: &[i32],
    since: Option<i64>,
) -> Result<(TopicPartitionList, HashMap<i32, i64>), Status> {
    let starts = match since {
        Some(since) if !partitions.is_empty() => {
            let mut tpl = TopicPartitionList::new();
            for &p in partitions {
                tpl.add_partition_offset(topic, p, Offset::Offset(since))
                    .map_err(|e| kafka_error("building the request", e))?;
            }
            Some(
                consumer
                    .offsets_for_times(tpl, KAFKA_TIMEOUT)
                    .map_err(|e| kafka_error("looking up offsets for since", e))?,
            )
        }
        _ => None,
    };
    let mut ends: HashMap<i32, i64> = HashMap::new();
    let mut assignment = TopicPartitionList::new();
    for &p in partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, KAFKA_TIMEOUT)
            .map_err(|e| kafka_error(&format!("watermarks of partition {p}"), e))?;
        let start = match starts.as_ref().and_then(|s| s.find_partition(topic, p)) {
            Some(e) => match e.offset() {
                Offset::Offset(o) => o.max(low),
                _ => high,
            },
            None => low,
        };
        if start < high {
            assignment
                .add_partition_offset(topic, p, Offset::Offset(start))
                .map_err(|e| kafka_error("building the assignment", e))?;
            ends.insert(p, high);
        }
    }
    Ok((assignment, ends))
}

/// Polls until every partition of `ends` is read to its end, sending the dead letters
/// the plan takes; an error when the topic delivers nothing for [`IDLE_LIMIT`].
fn drain(
    consumer: &BaseConsumer,
    topic: &str,
    mut ends: HashMap<i32, i64>,
    plan: &Plan,
    tx: &mpsc::Sender<Item>,
) -> Result<(), Status> {
    let mut heard = Instant::now();
    while !ends.is_empty() {
        if tx.is_closed() {
            return Ok(());
        }
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                heard = Instant::now();
                let Some(&end) = ends.get(&m.partition()) else {
                    continue;
                };
                if m.offset() + 1 >= end {
                    ends.remove(&m.partition());
                }
                if m.offset() >= end {
                    continue;
                }
                if let Some(letter) = from_message(&m, plan) {
                    if tx.blocking_send(Ok(letter)).is_err() {
                        return Ok(());
                    }
                }
            }
            Some(Err(e)) => debug!(error = %e, "dead-letter topic consumer error"),
            None => {
                ended_by_position(consumer, &mut ends);
                if !ends.is_empty() && heard.elapsed() >= IDLE_LIMIT {
                    return Err(Status::unavailable(format!(
                        "the dead-letter topic {topic} delivered nothing for {} s; \
                         partitions {:?} were not read to their end",
                        IDLE_LIMIT.as_secs(),
                        ends.keys().collect::<Vec<_>>()
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Removes the partitions whose position has reached their end: offsets without a
/// record (transaction markers) end no partition by a message, the position tells.
fn ended_by_position(consumer: &BaseConsumer, ends: &mut HashMap<i32, i64>) {
    if let Ok(positions) = consumer.position() {
        for e in positions.elements() {
            if let Offset::Offset(o) = e.offset() {
                if ends.get(&e.partition()).is_some_and(|end| o >= *end) {
                    ends.remove(&e.partition());
                }
            }
        }
    }
}

/// A record as a `Letter`, when the plan takes its reason and time.
fn from_message(m: &BorrowedMessage<'_>, plan: &Plan) -> Option<Letter> {
    let headers: Vec<(String, String)> = m
        .headers()
        .map(|h| {
            h.iter()
                .filter_map(|x| {
                    let v = String::from_utf8_lossy(x.value?).into_owned();
                    Some((x.key.to_string(), v))
                })
                .collect()
        })
        .unwrap_or_default();
    letter(
        &headers,
        m.payload().unwrap_or_default(),
        m.timestamp().to_millis(),
        plan,
    )
}

/// A dead letter from its headers, payload and timestamp, when the plan takes it.
fn letter(
    headers: &[(String, String)],
    payload: &[u8],
    at_ms: Option<i64>,
    plan: &Plan,
) -> Option<Letter> {
    let header = |key: &str| {
        headers
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    if !plan.takes(header("reason").unwrap_or_default(), at_ms) {
        return None;
    }
    let origin = match (
        header("source_topic"),
        header("source_partition").and_then(|p| p.parse().ok()),
        header("source_offset").and_then(|o| o.parse().ok()),
    ) {
        (Some(topic), Some(partition), Some(offset)) => Some(Origin::Kafka {
            topic: topic.into(),
            partition,
            offset,
        }),
        _ => None,
    };
    Some(Letter {
        payload: Bytes::copy_from_slice(payload),
        origin,
        doc_id: None,
        problem: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn plan(reasons: &[&str], since: Option<i64>) -> Plan {
        Plan {
            mongodb: false,
            kafka: true,
            reasons: reasons.iter().map(|r| r.to_string()).collect(),
            since,
            until: None,
            dry_run: false,
            limit: None,
        }
    }

    #[test]
    fn the_origin_comes_from_the_source_headers() {
        let h = headers(&[
            ("reason", "invalid_ts"),
            ("detail", "x"),
            ("source_topic", "sales"),
            ("source_partition", "1"),
            ("source_offset", "99"),
        ]);
        let l = letter(&h, b"abc", Some(5), &plan(&[], None)).unwrap();
        assert_eq!(l.payload.as_ref(), b"abc");
        assert_eq!(
            l.origin,
            Some(Origin::Kafka {
                topic: "sales".into(),
                partition: 1,
                offset: 99
            })
        );
        let partial = headers(&[("reason", "invalid_ts"), ("source_offset", "x")]);
        assert_eq!(
            letter(&partial, b"", None, &plan(&[], None))
                .unwrap()
                .origin,
            None
        );
    }

    #[test]
    fn reason_and_time_filter_records() {
        let h = headers(&[("reason", "invalid_qty")]);
        assert!(letter(&h, b"", Some(5), &plan(&["invalid_ts"], None)).is_none());
        assert!(letter(&h, b"", Some(5), &plan(&["invalid_qty"], None)).is_some());
        assert!(letter(&h, b"", Some(5), &plan(&[], Some(6))).is_none());
    }
}

//! Day-two operations: SeekConsumer (replay from a time, skip to the end, partitions
//! another instance owns), RedriveDeadLetters (from the collection and the topic,
//! twice, and as a dry run), and `ingestctl seek` / `ingestctl redrive`. Shared
//! set-up is here; the tests are in `dayops/`.
mod ingestctl;
mod redrive;
mod seek;

use std::time::Duration;

use mongodb::bson::{doc, spec::BinarySubtype, Binary, DateTime, Document};
use sales_ingest::proto::sales::v1::SalesEvent;

use crate::helpers::*;

/// Waits until the group's committed offsets are `ends`.
pub async fn wait_committed(app: &TestApp, ends: Vec<i64>, what: &str) {
    let (topic, group) = (app.topic.clone(), app.group.clone());
    wait_until(Duration::from_secs(60), what, || {
        let (topic, group, ends) = (topic.clone(), group.clone(), ends.clone());
        async move { committed(&topic, &group, ends.len() as i32) == ends }
    })
    .await;
}

/// Waits until this instance has `n` partitions assigned.
pub async fn wait_assigned(app: &TestApp, n: usize) {
    let stats = app.stats.clone();
    wait_until(Duration::from_secs(30), "partitions assigned", || {
        let got = stats.snapshot().partitions.len();
        async move { got == n }
    })
    .await;
}

pub fn payloads(prefix: &str, n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| encode(&valid_event(i, &format!("{prefix}-{i}"))))
        .collect()
}

/// (stored, duplicate) as the Kafka source counted them.
pub fn kafka_counts(app: &TestApp) -> (u64, u64) {
    let k = app.stats.snapshot().kafka.unwrap_or_default();
    (k.stored, k.duplicate)
}

pub fn binary(bytes: Vec<u8>) -> Binary {
    Binary {
        subtype: BinarySubtype::Generic,
        bytes,
    }
}

/// A dead letter as the collection holds it, for a gRPC event.
pub fn grpc_letter(reason: &str, payload: Vec<u8>) -> Document {
    doc! {
        "reason": reason,
        "detail": "refused by an older rule",
        "source": "grpc",
        "payload": binary(payload),
        "dead_lettered_at": DateTime::now(),
    }
}

/// An event that is valid under the current rules.
pub fn now_valid(id: &str) -> Vec<u8> {
    encode(&valid_event(1, id))
}

/// An event the current rules refuse (qty 0).
pub fn still_refused(id: &str) -> Vec<u8> {
    encode(&SalesEvent {
        qty: 0,
        ..valid_event(2, id)
    })
}

/// Dead letters in the collection: 3 valid now (one of them already stored), one from
/// Kafka without an event id, 2 still invalid, one re-driven earlier.
pub async fn seed_collection(app: &TestApp, kafka_topic: &str) {
    app.ingest(vec![valid_event(0, "r-dup")]).await;
    let mut kafka = grpc_letter("invalid_ts", now_valid(""));
    kafka.insert("source", "kafka");
    kafka.insert("source_topic", kafka_topic);
    kafka.insert("source_partition", 2);
    kafka.insert("source_offset", 41_i64);
    kafka.insert("dlq_topic_error", "the topic refused it");
    let mut earlier = grpc_letter("invalid_ts", now_valid("r-earlier"));
    earlier.insert("redriven_at", DateTime::now());
    let letters = vec![
        grpc_letter("invalid_ts", now_valid("r-0")),
        grpc_letter("reserved_event_id", now_valid("r-1")),
        grpc_letter("invalid_ts", now_valid("r-dup")),
        kafka,
        grpc_letter("invalid_qty", still_refused("r-bad")),
        grpc_letter("malformed", vec![0xff, 0xff, 0xff]),
        earlier,
    ];
    app.db
        .collection::<Document>("raw_sales_dlq")
        .insert_many(letters)
        .await
        .unwrap();
}

pub async fn marked(app: &TestApp) -> u64 {
    app.db
        .collection::<Document>("raw_sales_dlq")
        .count_documents(doc! { "redriven_at": { "$exists": true } })
        .await
        .unwrap()
}

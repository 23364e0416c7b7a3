//! The cut-over from the Python service: it stored the events at offsets 0..N of the
//! topic the way it writes them (MongoDB's ObjectId `_id`, `ts` the string sent, a float
//! `processed_at`) but committed the group only at N−k; sales-ingest takes over the group
//! in `DOCUMENT_FORMAT=legacy`, consumes the k overlap events again and stores none of
//! them twice: with the old service's unique `event_id` index (an 11000 on it means
//! already stored), and without it through `LEGACY_EVENT_ID_LOOKUP`.
use std::time::Duration;

use mongodb::{
    bson::{doc, oid::ObjectId, Document},
    options::IndexOptions,
    IndexModel,
};
use rdkafka::{
    consumer::{BaseConsumer, CommitMode, Consumer},
    ClientConfig, Offset, TopicPartitionList,
};

use crate::{backends::backends, helpers::*};

const N: usize = 40;
const K: usize = 15;

fn event_id(i: usize) -> String {
    format!("cut-{i}")
}

/// Commits `offset` on partition 0 of `topic` for `group`, as the old service last did.
fn commit(topic: &str, group: &str, offset: i64) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &backends().kafka)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(offset))
        .unwrap();
    // The group's coordinator may take a moment to be found: NotCoordinator until then.
    let mut tries = 0;
    while let Err(e) = consumer.commit(&tpl, CommitMode::Sync) {
        tries += 1;
        assert!(tries < 60, "commit: {e}");
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(committed(topic, group, 1), vec![offset]);
}

/// The old service's state: events 0..N stored its way, the group committed at N−k.
async fn old_service(unique_index: bool) -> (String, String, String) {
    let (topic, group, database) = (unique("cut"), unique("cut_group"), unique("cut_db"));
    create_topic(&topic, 1).await;
    let events: Vec<_> = (0..N).map(|i| valid_event(i, &event_id(i))).collect();
    produce(&topic, 1, &events.iter().map(encode).collect::<Vec<_>>()).await;
    let coll = mongo_client()
        .await
        .database(&database)
        .collection::<Document>("raw_sales");
    if unique_index {
        let index = IndexModel::builder()
            .keys(doc! { "event_id": 1 })
            .options(IndexOptions::builder().unique(true).build())
            .build();
        coll.create_index(index).await.unwrap();
    }
    let docs: Vec<Document> = events
        .iter()
        .map(|e| {
            doc! {
                "_id": ObjectId::new(),
                "event_id": &e.event_id,
                "sku": &e.sku,
                "qty": e.qty,
                "price": e.price,
                "ts": &e.ts,
                "processed_at": 1_795_600_800.25,
            }
        })
        .collect();
    coll.insert_many(docs).await.unwrap();
    commit(&topic, &group, (N - K) as i64);
    (topic, group, database)
}

async fn take_over(unique_index: bool, extra: &[(&str, &str)]) {
    let (topic, group, database) = old_service(unique_index).await;
    let mut settings = vec![("document-format".to_string(), "legacy".to_string())];
    settings.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let app = spawn_app(AppOptions {
        topic: Some(topic.clone()),
        group: Some(group.clone()),
        database: Some(database),
        extra: settings,
        ..Default::default()
    })
    .await;
    let stats = app.stats.clone();
    wait_until(
        Duration::from_secs(60),
        "the k overlap events resolved",
        || {
            let s = stats.snapshot();
            async move {
                let k = s.kafka.unwrap();
                k.stored + k.duplicate + k.rejected + k.failed >= K as u64
            }
        },
    )
    .await;
    let s = app.stats.snapshot();
    let k = s.kafka.unwrap();
    assert_eq!(
        (k.stored, k.duplicate, k.rejected, k.failed),
        (0, K as u64, 0, 0),
        "the overlap is counted as duplicates, nothing refused or dead-lettered"
    );
    let coll = app.db.collection::<Document>("raw_sales");
    assert_eq!(
        coll.count_documents(doc! {}).await.unwrap(),
        N as u64,
        "exactly N documents"
    );
    assert_eq!(
        coll.count_documents(doc! { "_id": { "$type": "string" } })
            .await
            .unwrap(),
        0,
        "no event stored a second time under its own _id"
    );
    wait_until(Duration::from_secs(30), "the group committed at N", || {
        let (t, g) = (topic.clone(), group.clone());
        async move { committed(&t, &g, 1) == vec![N as i64] }
    })
    .await;
    assert_eq!(s.rejected_by_reason.values().sum::<u64>(), 0);
    let dlq = consume_count(&format!("{topic}.dlq")).await;
    assert_eq!(dlq, 0, "nothing dead-lettered");
    app.stop().await;
}

/// Messages in a dead-letter topic, 0 when it was never created.
async fn consume_count(topic: &str) -> usize {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &backends().kafka)
        .set("group.id", unique("dlq_count"))
        .create()
        .expect("consumer");
    match consumer.fetch_watermarks(topic, 0, Duration::from_secs(5)) {
        Ok((low, high)) => (high - low) as usize,
        Err(_) => 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_old_unique_event_id_index_the_overlap_is_duplicates() {
    take_over(true, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_index_legacy_event_id_lookup_finds_the_old_documents() {
    take_over(false, &[("legacy-event-id-lookup", "true")]).await;
}

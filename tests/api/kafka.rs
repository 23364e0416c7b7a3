//! Kafka → MongoDB: storing, dead-lettering, committing, idempotent replays, pause.
use std::time::Duration;

use mongodb::bson::{doc, Bson, Document};
use sales_ingest::proto::{
    ingest::v1::{PauseConsumerRequest, ResumeConsumerRequest},
    sales::v1::SalesEvent,
};

use crate::helpers::*;

/// The invalid event number `i` of the mix and the reason it must be rejected with.
fn invalid(i: usize) -> (Vec<u8>, &'static str) {
    let base = valid_event(i, &format!("bad-{i}"));
    match i % 5 {
        0 => (vec![0xff, 0xff, 0xff, 0x01], "malformed"),
        1 => (
            encode(&SalesEvent {
                sku: String::new(),
                ..base
            }),
            "missing_sku",
        ),
        2 => (encode(&SalesEvent { qty: 0, ..base }), "invalid_qty"),
        3 => (
            encode(&SalesEvent {
                price: f64::NAN,
                ..base
            }),
            "invalid_price",
        ),
        _ => (
            encode(&SalesEvent {
                ts: "not a time".into(),
                ..base
            }),
            "invalid_ts",
        ),
    }
}

/// Checks that each partition's high watermark (ListOffsets) is `ends`, the count
/// produced to it, and waits until the group's committed offsets reach it.
async fn wait_committed_to_end(app: &TestApp, ends: Vec<i64>, what: &str) {
    let partitions = ends.len() as i32;
    let highs: Vec<i64> = watermarks_at(&crate::backends::backends().kafka, &app.topic, partitions)
        .iter()
        .map(|w| w.1)
        .collect();
    assert_eq!(highs, ends, "the high watermarks are the counts produced");
    let (topic, group) = (app.topic.clone(), app.group.clone());
    wait_until(Duration::from_secs(60), what, || {
        let (topic, group, ends) = (topic.clone(), group.clone(), ends.clone());
        async move {
            let got = committed(&topic, &group, partitions);
            if got != ends {
                eprintln!("committed {got:?}, ends {ends:?}");
            }
            got == ends
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_events_are_stored_once_invalid_ones_dead_lettered_and_offsets_committed() {
    const PARTITIONS: i32 = 3;
    let app = spawn_app(AppOptions::default()).await;
    create_topic(&app.topic, PARTITIONS).await;
    // 10,000 events, 1% invalid, spread over the partitions.
    let mut payloads = Vec::new();
    let mut expected_reasons = Vec::new();
    for i in 0..10_000 {
        if i % 100 == 50 {
            let (bytes, reason) = invalid(i / 100);
            payloads.push(bytes);
            expected_reasons.push(reason);
        } else {
            payloads.push(encode(&valid_event(i, &format!("k-{i}"))));
        }
    }
    produce(&app.topic, PARTITIONS, &payloads).await;

    let stats = app.stats.clone();
    wait_until(
        Duration::from_secs(90),
        "9,900 stored and 100 rejected",
        || {
            let s = stats.snapshot();
            async move { s.kafka.unwrap().stored == 9_900 && s.kafka.unwrap().rejected == 100 }
        },
    )
    .await;
    wait_committed_to_end(&app, vec![3334, 3333, 3333], "offsets committed to the end").await;
    assert_eq!(
        app.stored().await,
        9_900,
        "exactly the valid events are stored"
    );

    // The stored shape: the Python service's fields, dates as BSON dates.
    let coll = app.db.collection::<Document>("raw_sales");
    let d = coll
        .find_one(doc! { "_id": "k-1" })
        .await
        .unwrap()
        .expect("k-1 stored");
    assert_eq!(d.get_str("event_id").unwrap(), "k-1");
    assert_eq!(d.get_str("source").unwrap(), "kafka");
    assert_eq!(d.get_str("sku").unwrap(), "SKU-1");
    assert_eq!(d.get_i32("qty").unwrap(), 2);
    assert!(matches!(d.get("ts"), Some(Bson::DateTime(_))));
    assert!(matches!(d.get("processed_at"), Some(Bson::DateTime(_))));
    let names: Vec<String> = coll.list_index_names().await.unwrap();
    assert!(
        names.contains(&"ts_1".to_string()) && names.contains(&"sku_1".to_string()),
        "{names:?}"
    );

    // Dead letters: original payload and the headers, one per invalid event.
    let dlq = consume(&format!("{}.dlq", app.topic), 100, Duration::from_secs(60)).await;
    let mut reasons: Vec<_> = dlq.iter().map(|(_, h)| h["reason"].clone()).collect();
    let mut expected: Vec<_> = expected_reasons.iter().map(|r| r.to_string()).collect();
    reasons.sort();
    expected.sort();
    assert_eq!(reasons, expected);
    for (payload, headers) in &dlq {
        assert_eq!(headers["source_topic"], app.topic);
        let (p, o): (usize, usize) = (
            headers["source_partition"].parse().unwrap(),
            headers["source_offset"].parse().unwrap(),
        );
        assert_eq!(
            payloads[o * PARTITIONS as usize + p],
            *payload,
            "original payload kept"
        );
        assert!(!headers["detail"].is_empty());
    }
    assert_eq!(app.stats.snapshot().rejected_by_reason["malformed"], 20);
    wait_until(Duration::from_secs(10), "lag 0 in stats", || {
        let s = stats.snapshot();
        async move { s.consumer_lag == 0 && s.partitions.len() == PARTITIONS as usize }
    })
    .await;

    // (b) The same events again: nothing new stored, every valid one a duplicate.
    produce(&app.topic, PARTITIONS, &payloads).await;
    wait_until(Duration::from_secs(90), "9,900 duplicates", || {
        let s = stats.snapshot();
        async move { s.kafka.unwrap().duplicate == 9_900 && s.kafka.unwrap().rejected == 200 }
    })
    .await;
    wait_committed_to_end(
        &app,
        vec![6668, 6666, 6666],
        "offsets committed to the new end",
    )
    .await;
    assert_eq!(app.stored().await, 9_900, "replay stored nothing new");
    assert_eq!(app.stats.snapshot().kafka.unwrap().stored, 9_900);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_without_an_id_get_their_coordinates_and_redelivery_stores_nothing_twice() {
    let first = spawn_app(AppOptions::default()).await;
    create_topic(&first.topic, 2).await;
    let payloads: Vec<_> = (0..50).map(|i| encode(&valid_event(i, ""))).collect();
    produce(&first.topic, 2, &payloads).await;
    let stats = first.stats.clone();
    wait_until(Duration::from_secs(60), "50 stored", || {
        let s = stats.snapshot();
        async move { s.kafka.unwrap().stored == 50 }
    })
    .await;
    let coll = first.db.collection::<Document>("raw_sales");
    let id = format!("{}:1:0", first.topic);
    assert!(
        coll.find_one(doc! { "_id": &id }).await.unwrap().is_some(),
        "{id} stored"
    );
    let (topic, database) = (first.topic.clone(), first.db.name().to_string());
    first.stop().await;

    // A second group reads the same messages again: same coordinates, same ids.
    let second = spawn_app(AppOptions {
        topic: Some(topic),
        database: Some(database),
        ..Default::default()
    })
    .await;
    let stats = second.stats.clone();
    wait_until(Duration::from_secs(60), "50 duplicates", || {
        let s = stats.snapshot();
        async move { s.kafka.unwrap().duplicate == 50 }
    })
    .await;
    assert_eq!(second.stored().await, 50);
    assert_eq!(second.stats.snapshot().kafka.unwrap().stored, 0);
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_consumer_stores_nothing_until_resumed() {
    let app = spawn_app(AppOptions::default()).await;
    create_topic(&app.topic, 2).await;
    produce(&app.topic, 2, &[encode(&valid_event(0, "p-first"))]).await;
    let stats = app.stats.clone();
    wait_until(Duration::from_secs(60), "first event stored", || {
        let s = stats.snapshot();
        async move { s.kafka.unwrap().stored == 1 }
    })
    .await;

    let mut admin = app.admin().await;
    let resp = admin
        .pause_consumer(app.authed(PauseConsumerRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert!(resp.paused && resp.changed);
    let payloads: Vec<_> = (1..=100)
        .map(|i| encode(&valid_event(i, &format!("p-{i}"))))
        .collect();
    produce(&app.topic, 2, &payloads).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(app.stored().await, 1, "nothing stored while paused");
    // The time lag keeps growing while the waiting messages are not consumed.
    let lag = || lag_ms(&app.stats.metrics().render());
    let first = lag();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let second = lag();
    assert!(
        first >= 1000 && second >= first + 1000,
        "kafka_consumer_lag_milliseconds while paused: {first} then {second}"
    );
    let s = app.stats.snapshot();
    assert!(s.consumer_paused);
    assert_eq!(s.kafka.unwrap().stored, 1);

    let resp = admin
        .resume_consumer(app.authed(ResumeConsumerRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert!(!resp.paused && resp.changed);
    wait_until(Duration::from_secs(60), "101 stored after resume", || {
        let s = stats.snapshot();
        async move { s.kafka.unwrap().stored == 101 }
    })
    .await;
    assert_eq!(app.stored().await, 101);
    assert!(!app.stats.snapshot().consumer_paused);
    app.stop().await;
}

/// `kafka_consumer_lag_milliseconds` from the metrics text.
fn lag_ms(metrics: &str) -> i64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("kafka_consumer_lag_milliseconds "))
        .and_then(|v| v.trim().parse().ok())
        .expect("kafka_consumer_lag_milliseconds exported")
}

/// A topic that does not exist at start-up: after the grace for a topic created next
/// to the service, health says so, naming it; once it is created, its events are
/// consumed within seconds (the consumer refreshes metadata every 10 s) and health
/// comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_topic_turns_health_off_and_is_consumed_once_created() {
    let app = spawn_app(AppOptions::default()).await;
    app.wait_serving().await;
    let http = app.http_url.clone();
    let topic = app.topic.clone();
    wait_until(
        Duration::from_secs(120),
        "/health 503 naming the missing topic",
        || {
            let (http, topic) = (http.clone(), topic.clone());
            async move {
                let resp = reqwest::Client::new()
                    .get(format!("{http}/health"))
                    .bearer_auth(test_support::service::default("ADMIN_TOKEN"))
                    .send()
                    .await
                    .unwrap();
                let code = resp.status().as_u16();
                let body = resp.text().await.unwrap();
                code == 503 && body.contains(&format!("topic {topic} does not exist"))
            }
        },
    )
    .await;
    create_topic(&app.topic, 1).await;
    produce(&app.topic, 1, &[encode(&valid_event(1, "after-creation"))]).await;
    let stats = app.stats.clone();
    wait_until(Duration::from_secs(45), "the event stored", || {
        let s = stats.snapshot();
        async move { s.kafka.unwrap().stored == 1 }
    })
    .await;
    app.wait_serving().await;
    app.stop().await;
}

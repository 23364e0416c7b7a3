//! `WRITE_MODE`: corrections over gRPC and Kafka with `upsert` (the document replaced,
//! counted as updated, the last event per id winning), `insert` unchanged, and a bad
//! value refused at start-up.
use std::{process::Command, time::Duration};

use mongodb::bson::{doc, Bson, Document};
use sales_ingest::proto::sales::v1::SalesEvent;

use crate::helpers::*;

fn options(kafka: bool, extra: &[(&str, &str)]) -> AppOptions {
    AppOptions {
        kafka,
        extra: extra
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    }
}

fn with_qty(id: &str, qty: i32) -> SalesEvent {
    SalesEvent {
        qty,
        ..valid_event(1, id)
    }
}

async fn find(app: &TestApp, id: &str) -> Document {
    app.db
        .collection::<Document>("raw_sales")
        .find_one(doc! { "_id": id })
        .await
        .expect("find")
        .unwrap_or_else(|| panic!("{id} stored"))
}

fn processed_at(d: &Document) -> f64 {
    match d.get("processed_at") {
        Some(Bson::DateTime(t)) => t.timestamp_millis() as f64 / 1000.0,
        Some(Bson::Double(x)) => *x,
        other => panic!("processed_at {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_grpc_a_correction_replaces_the_document_and_is_acked_as_updated() {
    for format in ["typed", "legacy"] {
        let app = spawn_app(options(
            false,
            &[("write-mode", "upsert"), ("document-format", format)],
        ))
        .await;
        app.wait_serving().await;
        let ack = app.ingest(vec![with_qty("u-1", 2)]).await;
        assert_eq!(
            (ack.accepted, ack.updated, ack.duplicates),
            (1, 0, 0),
            "{ack:?}"
        );
        let first = find(&app, "u-1").await;
        tokio::time::sleep(Duration::from_millis(20)).await;

        let ack = app.ingest(vec![with_qty("u-1", 7)]).await;
        assert_eq!(
            (ack.accepted, ack.updated, ack.duplicates),
            (0, 1, 0),
            "{ack:?}"
        );
        let d = find(&app, "u-1").await;
        assert_eq!(d.get_i32("qty").unwrap(), 7, "{format}: the corrected qty");
        assert_eq!(d.get_str("event_id").unwrap(), "u-1");
        assert!(
            processed_at(&d) > processed_at(&first),
            "{format}: processed_at is the time of the latest write"
        );
        if format == "legacy" {
            assert_eq!(d.get_str("ts").unwrap(), "2026-11-25T10:00:00Z");
        }
        // The same values again rewrite the document: still one, counted as updated.
        let ack = app.ingest(vec![with_qty("u-1", 7)]).await;
        assert_eq!((ack.accepted, ack.updated), (0, 1), "{ack:?}");
        assert_eq!(app.stored().await, 1);
        let s = app.stats.snapshot();
        assert_eq!((s.events_stored, s.events_updated), (1, 2));
        assert_eq!(s.grpc.unwrap().updated, 2);
        app.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn within_one_request_the_last_event_per_id_is_stored() {
    let app = spawn_app(options(false, &[("write-mode", "upsert")])).await;
    app.wait_serving().await;
    let no_id = |qty| with_qty("", qty);
    let ack = app
        .ingest(vec![
            with_qty("w-1", 1),
            with_qty("w-2", 5),
            with_qty("w-1", 2),
            no_id(8),
            with_qty("w-1", 3),
            no_id(9),
        ])
        .await;
    // w-1 (its last event) and w-2 stored, two w-1 events superseded (updated), and
    // the events without an id stored under fresh ids.
    assert_eq!(
        (ack.accepted, ack.updated, ack.duplicates),
        (4, 2, 0),
        "{ack:?}"
    );
    assert!(ack.rejected.is_empty(), "{ack:?}");
    assert_eq!(find(&app, "w-1").await.get_i32("qty").unwrap(), 3);
    assert_eq!(find(&app, "w-2").await.get_i32("qty").unwrap(), 5);
    assert_eq!(app.stored().await, 4);

    // A stored id corrected twice in one request: the last one wins.
    let ack = app
        .ingest(vec![with_qty("w-2", 6), with_qty("w-2", 7)])
        .await;
    assert_eq!((ack.accepted, ack.updated), (0, 2), "{ack:?}");
    assert_eq!(find(&app, "w-2").await.get_i32("qty").unwrap(), 7);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_insert_mode_a_second_event_is_a_duplicate_and_changes_nothing() {
    let app = spawn_app(options(false, &[])).await;
    app.wait_serving().await;
    let ack = app.ingest(vec![with_qty("i-1", 2)]).await;
    assert_eq!((ack.accepted, ack.updated), (1, 0));
    let ack = app.ingest(vec![with_qty("i-1", 7)]).await;
    assert_eq!(
        (ack.accepted, ack.duplicates, ack.updated),
        (0, 1, 0),
        "{ack:?}"
    );
    assert_eq!(find(&app, "i-1").await.get_i32("qty").unwrap(), 2);
    assert_eq!(app.stats.snapshot().events_updated, 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_kafka_corrections_replace_documents_and_a_redelivery_rewrites_the_same_values() {
    let app = spawn_app(options(true, &[("write-mode", "upsert")])).await;
    // One partition: corrections follow their originals (producers key them by id).
    create_topic(&app.topic, 1).await;
    let originals: Vec<_> = (0..20)
        .map(|i| encode(&with_qty(&format!("k-{i}"), 1)))
        .collect();
    produce(&app.topic, 1, &originals).await;
    let stats = app.stats.clone();
    wait_until(Duration::from_secs(60), "20 stored", || {
        let s = stats.snapshot();
        async move { s.kafka.unwrap().stored == 20 }
    })
    .await;
    let corrections: Vec<_> = (0..10)
        .map(|i| encode(&with_qty(&format!("k-{i}"), 99)))
        .collect();
    produce(&app.topic, 1, &corrections).await;
    wait_until(Duration::from_secs(60), "10 updated", || {
        let s = stats.snapshot();
        async move { s.kafka.unwrap().updated == 10 }
    })
    .await;
    for i in 0..20 {
        let want = if i < 10 { 99 } else { 1 };
        let d = find(&app, &format!("k-{i}")).await;
        assert_eq!(d.get_i32("qty").unwrap(), want, "k-{i}");
    }
    assert_eq!(app.stored().await, 20);
    let (_, text) = get(&format!("{}/metrics", app.http_url)).await;
    assert_eq!(
        metric(
            &text,
            r#"sales_events_processed_total{source="kafka",status="updated"}"#
        ),
        Some(10),
        "{text}"
    );
    let (topic, database) = (app.topic.clone(), app.db.name().to_string());
    app.stop().await;

    // A new group reads all 30 messages again, as after a crash before any commit: the
    // originals and then their corrections are rewritten, in order.
    let again = spawn_app(AppOptions {
        topic: Some(topic),
        database: Some(database),
        ..options(true, &[("write-mode", "upsert")])
    })
    .await;
    let stats = again.stats.clone();
    wait_until(Duration::from_secs(60), "30 updated", || {
        let s = stats.snapshot();
        async move { s.kafka.unwrap().updated == 30 }
    })
    .await;
    for i in 0..20 {
        let want = if i < 10 { 99 } else { 1 };
        let d = find(&again, &format!("k-{i}")).await;
        assert_eq!(
            d.get_i32("qty").unwrap(),
            want,
            "k-{i} after the redelivery"
        );
    }
    assert_eq!(again.stored().await, 20);
    assert_eq!(again.stats.snapshot().kafka.unwrap().stored, 0);
    again.stop().await;
}

#[test]
fn an_unknown_write_mode_stops_start_up_with_exit_2_naming_write_mode() {
    let out = Command::new(env!("CARGO_BIN_EXE_sales-ingest"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("WRITE_MODE", "merge")
        .env("GRPC_ADDR", "127.0.0.1:0")
        .env("HTTP_ADDR", "127.0.0.1:0")
        .output()
        .expect("run sales-ingest");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("WRITE_MODE") && stderr.contains("merge"),
        "{stderr}"
    );
}

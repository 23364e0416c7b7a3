//! `ingestctl stream` and `ingestctl produce` against the real server: events sent over
//! gRPC and Kafka are stored, counted and acknowledged as the tool reports.
use std::time::Duration;

use mongodb::bson::{doc, Document};

use super::{ingestctl, value_of};
use crate::{backends::backends, helpers::*};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_stores_the_valid_events_and_reports_what_the_server_acked() {
    let app = spawn_app(AppOptions {
        kafka: false,
        batch_size: 300,
        ..Default::default()
    })
    .await;
    app.wait_serving().await;
    let run_id = unique("ctlrun");
    let args = [
        "--addr",
        &app.grpc_url,
        "stream",
        "--count",
        "2000",
        "--batch",
        "200",
        "--invalid",
        "5",
        "--run-id",
        &run_id,
        "--json",
    ];
    let run = ingestctl(&args).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let s = run.json();
    assert_eq!(s["requests"], 10);
    assert_eq!(s["acked_events"], 2000);
    assert_eq!(s["accepted"], 1900);
    assert_eq!(s["duplicates"], 0);
    assert_eq!(s["rejected"], 100);
    assert_eq!(s["events_invalid_generated"], 100);
    for reason in ["invalid_qty", "missing_sku", "invalid_ts", "invalid_price"] {
        assert_eq!(s["rejected_by_reason"][reason], 25, "{reason}: {s}");
    }
    assert_eq!(s["ack_latency"]["samples"], 10);
    assert!(
        s["ack_latency"]["p99_ms"].as_f64().unwrap()
            >= s["ack_latency"]["p50_ms"].as_f64().unwrap()
    );

    assert_eq!(app.stored().await, 1900, "exactly the valid events stored");
    let coll = app.db.collection::<Document>("raw_sales");
    let ours = coll
        .count_documents(doc! { "source": "grpc", "event_id": { "$regex": format!("^{run_id}-") } })
        .await
        .unwrap();
    assert_eq!(ours, 1900);
    let snap = app.stats.snapshot();
    assert_eq!(
        (snap.grpc.unwrap().stored, snap.grpc.unwrap().rejected),
        (1900, 100)
    );

    // The same run id again, over two streams: every valid event is a duplicate.
    let mut replay = args.to_vec();
    replay.extend(["--streams", "2"]);
    let run = ingestctl(&replay).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let s = run.json();
    assert_eq!(
        (s["accepted"].as_u64(), s["duplicates"].as_u64()),
        (Some(0), Some(1900))
    );
    assert_eq!(s["rejected"], 100);
    assert_eq!(app.stored().await, 1900, "a replay stores nothing twice");

    let stats = ingestctl(&["--addr", &app.grpc_url, "stats", "--json"])
        .await
        .json();
    assert_eq!(stats["events_stored"], 1900);
    assert_eq!(stats["events_duplicate"], 1900);
    assert_eq!(stats["grpc"]["rejected"], 200);
    assert_eq!(stats["rejected_by_reason"]["invalid_ts"], 50);

    // The text summary of a small run.
    let run = ingestctl(&[
        "--addr",
        &app.grpc_url,
        "stream",
        "--count",
        "10",
        "--batch",
        "3",
    ])
    .await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(value_of(&run.stdout, "requests"), "4");
    assert_eq!(value_of(&run.stdout, "accepted"), "10");
    assert_eq!(value_of(&run.stdout, "rejected"), "0");
    assert!(run.stdout.contains("ack latency p99"), "{run:?}");
    assert_eq!(app.stored().await, 1910);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_sends_the_producer_token() {
    let app = spawn_app(AppOptions {
        kafka: false,
        extra: vec![("producer-token".into(), "ctl-prod-tok-long-enough".into())],
        ..Default::default()
    })
    .await;
    app.wait_serving().await;
    let base = [
        "--addr",
        &app.grpc_url,
        "stream",
        "--count",
        "100",
        "--batch",
        "50",
    ];
    let refused = ingestctl(&base).await;
    assert_ne!(refused.code, Some(0), "no token: refused {refused:?}");
    let mut with = base.to_vec();
    with.extend(["--producer-token", "ctl-prod-tok-long-enough", "--json"]);
    let run = ingestctl(&with).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(run.json()["accepted"], 100);
    assert_eq!(app.stored().await, 100);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_delivers_500_events_that_the_server_stores() {
    let app = spawn_app(AppOptions::default()).await;
    create_topic(&app.topic, 2).await;
    let run = ingestctl(&[
        "produce",
        "--count",
        "500",
        "--brokers",
        &backends().kafka,
        "--topic",
        &app.topic,
        "--json",
    ])
    .await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let s = run.json();
    assert_eq!(
        (s["delivered"].as_u64(), s["failed"].as_u64()),
        (Some(500), Some(0))
    );
    let stats = app.stats.clone();
    wait_until(Duration::from_secs(90), "500 stored from Kafka", || {
        let s = stats.snapshot();
        async move { s.kafka.unwrap().stored == 500 }
    })
    .await;
    assert_eq!(app.stored().await, 500);
    let kafka_docs = app
        .db
        .collection::<Document>("raw_sales")
        .count_documents(doc! { "source": "kafka" })
        .await
        .unwrap();
    assert_eq!(kafka_docs, 500);
    app.stop().await;
}

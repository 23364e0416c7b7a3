//! A real broker crash under load: the one broker of a cluster of the test's own is
//! SIGKILLed while the server (a separate process) ingests 100,000 events, and
//! restarted on the same data directory a few seconds later.
use std::time::{Duration, Instant};

use mongodb::bson::{doc, Document};
use test_support::{kafka::KafkaOptions, service::server_env};

use crate::{
    backends::{backends, start_kafka, start_server},
    faults::{count, payloads},
    helpers::*,
};

/// Whether /health says Kafka is down and gRPC health is NOT_SERVING (`down`), or
/// /health answers 200 and gRPC health SERVING (`!down`).
async fn health_is(server: &test_support::service::Service, down: bool) -> bool {
    let (code, body) = get(&format!("{}/health", server.http_url)).await;
    let grpc = grpc_serving(&server.grpc_url).await;
    if down {
        code == 503 && body.contains(r#""kafka":"down""#) && grpc == Some(false)
    } else {
        code == 200 && grpc == Some(true)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_sigkilled_mid_ingest_and_restarted_stores_each_event_once() {
    const N: usize = 100_000;
    const PARTITIONS: i32 = 3;
    const CHUNK: usize = 5_000;
    let mut broker = start_kafka(&KafkaOptions {
        heap_mib: 384,
        ..Default::default()
    });
    let bootstrap = broker.bootstrap();
    let (topic, group, dbname) = (unique("restart"), unique("restart_g"), unique("restart_db"));
    create_topic_at(&bootstrap, &topic, PARTITIONS).await;
    let env = server_env(
        backends(),
        &topic,
        &group,
        &dbname,
        &[("KAFKA_BOOTSTRAP_SERVERS", bootstrap.clone())],
    );
    let mut server = start_server("broker-restart", &env);
    server.wait_serving(Duration::from_secs(90)).await.unwrap();
    let db = mongo_client().await.database(&dbname);

    // 100,000 events in chunks, one every 300 ms, through the outage: the producer
    // is idempotent, so the log holds each event once whatever it retries.
    let producer = {
        let (bootstrap, topic) = (bootstrap.clone(), topic.clone());
        tokio::spawn(async move {
            let p = steady_producer(&bootstrap);
            for chunk in payloads("r", N).chunks(CHUNK) {
                produce_with(&p, &topic, PARTITIONS, chunk).await;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
    };
    wait_until(Duration::from_secs(120), "a quarter stored", || {
        let db = db.clone();
        async move { count(&db).await >= N as u64 / 4 }
    })
    .await;

    let srv = &server;
    let killed = Instant::now();
    broker.node(1).kill().unwrap();
    let stored_at_kill = count(&db).await;
    assert!(stored_at_kill < N as u64, "killed mid-ingest");
    wait_until(
        Duration::from_secs(30),
        "/health and gRPC health say Kafka is down",
        || health_is(srv, true),
    )
    .await;
    let detected = killed.elapsed();
    tokio::time::sleep(Duration::from_secs(5).saturating_sub(killed.elapsed())).await;
    let down_for = killed.elapsed();
    tokio::task::block_in_place(|| broker.node(1).start()).unwrap();
    let back = Instant::now();
    wait_until(
        Duration::from_secs(60),
        "/health and gRPC health SERVING again",
        || health_is(srv, false),
    )
    .await;
    let serving_after = back.elapsed();

    tokio::time::timeout(Duration::from_secs(240), producer)
        .await
        .expect("every event delivered to the restarted broker")
        .unwrap();
    let ends = wait_committed_to_end_at(
        &bootstrap,
        &topic,
        &group,
        PARTITIONS,
        Duration::from_secs(240),
    )
    .await;
    assert_eq!(
        ends.iter().sum::<i64>(),
        N as i64,
        "the log holds each event once"
    );
    let stored = count(&db).await;
    let from_here = db
        .collection::<Document>("raw_sales")
        .count_documents(doc! { "_id": { "$regex": "^r-" }, "source": "kafka" })
        .await
        .unwrap();
    let stats = server.stats().await.unwrap();
    let kafka = stats.kafka.unwrap_or_default();
    assert_eq!((stored, from_here), (N as u64, N as u64));
    // Every event consumed is stored once or recognised as a redelivery: the
    // service's own counters, not just the collection's unique ids.
    assert_eq!(kafka.stored, N as u64, "inserted once each");
    assert_eq!((kafka.rejected, kafka.failed), (0, 0));
    wait_until(
        Duration::from_secs(30),
        "GetStats: no lag on any partition",
        || async move {
            let s = srv.stats().await.unwrap();
            s.partitions.len() == PARTITIONS as usize
                && s.partitions
                    .iter()
                    .all(|p| p.lag == 0 && p.committed_offset == p.high_watermark)
        },
    )
    .await;
    let (status, _) = server.terminate(Duration::from_secs(30)).unwrap();
    assert!(status.success());
    broker.stop(Duration::from_secs(30)).unwrap();
    eprintln!(
        "RELIABILITY broker-restart: sent={N} stored={stored} lost=0 duplicated=0 redelivered_absorbed={} stored_at_kill={stored_at_kill} not_serving_after={:.1}s down_for={:.1}s serving_after_return={:.1}s",
        kafka.duplicate,
        detected.as_secs_f64(),
        down_for.as_secs_f64(),
        serving_after.as_secs_f64()
    );
}

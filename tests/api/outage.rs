//! Dependencies going away and coming back: MongoDB stopped mid-ingest, MongoDB absent
//! at start-up, the broker SIGKILLed mid-run and restarted on its data. Each test runs
//! its own server of the kind it stops, so other tests are not disturbed.
use std::time::{Duration, Instant};

use mongodb::bson::{doc, Document};
use sales_ingest::proto::ingest::v1::{ingest_events_client::IngestEventsClient, IngestRequest};
use tokio_stream::StreamExt;

use test_support::{
    kafka::KafkaOptions,
    servers::{free_port, scratch_dir},
    service::server_env,
};

use crate::{
    backends::{backends, start_kafka, start_secantus, start_server},
    faults::{count, payloads},
    helpers::*,
};

/// Sends `requests` requests of 100 events on one stream, one every `gap`; returns each
/// ack's arrival time and accepted count.
async fn grpc_producer(
    url: String,
    prefix: &'static str,
    requests: u64,
    gap: Duration,
) -> Vec<(Instant, u32)> {
    let mut client = IngestEventsClient::new(channel(&url).await);
    let stream = async_stream(prefix, requests, gap);
    let mut acks = client.stream(stream).await.expect("stream").into_inner();
    let mut got = Vec::new();
    while let Some(ack) = acks.next().await {
        got.push((Instant::now(), ack.expect("ack, not an error").accepted));
    }
    got
}

fn async_stream(
    prefix: &'static str,
    requests: u64,
    gap: Duration,
) -> impl tokio_stream::Stream<Item = IngestRequest> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        for seq in 0..requests {
            let events = (0..100)
                .map(|i| valid_event(i, &format!("{prefix}-{seq}-{i}")))
                .collect();
            if tx.send(IngestRequest { seq, events }).await.is_err() {
                return;
            }
            tokio::time::sleep(gap).await;
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb_outage_turns_health_off_backs_up_and_recovers_by_itself() {
    const N: usize = 60_000;
    const PARTITIONS: i32 = 3;
    let mport = free_port();
    let data = scratch_dir(&format!("outage-{mport}"))
        .display()
        .to_string();
    let mongo = start_secantus(mport, &data, &[]);
    let url = format!("mongodb://127.0.0.1:{mport}/?directConnection=true");
    let (topic, group, dbname) = (unique("outage"), unique("outage_g"), unique("outage_db"));
    create_topic(&topic, PARTITIONS).await;
    let env = server_env(
        backends(),
        &topic,
        &group,
        &dbname,
        &[("MONGODB_URL", url.clone())],
    );
    let server = start_server("outage", &env);
    server
        .wait_health(200, Duration::from_secs(30))
        .await
        .unwrap();
    let db = mongodb::Client::with_uri_str(&url)
        .await
        .unwrap()
        .database(&dbname);

    // Kafka traffic: produced in chunks over ~20 s. gRPC traffic: a request every 100 ms.
    let all = payloads("o", N);
    let kafka = {
        let topic = topic.clone();
        tokio::spawn(async move {
            for chunk in all.chunks(3_000) {
                produce(&topic, PARTITIONS, chunk).await;
                tokio::time::sleep(Duration::from_millis(1000)).await;
            }
        })
    };
    let grpc = tokio::spawn(grpc_producer(
        server.grpc_url.clone(),
        "og",
        200,
        Duration::from_millis(100),
    ));
    wait_until(
        Duration::from_secs(120),
        "5,000 stored before the outage",
        || {
            let db = db.clone();
            async move { count(&db).await >= 5_000 }
        },
    )
    .await;

    // Stop MongoDB for 10 s.
    let stopped_at = Instant::now();
    mongo.terminate(Duration::from_secs(30)).unwrap();
    let mut not_serving_after = None;
    let mut lag_during = Vec::new();
    let mut peak_rss = 0;
    while stopped_at.elapsed() < Duration::from_secs(10) {
        let rss = server.memory().unwrap().rss_kib;
        peak_rss = peak_rss.max(rss);
        if not_serving_after.is_none() {
            let (code, _) = get(&format!("{}/health", server.http_url)).await;
            if code == 503 && grpc_serving(&server.grpc_url).await == Some(false) {
                not_serving_after = Some(stopped_at.elapsed());
            }
        }
        let stats = server.stats_json().await.unwrap();
        lag_during.push(stats["consumer_lag"].as_i64().unwrap_or(0));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let detected = not_serving_after.expect("health turned NOT_SERVING during the outage");
    assert!(
        peak_rss <= 100 * 1024,
        "resident memory stays bounded during the outage: {peak_rss} KiB"
    );
    // The probe pings every 250 ms with a 1 s timeout; the bound leaves room for a
    // loaded 2-core machine without letting a missing probe pass.
    assert!(
        detected <= Duration::from_secs(6),
        "NOT_SERVING only after {detected:?}"
    );
    assert!(
        lag_during.iter().max() > lag_during.first(),
        "lag grows while MongoDB is down: {lag_during:?}"
    );

    // Restart on the same data directory; the service recovers by itself.
    let restarted = Instant::now();
    let _mongo = start_secantus(mport, &data, &[]);
    server
        .wait_health(200, Duration::from_secs(30))
        .await
        .unwrap();
    kafka.await.unwrap();
    let acks = grpc.await.unwrap();
    assert_eq!(
        acks.len(),
        200,
        "every gRPC request acked (delayed, not lost)"
    );
    assert!(acks.iter().all(|(_, accepted)| *accepted == 100));
    let grpc_events = 200 * 100;
    wait_until(
        Duration::from_secs(120),
        "every event stored after the outage",
        || {
            let db = db.clone();
            async move { count(&db).await >= (N + grpc_events) as u64 }
        },
    )
    .await;
    let recovered = restarted.elapsed();
    let stored = count(&db).await;
    assert_eq!(stored, (N + grpc_events) as u64, "every event stored once");
    let coll = db.collection::<Document>("raw_sales");
    assert_eq!(
        coll.count_documents(doc! { "source": "grpc" })
            .await
            .unwrap(),
        grpc_events as u64
    );
    // Nothing restarted, so nothing was redelivered: the service resolved each Kafka
    // event once, as stored or, where a write that MongoDB took before it stopped was
    // retried, as a duplicate of itself.
    let stats = server.stats().await.unwrap();
    let k = stats.kafka.unwrap_or_default();
    assert_eq!(
        k.stored + k.duplicate,
        N as u64,
        "each Kafka event resolved once: {k:?}"
    );
    let g = stats.grpc.unwrap_or_default();
    assert_eq!(g.stored + g.duplicate, grpc_events as u64, "{g:?}");
    let (status, _) = server.terminate(Duration::from_secs(30)).unwrap();
    assert!(status.success());
    eprintln!(
        "RELIABILITY mongodb-outage: sent={} stored={stored} lost=0 duplicated=0 retried_duplicates={} not_serving_after={:.2}s recover={:.1}s peak_rss_during={}MiB",
        N + grpc_events,
        k.duplicate + g.duplicate,
        detected.as_secs_f64(),
        recovered.as_secs_f64(),
        peak_rss / 1024
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb_absent_at_start_up_then_appearing_starts_ingestion_without_a_restart() {
    let mport = free_port();
    let url = format!("mongodb://127.0.0.1:{mport}/?directConnection=true");
    let app = spawn_app(AppOptions {
        kafka: false,
        extra: vec![("mongodb-url".into(), url.clone())],
        ..Default::default()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(get(&format!("{}/health", app.http_url)).await.0, 503);
    let acks = tokio::spawn(grpc_producer(
        app.grpc_url.clone(),
        "late",
        3,
        Duration::from_millis(10),
    ));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!acks.is_finished(), "no ack before MongoDB exists");
    assert!(!app.handle.is_finished(), "no crash");
    let appeared = Instant::now();
    let data = scratch_dir(&format!("late-{mport}")).display().to_string();
    let _mongo = start_secantus(mport, &data, &[]);
    let acks = tokio::time::timeout(Duration::from_secs(60), acks)
        .await
        .expect("acks once MongoDB is up")
        .unwrap();
    assert_eq!(acks.iter().map(|a| a.1).sum::<u32>(), 300);
    let db = mongodb::Client::with_uri_str(&url)
        .await
        .unwrap()
        .database(app.db.name());
    assert_eq!(count(&db).await, 300);
    // The start-up indexes, which could not be created at start-up, exist now.
    let names = db
        .collection::<Document>("raw_sales")
        .list_index_names()
        .await
        .unwrap();
    for index in ["ts_1", "sku_1"] {
        assert!(
            names.iter().any(|n| n == index),
            "{index} created: {names:?}"
        );
    }
    app.wait_serving().await;
    eprintln!("RELIABILITY mongodb-absent-at-start: sent=300 stored=300 lost=0 duplicated=0 recover={:.1}s", appeared.elapsed().as_secs_f64());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_keeps_grpc_storing_and_consumption_resumes_when_it_is_back() {
    // A broker of its own, SIGKILLed (a crash) and restarted on the same data
    // directory and ports: it comes back with its topics and committed offsets.
    let mut broker = start_kafka(&KafkaOptions::default());
    let bootstrap = broker.bootstrap();
    let (topic, group, dbname) = (unique("broker"), unique("broker_g"), unique("broker_db"));
    // The server runs as its own process, so a crash in its Kafka client would show.
    let env = server_env(
        backends(),
        &topic,
        &group,
        &dbname,
        &[("KAFKA_BOOTSTRAP_SERVERS", bootstrap.clone())],
    );
    let server = start_server("broker", &env);
    let db = mongo_client().await.database(&dbname);
    let produce_here = |prefix: &'static str| {
        let (topic, bootstrap) = (topic.clone(), bootstrap.clone());
        async move {
            use rdkafka::producer::{FutureProducer, FutureRecord};
            let p: FutureProducer = rdkafka::ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .create()
                .unwrap();
            for i in 0..500 {
                let payload = encode(&valid_event(i, &format!("{prefix}-{i}")));
                let r = FutureRecord::<(), [u8]>::to(&topic)
                    .payload(&payload)
                    .partition(i as i32 % 2);
                p.send(r, Duration::from_secs(30)).await.expect("delivered");
            }
        }
    };
    let kafka_docs = |db: mongodb::Database| async move {
        db.collection::<Document>("raw_sales")
            .count_documents(doc! { "source": "kafka" })
            .await
            .unwrap()
    };
    create_topic_at(&bootstrap, &topic, 2).await;
    produce_here("b1").await;
    wait_until(
        Duration::from_secs(60),
        "the first 500 from Kafka stored",
        || {
            let db = db.clone();
            async move { kafka_docs(db).await >= 500 }
        },
    )
    .await;

    // The broker goes away: the service runs on, gRPC keeps storing, health shows Kafka down.
    let lost = Instant::now();
    broker.node(1).kill().unwrap();
    wait_until(Duration::from_secs(30), "health reports Kafka down", || {
        let u = server.http_url.clone();
        async move {
            let (code, body) = get(&format!("{u}/health")).await;
            code == 503 && body.contains(r#""kafka":"down""#)
        }
    })
    .await;
    let acks = grpc_producer(server.grpc_url.clone(), "bg", 5, Duration::from_millis(10)).await;
    assert_eq!(
        acks.iter().map(|a| a.1).sum::<u32>(),
        500,
        "gRPC path stores during the broker outage"
    );

    // Keep it away for 5 s at least, then bring it back on the same address:
    // consumption resumes by itself.
    tokio::time::sleep(Duration::from_secs(5).saturating_sub(lost.elapsed())).await;
    let down_for = lost.elapsed();
    broker.node(1).start().unwrap();
    let back = Instant::now();
    produce_here("b2").await;
    wait_until(
        Duration::from_secs(90),
        "consumption resumed: 1000 from Kafka",
        || {
            let db = db.clone();
            async move { kafka_docs(db).await >= 1000 }
        },
    )
    .await;
    let recovered = back.elapsed();
    server
        .wait_health(200, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(count(&db).await, 1500);
    eprintln!(
        "RELIABILITY broker-outage: sent=1500 stored=1500 lost=0 duplicated=0 down_for={:.1}s resumed={:.1}s",
        down_for.as_secs_f64(),
        recovered.as_secs_f64()
    );
    let (status, _) = server.terminate(Duration::from_secs(30)).unwrap();
    assert!(status.success());
    broker.stop(Duration::from_secs(30)).unwrap();
}

//! The process's own life, with the server as a separate process where it must exit:
//! SIGINT drains work in flight and exits 0, a shutdown that outlives
//! `SHUTDOWN_TIMEOUT` exits 1 and leaves its events to be redelivered, health turns
//! NOT_SERVING when a shutdown starts (not when it ends), and `LOG_FORMAT=json` writes
//! every line as a JSON object.
use std::time::{Duration, Instant};

use mongodb::bson::{doc, Document};
use sales_ingest::{proto::ingest::v1::ShutdownRequest, Stopped};
use serde_json::Value;
use test_support::{
    servers::{free_port, scratch_dir},
    service::server_env,
    supervisor::Signal,
};
use tokio_stream::StreamExt;
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};

use crate::{
    backends::{backends, start_secantus, start_server},
    faults::{count, payloads, wait_committed},
    helpers::*,
    write_health::{one_request, ReadOnlyMongo},
};

/// Kafka documents in `db`.
async fn kafka_docs(db: &mongodb::Database) -> u64 {
    db.collection::<Document>("raw_sales")
        .count_documents(doc! { "source": "kafka" })
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_drains_kafka_and_a_grpc_stream_in_flight_commits_and_exits_0() {
    const N: usize = 20_000;
    const PARTITIONS: i32 = 2;
    let (topic, group, dbname) = (unique("int"), unique("int_g"), unique("int_db"));
    create_topic(&topic, PARTITIONS).await;
    produce(&topic, PARTITIONS, &payloads("i", N)).await;
    let db = mongo_client().await.database(&dbname);
    let env = server_env(backends(), &topic, &group, &dbname, &[]);
    let mut server = start_server("sigint", &env);
    server.wait_serving(Duration::from_secs(60)).await.unwrap();
    let producer = pump(&server.grpc_url, "ig", 100);
    producer.wait_acked(10, Duration::from_secs(60)).await;
    wait_until(Duration::from_secs(60), "some Kafka events stored", || {
        let db = db.clone();
        async move { kafka_docs(&db).await > 0 }
    })
    .await;
    let log = server.log().to_path_buf();
    let signalled = Instant::now();
    let (status, took) = server
        .stop_with(Signal::Int, Duration::from_secs(30))
        .unwrap();
    assert_eq!(status.code(), Some(0), "exit 0 after SIGINT");
    assert!(
        took < Duration::from_secs(20),
        "within SHUTDOWN_TIMEOUT: {took:?}"
    );
    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(logs.contains("SIGINT received"), "{logs}");
    assert!(logs.contains("final offsets committed"), "{logs}");
    let pumped = producer.ended(Duration::from_secs(10)).await;
    assert!(
        pumped.acks_after(signalled) > 0,
        "requests in flight at the signal are drained and acked"
    );
    pumped.check_drained(&db).await;
    // The final commit covers exactly what was stored from Kafka.
    let offsets = committed(&topic, &group, PARTITIONS);
    assert_eq!(
        offsets.iter().sum::<i64>() as u64,
        kafka_docs(&db).await,
        "committed {offsets:?}"
    );
}

/// MongoDB stopped under a running server: a SIGTERM cannot drain, so the process exits
/// 1 once `SHUTDOWN_TIMEOUT` has passed, the unacked gRPC request gets no ack and the
/// Kafka events taken stay uncommitted; the next instance stores them (redelivered).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_stuck_past_shutdown_timeout_exits_1_and_its_events_are_redelivered() {
    const PARTITIONS: i32 = 2;
    let mport = free_port();
    let data = scratch_dir(&format!("stuck-{mport}")).display().to_string();
    let mongo = start_secantus(mport, &data, &[]);
    let url = format!("mongodb://127.0.0.1:{mport}/?directConnection=true");
    let (topic, group, dbname) = (unique("stuck"), unique("stuck_g"), unique("stuck_db"));
    create_topic(&topic, PARTITIONS).await;
    let all = payloads("st", 1_500);
    produce(&topic, PARTITIONS, &all[..1_000]).await;
    let extra = [
        ("MONGODB_URL", url.clone()),
        ("SHUTDOWN_TIMEOUT", "3".to_string()),
    ];
    let env = server_env(backends(), &topic, &group, &dbname, &extra);
    let mut server = start_server("stuck", &env);
    server.wait_serving(Duration::from_secs(60)).await.unwrap();
    wait_committed(&topic, &group, vec![500, 500], Duration::from_secs(60)).await;

    mongo.terminate(Duration::from_secs(30)).unwrap();
    produce(&topic, PARTITIONS, &all[1_000..]).await;
    let producer = pump(&server.grpc_url, "sg", 10);
    // The source takes the new events (the lag it reports stays, nothing commits).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (status, took) = server.terminate(Duration::from_secs(30)).unwrap();
    assert_eq!(status.code(), Some(1), "exit 1 after SHUTDOWN_TIMEOUT");
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(15),
        "exits once SHUTDOWN_TIMEOUT (3 s) passed, not before, not much later: {took:?}"
    );
    let pumped = producer.ended(Duration::from_secs(10)).await;
    assert!(pumped.acks.is_empty(), "nothing acked without MongoDB");
    assert!(pumped.end.is_some(), "the stream ends with an error");
    assert_eq!(committed(&topic, &group, PARTITIONS), vec![500, 500]);

    let _mongo = start_secantus(mport, &data, &[]);
    let next = start_server("stuck-next", &env);
    wait_committed(&topic, &group, vec![750, 750], Duration::from_secs(90)).await;
    let db = mongodb::Client::with_uri_str(&url)
        .await
        .unwrap()
        .database(&dbname);
    assert_eq!(
        count(&db).await,
        1_500,
        "the 500 left uncommitted are stored now"
    );
    next.stop().unwrap();
}

/// A drain that cannot finish (inserts refused, `MAX_RETRIES` high enough that health
/// stays SERVING meanwhile) shows when health turns: at the start of the shutdown,
/// while the write is still pending, not once it is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_turns_not_serving_as_soon_as_a_shutdown_starts_with_work_pending() {
    let mongo = ReadOnlyMongo::start().await;
    let mut app = mongo
        .serving_then_read_only(&[("max-retries", "1000")])
        .await;
    let (mut acks, tx) = one_request(&app, "pend", 5).await;
    let mut watch = HealthClient::new(channel(&app.grpc_url).await)
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.next().await.unwrap().unwrap();
    assert_eq!(
        first.status(),
        ServingStatus::Serving,
        "refused writes below MAX_RETRIES"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let health = format!("{}/health", app.http_url);
    assert_eq!(
        get(&health).await.0,
        200,
        "still SERVING before the shutdown"
    );

    let mut admin = app.admin().await;
    admin
        .shutdown(app.authed(ShutdownRequest {}))
        .await
        .unwrap();
    let turned = tokio::time::timeout(Duration::from_secs(2), watch.next())
        .await
        .expect("the watcher is told within 2 s")
        .unwrap()
        .unwrap();
    assert_eq!(turned.status(), ServingStatus::NotServing);
    let (code, body) = get(&health).await;
    assert_eq!(code, 503, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["shutting_down"], true, "{body}");
    assert_eq!(body["mongodb"], "up", "only the shutdown turned it: {body}");
    assert!(
        tokio::time::timeout(Duration::from_millis(500), acks.next())
            .await
            .is_err(),
        "the write is still pending: health turned before the drain finished"
    );
    assert!(!app.handle.is_finished());

    // Inserts allowed again: the drain finishes, the ack goes out, a clean stop.
    let ack = mongo.grant_writes_then_ack(&mut acks).await;
    assert_eq!(ack.accepted, 5);
    drop(tx);
    assert_eq!(app.stopped().await, Stopped::Clean);
}

/// `LOG_FORMAT=json`: every line the process writes, its own and librdkafka's, is one
/// JSON object with the fields operations.md lists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_format_json_writes_every_line_as_an_object_with_the_documented_fields() {
    let (topic, group, dbname) = (unique("json"), unique("json_g"), unique("json_db"));
    create_topic(&topic, 1).await;
    let extra = [("LOG_FORMAT", "json".to_string())];
    let env = server_env(backends(), &topic, &group, &dbname, &extra);
    let mut server = start_server("json-logs", &env);
    server.wait_serving(Duration::from_secs(60)).await.unwrap();
    let log = server.log().to_path_buf();
    let (status, _) = server.terminate(Duration::from_secs(30)).unwrap();
    assert!(status.success());
    let text = std::fs::read_to_string(&log).unwrap();
    let mut messages = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        let ts = v["timestamp"]
            .as_str()
            .unwrap_or_else(|| panic!("timestamp: {line}"));
        assert!(
            chrono::DateTime::parse_from_rfc3339(ts).is_ok(),
            "RFC 3339 timestamp: {line}"
        );
        let level = v["level"].as_str().unwrap_or_default();
        assert!(
            ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&level),
            "level: {line}"
        );
        assert!(v["target"].is_string(), "target: {line}");
        let message = v["fields"]["message"].as_str();
        messages.push(
            message
                .unwrap_or_else(|| panic!("fields.message: {line}"))
                .to_string(),
        );
    }
    for expected in [
        "effective configuration",
        "SIGTERM received",
        "final offsets committed",
    ] {
        assert!(
            messages.iter().any(|m| m.contains(expected)),
            "a line {expected:?} among {messages:?}"
        );
    }
}

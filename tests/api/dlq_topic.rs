//! The dead-letter topic on a broker that does not create topics by itself
//! (`auto.create.topics.enable=false`), with the server as a process: the service
//! creates `<KAFKA_TOPIC>.dlq` with the source topic's partition count and the invalid
//! events land in it; when the brokers refuse to create it (a replication factor above
//! the broker count), the letters land in the dead-letter collection with why, and
//! `/health` and GetStats say so while the service keeps serving.
use std::time::Duration;

use mongodb::bson::{doc, Document};
use sales_ingest::proto::sales::v1::SalesEvent;
use test_support::{
    kafka::{KafkaCluster, KafkaOptions},
    servers::Backends,
    service::{server_env, Service},
};

use crate::{
    backends::{backends, start_kafka, start_server},
    faults::{count, ends, payloads},
    helpers::*,
};

const PARTITIONS: i32 = 3;
const INVALID: usize = 60;
const VALID: usize = 90;

fn no_auto_create() -> KafkaCluster {
    start_kafka(&KafkaOptions {
        properties: vec![("auto.create.topics.enable".into(), "false".into())],
        ..Default::default()
    })
}

/// Invalid events (a negative qty), then valid ones, on `topic`.
async fn produce_mixed(bootstrap: &str, topic: &str, prefix: &str) {
    let mut all: Vec<Vec<u8>> = (0..INVALID)
        .map(|i| {
            encode(&SalesEvent {
                qty: -1,
                ..valid_event(i, &format!("{prefix}-bad-{i}"))
            })
        })
        .collect();
    all.extend(payloads(prefix, VALID));
    produce_at(bootstrap, topic, PARTITIONS, &all).await;
}

fn env_at(
    bootstrap: &str,
    topic: &str,
    db: &str,
    extra: &[(&str, String)],
) -> Vec<(String, String)> {
    let at = Backends {
        kafka: bootstrap.to_string(),
        mongodb: backends().mongodb.clone(),
        kind: "local",
    };
    server_env(&at, topic, &format!("{topic}_g"), db, extra)
}

/// `/health` with the admin token, so the reasons are in it.
async fn health(svc: &Service) -> serde_json::Value {
    let resp = reqwest::Client::new()
        .get(format!("{}/health", svc.http_url))
        .bearer_auth(test_support::service::default("ADMIN_TOKEN"))
        .send()
        .await;
    let body = resp.expect("GET /health").text().await.expect("a body");
    serde_json::from_str(&body).expect("/health is JSON")
}

async fn wait_consumed(bootstrap: &str, topic: &str, db: &mongodb::Database) {
    let db2 = db.clone();
    wait_until(Duration::from_secs(60), "the valid events stored", || {
        let db = db2.clone();
        async move { count(&db).await >= VALID as u64 }
    })
    .await;
    let (b, t, want) = (
        bootstrap.to_string(),
        topic.to_string(),
        ends(INVALID + VALID, PARTITIONS),
    );
    wait_until(
        Duration::from_secs(60),
        "offsets committed to the end",
        || {
            let (b, t, want) = (b.clone(), t.clone(), want.clone());
            async move { committed_at(&b, &t, &format!("{t}_g"), PARTITIONS) == want }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_auto_creation_the_dead_letter_topic_is_created_or_its_refusal_reported() {
    let mut cluster = no_auto_create();
    let bootstrap = cluster.bootstrap();

    // Created: the source topic's partition count, and the letters in it.
    let (topic, dbname) = (unique("noauto"), unique("noauto_db"));
    let dlq = format!("{topic}.dlq");
    create_topic_at(&bootstrap, &topic, PARTITIONS).await;
    assert_eq!(partition_count_at(&bootstrap, &dlq), None);
    let mut svc = start_server("dlq-created", &env_at(&bootstrap, &topic, &dbname, &[]));
    svc.wait_serving(Duration::from_secs(90)).await.unwrap();
    let b = bootstrap.clone();
    let d = dlq.clone();
    wait_until(
        Duration::from_secs(30),
        "the dead-letter topic created",
        || {
            let (b, d) = (b.clone(), d.clone());
            async move { partition_count_at(&b, &d).is_some() }
        },
    )
    .await;
    assert_eq!(
        partition_count_at(&bootstrap, &dlq),
        Some(PARTITIONS as usize)
    );
    assert_eq!(health(&svc).await["dead_letter_topic"], "ready");
    produce_mixed(&bootstrap, &topic, "created").await;
    let db = mongo_client().await.database(&dbname);
    wait_consumed(&bootstrap, &topic, &db).await;
    let letters = consume_at(&bootstrap, &dlq, INVALID, Duration::from_secs(60)).await;
    assert!(letters.iter().all(|(_, h)| h["reason"] == "invalid_qty"));
    let in_collection = db.collection::<Document>("raw_sales_dlq");
    assert_eq!(in_collection.count_documents(doc! {}).await.unwrap(), 0);
    assert_eq!(count(&db).await, VALID as u64);
    svc.stop().unwrap();

    // Refused: three replicas on one broker.
    let (topic, dbname) = (unique("norf"), unique("norf_db"));
    create_topic_at(&bootstrap, &topic, PARTITIONS).await;
    let extra = [("KAFKA_DLQ_REPLICATION_FACTOR", "3".to_string())];
    let mut svc = start_server("dlq-refused", &env_at(&bootstrap, &topic, &dbname, &extra));
    svc.wait_serving(Duration::from_secs(90)).await.unwrap();
    let mut report = health(&svc).await;
    for _ in 0..300 {
        if report["dead_letter_topic"] == "unavailable" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        report = health(&svc).await;
    }
    assert_eq!(report["dead_letter_topic"], "unavailable", "{report}");
    let why = report["dead_letter_topic_error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        why.contains("replication factor") && why.contains("KAFKA_DLQ_REPLICATION_FACTOR=3"),
        "{why}"
    );
    assert_eq!(
        report["status"], "serving",
        "letters still have a place: {report}"
    );
    let stats = svc.stats().await.unwrap();
    assert_eq!(stats.dead_letter_topic, "unavailable");
    assert_eq!(stats.dead_letter_topic_error, why);
    produce_mixed(&bootstrap, &topic, "refused").await;
    let db = mongo_client().await.database(&dbname);
    wait_consumed(&bootstrap, &topic, &db).await;
    let in_collection = db.collection::<Document>("raw_sales_dlq");
    let filter = doc! { "reason": "invalid_qty", "dlq_topic_error": &why };
    assert_eq!(
        in_collection.count_documents(filter).await.unwrap(),
        INVALID as u64
    );
    assert_eq!(
        partition_count_at(&bootstrap, &format!("{topic}.dlq")),
        None
    );
    let logs = svc.logs();
    let warned = logs
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("could not be created"))
        .count();
    assert_eq!(warned, 1, "said once in the log:\n{logs}");
    svc.stop().unwrap();
    cluster.stop(Duration::from_secs(20)).unwrap();
    eprintln!(
        "RELIABILITY dlq_topic auto.create.topics.enable=false: created with {PARTITIONS} partitions, \
         {INVALID} letters in it; refused (replication factor 3 on 1 broker): {INVALID} letters in the collection, SERVING"
    );
}

//! A flood of invalid events while the dead-letter topic takes none of them, with the
//! server as a process: the letters fall back to the collection in bounded batches, the
//! offsets reach the end of the log, memory stays bounded and health stays SERVING.
use std::time::{Duration, Instant};

use mongodb::bson::{doc, Document};
use sales_ingest::proto::sales::v1::SalesEvent;

use test_support::service::server_env;

use crate::{
    backends::{backends, start_server},
    faults::{ends, wait_committed},
    helpers::*,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_invalid_events_the_dead_letter_topic_refuses_falls_back_and_commits() {
    const N: usize = 20_000;
    const PARTITIONS: i32 = 2;
    let (topic, group, dbname) = (unique("dlqdown"), unique("dlqdown_g"), unique("dlqdown_db"));
    create_topic(&topic, PARTITIONS).await;
    // The dead-letter producer's record limit (1,000 bytes, librdkafka's least) is below
    // every letter of this flood: the topic refuses each one.
    let env = server_env(
        backends(),
        &topic,
        &group,
        &dbname,
        &[("KAFKA_PROPERTIES", "message.max.bytes=1000".into())],
    );
    let mut server = start_server("dlq-down", &env);
    server.wait_serving(Duration::from_secs(90)).await.unwrap();
    let idle = server.memory().unwrap();
    let bad: Vec<Vec<u8>> = (0..N)
        .map(|i| {
            encode(&SalesEvent {
                sku: format!("{i}-{}", "x".repeat(1_000)),
                ..valid_event(i, &format!("bad-{i}"))
            })
        })
        .collect();
    let started = Instant::now();
    produce(&topic, PARTITIONS, &bad).await;
    wait_committed(
        &topic,
        &group,
        ends(N, PARTITIONS),
        Duration::from_secs(240),
    )
    .await;
    let took = started.elapsed();

    let letters = mongo_client()
        .await
        .database(&dbname)
        .collection::<Document>("raw_sales_dlq");
    let fell_back = letters
        .count_documents(doc! { "reason": "sku_too_long", "dlq_topic_error": { "$exists": true } })
        .await
        .unwrap();
    assert_eq!(
        fell_back, N as u64,
        "every letter is in the collection with the topic's refusal"
    );
    let metrics = server.metrics().await.unwrap();
    assert!(
        metrics.contains(&format!(
            r#"dead_letters_total{{destination="mongodb"}} {N}"#
        )),
        "{}",
        metrics
            .lines()
            .filter(|l| l.starts_with("dead_letters"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    server
        .wait_health(200, Duration::from_secs(10))
        .await
        .expect("SERVING: the fallback took every letter");
    let memory = server.memory().unwrap();
    let grew_mib = memory.hwm_kib.saturating_sub(idle.rss_kib) / 1024;
    assert!(grew_mib < 150, "peak RSS grew {grew_mib} MiB over idle");
    let (status, _) = server.terminate(Duration::from_secs(30)).unwrap();
    assert!(status.success(), "graceful shutdown exits 0");
    eprintln!(
        "RELIABILITY dlq-refused-flood: sent={N} dead_lettered_to_collection={fell_back} lost=0 \
         committed_to_end={:.1}s peak_rss_growth={grew_mib}MiB",
        took.as_secs_f64()
    );
}

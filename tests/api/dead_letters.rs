//! Dead letters the topic will not take. A flood of invalid events while the topic
//! refuses every letter, with the server as a process: the letters fall back to the
//! collection in bounded batches, the offsets reach the end of the log, memory stays
//! bounded and health stays SERVING. And a broker that never answers: each letter is
//! tried `DLQ_MAX_ATTEMPTS` times before it falls back.
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use clap::Parser;
use mongodb::bson::{doc, Document};
use sales_ingest::{
    deps::{state, State},
    event::{DeadLetter, Origin},
    metrics::Metrics,
    proto::sales::v1::SalesEvent,
    sink::{dead_letter, DeadLetters},
    Config,
};

use test_support::{servers::free_port, service::server_env};

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
    let one = letters.find_one(doc! {}).await.unwrap().unwrap();
    let refusal = one.get_str("dlq_topic_error").unwrap();
    assert!(refusal.ends_with("(permanent: not retried)"), "{refusal}");
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

/// The dead-letter producer pointed at a port where nothing answers, with a short
/// delivery timeout: every attempt times out, and after `DLQ_MAX_ATTEMPTS` the letter is
/// stored in the collection, saying how many attempts it had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn letters_a_silent_broker_times_out_are_tried_max_attempts_times_then_stored() {
    const ATTEMPTS: u32 = 3;
    const TIMEOUT_MS: u64 = 400;
    let (topic, dbname) = (unique("dlqsilent"), unique("dlqsilent_db"));
    let options = AppOptions {
        extra: vec![(
            "kafka-properties".into(),
            format!("message.timeout.ms={TIMEOUT_MS}"),
        )],
        ..Default::default()
    };
    let mut config = Config::parse_from(app_args(&options, &topic, "unused", &dbname));
    config.kafka_bootstrap_servers = format!("127.0.0.1:{}", free_port());
    let producer = dead_letter::producer(&config).expect("producer");
    let db = mongo_client().await.database(&dbname);
    let metrics = Arc::new(Metrics::new());
    let (writer, reader) = state("dead letters", State::Up);
    let letters = DeadLetters::new(
        Some((producer, config.dlq_topic())),
        &db,
        "letters",
        metrics.clone(),
        writer,
        ATTEMPTS,
    );
    let letter = DeadLetter {
        payload: Bytes::from_static(b"not a sales event"),
        reason: "malformed",
        detail: "garbage".into(),
        origin: Origin::Kafka {
            topic: topic.as_str().into(),
            partition: 0,
            offset: 7,
        },
    };
    let started = Instant::now();
    letters.send(vec![letter]).await;
    let took = started.elapsed();

    let stored = db
        .collection::<Document>("letters")
        .find_one(doc! { "source_offset": 7i64 })
        .await
        .unwrap()
        .expect("the letter is in the collection once send returns");
    assert_eq!(stored.get_str("reason").unwrap(), "malformed");
    assert_eq!(stored.get_str("source_topic").unwrap(), topic);
    let refusal = stored.get_str("dlq_topic_error").unwrap();
    assert!(
        refusal.to_lowercase().contains("timed out")
            && refusal.ends_with(&format!(
                "(gave up after attempt {ATTEMPTS} of DLQ_MAX_ATTEMPTS={ATTEMPTS})"
            )),
        "{refusal}"
    );
    // Each attempt waits out the delivery timeout before the next.
    assert!(
        took >= Duration::from_millis(TIMEOUT_MS * ATTEMPTS as u64),
        "{ATTEMPTS} attempts of {TIMEOUT_MS} ms took only {took:?}"
    );
    let text = metrics.render();
    assert!(
        text.contains(r#"dead_letters_total{destination="mongodb"} 1"#),
        "{text}"
    );
    assert!(
        !text.contains(r#"dead_letters_total{destination="kafka"} 1"#),
        "{text}"
    );
    assert!(
        reader.borrow().is_up(),
        "the collection took it: dead letters stay up"
    );
    db.drop().await.unwrap();
}

//! Retention deletes what was not consumed: while the consumer is paused
//! (PauseConsumer), a short `retention.ms` removes the records past its committed
//! offset. On resume the service does what `auto.offset.reset` says (earliest: the
//! new log start), logs the reset and counts the skipped offsets per partition in
//! `kafka_offsets_skipped_total`. The server runs as a process.
use std::time::{Duration, Instant};

use rdkafka::{
    admin::{
        AdminClient, AdminOptions, AlterConfig, NewTopic, ResourceSpecifier, TopicReplication,
    },
    client::DefaultClientContext,
    ClientConfig,
};
use sales_ingest::proto::ingest::v1::{
    ingest_admin_client::IngestAdminClient, PauseConsumerRequest, ResumeConsumerRequest,
};
use test_support::service::{default, server_env};

use crate::{
    backends::{backends, start_server},
    faults::{count, payloads},
    helpers::*,
};

const PARTITIONS: i32 = 2;

fn admin() -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", &backends().kafka)
        .create()
        .unwrap()
}

fn authed<T>(msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    let bearer = format!("Bearer {}", default("ADMIN_TOKEN"));
    req.metadata_mut()
        .insert("authorization", bearer.parse().unwrap());
    req
}

fn skipped(metrics: &str, partition: i32) -> Option<u64> {
    let prefix = format!("kafka_offsets_skipped_total{{partition=\"{partition}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix)?.parse().ok())
}

/// `text` without its ANSI colour sequences (`ESC [ … m`).
fn without_colours(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|&c| c == 'm');
        } else {
            out.push(c);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deleting_unconsumed_records_is_counted_and_logged() {
    let (topic, group, dbname) = (unique("retain"), unique("retain_g"), unique("retain_db"));
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let t = NewTopic::new(&topic, PARTITIONS, TopicReplication::Fixed(1))
        .set("retention.ms", "2000")
        .set("segment.ms", "500");
    for r in admin().create_topics(&[t], &opts).await.unwrap() {
        r.expect("topic created");
    }
    let env = server_env(backends(), &topic, &group, &dbname, &[]);
    let mut server = start_server("retention", &env);
    server.wait_serving(Duration::from_secs(90)).await.unwrap();
    let db = mongo_client().await.database(&dbname);
    produce(&topic, PARTITIONS, &payloads("k0", 10)).await;
    wait_until(Duration::from_secs(60), "the first 10 committed", || {
        let (t, g) = (topic.clone(), group.clone());
        async move { committed(&t, &g, PARTITIONS) == vec![5, 5] }
    })
    .await;

    let mut admin_rpc = IngestAdminClient::new(server.channel());
    admin_rpc
        .pause_consumer(authed(PauseConsumerRequest {}))
        .await
        .unwrap();
    produce(&topic, PARTITIONS, &payloads("k1", 200)).await;
    // Retention removes everything (it rolls the active segment too): the log starts
    // past the committed offsets.
    let deleted = Instant::now();
    wait_until(Duration::from_secs(60), "retention deleted the log", || {
        let t = topic.clone();
        async move {
            let w = watermarks_at(&backends().kafka, &t, PARTITIONS);
            w.iter().all(|&(lo, hi)| hi == 105 && lo == 105)
        }
    })
    .await;
    let took = deleted.elapsed();
    // Keep what comes next, then resume and produce 50 more per partition.
    let keep = AlterConfig::new(ResourceSpecifier::Topic(&topic)).set("retention.ms", "-1");
    for r in admin().alter_configs(&[keep], &opts).await.unwrap() {
        r.expect("retention altered");
    }
    admin_rpc
        .resume_consumer(authed(ResumeConsumerRequest {}))
        .await
        .unwrap();
    produce(&topic, PARTITIONS, &payloads("k2", 100)).await;
    wait_until(
        Duration::from_secs(60),
        "offsets committed to the end",
        || {
            let (t, g) = (topic.clone(), group.clone());
            async move { committed(&t, &g, PARTITIONS) == vec![155, 155] }
        },
    )
    .await;
    assert_eq!(count(&db).await, 110, "the 10 before and the 100 after");
    let metrics = server.metrics().await.unwrap();
    for p in 0..PARTITIONS {
        assert_eq!(skipped(&metrics, p), Some(100), "partition {p}:\n{metrics}");
    }
    let logs = without_colours(&server.logs());
    assert!(
        logs.contains("offset reset (auto.offset.reset)") && logs.contains("skipped=100"),
        "the reset is logged:\n{}",
        server.log_tail()
    );
    let (status, _) = server.terminate(Duration::from_secs(30)).unwrap();
    assert!(status.success());
    eprintln!(
        "RELIABILITY retention: produced=310 deleted_unconsumed=200 stored=110 skipped_counted=200 retention_deleted_after={:.1}s",
        took.as_secs_f64()
    );
}

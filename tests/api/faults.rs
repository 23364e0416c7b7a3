//! Crashes, rebalances and shutdown under load, with the server as a separate process.
//! Each test prints a `RELIABILITY` line with its figures for the README table.
use std::time::{Duration, Instant};

use mongodb::bson::{doc, Document};
use sales_ingest::proto::ingest::v1::IngestRequest;
use tokio_stream::StreamExt;

use test_support::service::server_env;

use crate::{
    backends::{backends, start_server},
    helpers::*,
};

/// `n` valid events with ids `<prefix>-<i>`, encoded.
pub fn payloads(prefix: &str, n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| encode(&valid_event(i, &format!("{prefix}-{i}"))))
        .collect()
}

/// Known end offsets after producing `n` messages round-robin over `partitions`.
pub fn ends(n: usize, partitions: i32) -> Vec<i64> {
    let p = partitions as usize;
    (0..p)
        .map(|i| (n / p + usize::from(i < n % p)) as i64)
        .collect()
}

pub async fn count(db: &mongodb::Database) -> u64 {
    db.collection::<Document>("raw_sales")
        .count_documents(doc! {})
        .await
        .expect("count")
}

async fn wait_count(db: &mongodb::Database, at_least: u64, timeout: Duration) -> u64 {
    let deadline = Instant::now() + timeout;
    loop {
        let n = count(db).await;
        if n >= at_least {
            return n;
        }
        assert!(
            Instant::now() < deadline,
            "only {n} of {at_least} documents after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Documents in `db` once the count stops changing: a write a killed process sent just
/// before it died may still land.
pub async fn settled_count(db: &mongodb::Database) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = count(db).await;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let n = count(db).await;
        if n == last {
            return n;
        }
        assert!(Instant::now() < deadline, "the count never settled: {n}");
        last = n;
    }
}

/// The sum of `group`'s committed offsets on `topic` (none committed counts 0).
pub fn committed_sum(topic: &str, group: &str, partitions: i32) -> u64 {
    committed(topic, group, partitions)
        .iter()
        .map(|&o| o.max(0) as u64)
        .sum()
}

/// Kafka counts of the service's GetStats.
async fn kafka_counts(server: &test_support::service::Service) -> (u64, u64) {
    let k = server.stats().await.unwrap().kafka.unwrap_or_default();
    (k.stored, k.duplicate)
}

pub async fn wait_committed(topic: &str, group: &str, want: Vec<i64>, timeout: Duration) {
    let partitions = want.len() as i32;
    let (t, g) = (topic.to_string(), group.to_string());
    wait_until(
        timeout,
        "offsets committed to the end of every partition",
        || {
            let (t, g, want) = (t.clone(), g.clone(), want.clone());
            async move { committed(&t, &g, partitions) == want }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_three_times_while_ingesting_loses_nothing_and_duplicates_nothing() {
    const N: usize = 200_000;
    const PARTITIONS: i32 = 3;
    let (topic, group, dbname) = (unique("crash"), unique("crash_g"), unique("crash_db"));
    create_topic(&topic, PARTITIONS).await;
    produce(&topic, PARTITIONS, &payloads("c", N)).await;
    let db = mongo_client().await.database(&dbname);
    let env = server_env(backends(), &topic, &group, &dbname, &[]);
    let started = Instant::now();
    let mut recoveries = Vec::new();
    // Each instance starts at the committed offsets, below which everything is stored:
    // it is redelivered exactly the stored events at or past them, and must count each
    // as a duplicate (not store it again).
    let mut redelivered = 0;
    for (round, fraction) in [0.15, 0.45, 0.75].into_iter().enumerate() {
        let before = settled_count(&db).await;
        let uncommitted = before - committed_sum(&topic, &group, PARTITIONS);
        let server = start_server(&format!("crash{round}"), &env);
        let restarted = Instant::now();
        wait_count(&db, before + 1, Duration::from_secs(60)).await;
        recoveries.push(restarted.elapsed());
        wait_count(&db, (N as f64 * fraction) as u64, Duration::from_secs(180)).await;
        let (_, duplicates) = kafka_counts(&server).await;
        assert_eq!(
            duplicates, uncommitted,
            "round {round}: the stored but uncommitted events came back as duplicates"
        );
        redelivered += duplicates;
        server.kill().unwrap();
    }
    let before = settled_count(&db).await;
    let uncommitted = before - committed_sum(&topic, &group, PARTITIONS);
    let server = start_server("crash-final", &env);
    wait_count(&db, N as u64, Duration::from_secs(240)).await;
    wait_committed(&topic, &group, ends(N, PARTITIONS), Duration::from_secs(60)).await;
    let stored = count(&db).await;
    assert_eq!(stored, N as u64, "each event exactly once");
    let (stored_last, duplicates) = kafka_counts(&server).await;
    assert_eq!(duplicates, uncommitted, "the last restart's redeliveries");
    assert_eq!(
        stored_last,
        N as u64 - before,
        "the last instance stored exactly what was not stored yet"
    );
    redelivered += duplicates;
    let distinct = db
        .collection::<Document>("raw_sales")
        .count_documents(doc! { "_id": { "$regex": "^c-" } })
        .await
        .unwrap();
    assert_eq!(distinct, N as u64);
    let (status, _) = server.terminate(Duration::from_secs(30)).unwrap();
    assert!(status.success());
    let worst = recoveries.iter().max().unwrap();
    eprintln!(
        "RELIABILITY crash: sent={N} stored={stored} lost={} duplicated=0 redelivered_absorbed={redelivered} recover_max={:.1}s total={:.1}s",
        N as u64 - stored,
        worst.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

/// Stored documents by partition, for ids `<prefix>-<i>` produced in chunks of `chunk`,
/// each chunk round-robin from partition 0.
async fn stored_by_partition(db: &mongodb::Database, chunk: usize, partitions: i32) -> Vec<u64> {
    let mut by = vec![0; partitions as usize];
    let mut ids = db
        .collection::<Document>("raw_sales")
        .find(doc! {})
        .projection(doc! { "_id": 1 })
        .await
        .unwrap();
    while let Some(d) = ids.next().await {
        let d = d.unwrap();
        let id = d.get_str("_id").unwrap();
        let i: usize = id.rsplit('-').next().unwrap().parse().unwrap();
        by[(i % chunk) % partitions as usize] += 1;
    }
    by
}

async fn scale_out(variant: &str, kill: bool) {
    const N: usize = 100_000;
    const PARTITIONS: i32 = 6;
    let (topic, group, dbname) = (unique("scale"), unique("scale_g"), unique("scale_db"));
    create_topic(&topic, PARTITIONS).await;
    let db = mongo_client().await.database(&dbname);
    let env = server_env(backends(), &topic, &group, &dbname, &[]);
    let a = start_server(&format!("scale-{variant}-a"), &env);
    let b = start_server(&format!("scale-{variant}-b"), &env);
    let all = payloads("s", N);
    // Events keep flowing while the group changes.
    let producer = {
        let topic = topic.clone();
        tokio::spawn(async move {
            for chunk in all.chunks(10_000) {
                produce(&topic, PARTITIONS, chunk).await;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
    };
    let started = Instant::now();
    wait_count(&db, N as u64 / 3, Duration::from_secs(120)).await;
    // What `a` leaves behind is redelivered to `b`: on its partitions, the stored events
    // at or past the committed offsets (none after a clean leave).
    let owned: Vec<usize> = a
        .stats()
        .await
        .unwrap()
        .partitions
        .iter()
        .map(|p| p.partition as usize)
        .collect();
    let (_, b_duplicates_before) = kafka_counts(&b).await;
    let removed = Instant::now();
    let a_log = a.log().to_path_buf();
    if kill {
        a.kill().unwrap();
    } else {
        let (status, _) = a.terminate(Duration::from_secs(30)).unwrap();
        assert!(status.success(), "graceful shutdown exits 0");
        let logs = std::fs::read_to_string(&a_log).unwrap();
        assert!(
            logs.contains("final offsets committed"),
            "the leaving instance committed before release:\n{logs}"
        );
    }
    // Read before `b` takes the partitions over (after the 6 s session timeout), once a
    // write `a` sent before it died has landed (`b` keeps storing on its own partitions,
    // so the total never settles). After a clean leave `a` had committed everything it
    // stored: nothing to redeliver.
    let left: u64 = if kill {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let offsets = committed(&topic, &group, PARTITIONS);
        let stored_by = stored_by_partition(&db, 10_000, PARTITIONS).await;
        assert!(
            removed.elapsed() < Duration::from_secs(6),
            "read after the session timeout: `b` may own the partitions already"
        );
        owned
            .iter()
            .map(|&p| stored_by[p] - offsets[p].max(0) as u64)
            .sum()
    } else {
        0
    };
    producer.await.unwrap();
    wait_count(&db, N as u64, Duration::from_secs(240)).await;
    let recovered = removed.elapsed();
    // Produced in chunks of 10,000, each round-robin from partition 0.
    let mut want = vec![0i64; PARTITIONS as usize];
    for _ in 0..N / 10_000 {
        for (w, e) in want.iter_mut().zip(ends(10_000, PARTITIONS)) {
            *w += e;
        }
    }
    wait_committed(&topic, &group, want, Duration::from_secs(60)).await;
    let stored = count(&db).await;
    assert_eq!(stored, N as u64, "every event exactly once");
    let (_, b_duplicates) = kafka_counts(&b).await;
    // Every event `a` stored past its commits comes back to `b` as a duplicate. So may
    // some from `b`'s join, which a loaded machine can finish after the first snapshot:
    // `a` stored events on the partitions it handed over whose late acks were ignored.
    // The redeliveries are therefore at least what `a` left.
    let redelivered = b_duplicates - b_duplicates_before;
    assert!(
        redelivered >= left && redelivered < N as u64,
        "the events `a` stored past its commits ({left}) came back to `b` as duplicates: {redelivered}"
    );
    let b_log = b.log().to_path_buf();
    let (status, _) = b.terminate(Duration::from_secs(30)).unwrap();
    assert!(status.success());
    if !kill {
        // By their own counts the two stored N events between them: none twice.
        let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap();
        let (a_stored, _) = stopped_cleanly_counts(&read(&a_log));
        let (b_stored, _) = stopped_cleanly_counts(&read(&b_log));
        assert_eq!(a_stored + b_stored, N as u64, "stored counts add up to N");
    }
    eprintln!(
        "RELIABILITY rebalance-{variant}: sent={N} stored={stored} lost={} duplicated=0 redelivered_absorbed={left} recover={:.1}s total={:.1}s",
        N as u64 - stored,
        recovered.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_a_topic_and_one_leaves_gracefully() {
    scale_out("graceful", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_a_topic_and_one_is_killed() {
    scale_out("sigkill", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_flushes_commits_and_exits_0() {
    const N: usize = 60_000;
    const PARTITIONS: i32 = 3;
    let (topic, group, dbname) = (unique("term"), unique("term_g"), unique("term_db"));
    create_topic(&topic, PARTITIONS).await;
    let all = payloads("t", N);
    produce(&topic, PARTITIONS, &all[..N / 2]).await;
    let db = mongo_client().await.database(&dbname);
    let env = server_env(
        backends(),
        &topic,
        &group,
        &dbname,
        &[
            ("FLUSH_INTERVAL", "2".into()),
            ("SHUTDOWN_TIMEOUT", "15".into()),
        ],
    );
    let server = start_server("term", &env);
    server
        .wait_health(200, Duration::from_secs(30))
        .await
        .unwrap();
    wait_count(&db, 1, Duration::from_secs(60)).await;

    // gRPC producer streaming until the server ends its stream.
    let url = server.grpc_url.clone();
    let grpc = tokio::spawn(async move {
        let mut client =
            sales_ingest::proto::ingest::v1::ingest_events_client::IngestEventsClient::new(
                channel(&url).await,
            );
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let sender = tokio::spawn(async move {
            for seq in 0..10_000u64 {
                let events = (0..100)
                    .map(|i| valid_event(i, &format!("tg-{seq}-{i}")))
                    .collect();
                if tx.send(IngestRequest { seq, events }).await.is_err() {
                    break;
                }
            }
        });
        let mut acked_ids = Vec::new();
        if let Ok(resp) = client
            .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
        {
            let mut acks = resp.into_inner();
            while let Some(Ok(ack)) = acks.next().await {
                assert_eq!(ack.accepted, 100);
                acked_ids.extend((0..100).map(|i| format!("tg-{}-{i}", ack.seq)));
            }
        }
        sender.abort();
        acked_ids
    });
    let kafka_rest = {
        let topic = topic.clone();
        let rest = all[N / 2..].to_vec();
        tokio::spawn(async move { produce(&topic, PARTITIONS, &rest).await })
    };
    wait_count(&db, 20_000, Duration::from_secs(120)).await;
    // The gRPC stream too is under way (a loaded machine can open it late).
    let grpc_stored = db.collection::<Document>("raw_sales");
    wait_until(Duration::from_secs(60), "gRPC events stored", || {
        let c = grpc_stored.clone();
        async move {
            c.count_documents(doc! { "_id": { "$regex": "^tg-" } })
                .await
                .unwrap()
                >= 100
        }
    })
    .await;
    let (status, took) = server.terminate(Duration::from_secs(30)).unwrap();
    assert!(status.success(), "exit 0 after SIGTERM, got {status:?}");
    assert!(
        took < Duration::from_secs(15),
        "within SHUTDOWN_TIMEOUT: {took:?}"
    );
    kafka_rest.await.unwrap();
    let acked = grpc.await.unwrap();
    assert!(!acked.is_empty(), "some gRPC requests were acked");
    let coll = db.collection::<Document>("raw_sales");
    let mut found = 0;
    for chunk in acked.chunks(5_000) {
        found += coll
            .count_documents(doc! { "_id": { "$in": chunk.to_vec() } })
            .await
            .unwrap();
    }
    assert_eq!(
        found as usize,
        acked.len(),
        "every acked event is in MongoDB"
    );
    // Final offsets: exactly what was stored from Kafka is committed, partition by partition.
    let offsets = committed(&topic, &group, PARTITIONS);
    let kafka_docs = coll
        .count_documents(doc! { "source": "kafka" })
        .await
        .unwrap();
    assert_eq!(
        offsets.iter().sum::<i64>() as u64,
        kafka_docs,
        "committed {offsets:?}"
    );
    for (p, &o) in offsets.iter().enumerate() {
        assert!(o > 0, "partition {p} committed");
        // The last committed event of each partition is stored.
        let i = (o as usize - 1) * PARTITIONS as usize + p;
        assert!(coll
            .find_one(doc! { "_id": format!("t-{i}") })
            .await
            .unwrap()
            .is_some());
    }
    eprintln!(
        "RELIABILITY sigterm-under-load: kafka_stored={kafka_docs} grpc_acked={} lost=0 duplicated=0 shutdown={:.1}s",
        acked.len(),
        took.as_secs_f64()
    );
}

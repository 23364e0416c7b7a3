//! Incremental rebalancing under load, with either group protocol (classic with
//! cooperative-sticky, and the broker-assigned consumer protocol of KIP-848): three
//! server processes join and leave a group on a 12-partition topic one by one while
//! events flow. Every event is stored exactly once, and while the group rebalances, the
//! partitions that stay with an instance keep being consumed: no instance present
//! before a change is ever left without partitions.
use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use test_support::service::{server_env, Service};

use crate::{
    backends::{backends, start_server},
    faults::{count, payloads},
    helpers::*,
};

const PARTITIONS: i32 = 12;

/// An instance's assigned partitions with their committed offsets, from GetStats.
async fn owned(svc: &Service) -> BTreeMap<i32, i64> {
    match svc.stats().await {
        Ok(s) => s
            .partitions
            .iter()
            .map(|p| (p.partition, p.committed_offset))
            .collect(),
        Err(_) => BTreeMap::new(),
    }
}

/// Samples `stay`'s assignments until every instance in `after` owns its share of the
/// 12 partitions; asserts that no instance in `stay` ever owned none and that the
/// partitions each kept throughout advanced meanwhile. Returns how long it took.
async fn through_rebalance(what: &str, stay: &[&Service], after: &[&Service]) -> Duration {
    let started = Instant::now();
    let first: Vec<BTreeMap<i32, i64>> =
        futures::future::join_all(stay.iter().map(|s| owned(s))).await;
    let mut kept: Vec<BTreeSet<i32>> = first.iter().map(|m| m.keys().copied().collect()).collect();
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "{what}: the group did not settle in 90 s"
        );
        for (i, s) in stay.iter().enumerate() {
            let now = owned(s).await;
            assert!(
                !now.is_empty(),
                "{what}: an instance present before the change owned no partition during it"
            );
            kept[i].retain(|p| now.contains_key(p));
        }
        let shares: Vec<BTreeMap<i32, i64>> =
            futures::future::join_all(after.iter().map(|s| owned(s))).await;
        let total: usize = shares.iter().map(BTreeMap::len).sum();
        let union: BTreeSet<i32> = shares.iter().flat_map(|m| m.keys().copied()).collect();
        let fair = shares
            .iter()
            .all(|m| m.len() >= PARTITIONS as usize / after.len() - 1);
        if total == PARTITIONS as usize && union.len() == total && fair {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = started.elapsed();
    // The partitions an instance kept throughout were consumed during the change.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (i, s) in stay.iter().enumerate() {
        let now = owned(s).await;
        assert!(
            !kept[i].is_empty(),
            "{what}: instance {i} kept no partition"
        );
        let moved = kept[i]
            .iter()
            .filter(|p| now.get(p).copied().unwrap_or(-1) > first[i].get(p).copied().unwrap_or(-1))
            .count();
        assert!(
            moved > 0,
            "{what}: instance {i}'s kept partitions {:?} made no progress",
            kept[i]
        );
    }
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_join_and_leave_under_load_and_kept_partitions_keep_flowing() {
    join_and_leave("classic").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_join_and_leave_with_the_consumer_group_protocol() {
    join_and_leave("consumer").await;
}

/// The servers' environment for `protocol`: with `consumer`, without the session
/// timeout and heartbeat interval of the test defaults (the broker sets them; the test
/// broker uses the same 6 s and 1 s).
fn protocol_env(protocol: &str, topic: &str, group: &str, db: &str) -> Vec<(String, String)> {
    let mut env = server_env(
        backends(),
        topic,
        group,
        db,
        &[("KAFKA_GROUP_PROTOCOL", protocol.to_string())],
    );
    if protocol == "consumer" {
        env.retain(|(k, _)| k != "KAFKA_SESSION_TIMEOUT_MS" && k != "KAFKA_HEARTBEAT_INTERVAL_MS");
    }
    env
}

/// The group as the broker's classic DescribeGroups shows it: its state, protocol type
/// and protocol, or the error (a consumer-protocol group is not a classic group).
fn describe_group(group: &str) -> String {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let client: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &backends().kafka)
        .create()
        .expect("client");
    match client.fetch_group_list(Some(group), Duration::from_secs(10)) {
        Ok(list) => list
            .groups()
            .iter()
            .map(|g| {
                format!(
                    "{} {} {} {}",
                    g.name(),
                    g.state(),
                    g.protocol_type(),
                    g.protocol()
                )
            })
            .collect::<Vec<_>>()
            .join("; "),
        Err(e) => format!("error: {e}"),
    }
}

async fn join_and_leave(protocol: &str) {
    let (topic, group, dbname) = (unique("coop"), unique("coop_g"), unique("coop_db"));
    create_topic(&topic, PARTITIONS).await;
    let db = mongo_client().await.database(&dbname);
    let env = protocol_env(protocol, &topic, &group, &dbname);
    let a = start_server("coop-a", &env);
    let t0 = Instant::now();
    while owned(&a).await.len() < PARTITIONS as usize {
        assert!(
            t0.elapsed() < Duration::from_secs(90),
            "a never got the partitions"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The protocol is in effect: the classic API sees a classic group, stable with its
    // assignor, and finds no classic group where the consumer protocol runs.
    let described = describe_group(&group);
    match protocol {
        "classic" => assert!(
            described.ends_with("Stable consumer cooperative-sticky"),
            "{described}"
        ),
        _ => assert!(
            !described.contains("Stable") && !described.contains("cooperative"),
            "a classic group where group.protocol=consumer runs: {described}"
        ),
    }

    // Events flow for the whole test: 600 every 200 ms, round-robin over the partitions.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let producer = {
        let (topic, stop, sent) = (topic.clone(), stop.clone(), sent.clone());
        tokio::spawn(async move {
            let mut round = 0;
            while !stop.load(Ordering::SeqCst) {
                produce(&topic, PARTITIONS, &payloads(&format!("c{round}"), 600)).await;
                sent.fetch_add(600, Ordering::SeqCst);
                round += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;

    let b = start_server("coop-b", &env);
    let join_b = through_rebalance("b joins", &[&a], &[&a, &b]).await;
    let c = start_server("coop-c", &env);
    let join_c = through_rebalance("c joins", &[&a, &b], &[&a, &b, &c]).await;
    let logs: Vec<_> = [&a, &b, &c].iter().map(|s| s.log().to_path_buf()).collect();
    let (status, _) = c.terminate(Duration::from_secs(30)).unwrap();
    assert!(status.success(), "c exits 0");
    let leave_c = through_rebalance("c leaves", &[&a, &b], &[&a, &b]).await;
    let (status, _) = b.terminate(Duration::from_secs(30)).unwrap();
    assert!(status.success(), "b exits 0");
    let leave_b = through_rebalance("b leaves", &[&a], &[&a]).await;

    stop.store(true, Ordering::SeqCst);
    producer.await.unwrap();
    let n = sent.load(Ordering::SeqCst) as u64;
    let db2 = db.clone();
    wait_until(Duration::from_secs(120), "every event stored", || {
        let db = db2.clone();
        async move { count(&db).await >= n }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(count(&db).await, n, "every event exactly once");
    let (status, _) = a.terminate(Duration::from_secs(30)).unwrap();
    assert!(status.success());
    // By the instances' own counts: they stored n events between them, so none stored
    // an event another had stored; what the rebalances redelivered they found there.
    let (mut stored, mut redelivered) = (0, 0);
    for log in &logs {
        let (s, d) = stopped_cleanly_counts(&std::fs::read_to_string(log).unwrap());
        stored += s;
        redelivered += d;
    }
    assert_eq!(
        stored, n,
        "the instances' stored counts add up to the events sent"
    );
    eprintln!(
        "RELIABILITY rebalance group.protocol={protocol}: sent={n} stored={n} lost=0 duplicated=0 redelivered_absorbed={redelivered} settle_b_join={:.1}s \
         settle_c_join={:.1}s settle_c_leave={:.1}s settle_b_leave={:.1}s",
        join_b.as_secs_f64(),
        join_c.as_secs_f64(),
        leave_c.as_secs_f64(),
        leave_b.as_secs_f64()
    );
}

//! Leader failover in a three-broker cluster (three JVMs on loopback, the topic and
//! the dead-letter topic with replication factor 3 and `min.insync.replicas=2`): under
//! a steady acks=all load with some invalid events, the broker that leads most of the
//! service's partitions is SIGKILLed, then restarted; the server runs as a process.
use std::{
    collections::HashSet,
    sync::{
        atomic::{AtomicBool, AtomicU8, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use mongodb::bson::{doc, Document};
use rdkafka::{
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    consumer::{BaseConsumer, Consumer},
    producer::FutureRecord,
    ClientConfig,
};
use test_support::{kafka::KafkaOptions, service::server_env};

use crate::{
    backends::{backends, start_kafka, start_server},
    faults::count,
    helpers::*,
};

const PARTITIONS: i32 = 6;
/// Every this many events one is invalid (qty 0) and goes to the dead-letter topic.
const INVALID_EVERY: usize = 25;

/// Broker settings that make a dead broker's partitions move within seconds: the
/// controller fences a broker 3 s after its last heartbeat (500 ms apart) and moves
/// its leaderships; a follower leaves the in-sync replicas after 5 s; a restarted
/// broker gets its preferred leaderships back within 5 s.
fn cluster_options() -> KafkaOptions {
    let props = [
        ("broker.session.timeout.ms", "3000"),
        ("broker.heartbeat.interval.ms", "500"),
        ("replica.lag.time.max.ms", "5000"),
        ("replica.fetch.wait.max.ms", "100"),
        ("leader.imbalance.check.interval.seconds", "5"),
        ("default.replication.factor", "3"),
        ("min.insync.replicas", "2"),
    ];
    KafkaOptions {
        nodes: 3,
        heap_mib: 320,
        properties: props
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    }
}

async fn create_replicated(bootstrap: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let t = NewTopic::new(topic, partitions, TopicReplication::Fixed(3))
        .set("min.insync.replicas", "2");
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for r in admin.create_topics(&[t], &opts).await.unwrap() {
        r.expect("topic created");
    }
}

/// The leader of each partition of `topic`, in partition order, from the metadata.
fn leaders(bootstrap: &str, topic: &str) -> Vec<i32> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let mut parts: Vec<(i32, i32)> = md.topics()[0]
        .partitions()
        .iter()
        .map(|p| (p.id(), p.leader()))
        .collect();
    parts.sort_unstable();
    parts.into_iter().map(|(_, l)| l).collect()
}

/// A steady load: 60 events every 100 ms over every partition, ids
/// `e<phase>-p<partition>-<seq>`, acks=all and idempotent. Returns (valid, invalid).
fn steady_load(
    bootstrap: String,
    topic: String,
    phase: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(u64, u64)> {
    tokio::spawn(async move {
        let producer = steady_producer(&bootstrap);
        let (mut seq, mut valid, mut invalid) = (0usize, 0u64, 0u64);
        let mut pending = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            let ph = phase.load(Ordering::SeqCst);
            for _ in 0..60 {
                let part = (seq % PARTITIONS as usize) as i32;
                let mut event = valid_event(seq, &format!("e{ph}-p{part}-{seq}"));
                if seq % INVALID_EVERY == 0 {
                    event.qty = 0;
                    invalid += 1;
                } else {
                    valid += 1;
                }
                let payload = encode(&event);
                let record = FutureRecord::<(), [u8]>::to(&topic)
                    .payload(&payload)
                    .partition(part);
                pending.push(producer.send_result(record).map_err(|(e, _)| e).unwrap());
                seq += 1;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for d in pending {
            d.await.unwrap().expect("delivered through the failover");
        }
        (valid, invalid)
    })
}

/// Waits until an event produced in `phase` to one of `parts` is stored; returns when.
async fn first_stored(db: &mongodb::Database, phase: u8, parts: &[i32], timeout: Duration) {
    let alts: Vec<String> = parts.iter().map(i32::to_string).collect();
    let filter = doc! { "_id": { "$regex": format!("^e{phase}-p({})-", alts.join("|")) } };
    let coll = db.collection::<Document>("raw_sales");
    wait_until(timeout, "an event from a moved partition stored", || {
        let (coll, filter) = (coll.clone(), filter.clone());
        async move { coll.count_documents(filter).await.unwrap() > 0 }
    })
    .await;
}

/// Waits until the group's committed offset of every partition in `parts` passed
/// `before`.
async fn commits_advance(bootstrap: &str, topic: &str, group: &str, parts: &[i32]) {
    let before = committed_at(bootstrap, topic, group, PARTITIONS);
    wait_until(
        Duration::from_secs(60),
        "committed offsets advance on the moved partitions",
        || {
            let now = committed_at(bootstrap, topic, group, PARTITIONS);
            let advanced = parts.iter().all(|&p| now[p as usize] > before[p as usize]);
            async move { advanced }
        },
    )
    .await;
}

fn kafka_letters(metrics: &str) -> u64 {
    metrics
        .lines()
        .find(|l| l.starts_with(r#"dead_letters_total{destination="kafka"}"#))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_of_most_partitions_sigkilled_then_restarted_loses_nothing() {
    let mut cluster = start_kafka(&cluster_options());
    let bootstrap = cluster.bootstrap();
    let (topic, group, dbname) = (
        unique("failover"),
        unique("failover_g"),
        unique("failover_db"),
    );
    let dlq = format!("{topic}.dlq");
    create_replicated(&bootstrap, &topic, PARTITIONS).await;
    create_replicated(&bootstrap, &dlq, 3).await;
    let env = server_env(
        backends(),
        &topic,
        &group,
        &dbname,
        &[("KAFKA_BOOTSTRAP_SERVERS", bootstrap.clone())],
    );
    let mut server = start_server("failover", &env);
    server.wait_serving(Duration::from_secs(90)).await.unwrap();
    let db = mongo_client().await.database(&dbname);
    let (phase, stop) = (Arc::new(AtomicU8::new(0)), Arc::new(AtomicBool::new(false)));
    let load = steady_load(
        bootstrap.clone(),
        topic.clone(),
        phase.clone(),
        stop.clone(),
    );
    wait_until(
        Duration::from_secs(60),
        "the load is stored and committed",
        || {
            let (db, b, t, g) = (db.clone(), bootstrap.clone(), topic.clone(), group.clone());
            async move {
                count(&db).await >= 2_000
                    && committed_at(&b, &t, &g, PARTITIONS).iter().all(|&c| c > 0)
            }
        },
    )
    .await;

    // Kill the broker that leads most partitions.
    let before = leaders(&bootstrap, &topic);
    let victim = (1..=3)
        .max_by_key(|id| before.iter().filter(|l| *l == id).count())
        .unwrap();
    let moved: Vec<i32> = (0..PARTITIONS)
        .filter(|&p| before[p as usize] == victim)
        .collect();
    phase.store(1, Ordering::SeqCst);
    let killed = Instant::now();
    cluster.node(victim as u32).kill().unwrap();
    first_stored(&db, 1, &moved, Duration::from_secs(90)).await;
    let failover = killed.elapsed();
    let after = leaders(&bootstrap, &topic);
    assert!(
        moved.iter().all(|&p| after[p as usize] != victim),
        "new leaders elected: before {before:?}, after {after:?}"
    );
    commits_advance(&bootstrap, &topic, &group, &moved).await;
    let commits_after_kill = killed.elapsed();

    // Restart it: it rejoins, takes its preferred leaderships back, and the service
    // follows the second move as well.
    phase.store(2, Ordering::SeqCst);
    tokio::task::block_in_place(|| cluster.node(victim as u32).start()).unwrap();
    let restarted = Instant::now();
    wait_until(
        Duration::from_secs(90),
        "the restarted broker leads again",
        || {
            let ls = leaders(&bootstrap, &topic);
            async move { ls.contains(&victim) }
        },
    )
    .await;
    let now = leaders(&bootstrap, &topic);
    let back: Vec<i32> = (0..PARTITIONS)
        .filter(|&p| now[p as usize] == victim)
        .collect();
    let led_again = restarted.elapsed();
    phase.store(3, Ordering::SeqCst);
    first_stored(&db, 3, &back, Duration::from_secs(90)).await;
    let moved_back = restarted.elapsed();
    commits_advance(&bootstrap, &topic, &group, &back).await;

    stop.store(true, Ordering::SeqCst);
    let (valid, invalid) = load.await.unwrap();
    let ends = wait_committed_to_end_at(
        &bootstrap,
        &topic,
        &group,
        PARTITIONS,
        Duration::from_secs(120),
    )
    .await;
    assert_eq!(
        ends.iter().sum::<i64>() as u64,
        valid + invalid,
        "the log holds each event once (idempotent producer)"
    );
    let stored = count(&db).await;
    assert_eq!(stored, valid, "every valid event stored, none lost");
    let stats = server.stats().await.unwrap();
    let kafka = stats.kafka.unwrap_or_default();
    assert_eq!(kafka.stored, valid, "each inserted once");
    // A redelivered invalid event is rejected and dead-lettered again.
    assert!(kafka.rejected >= invalid, "{} < {invalid}", kafka.rejected);
    // The last letters may still be on their way to the topic.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut letters = kafka_letters(&server.metrics().await.unwrap());
    while letters < kafka.rejected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        letters = kafka_letters(&server.metrics().await.unwrap());
    }
    assert_eq!(
        letters, kafka.rejected,
        "every dead letter delivered to the topic"
    );
    // The whole topic: a letter re-sent across the failover (a retry whose first send
    // had landed) is in it twice, so `letters` messages may stop short of the last ones.
    let in_topic: i64 = watermarks_at(&bootstrap, &dlq, 3)
        .iter()
        .map(|(low, high)| high - low)
        .sum();
    assert!(in_topic as u64 >= letters, "{in_topic} < {letters}");
    let read = consume_at(&bootstrap, &dlq, in_topic as usize, Duration::from_secs(60)).await;
    let distinct: HashSet<Vec<u8>> = read.into_iter().map(|(p, _)| p).collect();
    assert_eq!(distinct.len() as u64, invalid);
    let (status, _) = server.terminate(Duration::from_secs(30)).unwrap();
    assert!(status.success());
    eprintln!(
        "RELIABILITY leader-failover: sent={} stored={stored} lost=0 duplicated=0 invalid={invalid} dead_letters={letters} moved_partitions={} first_moved_stored={:.1}s commits_advanced={:.1}s rejoined_leads_after={:.1}s rejoined_first_stored={:.1}s redelivered_absorbed={}",
        valid + invalid,
        moved.len(),
        failover.as_secs_f64(),
        commits_after_kill.as_secs_f64(),
        led_again.as_secs_f64(),
        moved_back.as_secs_f64(),
        kafka.duplicate
    );
    // A controlled shutdown of the last nodes waits for a controller quorum that is
    // leaving too: the cluster ends with SIGKILL.
    for node in &mut cluster.nodes {
        node.kill().unwrap();
    }
}

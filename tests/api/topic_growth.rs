//! The topic grows: partitions added while the server (a separate process) consumes
//! are assigned and consumed within the consumer's metadata refresh.
use std::time::{Duration, Instant};

use mongodb::bson::{doc, Document};
use rdkafka::{
    admin::{AdminClient, AdminOptions, NewPartitions},
    client::DefaultClientContext,
    producer::{FutureRecord, Producer},
    ClientConfig,
};
use test_support::service::server_env;

use crate::{
    backends::{backends, start_server},
    faults::{count, payloads},
    helpers::*,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_added_while_running_are_assigned_and_consumed() {
    const BEFORE: i32 = 2;
    const AFTER: i32 = 4;
    let (topic, group, dbname) = (unique("grow"), unique("grow_g"), unique("grow_db"));
    create_topic(&topic, BEFORE).await;
    let env = server_env(backends(), &topic, &group, &dbname, &[]);
    let mut server = start_server("topic-growth", &env);
    server.wait_serving(Duration::from_secs(90)).await.unwrap();
    produce(&topic, BEFORE, &payloads("g0", 1_000)).await;
    let db = mongo_client().await.database(&dbname);
    wait_until(Duration::from_secs(60), "the first 1,000 stored", || {
        let db = db.clone();
        async move { count(&db).await == 1_000 }
    })
    .await;

    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &backends().kafka)
        .create()
        .unwrap();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let grown = admin
        .create_partitions(&[NewPartitions::new(&topic, AFTER as usize)], &opts)
        .await
        .unwrap();
    for r in grown {
        r.expect("partitions added");
    }
    let added = Instant::now();
    // Events to the new partitions only, produced at once: they wait in the log
    // until the service is assigned the partitions.
    let producer = steady_producer(&backends().kafka);
    wait_until(
        Duration::from_secs(30),
        "the producer sees the new partitions",
        || {
            let md = producer
                .client()
                .fetch_metadata(Some(topic.as_str()), Duration::from_secs(5));
            let n = md.map_or(0, |m| m.topics()[0].partitions().len());
            async move { n == AFTER as usize }
        },
    )
    .await;
    let mut pending = Vec::new();
    for (i, payload) in payloads("g1", 1_000).iter().enumerate() {
        let record = FutureRecord::<(), [u8]>::to(&topic)
            .payload(payload.as_slice())
            .partition(BEFORE + i as i32 % (AFTER - BEFORE));
        pending.push(producer.send_result(record).map_err(|(e, _)| e).unwrap());
    }
    for d in pending {
        d.await.unwrap().expect("delivered to a new partition");
    }
    let coll = db.collection::<Document>("raw_sales");
    wait_until(
        Duration::from_secs(60),
        "an event of a new partition stored",
        || {
            let coll = coll.clone();
            async move {
                let filter = doc! { "_id": { "$regex": "^g1-" } };
                coll.count_documents(filter).await.unwrap() > 0
            }
        },
    )
    .await;
    let first = added.elapsed();
    wait_until(Duration::from_secs(60), "every event stored", || {
        let db = db.clone();
        async move { count(&db).await == 2_000 }
    })
    .await;
    let ends: Vec<i64> = watermarks_at(&backends().kafka, &topic, AFTER)
        .iter()
        .map(|w| w.1)
        .collect();
    assert_eq!(ends, vec![500, 500, 500, 500]);
    wait_until(
        Duration::from_secs(60),
        "offsets committed on all four",
        || {
            let (t, g) = (topic.clone(), group.clone());
            async move { committed(&t, &g, AFTER) == vec![500; 4] }
        },
    )
    .await;
    let stats = server.stats().await.unwrap();
    let mut assigned: Vec<i32> = stats.partitions.iter().map(|p| p.partition).collect();
    assigned.sort_unstable();
    assert_eq!(
        assigned,
        vec![0, 1, 2, 3],
        "GetStats lists the new partitions"
    );
    let (status, _) = server.terminate(Duration::from_secs(30)).unwrap();
    assert!(status.success());
    eprintln!(
        "RELIABILITY topic-growth: sent=2000 stored=2000 lost=0 duplicated=0 partitions={BEFORE}->{AFTER} first_new_partition_stored={:.1}s",
        first.as_secs_f64()
    );
}

//! Transactions on the service's topic: a transactional producer commits some batches
//! and aborts others while the server (a separate process) consumes. Only committed
//! events are stored, and the committed offsets pass the abort and commit markers.
use std::time::Duration;

use mongodb::bson::{doc, Document};
use rdkafka::{
    producer::{FutureProducer, FutureRecord, Producer},
    ClientConfig,
};
use test_support::service::server_env;

use crate::{
    backends::{backends, start_server},
    faults::count,
    helpers::*,
};

const PARTITIONS: i32 = 2;
const BATCHES: usize = 10;
const PER_BATCH: usize = 200;

/// Sends batch `b` in a transaction and commits it when `b` is even, aborts it
/// otherwise; every record is acknowledged by the broker before the end.
async fn transaction(producer: &FutureProducer, topic: &str, b: usize) {
    let t = Duration::from_secs(30);
    tokio::task::block_in_place(|| producer.begin_transaction()).unwrap();
    let verdict = if b.is_multiple_of(2) {
        "commit"
    } else {
        "abort"
    };
    let mut pending = Vec::new();
    for i in 0..PER_BATCH {
        let payload = encode(&valid_event(i, &format!("tx-{verdict}-{b}-{i}")));
        let record = FutureRecord::<(), [u8]>::to(topic)
            .payload(&payload)
            .partition(i as i32 % PARTITIONS);
        pending.push(producer.send_result(record).map_err(|(e, _)| e).unwrap());
    }
    for d in pending {
        d.await.unwrap().expect("delivered inside the transaction");
    }
    tokio::task::block_in_place(|| {
        if b.is_multiple_of(2) {
            producer.commit_transaction(t)
        } else {
            producer.abort_transaction(t)
        }
    })
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_committed_transactions_are_stored_and_offsets_pass_the_markers() {
    let (topic, group, dbname) = (unique("txn"), unique("txn_g"), unique("txn_db"));
    create_topic(&topic, PARTITIONS).await;
    let env = server_env(backends(), &topic, &group, &dbname, &[]);
    let mut server = start_server("transactions", &env);
    server.wait_serving(Duration::from_secs(90)).await.unwrap();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &backends().kafka)
        .set("transactional.id", unique("txn_p"))
        .set("linger.ms", "5")
        .create()
        .unwrap();
    tokio::task::block_in_place(|| producer.init_transactions(Duration::from_secs(30))).unwrap();
    for b in 0..BATCHES {
        transaction(&producer, &topic, b).await;
    }
    let committed_events = (BATCHES / 2 * PER_BATCH) as u64;

    // The log holds every record, both verdicts and a marker per transaction and
    // partition: the end is past the last event.
    let ends: Vec<i64> = watermarks_at(&backends().kafka, &topic, PARTITIONS)
        .iter()
        .map(|w| w.1)
        .collect();
    let records = (BATCHES * PER_BATCH) as i64 + (BATCHES as i64) * i64::from(PARTITIONS);
    assert_eq!(ends.iter().sum::<i64>(), records, "records and markers");
    wait_until(
        Duration::from_secs(60),
        "committed offsets at the high watermark (past the last marker)",
        || {
            let (t, g, ends) = (topic.clone(), group.clone(), ends.clone());
            async move { committed(&t, &g, PARTITIONS) == ends }
        },
    )
    .await;
    let db = mongo_client().await.database(&dbname);
    let coll = db.collection::<Document>("raw_sales");
    assert_eq!(count(&db).await, committed_events, "only committed events");
    let aborted = coll
        .count_documents(doc! { "_id": { "$regex": "^tx-abort-" } })
        .await
        .unwrap();
    assert_eq!(aborted, 0, "no aborted event stored");
    let (srv, ends) = (&server, &ends);
    wait_until(
        Duration::from_secs(30),
        "GetStats: lag 0 on every partition",
        || async move {
            let s = srv.stats().await.unwrap();
            s.partitions.len() == PARTITIONS as usize
                && s.consumer_lag == 0
                && s.partitions
                    .iter()
                    .all(|p| p.lag == 0 && p.committed_offset == ends[p.partition as usize])
        },
    )
    .await;
    let stats = server.stats().await.unwrap();
    let kafka = stats.kafka.unwrap_or_default();
    assert_eq!((kafka.stored, kafka.duplicate), (committed_events, 0));
    let (status, _) = server.terminate(Duration::from_secs(30)).unwrap();
    assert!(status.success());
    eprintln!(
        "RELIABILITY transactions: sent={} committed={committed_events} stored={committed_events} aborted_stored=0 log_end={} committed_offsets={ends:?} lag=0",
        BATCHES * PER_BATCH,
        ends.iter().sum::<i64>()
    );
}

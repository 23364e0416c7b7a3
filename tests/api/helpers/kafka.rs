//! Kafka helpers for the tests: create topics, produce payloads, read committed
//! offsets and consume messages, on the shared broker or one at a given address.
use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use rdkafka::{
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    consumer::{BaseConsumer, Consumer, StreamConsumer},
    message::{Headers, Message},
    producer::{FutureProducer, FutureRecord},
    ClientConfig, Offset, TopicPartitionList,
};

use super::unique;
use crate::backends::backends;

fn kafka_config_at(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    c
}

/// Creates a topic with `partitions` partitions.
pub async fn create_topic(topic: &str, partitions: i32) {
    create_topic_at(&backends().kafka, topic, partitions).await;
}

/// Creates a topic on the broker at `bootstrap`.
pub async fn create_topic_at(bootstrap: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> =
        kafka_config_at(bootstrap).create().expect("admin client");
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("create topics");
    // The service creates its dead-letter topic itself at start-up: a topic that
    // already exists is what the caller asked for.
    for r in results {
        match r {
            Ok(_) | Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err(e) => panic!("topic created: {e:?}"),
        }
    }
}

/// Produces payloads (round-robin over `partitions`) and waits for every delivery.
pub async fn produce(topic: &str, partitions: i32, payloads: &[Vec<u8>]) {
    produce_at(&backends().kafka, topic, partitions, payloads).await;
}

/// Produces payloads to the broker at `bootstrap`.
pub async fn produce_at(bootstrap: &str, topic: &str, partitions: i32, payloads: &[Vec<u8>]) {
    let producer: FutureProducer = kafka_config_at(bootstrap)
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "2000000")
        .set("queue.buffering.max.kbytes", "2097151")
        .set("message.timeout.ms", "60000")
        .create()
        .expect("producer");
    produce_with(&producer, topic, partitions, payloads).await;
}

/// A producer to `bootstrap` that waits out a broker outage or a leader change:
/// idempotent (a retry never writes a record twice), acks=all, 3 minutes per delivery.
pub fn steady_producer(bootstrap: &str) -> FutureProducer {
    kafka_config_at(bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "2000000")
        .set("queue.buffering.max.kbytes", "2097151")
        .set("message.timeout.ms", "180000")
        .create()
        .expect("producer")
}

/// Produces payloads with `producer` (round-robin over `partitions`) and waits for
/// every delivery.
pub async fn produce_with(
    producer: &FutureProducer,
    topic: &str,
    partitions: i32,
    payloads: &[Vec<u8>],
) {
    let mut pending = Vec::with_capacity(payloads.len());
    for (i, p) in payloads.iter().enumerate() {
        let record = FutureRecord::<(), [u8]>::to(topic)
            .payload(p.as_slice())
            .partition(i as i32 % partitions);
        pending.push(
            producer
                .send_result(record)
                .map_err(|(e, _)| e)
                .expect("enqueue"),
        );
    }
    for d in pending {
        d.await.expect("delivery future").expect("delivered");
    }
}

/// Committed offsets of `group` for partitions 0..n of `topic`.
pub fn committed(topic: &str, group: &str, partitions: i32) -> Vec<i64> {
    committed_at(&backends().kafka, topic, group, partitions)
}

/// (log start offset, high watermark) of partitions 0..n of `topic` on the brokers at
/// `bootstrap`, from the partition leaders (ListOffsets).
pub fn watermarks_at(bootstrap: &str, topic: &str, partitions: i32) -> Vec<(i64, i64)> {
    let consumer: BaseConsumer = kafka_config_at(bootstrap).create().expect("consumer");
    (0..partitions)
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .expect("watermarks")
        })
        .collect()
}

/// Committed offsets of `group` for partitions 0..n of `topic` on the brokers at
/// `bootstrap` (-1 where nothing is committed).
pub fn committed_at(bootstrap: &str, topic: &str, group: &str, partitions: i32) -> Vec<i64> {
    let consumer: BaseConsumer = kafka_config_at(bootstrap)
        .set("group.id", group)
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    // The group coordinator may be moving or loading (a broker restart, a busy
    // machine): ask again for up to 30 s.
    let deadline = Instant::now() + Duration::from_secs(30);
    let got = loop {
        match consumer.committed_offsets(tpl.clone(), Duration::from_secs(5)) {
            Ok(got) => break got,
            Err(e) if Instant::now() < deadline => eprintln!("committed offsets: {e}; again"),
            Err(e) => panic!("committed offsets: {e}"),
        }
    };
    (0..partitions)
        .map(|p| match got.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => o,
            _ => -1,
        })
        .collect()
}

/// Reads `count` messages from `topic` (fresh group, from the start): each message's
/// payload and headers.
pub async fn consume(
    topic: &str,
    count: usize,
    timeout: Duration,
) -> Vec<(Vec<u8>, HashMap<String, String>)> {
    consume_at(&backends().kafka, topic, count, timeout).await
}

/// [`consume`] from the brokers at `bootstrap`.
pub async fn consume_at(
    bootstrap: &str,
    topic: &str,
    count: usize,
    timeout: Duration,
) -> Vec<(Vec<u8>, HashMap<String, String>)> {
    let consumer: StreamConsumer = kafka_config_at(bootstrap)
        .set("group.id", unique("reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "1000")
        .set("max.poll.interval.ms", "7000")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut out = Vec::new();
    let deadline = Instant::now() + timeout;
    while out.len() < count {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "read {} of {count} messages from {topic}",
            out.len()
        );
        let Ok(Ok(m)) = tokio::time::timeout(left, consumer.recv()).await else {
            continue;
        };
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|x| {
                        let v = x.value.map(|v| String::from_utf8_lossy(v).into_owned());
                        (x.key.to_string(), v.unwrap_or_default())
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push((m.payload().unwrap_or_default().to_vec(), headers));
    }
    out
}

/// Waits until `group` has committed every partition of `topic` (on the brokers at
/// `bootstrap`) up to its high watermark as it is now, and returns those ends; panics
/// naming `what` after `timeout`.
pub async fn wait_committed_to_end_at(
    bootstrap: &str,
    topic: &str,
    group: &str,
    partitions: i32,
    timeout: Duration,
) -> Vec<i64> {
    let ends: Vec<i64> = watermarks_at(bootstrap, topic, partitions)
        .iter()
        .map(|w| w.1)
        .collect();
    let what = format!("offsets committed to the high watermarks {ends:?}");
    super::wait_until(timeout, &what, || {
        let (b, t, g, ends) = (
            bootstrap.to_string(),
            topic.to_string(),
            group.to_string(),
            ends.clone(),
        );
        async move { committed_at(&b, &t, &g, partitions) == ends }
    })
    .await;
    ends
}

/// Every record `topic` holds now (its partitions' high minus low watermarks), read
/// from the start: a test that reads these has seen every letter, not just the first.
pub async fn consume_all(
    topic: &str,
    timeout: Duration,
) -> Vec<(Vec<u8>, HashMap<String, String>)> {
    let bootstrap = &backends().kafka;
    let partitions = partition_count_at(bootstrap, topic).expect("the topic exists");
    let held: i64 = watermarks_at(bootstrap, topic, partitions as i32)
        .iter()
        .map(|(low, high)| high - low)
        .sum();
    consume(topic, held as usize, timeout).await
}

/// The partition count of `topic` on the broker at `bootstrap`; None when it does not
/// exist (the lookup creates nothing).
pub fn partition_count_at(bootstrap: &str, topic: &str) -> Option<usize> {
    let consumer: BaseConsumer = kafka_config_at(bootstrap)
        .set("allow.auto.create.topics", "false")
        .create()
        .expect("consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let t = metadata.topics().iter().find(|t| t.name() == topic)?;
    (t.error().is_none() && !t.partitions().is_empty()).then(|| t.partitions().len())
}

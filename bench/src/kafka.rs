//! Kafka helpers: topic creation with the AdminClient, and a producer that counts its
//! delivery reports, used to pre-produce a run's events and to produce at a set rate.
use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use prost::Message;
use rdkafka::{
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    config::ClientConfig,
    error::{KafkaError, RDKafkaErrorCode},
    producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer},
    ClientContext,
};
use sales_ingest::proto::sales::v1::SalesEvent;

/// Creates `topic` with `partitions` partitions and waits until its metadata shows them.
pub async fn create_topic(brokers: &str, topic: &str, partitions: i32) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    for result in admin.create_topics([&new], &AdminOptions::new()).await? {
        result.map_err(|(t, code)| anyhow::anyhow!("create topic {t}: {code}"))?;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let md = admin
            .inner()
            .fetch_metadata(Some(topic), Duration::from_secs(5))?;
        let seen = md
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .map_or(0, |t| t.partitions().len());
        if seen == partitions as usize {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("topic {topic} shows {seen} of {partitions} partitions");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Counts delivery reports.
#[derive(Default)]
pub struct Deliveries {
    pub ok: AtomicU64,
    pub failed: AtomicU64,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.ok.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.failed.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// A producer that counts its deliveries; `linger_ms` trades latency for batching.
pub fn producer(brokers: &str, linger_ms: u32) -> Result<ThreadedProducer<Deliveries>> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", linger_ms.to_string())
        .set("queue.buffering.max.messages", "1000000")
        .set("message.timeout.ms", "60000")
        .create_with_context(Deliveries::default())?)
}

/// Sends one event keyed by its id, waiting while the local queue is full.
pub fn send(p: &ThreadedProducer<Deliveries>, topic: &str, event: &SalesEvent) -> Result<()> {
    let payload = event.encode_to_vec();
    let mut record = BaseRecord::to(topic)
        .key(event.event_id.as_bytes())
        .payload(&payload);
    loop {
        match p.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err((e, _)) => return Err(e).context("produce"),
        }
    }
}

/// Flushes and checks that all `expected` messages were delivered.
pub fn finish(p: &ThreadedProducer<Deliveries>, expected: u64) -> Result<()> {
    p.flush(Duration::from_secs(120))?;
    let (ok, failed) = (
        p.context().ok.load(Ordering::Relaxed),
        p.context().failed.load(Ordering::Relaxed),
    );
    if ok != expected || failed > 0 {
        bail!("{ok} of {expected} messages delivered, {failed} failed");
    }
    Ok(())
}

/// Produces events `0..n` of `prefix` to `topic` as fast as the broker takes them;
/// returns the seconds it took.
pub fn pre_produce(brokers: &str, topic: &str, prefix: &str, n: u64) -> Result<f64> {
    let started = Instant::now();
    let p = producer(brokers, 20)?;
    for i in 0..n {
        send(&p, topic, &crate::events::event(prefix, i))?;
    }
    finish(&p, n)?;
    Ok(started.elapsed().as_secs_f64())
}

/// The proto3 JSON form of `event` (proto field names, as `preserving_proto_field_name`
/// prints them; parsers take either style): what the JSON peers read.
pub fn json(event: &SalesEvent) -> Vec<u8> {
    serde_json::json!({
        "sku": event.sku,
        "qty": event.qty,
        "price": event.price,
        "ts": event.ts,
        "event_id": event.event_id,
    })
    .to_string()
    .into_bytes()
}

/// The malformed values every JSON peer is given (keys `bad-<i>`): not JSON, a JSON
/// array, `qty` of the wrong type, and well-formed JSON that is not a valid event
/// (empty sku, negative qty).
pub const MALFORMED: [&str; 4] = [
    "not json at all",
    "[1,2,3]",
    r#"{"sku":"SKU-1","qty":"lots","price":1.5,"ts":"2026-11-25T00:00:00.000Z","event_id":"bad-2"}"#,
    r#"{"sku":"","qty":-5,"price":1.5,"ts":"2026-11-25T00:00:00.000Z","event_id":"bad-3"}"#,
];

/// Sends `payload` keyed by `key`, waiting while the local queue is full.
pub fn send_raw(
    p: &ThreadedProducer<Deliveries>,
    topic: &str,
    key: &str,
    payload: &[u8],
) -> Result<()> {
    let mut record = BaseRecord::to(topic).key(key.as_bytes()).payload(payload);
    loop {
        match p.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err((e, _)) => return Err(e).context("produce"),
        }
    }
}

/// Produces events `0..n` of `prefix` as proto3 JSON, with [`MALFORMED`] after event
/// `n / 2` when `malformed` is set; returns the seconds it took.
pub fn pre_produce_json(
    brokers: &str,
    topic: &str,
    prefix: &str,
    n: u64,
    malformed: bool,
) -> Result<f64> {
    let started = Instant::now();
    let p = producer(brokers, 20)?;
    let mut sent = 0;
    for i in 0..n {
        let e = crate::events::event(prefix, i);
        send_raw(&p, topic, &e.event_id, &json(&e))?;
        sent += 1;
        if malformed && i == n / 2 {
            for (j, bad) in MALFORMED.iter().enumerate() {
                send_raw(&p, topic, &format!("bad-{j}"), bad.as_bytes())?;
                sent += 1;
            }
        }
    }
    finish(&p, sent)?;
    Ok(started.elapsed().as_secs_f64())
}

/// Messages on `topic` (the sum of its partitions' high watermarks), 0 if it does not
/// exist.
pub fn message_count(brokers: &str, topic: &str) -> Result<i64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(5))?;
    let mut total = 0;
    for t in md.topics().iter().filter(|t| t.name() == topic) {
        for p in t.partitions() {
            let (low, high) = c.fetch_watermarks(topic, p.id(), Duration::from_secs(5))?;
            total += high - low;
        }
    }
    Ok(total)
}

//! Dead-letter destinations. Kafka events go to the dead-letter topic with their
//! original payload and headers `reason`, `detail`, `source_topic`, `source_partition`,
//! `source_offset`; gRPC events go to a MongoDB collection (their producer already
//! got the rejection in its ack, and the gRPC path must not depend on Kafka). Delivery
//! is retried until it succeeds: a Kafka offset is committed only after its dead letter
//! is durable.
use std::{
    sync::{Arc, Weak},
    time::Duration,
};

use mongodb::{
    bson::{doc, spec::BinarySubtype, Binary, DateTime, Document},
    Collection, Database,
};
use rdkafka::{
    message::{Header, OwnedHeaders},
    producer::BaseRecord,
};
use tokio::sync::oneshot;
use tracing::warn;

use crate::{
    pipeline::{DeadLetter, Origin},
    sink::mongo::backoff,
    source::kafka::{Delivery, DlqProducer},
    stats::Stats,
};

/// How often a sender waiting for its delivery report polls the producer.
const DELIVERY_POLL: Duration = Duration::from_millis(5);
/// How often the producer is polled when nobody waits (its errors and logs).
const IDLE_POLL: Duration = Duration::from_secs(1);

/// Sends dead letters to the topic or the collection.
pub struct DeadLetters {
    kafka: Option<(Arc<DlqProducer>, String)>,
    collection: Collection<Document>,
    stats: Arc<Stats>,
}

impl DeadLetters {
    /// `kafka` is the producer and topic for Kafka events (None when Kafka is off).
    /// With a producer, this must be called inside a tokio runtime: it starts the idle
    /// poll, which ends when the producer is dropped with this value.
    pub fn new(
        kafka: Option<(DlqProducer, String)>,
        db: &Database,
        collection: &str,
        stats: Arc<Stats>,
    ) -> Self {
        let kafka = kafka.map(|(p, topic)| (Arc::new(p), topic));
        if let Some((p, _)) = &kafka {
            tokio::spawn(idle_poll(Arc::downgrade(p)));
        }
        Self {
            kafka,
            collection: db.collection(collection),
            stats,
        }
    }

    /// Delivers a dead letter, retrying with backoff until it is durable.
    pub async fn send(&self, letter: &DeadLetter) {
        let mut attempt = 0;
        loop {
            let (destination, result) = self.try_send(letter).await;
            match result {
                Ok(()) => {
                    self.stats
                        .dead_letters
                        .with_label_values(&[destination])
                        .inc();
                    return;
                }
                Err(e) => {
                    attempt += 1;
                    warn!(destination, attempt, error = %e, "dead letter not delivered; retrying");
                    tokio::time::sleep(backoff(attempt)).await;
                }
            }
        }
    }

    async fn try_send(&self, letter: &DeadLetter) -> (&'static str, Result<(), String>) {
        match (&letter.origin, &self.kafka) {
            (
                Origin::Kafka {
                    topic,
                    partition,
                    offset,
                },
                Some((producer, dlq_topic)),
            ) => {
                let partition = partition.to_string();
                let offset = offset.to_string();
                let headers = OwnedHeaders::new()
                    .insert(header("reason", letter.rejection.reason.code()))
                    .insert(header("detail", &letter.rejection.detail))
                    .insert(header("source_topic", topic))
                    .insert(header("source_partition", &partition))
                    .insert(header("source_offset", &offset));
                let (tx, rx) = oneshot::channel();
                let record = BaseRecord::<(), [u8], _>::with_opaque_to(dlq_topic, Box::new(tx))
                    .payload(&letter.payload)
                    .headers(headers);
                let result = match producer.send(record) {
                    Ok(()) => delivered(producer, rx).await,
                    Err((e, _)) => Err(e.to_string()),
                };
                ("kafka", result)
            }
            (origin, _) => {
                let source = match origin {
                    Origin::Kafka { .. } => "kafka",
                    Origin::Grpc => "grpc",
                };
                let mut d = doc! {
                    "reason": letter.rejection.reason.code(),
                    "detail": &letter.rejection.detail,
                    "source": source,
                    "payload": Binary { subtype: BinarySubtype::Generic, bytes: letter.payload.clone() },
                    "dead_lettered_at": DateTime::now(),
                };
                if let Origin::Kafka {
                    topic,
                    partition,
                    offset,
                } = origin
                {
                    d.insert("source_topic", topic.as_ref());
                    d.insert("source_partition", *partition);
                    d.insert("source_offset", *offset);
                }
                let result = self
                    .collection
                    .insert_one(d)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string());
                ("mongodb", result)
            }
        }
    }
}

/// Polls the producer until the delivery report of the message behind `rx` arrives
/// (within `message.timeout.ms`: librdkafka reports every message, failed or not).
async fn delivered(producer: &DlqProducer, mut rx: oneshot::Receiver<Delivery>) -> Delivery {
    loop {
        producer.poll(Duration::ZERO);
        tokio::select! {
            report = &mut rx => {
                return report.unwrap_or_else(|_| Err("the delivery report was lost".into()));
            }
            _ = tokio::time::sleep(DELIVERY_POLL) => {}
        }
    }
}

/// Serves the producer's errors and logs while nobody is waiting for a delivery;
/// returns once the producer is gone.
async fn idle_poll(producer: Weak<DlqProducer>) {
    loop {
        tokio::time::sleep(IDLE_POLL).await;
        match producer.upgrade() {
            Some(p) => p.poll(Duration::ZERO),
            None => return,
        }
    }
}

fn header<'a>(key: &'a str, value: &'a str) -> Header<'a, &'a str> {
    Header {
        key,
        value: Some(value),
    }
}

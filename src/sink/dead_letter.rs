//! Dead-letter destinations. Kafka events go to the dead-letter topic with their
//! original payload and headers `reason`, `detail`, `source_topic`, `source_partition`,
//! `source_offset`; gRPC events go to a MongoDB collection (their producer already
//! got the rejection in its ack, and the gRPC path must not depend on Kafka). Delivery
//! is retried until it succeeds: a Kafka offset is committed only after its dead letter
//! is durable.
use std::{sync::Arc, time::Duration};

use mongodb::{
    bson::{doc, spec::BinarySubtype, Binary, DateTime, Document},
    Collection, Database,
};
use rdkafka::{
    message::{Header, OwnedHeaders},
    producer::{FutureProducer, FutureRecord},
};
use tracing::warn;

use crate::{
    pipeline::{DeadLetter, Origin},
    sink::mongo::backoff,
    stats::Stats,
};

/// Sends dead letters to the topic or the collection.
pub struct DeadLetters {
    kafka: Option<(FutureProducer, String)>,
    collection: Collection<Document>,
    stats: Arc<Stats>,
}

impl DeadLetters {
    /// `kafka` is the producer and topic for Kafka events (None when Kafka is off).
    pub fn new(
        kafka: Option<(FutureProducer, String)>,
        db: &Database,
        collection: &str,
        stats: Arc<Stats>,
    ) -> Self {
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
                let record = FutureRecord::<(), [u8]>::to(dlq_topic)
                    .payload(&letter.payload)
                    .headers(headers);
                let result = producer
                    .send(record, Duration::from_secs(10))
                    .await
                    .map(|_| ())
                    .map_err(|(e, _)| e.to_string());
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

fn header<'a>(key: &'a str, value: &'a str) -> Header<'a, &'a str> {
    Header {
        key,
        value: Some(value),
    }
}

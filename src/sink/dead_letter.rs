//! Dead-letter destinations. Kafka events go to the dead-letter topic with their
//! original payload and headers `reason`, `detail`, `source_topic`, `source_partition`,
//! `source_offset`; gRPC events go to a MongoDB collection (their producer already
//! got the rejection in its ack, and the gRPC path must not depend on Kafka). A dead
//! letter the topic refuses — at once for a permanent error, or after
//! `DLQ_MAX_ATTEMPTS` attempts — falls back to the collection with the topic's refusal,
//! so its offset can be committed and nothing is lost; while the topic is known to be
//! unavailable (`dlq_topic`: missing and not creatable) every such letter goes to the
//! collection at once, with why. Only while the collection
//! refuses too does the partition wait; this module owns the "dead letters" dependency
//! state, so health says so. It also builds the dead-letter producer (`producer`).
use std::{
    sync::{Arc, Weak},
    time::Duration,
};

use mongodb::{
    bson::{doc, spec::BinarySubtype, Binary, DateTime, Document},
    Collection, Database,
};
use rdkafka::{
    error::{KafkaError, RDKafkaErrorCode},
    message::{Header, OwnedHeaders},
    producer::{BaseProducer, BaseRecord, DeliveryResult, ProducerContext},
    ClientContext,
};
use tokio::sync::{oneshot, watch};
use tracing::warn;

use crate::{
    config::{Config, SettingError},
    deps::{State, StateWriter},
    event::{DeadLetter, Origin},
    librdkafka::{client_config, creation_error},
    metrics::Metrics,
    sink::{dlq_topic::TopicState, retry::backoff},
};

/// How often a sender waiting for delivery reports polls the producer.
const DELIVERY_POLL: Duration = Duration::from_millis(5);
/// How often the producer is polled when nobody waits (its errors and logs).
const IDLE_POLL: Duration = Duration::from_secs(1);
/// Failed attempts at the collection after which the dead-letter state is down.
const DOWN_AFTER: u32 = 3;

/// The outcome of one produced message, as its delivery report tells it: Err carries
/// the error and whether retrying can help.
pub type Delivery = Result<(), (String, bool)>;

/// Routes each delivery report to the sender the message carried.
pub struct DeliveryContext;

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Box<oneshot::Sender<Delivery>>;

    fn delivery(&self, result: &DeliveryResult<'_>, tx: Self::DeliveryOpaque) {
        let _ = tx.send(result.as_ref().map(|_| ()).map_err(|(e, _)| refusal(e)));
    }
}

/// An error in words, and whether it is worth another attempt.
fn refusal(e: &KafkaError) -> (String, bool) {
    let permanent = matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidTopic
                | RDKafkaErrorCode::UnknownTopic
                | RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed
                | RDKafkaErrorCode::InvalidRecord
        )
    );
    (e.to_string(), !permanent)
}

/// The dead-letter producer. A `BaseProducer` polled by whoever waits for a delivery
/// (and once a second otherwise), not rdkafka's `FutureProducer`, whose polling thread
/// spins through the last millisecond of every 100 ms poll.
pub type DlqProducer = BaseProducer<DeliveryContext>;

/// Creates the dead-letter producer. `message.timeout.ms` bounds how long a delivery
/// report can take, so a refusing topic costs at most that per attempt.
pub fn producer(cfg: &Config) -> Result<DlqProducer, SettingError> {
    let settings = [
        ("message.timeout.ms", "10000".into()),
        ("linger.ms", "5".into()),
        // A letter is delivered once every in-sync replica has it (librdkafka's
        // default, stated because a letter replaces the event's commit).
        ("acks", "all".into()),
    ];
    client_config(cfg, &settings)
        .create_with_context(DeliveryContext)
        .map_err(|e| creation_error(cfg, &settings, e))
}

/// Sends dead letters to the topic or the collection.
pub struct DeadLetters {
    kafka: Option<(Arc<DlqProducer>, String)>,
    collection: Collection<Document>,
    metrics: Arc<Metrics>,
    state: StateWriter,
    max_attempts: u32,
    /// Whether the topic exists (None: not looked for; letters go to it).
    topic_state: Option<watch::Receiver<TopicState>>,
}

impl DeadLetters {
    /// `kafka` is the producer and topic for Kafka events (None when Kafka is off).
    /// With a producer, this must be called inside a tokio runtime: it starts the idle
    /// poll, which ends when the producer is dropped with this value.
    pub fn new(
        kafka: Option<(DlqProducer, String)>,
        db: &Database,
        collection: &str,
        metrics: Arc<Metrics>,
        state: StateWriter,
        max_attempts: u32,
    ) -> Self {
        let kafka = kafka.map(|(p, topic)| (Arc::new(p), topic));
        if let Some((p, _)) = &kafka {
            tokio::spawn(idle_poll(Arc::downgrade(p)));
        }
        Self {
            kafka,
            collection: db.collection(collection),
            metrics,
            state,
            max_attempts: max_attempts.max(1),
            topic_state: None,
        }
    }

    /// Follows the dead-letter topic's state: while it is unavailable, Kafka events'
    /// letters go to the collection without an attempt at the topic.
    pub fn with_topic_state(mut self, state: watch::Receiver<TopicState>) -> Self {
        self.topic_state = Some(state);
        self
    }

    /// Why the topic cannot take letters now, if it is known not to.
    fn topic_unavailable(&self) -> Option<String> {
        let state = self.topic_state.as_ref()?.borrow();
        state.error().map(str::to_string)
    }

    /// Makes every letter durable: Kafka events on the topic (falling back to the
    /// collection), the rest in the collection; returns once all are.
    pub async fn send(&self, letters: Vec<DeadLetter>) {
        let (to_topic, mut to_collection): (Vec<_>, Vec<_>) = letters
            .into_iter()
            .map(|l| (l, None))
            .partition(|(l, _)| self.kafka.is_some() && matches!(l.origin, Origin::Kafka { .. }));
        if let Some(why) = self.topic_unavailable() {
            to_collection.extend(to_topic.into_iter().map(|(l, _)| (l, Some(why.clone()))));
        } else if let Some((producer, topic)) = &self.kafka {
            to_collection.extend(self.to_topic(producer, topic, to_topic).await);
        }
        if !to_collection.is_empty() {
            self.to_collection(to_collection).await;
        }
    }

    /// Produces the letters, retrying transient refusals up to `max_attempts`; returns
    /// those the topic would not take, with its last refusal.
    async fn to_topic(
        &self,
        producer: &DlqProducer,
        topic: &str,
        letters: Vec<(DeadLetter, Option<String>)>,
    ) -> Vec<(DeadLetter, Option<String>)> {
        let mut open = letters;
        let mut refused = Vec::new();
        for attempt in 1..=self.max_attempts {
            let mut waiting = Vec::with_capacity(open.len());
            for (letter, _) in open.drain(..) {
                let (tx, rx) = oneshot::channel();
                match producer.send(record(topic, &letter, tx)) {
                    Ok(()) => waiting.push((letter, rx)),
                    Err((e, _)) => {
                        let (why, retry) = refusal(&e);
                        waiting.push((letter, closed_with(Err((why, retry)))));
                    }
                }
            }
            for (letter, rx) in waiting {
                match delivered(producer, rx).await {
                    Ok(()) => self.metrics.dead_letter_delivered("kafka"),
                    Err((why, retry)) if retry && attempt < self.max_attempts => {
                        open.push((letter, Some(why)))
                    }
                    Err((why, retry)) => {
                        let why = if retry {
                            format!(
                                "{why} (gave up after attempt {attempt} of DLQ_MAX_ATTEMPTS={})",
                                self.max_attempts
                            )
                        } else {
                            format!("{why} (permanent: not retried)")
                        };
                        refused.push((letter, Some(why)))
                    }
                }
            }
            if open.is_empty() {
                break;
            }
            warn!(
                topic,
                attempt,
                letters = open.len(),
                "dead letters not delivered; retrying"
            );
            tokio::time::sleep(backoff(attempt)).await;
        }
        if let Some((_, Some(why))) = refused.first() {
            warn!(topic, letters = refused.len(), error = %why, "the dead-letter topic refused; storing these dead letters in the collection");
        }
        refused
    }

    /// Inserts the letters into the collection, retrying until it takes them.
    async fn to_collection(&self, letters: Vec<(DeadLetter, Option<String>)>) {
        let docs: Vec<Document> = letters
            .iter()
            .map(|(l, refusal)| document(l, refusal.as_deref()))
            .collect();
        let mut attempt = 0;
        loop {
            match self.collection.insert_many(&docs).ordered(false).await {
                Ok(_) => break,
                Err(e) => {
                    attempt += 1;
                    let error = e.to_string();
                    if attempt >= DOWN_AFTER {
                        self.state.set(State::Down(format!(
                            "dead letters cannot be stored ({attempt} attempts): {error}"
                        )));
                    }
                    warn!(attempt, %error, letters = docs.len(), "dead letters not stored; retrying");
                    tokio::time::sleep(backoff(attempt)).await;
                }
            }
        }
        self.state.set(State::Up);
        for _ in &docs {
            self.metrics.dead_letter_delivered("mongodb");
        }
    }
}

fn record<'a>(
    topic: &'a str,
    letter: &'a DeadLetter,
    tx: oneshot::Sender<Delivery>,
) -> BaseRecord<'a, (), [u8], Box<oneshot::Sender<Delivery>>> {
    let mut headers = OwnedHeaders::new()
        .insert(header("reason", letter.reason))
        .insert(header("detail", &letter.detail));
    if let Origin::Kafka {
        topic,
        partition,
        offset,
    } = &letter.origin
    {
        headers = headers
            .insert(header("source_topic", topic))
            .insert(header("source_partition", &partition.to_string()))
            .insert(header("source_offset", &offset.to_string()));
    }
    BaseRecord::with_opaque_to(topic, Box::new(tx))
        .payload(letter.payload.as_ref())
        .headers(headers)
}

/// The collection's record of a dead letter; `refusal` is why the topic did not take it.
fn document(letter: &DeadLetter, refusal: Option<&str>) -> Document {
    let source = match letter.origin {
        Origin::Kafka { .. } => "kafka",
        Origin::Grpc => "grpc",
    };
    let mut d = doc! {
        "reason": letter.reason,
        "detail": &letter.detail,
        "source": source,
        "payload": Binary { subtype: BinarySubtype::Generic, bytes: letter.payload.to_vec() },
        "dead_lettered_at": DateTime::now(),
    };
    if let Origin::Kafka {
        topic,
        partition,
        offset,
    } = &letter.origin
    {
        d.insert("source_topic", topic.as_ref());
        d.insert("source_partition", *partition);
        d.insert("source_offset", *offset);
    }
    if let Some(why) = refusal {
        d.insert("dlq_topic_error", why);
    }
    d
}

/// A receiver that already holds `result`.
fn closed_with(result: Delivery) -> oneshot::Receiver<Delivery> {
    let (tx, rx) = oneshot::channel();
    let _ = tx.send(result);
    rx
}

/// Polls the producer until the delivery report of the message behind `rx` arrives
/// (within `message.timeout.ms`: librdkafka reports every message, failed or not).
async fn delivered(producer: &DlqProducer, mut rx: oneshot::Receiver<Delivery>) -> Delivery {
    loop {
        if let Ok(report) = rx.try_recv() {
            return report;
        }
        producer.poll(Duration::ZERO);
        tokio::select! {
            report = &mut rx => {
                return report.unwrap_or_else(|_| Err(("the delivery report was lost".into(), true)));
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

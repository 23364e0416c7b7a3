//! The dead-letter topic's existence. Clusters that do not create topics on first
//! produce (`auto.create.topics.enable=false`, the usual production setting) need it
//! made: at start-up the service looks for it and, when it is missing, creates it with
//! the source topic's partition count and KAFKA_DLQ_REPLICATION_FACTOR. The one writer
//! of its state: `Checking` until known, then `Ready`, or `Unavailable` with why (the
//! brokers refused to create it), in which case the dead letters of Kafka events go to
//! the dead-letter collection at once, with why; it is looked for again every minute.
use std::{sync::Arc, time::Duration};

use rdkafka::{
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    error::{KafkaResult, RDKafkaErrorCode},
    types::RDKafkaRespErr,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::{config::Config, librdkafka::client_config};

/// Whether dead letters can go to the dead-letter topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TopicState {
    /// Not known yet (the brokers or the source topic not found yet): letters are sent
    /// to the topic, which falls back to the collection per letter.
    Checking,
    Ready,
    /// The topic is missing and could not be created: why.
    Unavailable(String),
}

impl TopicState {
    /// `checking`, `ready` or `unavailable`, as /health and GetStats say it.
    pub fn word(&self) -> &'static str {
        match self {
            TopicState::Checking => "checking",
            TopicState::Ready => "ready",
            TopicState::Unavailable(_) => "unavailable",
        }
    }

    /// Why it is unavailable, if it is.
    pub fn error(&self) -> Option<&str> {
        match self {
            TopicState::Unavailable(why) => Some(why),
            _ => None,
        }
    }
}

/// The admin client that looks for and creates the topic.
pub type DlqAdmin = AdminClient<DefaultClientContext>;

/// The admin client; it never creates a topic by asking for its metadata.
pub fn admin(cfg: &Config) -> KafkaResult<DlqAdmin> {
    client_config(cfg, &[("allow.auto.create.topics", "false".into())]).create()
}

/// What one look at the brokers found.
enum Found {
    Ready,
    /// The source topic is not there yet: its partition count is not known.
    SourceMissing,
    Refused(String),
    /// The brokers did not answer, or answered with an error worth retrying.
    Transient(String),
}

/// Where the topic goes and how it is made.
pub struct Provisioning {
    pub admin: Arc<DlqAdmin>,
    pub source_topic: String,
    pub topic: String,
    pub replication_factor: i32,
    pub collection: String,
}

impl Provisioning {
    /// Looks for the topic, creates it if missing, and keeps `state` current: every
    /// 5 s until the answer is known, every minute while unavailable; returns once it
    /// is ready, or at `stop`.
    pub async fn run(self, state: watch::Sender<TopicState>, stop: CancellationToken) {
        loop {
            let wait = match self.look().await {
                Found::Ready => {
                    state.send_replace(TopicState::Ready);
                    return info!(topic = %self.topic, "the dead-letter topic is ready");
                }
                Found::Refused(why) => {
                    let why = format!(
                        "the dead-letter topic {} is missing and could not be created: {why}; \
                         dead letters of Kafka events go to the collection {}",
                        self.topic, self.collection
                    );
                    let new = TopicState::Unavailable(why.clone());
                    if state.send_replace(new.clone()) != new {
                        warn!("{why}");
                    }
                    Duration::from_secs(60)
                }
                Found::SourceMissing => Duration::from_secs(5),
                Found::Transient(why) => {
                    debug!(topic = %self.topic, %why, "the dead-letter topic is not known yet");
                    Duration::from_secs(5)
                }
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    async fn look(&self) -> Found {
        let partitions = |topic: String| {
            let admin = self.admin.clone();
            tokio::task::spawn_blocking(move || partition_count(&admin, &topic))
        };
        match partitions(self.topic.clone()).await {
            Ok(Ok(Some(_))) => return Found::Ready,
            Ok(Ok(None)) => {}
            Ok(Err(why)) => return Found::Transient(why),
            Err(e) => return Found::Transient(e.to_string()),
        }
        let count = match partitions(self.source_topic.clone()).await {
            Ok(Ok(Some(n))) => n,
            Ok(Ok(None)) => return Found::SourceMissing,
            Ok(Err(why)) => return Found::Transient(why),
            Err(e) => return Found::Transient(e.to_string()),
        };
        self.create(count).await
    }

    async fn create(&self, partitions: i32) -> Found {
        let rf = self.replication_factor;
        let new = NewTopic::new(&self.topic, partitions, TopicReplication::Fixed(rf));
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let results = match self.admin.create_topics(&[new], &options).await {
            Ok(results) => results,
            Err(e) => return Found::Transient(e.to_string()),
        };
        match results.into_iter().next() {
            Some(Ok(_)) => {
                info!(topic = %self.topic, partitions, replication_factor = rf, "created the dead-letter topic");
                Found::Ready
            }
            Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => Found::Ready,
            Some(Err((_, code))) if transient(code) => Found::Transient(code.to_string()),
            Some(Err((_, code))) => Found::Refused(format!(
                "{code} ({partitions} partitions, KAFKA_DLQ_REPLICATION_FACTOR={rf})"
            )),
            None => Found::Transient("no result for the topic".into()),
        }
    }
}

/// The topic's partition count, None when the brokers do not have it.
fn partition_count(admin: &DlqAdmin, topic: &str) -> Result<Option<i32>, String> {
    let metadata = admin
        .inner()
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|e| e.to_string())?;
    let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Ok(None);
    };
    match t.error() {
        None if !t.partitions().is_empty() => Ok(Some(t.partitions().len() as i32)),
        None => Ok(None),
        Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) => Ok(None),
        Some(e) => Err(RDKafkaErrorCode::from(e).to_string()),
    }
}

/// Errors a later attempt may not meet again.
fn transient(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        code,
        C::RequestTimedOut
            | C::NotController
            | C::BrokerNotAvailable
            | C::LeaderNotAvailable
            | C::NetworkException
            | C::OperationTimedOut
            | C::AllBrokersDown
            | C::BrokerTransportFailure
            | C::ThrottlingQuotaExceeded
    )
}

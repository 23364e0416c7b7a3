//! Health: the service is SERVING while MongoDB takes writes and answers pings, dead
//! letters can be stored, Kafka is reachable when it is enabled, the schema registry
//! answers when one is configured, and no shutdown is under way. The verdict is derived from the dependency states (`deps`), each of
//! which has one writer. This task publishes it to the gRPC Health service for `""`,
//! `ingest.v1.IngestAdmin` and `ingest.v1.IngestEvents`, and to the `dependency_up`
//! gauges; `/health` answers with the same published verdict and says which
//! dependency is down and why.
use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tonic_health::{
    pb::health_server::HealthServer,
    server::{HealthReporter, HealthService},
    ServingStatus,
};
use tracing::info;

use crate::{
    deps::{Dependencies, State},
    metrics::Dependency,
    stats::Stats,
};

/// The service names health reports.
pub const SERVICES: [&str; 3] = ["", "ingest.v1.IngestAdmin", "ingest.v1.IngestEvents"];

/// Computes and publishes the serving state.
pub struct Health {
    reporter: HealthReporter,
    deps: Dependencies,
    stats: Arc<Stats>,
    shutting_down: AtomicBool,
    /// The verdict last published to the gRPC Health service; `/health` answers with
    /// it too, so the two never disagree.
    published: AtomicBool,
}

/// `/health`'s body.
#[derive(Debug, Serialize)]
pub struct HealthReport {
    pub status: &'static str,
    pub mongodb: &'static str,
    pub kafka: &'static str,
    pub dead_letters: &'static str,
    /// `up`, `down`, or absent when no schema registry is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema_registry: Option<&'static str>,
    /// Why MongoDB is down, when it is (failing writes win over a working ping).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mongodb_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_letters_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema_registry_error: Option<String>,
    /// The dead-letter topic: `ready`, `checking`, `unavailable` (dead letters of Kafka
    /// events go to the collection; not a reason to stop serving) or `disabled`.
    pub dead_letter_topic: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_letter_topic_error: Option<String>,
    pub shutting_down: bool,
}

fn word(state: &State) -> &'static str {
    if state.is_up() {
        "up"
    } else {
        "down"
    }
}

impl Health {
    /// A health state starting NOT_SERVING, and the gRPC service that reports it.
    pub fn new(deps: Dependencies, stats: Arc<Stats>) -> (Arc<Self>, HealthServer<HealthService>) {
        let reporter = HealthReporter::new();
        let server = HealthServer::new(HealthService::from_health_reporter(reporter.clone()));
        let health = Arc::new(Health {
            reporter,
            deps,
            stats,
            shutting_down: AtomicBool::new(false),
            published: AtomicBool::new(false),
        });
        (health, server)
    }

    /// The serving state the gRPC Health service reports right now.
    pub fn published(&self) -> bool {
        self.published.load(Ordering::SeqCst)
    }

    /// True when every required dependency is up and no shutdown is under way.
    pub fn serving(&self) -> bool {
        !self.shutting_down.load(Ordering::SeqCst) && self.deps.all_up()
    }

    /// The report `/health` returns.
    pub fn report(&self) -> HealthReport {
        let mongodb = self.deps.mongodb();
        let kafka = self.deps.kafka();
        let dead_letters = self.deps.dead_letters();
        let registry = self.deps.schema_registry();
        let topic = self.deps.dead_letter_topic();
        HealthReport {
            status: if self.published() {
                "serving"
            } else {
                "not_serving"
            },
            mongodb: word(&mongodb),
            kafka: kafka.as_ref().map_or("disabled", word),
            dead_letters: word(&dead_letters),
            mongodb_error: mongodb.error().map(str::to_string),
            kafka_error: kafka.as_ref().and_then(State::error).map(str::to_string),
            dead_letters_error: dead_letters.error().map(str::to_string),
            schema_registry: registry.as_ref().map(word),
            schema_registry_error: registry.as_ref().and_then(State::error).map(str::to_string),
            dead_letter_topic: topic.as_ref().map_or("disabled", |t| t.word()),
            dead_letter_topic_error: topic.as_ref().and_then(|t| t.error().map(str::to_string)),
            shutting_down: self.shutting_down.load(Ordering::SeqCst),
        }
    }

    /// Turns health NOT_SERVING for good: the first step of shutdown.
    pub async fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        self.publish(false).await;
    }

    /// Publishes a status for every service name.
    pub async fn publish(&self, serving: bool) {
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        for name in SERVICES {
            self.reporter.set_service_status(name, status).await;
        }
        self.published.store(serving, Ordering::SeqCst);
    }

    /// Re-evaluates every 100 ms and publishes changes, until `stop`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut last = None;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let metrics = self.stats.metrics().clone();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            self.stats.tick();
            metrics.dependency_up(Dependency::Mongodb, self.deps.mongodb().is_up());
            metrics.dependency_up(Dependency::DeadLetters, self.deps.dead_letters().is_up());
            if let Some(kafka) = self.deps.kafka() {
                metrics.dependency_up(Dependency::Kafka, kafka.is_up());
            }
            if let Some(registry) = self.deps.schema_registry() {
                metrics.dependency_up(Dependency::SchemaRegistry, registry.is_up());
            }
            let serving = self.serving();
            if last != Some(serving) {
                self.publish(serving).await;
                info!(serving, report = ?self.report(), "health changed");
                last = Some(serving);
            }
        }
    }
}

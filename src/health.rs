//! Health: the service is SERVING while every configured dependency is up (MongoDB takes
//! writes and answers pings, dead letters can be stored, Kafka is reachable when it is
//! enabled, the schema registry answers when one is configured) and no shutdown is
//! under way. The verdict is derived from the one table of dependency states (`deps`),
//! each of which has one writer. This task publishes it to the gRPC Health service for `""`,
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

use serde::{ser::SerializeMap, Serialize, Serializer};
use tokio_util::sync::CancellationToken;
use tonic_health::{
    pb::health_server::HealthServer,
    server::{HealthReporter, HealthService},
    ServingStatus,
};
use tracing::info;

use crate::{
    deps::{Dependencies, Dependency, State},
    sink::dlq_topic::TopicState,
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

/// `/health`'s body: the verdict published, each dependency in the order of
/// [`Dependency::ALL`] (`up`, `down` or, when not configured, what
/// [`Dependency::when_absent`] says), then why each one down is down
/// (`<name>_error`), the dead-letter topic and the shutdown flag.
#[derive(Debug)]
pub struct HealthReport {
    pub status: &'static str,
    /// Every dependency; None when it is not configured.
    pub dependencies: Vec<(Dependency, Option<State>)>,
    /// The dead-letter topic: `ready`, `checking`, `unavailable` (dead letters of Kafka
    /// events go to the collection; not a reason to stop serving); None (`disabled`)
    /// without Kafka.
    pub dead_letter_topic: Option<TopicState>,
    pub shutting_down: bool,
}

impl Serialize for HealthReport {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("status", self.status)?;
        for (dependency, state) in &self.dependencies {
            if let Some(word) = state.as_ref().map(word).or(dependency.when_absent()) {
                map.serialize_entry(dependency.name(), word)?;
            }
        }
        for (dependency, state) in &self.dependencies {
            if let Some(why) = state.as_ref().and_then(State::error) {
                map.serialize_entry(&format!("{}_error", dependency.name()), why)?;
            }
        }
        let topic = self.dead_letter_topic.as_ref();
        map.serialize_entry("dead_letter_topic", topic.map_or("disabled", |t| t.word()))?;
        if let Some(why) = topic.and_then(TopicState::error) {
            map.serialize_entry("dead_letter_topic_error", why)?;
        }
        map.serialize_entry("shutting_down", &self.shutting_down)?;
        map.end()
    }
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
        HealthReport {
            status: if self.published() {
                "serving"
            } else {
                "not_serving"
            },
            dependencies: (Dependency::ALL.iter())
                .map(|&d| (d, self.deps.state(d)))
                .collect(),
            dead_letter_topic: self.deps.dead_letter_topic(),
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
            for (dependency, state) in self.deps.states() {
                metrics.dependency_up(dependency, state.is_up());
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

#[cfg(test)]
mod tests {
    use tokio::sync::watch;

    use super::*;
    use crate::{deps::state, metrics::Metrics};

    fn health(deps: Dependencies) -> Arc<Health> {
        let stats = Stats::new(
            Arc::new(Metrics::new()),
            deps.clone(),
            watch::channel(false).1,
        );
        Health::new(deps, Arc::new(stats)).0
    }

    #[test]
    fn health_without_kafka_says_disabled_and_leaves_the_registry_out() {
        let (_reach, reach) = state("mongodb", State::Down("not checked yet".into()));
        let deps = Dependencies::new(None)
            .with(
                Dependency::Mongodb,
                [state("mongodb writes", State::Up).1, reach],
            )
            .with(
                Dependency::DeadLetters,
                [state("dead letters", State::Up).1],
            );
        let json = serde_json::to_string(&health(deps).report()).unwrap();
        assert_eq!(
            json,
            r#"{"status":"not_serving","mongodb":"down","kafka":"disabled","dead_letters":"up","mongodb_error":"not checked yet","dead_letter_topic":"disabled","shutting_down":false}"#
        );
    }

    #[test]
    fn health_names_each_dependency_down_and_why() {
        let (_topic, topic) = watch::channel(TopicState::Unavailable("denied".into()));
        let (_kafka, kafka) = state("kafka", State::Down("no broker".into()));
        let (_registry, registry) = state("schema registry", State::Down("timeout".into()));
        let deps = Dependencies::new(Some(topic))
            .with(Dependency::SchemaRegistry, [registry])
            .with(Dependency::Kafka, [kafka])
            .with(Dependency::Mongodb, [state("mongodb", State::Up).1])
            .with(
                Dependency::DeadLetters,
                [state("dead letters", State::Up).1],
            );
        let health = health(deps);
        assert!(!health.serving());
        let json = serde_json::to_string(&health.report()).unwrap();
        assert_eq!(
            json,
            r#"{"status":"not_serving","mongodb":"up","kafka":"down","dead_letters":"up","schema_registry":"down","kafka_error":"no broker","schema_registry_error":"timeout","dead_letter_topic":"unavailable","dead_letter_topic_error":"denied","shutting_down":false}"#
        );
    }
}

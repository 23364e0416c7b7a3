//! Health: the service is SERVING while MongoDB is reachable (and Kafka too when it is
//! enabled) and it is not shutting down. This task publishes that verdict to the gRPC
//! Health service for `""`, `ingest.v1.IngestAdmin` and `ingest.v1.IngestEvents`;
//! `/health` answers with the same published verdict, so the two never disagree.
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

use crate::stats::Stats;

/// The service names health reports.
pub const SERVICES: [&str; 3] = ["", "ingest.v1.IngestAdmin", "ingest.v1.IngestEvents"];

/// Computes and publishes the serving state.
pub struct Health {
    reporter: HealthReporter,
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
    /// Why MongoDB is down, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mongodb_error: Option<String>,
    pub shutting_down: bool,
}

fn state(up: bool) -> &'static str {
    if up {
        "up"
    } else {
        "down"
    }
}

impl Health {
    /// A health state starting NOT_SERVING, and the gRPC service that reports it.
    pub fn new(stats: Arc<Stats>) -> (Arc<Self>, HealthServer<HealthService>) {
        let reporter = HealthReporter::new();
        let server = HealthServer::new(HealthService::from_health_reporter(reporter.clone()));
        let health = Arc::new(Health {
            reporter,
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
        let s = &self.stats;
        !self.shutting_down.load(Ordering::SeqCst)
            && s.mongodb_connected.load(Ordering::Relaxed)
            && (!s.kafka_enabled || s.kafka_connected.load(Ordering::Relaxed))
    }

    /// The report `/health` returns.
    pub fn report(&self) -> HealthReport {
        let s = &self.stats;
        HealthReport {
            status: if self.published() {
                "serving"
            } else {
                "not_serving"
            },
            mongodb: state(s.mongodb_connected.load(Ordering::Relaxed)),
            kafka: if s.kafka_enabled {
                state(s.kafka_connected.load(Ordering::Relaxed))
            } else {
                "disabled"
            },
            mongodb_error: s.mongodb_error.lock().expect("error lock").clone(),
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
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            self.stats.tick();
            let serving = self.serving();
            if last != Some(serving) {
                info!(serving, report = ?self.report(), "health changed");
                self.publish(serving).await;
                last = Some(serving);
            }
        }
    }
}

//! Wiring: `Application::build` validates what start-up can validate, binds the
//! listeners (so tests can use port 0 and read the ports back) and builds every
//! component — probes, health, the pipeline, the Kafka source, the servers — each as a
//! task ready to start; `run_until_stopped` only starts them on one `TaskTracker` and
//! then runs the shutdown sequence (`shutdown`) that SIGTERM, SIGINT, the Shutdown RPC,
//! `POST /shutdown`, a failed server and a pipeline task that dies share.
use std::{future::Future, net::SocketAddr, pin::Pin, sync::Arc, time::Duration};

use tokio::{net::TcpListener, sync::watch};
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::{
    config::{Config, SettingError},
    grpc,
    health::Health,
    metrics::Metrics,
    shutdown::{Shutdown, Stopped},
    stats::Stats,
};

mod parts;

use parts::{Clients, Parts, StateWriters};

/// A start-up failure, naming the variable at fault.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A configuration value that cannot work (exit 2).
    #[error(transparent)]
    Config(#[from] SettingError),
    /// A listener that cannot be bound, such as a port in use (exit 1).
    #[error(transparent)]
    Bind(SettingError),
}

impl BuildError {
    /// The process exit code of this failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            BuildError::Config(_) => 2,
            BuildError::Bind(_) => 1,
        }
    }
}

/// A component built and waiting to start.
pub(crate) type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Binds a listener; a failure names the variable and the address.
async fn bind(var: &'static str, addr: SocketAddr) -> Result<TcpListener, BuildError> {
    TcpListener::bind(addr).await.map_err(|e| {
        BuildError::Bind(SettingError::caused(
            var,
            format!("cannot listen on {addr}: {e}"),
            e,
        ))
    })
}

/// A built, not yet running, server.
pub struct Application {
    grpc_addr: SocketAddr,
    http_addr: SocketAddr,
    shutdown: Shutdown,
    shutdown_timeout: Duration,
    health: Arc<Health>,
    stats: Arc<Stats>,
    tasks: TaskTracker,
    components: Vec<Task>,
}

impl Application {
    /// Checks the configuration against the clients, binds both listeners and builds
    /// every component.
    pub async fn build(config: Config) -> Result<Self, BuildError> {
        let clients = Clients::new(&config).await?;
        let grpc_listener = bind("GRPC_ADDR", config.grpc_addr).await?;
        let http_listener = bind("HTTP_ADDR", config.http_addr).await?;
        let metrics = Arc::new(Metrics::new());
        let writers = StateWriters::new(
            config.kafka_enabled,
            config.kafka_enabled && config.schema_registry_url.is_some(),
        );
        let admin_paused = watch::channel(false);
        let stats = Arc::new(Stats::new(
            metrics.clone(),
            writers.deps.clone(),
            admin_paused.1.clone(),
        ));
        warn_missing_tokens(&config);
        let (health, health_service) = Health::new(writers.deps.clone(), stats.clone());
        let auth_failures = crate::grpc::auth::AuthFailures::new(metrics.registry());
        let mut parts = Parts {
            shutdown: Shutdown::new(config.kafka_enabled),
            db: clients.db,
            metrics,
            stats,
            tasks: TaskTracker::new(),
            components: Vec::new(),
            auth_failures,
            config,
        };
        parts.start(health.clone().run(parts.shutdown.background.clone()));
        let (tx, values, seek) = parts.intake(clients.kafka, writers, admin_paused.1);
        let services = grpc::Services {
            admin: parts.admin(admin_paused.0, seek, tx.clone(), values),
            ingest: parts.ingest(tx),
            health: health_service,
            max_message_bytes: parts.config.grpc_max_message_bytes as usize,
            limits: parts.config.limits.clone(),
            tls: clients.tls,
        };
        let grpc_addr = grpc_listener
            .local_addr()
            .map_err(|e| bind_error("GRPC_ADDR", e))?;
        let http_addr = http_listener
            .local_addr()
            .map_err(|e| bind_error("HTTP_ADDR", e))?;
        parts.servers(grpc_listener, services, http_listener, &health);
        Ok(Self {
            grpc_addr,
            http_addr,
            shutdown: parts.shutdown,
            shutdown_timeout: parts.config.shutdown_timeout(),
            health,
            stats: parts.stats,
            tasks: parts.tasks,
            components: parts.components,
        })
    }

    /// The bound gRPC address.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// The bound HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Cancelling this token starts the graceful shutdown.
    pub fn shutdown_token(&self) -> tokio_util::sync::CancellationToken {
        self.shutdown.requested.clone()
    }

    /// The live figures (tests read them).
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Starts every component and runs until shutdown is requested and completed (or
    /// timed out, or a component failed).
    pub async fn run_until_stopped(self) -> Stopped {
        let Application {
            grpc_addr,
            http_addr,
            shutdown,
            shutdown_timeout,
            health,
            stats,
            tasks,
            components,
        } = self;
        health.publish(false).await;
        for component in components {
            tasks.spawn(component);
        }
        info!(grpc = %grpc_addr, http = %http_addr, "sales-ingest started");
        let outcome = shutdown.run(&health, shutdown_timeout).await;
        tasks.close();
        if outcome == Stopped::Clean {
            // The HTTP server and the background tasks end at once; a gRPC server still
            // holding connections past the close grace is not waited for again.
            let wait = if shutdown.grpc_closed.is_cancelled() {
                Duration::from_secs(2)
            } else {
                Duration::from_millis(250)
            };
            let _ = tokio::time::timeout(wait, tasks.wait()).await;
            info!(stats = ?stats.snapshot(), "stopped cleanly");
        }
        outcome
    }
}

/// Warns of what a missing token leaves open or disables.
fn warn_missing_tokens(config: &Config) {
    if config.producer_token().is_none() {
        warn!(
            "PRODUCER_TOKEN is not set: IngestEvents accepts events from anyone who reaches the gRPC port; set PRODUCER_TOKEN to require a bearer token"
        );
    }
    if config.admin_token().is_none() {
        warn!(
            "ADMIN_TOKEN is not set: PauseConsumer, ResumeConsumer, Shutdown, SeekConsumer, RedriveDeadLetters and POST /shutdown are disabled"
        );
    }
}

fn bind_error(var: &'static str, e: std::io::Error) -> BuildError {
    BuildError::Bind(SettingError::caused(var, e.to_string(), e))
}

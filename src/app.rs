//! Wiring: `Application::build` validates what start-up can validate and binds the
//! listeners (so tests can use port 0 and read the ports back); `run_until_stopped`
//! runs every task on one `TaskTracker` and performs the single shutdown path that
//! SIGTERM, SIGINT and the Shutdown RPC share: health NOT_SERVING, stop taking work,
//! drain the pipeline, flush, commit final offsets, end streams, stop the servers —
//! bounded by SHUTDOWN_TIMEOUT.
use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{
    net::TcpListener,
    sync::{mpsc, watch, Semaphore},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{error, info, warn};

use crate::{
    config::Config,
    grpc::{self, admin::Admin, ingest::Ingest},
    health::Health,
    http,
    pipeline::{self, PipelineConfig},
    sink::{mongo, DeadLetters, MongoWriter, Store},
    source::kafka::{self, IngestConsumer, KafkaSource},
    stats::Stats,
};

/// A start-up failure: a configuration value that cannot work (exit 2) or an I/O error
/// such as a port in use (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("invalid value for {var}: {message}")]
    Config { var: &'static str, message: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// How a run ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Stopped {
    /// Everything drained and committed in time.
    Clean,
    /// SHUTDOWN_TIMEOUT passed first; uncommitted events will be redelivered.
    TimedOut,
}

/// A built, not yet running, server.
pub struct Application {
    config: Config,
    grpc_listener: TcpListener,
    http_listener: TcpListener,
    shutdown: CancellationToken,
    stats: Arc<Stats>,
    db: mongodb::Database,
    consumer: Option<Arc<IngestConsumer>>,
    dlq_producer: Option<kafka::DlqProducer>,
    tls: Option<tonic::transport::ServerTlsConfig>,
}

fn config_error(var: &'static str, e: impl std::fmt::Display) -> BuildError {
    BuildError::Config {
        var,
        message: e.to_string(),
    }
}

impl Application {
    /// Checks the configuration against the clients and binds both listeners.
    pub async fn build(config: Config) -> Result<Self, BuildError> {
        let client = mongo::client(&config.mongodb_url)
            .await
            .map_err(|e| config_error("MONGODB_URL", e))?;
        let db = client.database(&config.mongodb_database);
        let (consumer, dlq_producer) = if config.kafka_enabled {
            let c = kafka::consumer(&config)
                .map_err(|e| config_error(kafka::config_variable(&e), e))?;
            let p = kafka::producer(&config)
                .map_err(|e| config_error(kafka::config_variable(&e), e))?;
            (Some(c), Some(p))
        } else {
            (None, None)
        };
        let tls = match (&config.grpc_tls_cert, &config.grpc_tls_key) {
            (Some(cert), Some(key)) => Some(
                grpc::tls_config(cert, key, config.grpc_tls_client_ca.as_deref())
                    .map_err(|(var, message)| BuildError::Config { var, message })?,
            ),
            _ => None,
        };
        let grpc_listener = TcpListener::bind(config.grpc_addr).await?;
        let http_listener = TcpListener::bind(config.http_addr).await?;
        let stats = Arc::new(Stats::new(config.kafka_enabled));
        if config.admin_token().is_none() {
            warn!(
                "ADMIN_TOKEN is not set: PauseConsumer, ResumeConsumer and Shutdown are disabled"
            );
        }
        Ok(Self {
            config,
            grpc_listener,
            http_listener,
            shutdown: CancellationToken::new(),
            stats,
            db,
            consumer,
            dlq_producer,
            tls,
        })
    }

    /// The bound gRPC address.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_listener.local_addr().expect("bound listener")
    }

    /// The bound HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_listener.local_addr().expect("bound listener")
    }

    /// Cancelling this token starts the graceful shutdown.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// The live figures (tests read them).
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Runs until shutdown is requested and completed (or timed out).
    pub async fn run_until_stopped(self) -> anyhow::Result<Stopped> {
        let Application {
            config,
            grpc_listener,
            http_listener,
            shutdown,
            stats,
            db,
            consumer,
            dlq_producer,
            tls,
        } = self;
        let tasks = TaskTracker::new();
        let drained = CancellationToken::new();
        let stopped = CancellationToken::new();
        let (health, health_service) = Health::new(stats.clone());
        health.publish(false).await;
        tasks.spawn(health.clone().run(stopped.clone()));
        tasks.spawn(mongo::probe(
            db.clone(),
            config.mongodb_collection.clone(),
            stats.clone(),
            stopped.clone(),
        ));

        let (tx, rx) = mpsc::channel(config.queue_capacity as usize);
        let store = Store {
            writer: MongoWriter::new(
                &db,
                &config.mongodb_collection,
                stats.clone(),
                config.max_retries,
            ),
            dead_letters: DeadLetters::new(
                dlq_producer.map(|p| (p, config.dlq_topic())),
                &db,
                &config.dlq_collection(),
                stats.clone(),
            ),
        };
        let pipeline_cfg = PipelineConfig {
            batch_size: config.batch_size as usize,
            flush_interval: config.flush_interval(),
            write_concurrency: config.write_concurrency as usize,
        };
        {
            let (stats, stop, drained) = (stats.clone(), shutdown.clone(), drained.clone());
            tasks.spawn(async move {
                pipeline::run(rx, Arc::new(store), stats, pipeline_cfg, stop).await;
                drained.cancel();
            });
        }

        let (paused_tx, paused_rx) = watch::channel(false);
        let source_done = CancellationToken::new();
        if let Some(consumer) = consumer {
            tasks.spawn(kafka::probe(
                consumer.clone(),
                stats.clone(),
                stopped.clone(),
            ));
            let source = KafkaSource::new(consumer, tx.clone(), paused_rx, stats.clone());
            let (stop, drained, done) = (shutdown.clone(), drained.clone(), source_done.clone());
            tasks.spawn(async move {
                source.run(stop, drained).await;
                done.cancel();
            });
        } else {
            source_done.cancel();
        }

        let services = grpc::Services {
            admin: Admin {
                stats: stats.clone(),
                admin_token: config.admin_token().map(str::to_string),
                paused: paused_tx,
                shutdown: shutdown.clone(),
            },
            ingest: Ingest {
                tx,
                streams: Arc::new(Semaphore::new(config.grpc_max_streams as usize)),
                max_streams: config.grpc_max_streams as usize,
                max_events_per_request: config.grpc_max_events_per_request as usize,
                producer_token: config.producer_token().map(str::to_string),
                stop: shutdown.clone(),
                tracker: tasks.clone(),
            },
            health: health_service,
            max_message_bytes: config.grpc_max_message_bytes as usize,
            tls,
        };
        let grpc_done = CancellationToken::new();
        {
            let (done, drained) = (grpc_done.clone(), drained.clone());
            tasks.spawn(async move {
                let signal = async move { drained.cancelled().await };
                if let Err(e) = grpc::serve(grpc_listener, services, signal).await {
                    error!(error = %e, "gRPC server failed");
                }
                done.cancel();
            });
        }
        {
            let (stats, health, stop) = (stats.clone(), health.clone(), stopped.clone());
            tasks.spawn(async move {
                http::serve(http_listener, stats, health, async move {
                    stop.cancelled().await
                })
                .await;
            });
        }
        info!(grpc = %config.grpc_addr, http = %config.http_addr, "sales-ingest started");

        shutdown.cancelled().await;
        info!("shutting down: NOT_SERVING, draining");
        health.begin_shutdown().await;
        let finished = tokio::time::timeout(config.shutdown_timeout(), async {
            drained.cancelled().await;
            source_done.cancelled().await;
            grpc_done.cancelled().await;
        })
        .await;
        stopped.cancel();
        tasks.close();
        let outcome = match finished {
            Ok(()) => {
                let _ = tokio::time::timeout(Duration::from_secs(5), tasks.wait()).await;
                info!(stats = ?stats.snapshot(), "stopped cleanly");
                Stopped::Clean
            }
            Err(_) => {
                error!(
                    timeout_s = config.shutdown_timeout,
                    "shutdown did not finish within SHUTDOWN_TIMEOUT; uncommitted events will be redelivered"
                );
                Stopped::TimedOut
            }
        };
        Ok(outcome)
    }
}

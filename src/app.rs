//! Wiring: `Application::build` validates what start-up can validate and binds the
//! listeners (so tests can use port 0 and read the ports back); `run_until_stopped`
//! runs every task on one `TaskTracker` and then the shutdown sequence (`shutdown`)
//! that SIGTERM, SIGINT, the Shutdown RPC, `POST /shutdown` and a failed server share.
use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{
    net::TcpListener,
    sync::{mpsc, watch, Semaphore},
};
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::{
    config::Config,
    deps::{self, Dependencies, State, StateWriter},
    format::{Registry, ValueDecoder},
    grpc::{self, admin::Admin, ingest::Ingest},
    health::Health,
    http, kafka_client,
    metrics::Metrics,
    pipeline::{self, PipelineConfig},
    redrive::{Redriver, TopicSource},
    shutdown::{Shutdown, Stopped},
    sink::{dead_letter::DlqProducer, mongo, DeadLetters, MongoWriter, Store},
    source::{
        kafka::{self, IngestConsumer, KafkaSource},
        seek::SeekHandle,
    },
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

/// The writer of each dependency state, handed to its owner at run time.
struct StateWriters {
    mongodb_reachable: StateWriter,
    mongodb_writes: StateWriter,
    dead_letters: StateWriter,
    kafka: Option<StateWriter>,
    schema_registry: Option<StateWriter>,
    deps: Dependencies,
}

impl StateWriters {
    fn new(kafka: bool, registry: bool) -> Self {
        let (mongodb_reachable, reach) =
            deps::state("mongodb", State::Down("not checked yet".into()));
        let (mongodb_writes, writes) = deps::state("mongodb writes", State::Up);
        let (dead_letters, letters) = deps::state("dead letters", State::Up);
        let (kafka, kafka_r) = if kafka {
            let (w, r) = deps::state("kafka", State::Down("not connected yet".into()));
            (Some(w), Some(r))
        } else {
            (None, None)
        };
        let (schema_registry, registry_r) = match registry {
            true => {
                let (w, r) = deps::state("schema registry", State::Up);
                (Some(w), Some(r))
            }
            false => (None, None),
        };
        StateWriters {
            mongodb_reachable,
            mongodb_writes,
            dead_letters,
            kafka,
            schema_registry,
            deps: Dependencies {
                mongodb_reachable: reach,
                mongodb_writes: writes,
                dead_letters: letters,
                kafka: kafka_r,
                schema_registry: registry_r,
            },
        }
    }
}

/// A built, not yet running, server.
pub struct Application {
    config: Config,
    grpc_listener: TcpListener,
    http_listener: TcpListener,
    shutdown: Shutdown,
    db: mongodb::Database,
    consumer: Option<Arc<IngestConsumer>>,
    dlq_producer: Option<DlqProducer>,
    tls: Option<tonic::transport::ServerTlsConfig>,
    metrics: Arc<Metrics>,
    stats: Arc<Stats>,
    writers: StateWriters,
    admin_paused: (watch::Sender<bool>, watch::Receiver<bool>),
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
        config
            .check()
            .map_err(|(var, message)| BuildError::Config { var, message })?;
        let client = mongo::client(&config.mongodb_url)
            .await
            .map_err(|e| config_error("MONGODB_URL", e))?;
        let db = client.database(&config.mongodb_database);
        let (consumer, dlq_producer) = if config.kafka_enabled {
            kafka_client::check(&config).map_err(|e| config_error(e.var, e.message))?;
            let c = kafka::consumer(&config).map_err(|e| config_error("KAFKA_PROPERTIES", e))?;
            let p = kafka::producer(&config).map_err(|e| config_error("KAFKA_PROPERTIES", e))?;
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
        if config.admin_token().is_none() {
            warn!(
                "ADMIN_TOKEN is not set: PauseConsumer, ResumeConsumer, Shutdown, SeekConsumer, RedriveDeadLetters and POST /shutdown are disabled"
            );
        }
        Ok(Self {
            grpc_listener,
            http_listener,
            shutdown: Shutdown::new(config.kafka_enabled),
            db,
            consumer,
            dlq_producer,
            tls,
            metrics,
            stats,
            writers,
            admin_paused,
            config,
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
    pub fn shutdown_token(&self) -> tokio_util::sync::CancellationToken {
        self.shutdown.requested.clone()
    }

    /// The live figures (tests read them).
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Runs until shutdown is requested and completed (or timed out, or a server failed).
    pub async fn run_until_stopped(self) -> Stopped {
        let Application {
            config,
            grpc_listener,
            http_listener,
            shutdown,
            db,
            consumer,
            dlq_producer,
            tls,
            metrics,
            stats,
            writers,
            admin_paused,
        } = self;
        let tasks = TaskTracker::new();
        let (health, health_service) = Health::new(writers.deps.clone(), stats.clone());
        health.publish(false).await;
        tasks.spawn(health.clone().run(shutdown.background.clone()));
        tasks.spawn(mongo::probe(
            db.clone(),
            config.mongodb_collection.clone(),
            writers.mongodb_reachable,
            shutdown.background.clone(),
        ));

        // gRPC events and re-drives share one channel; Kafka events have their own, so
        // that the pipeline can hold Kafka intake alone (a schema registry lookup).
        let (tx, rx) = mpsc::channel(config.queue_capacity as usize);
        stats.watch_queue(tx.clone());
        let (kafka_tx, kafka_rx) = if consumer.is_some() {
            let (t, r) = mpsc::channel(config.queue_capacity as usize);
            stats.watch_queue(t.clone());
            (Some(t), Some(r))
        } else {
            (None, None)
        };
        let store = Store {
            writer: MongoWriter::new(
                &db,
                &config.mongodb_collection,
                metrics.clone(),
                writers.mongodb_writes,
                config.max_retries,
                config.document_format,
            )
            .with_mode(config.write_mode),
            dead_letters: DeadLetters::new(
                dlq_producer.map(|p| (p, config.dlq_topic())),
                &db,
                &config.dlq_collection(),
                metrics.clone(),
                writers.dead_letters,
                config.dlq_max_attempts,
            ),
        };
        let registry = writers.schema_registry.map(|state| {
            Arc::new(Registry::new(
                config.schema_registry(),
                state,
                metrics.clone(),
            ))
        });
        if let Some(registry) = &registry {
            tasks.spawn(registry.clone().probe(shutdown.background.clone()));
        }
        let values = ValueDecoder {
            format: config.kafka_value_format,
            registry,
        };
        let pipeline_cfg = PipelineConfig {
            batch_size: config.batch_size as usize,
            flush_interval: config.flush_interval(),
            write_concurrency: config.write_concurrency as usize,
            rules: config.rules(),
            values: values.clone(),
            write_mode: config.write_mode,
        };
        {
            let (metrics, s) = (metrics.clone(), shutdown.clone());
            tasks.spawn(async move {
                let queues = pipeline::Queues {
                    others: rx,
                    kafka: kafka_rx,
                };
                pipeline::run(queues, Arc::new(store), metrics, pipeline_cfg, s.clone()).await;
                s.pipeline_drained.cancel();
            });
        }

        let mut seek = None;
        if let (Some(consumer), Some(kafka_state), Some(kafka_tx)) =
            (consumer, writers.kafka, kafka_tx)
        {
            tasks.spawn(kafka::probe(
                consumer.clone(),
                kafka_state,
                shutdown.background.clone(),
            ));
            let (seek_tx, seek_rx) = mpsc::channel(1);
            seek = Some(SeekHandle::new(consumer.clone(), seek_tx));
            let source =
                KafkaSource::new(consumer, kafka_tx, admin_paused.1, stats.clone(), seek_rx);
            let s = shutdown.clone();
            tasks.spawn(async move {
                source.run(s.requested, s.pipeline_drained).await;
                s.source_committed.cancel();
            });
        }

        let redrive = Arc::new(Redriver {
            db: db.clone(),
            events_collection: config.mongodb_collection.clone(),
            dlq_collection: config.dlq_collection(),
            topic: config.kafka_enabled.then(|| TopicSource {
                client: kafka_client::client_config(&config, &[]),
                topic: config.dlq_topic(),
                group: config.kafka_group_id.clone(),
            }),
            tx: tx.clone(),
            values,
            rules: config.rules(),
            stats: stats.clone(),
            stop: shutdown.requested.clone(),
            tasks: tasks.clone(),
        });
        let services = grpc::Services {
            admin: Admin {
                stats: stats.clone(),
                admin_token: config.admin_token().cloned(),
                paused: admin_paused.0,
                shutdown: shutdown.requested.clone(),
                seek,
                redrive,
            },
            ingest: Ingest {
                tx,
                streams: Arc::new(Semaphore::new(config.grpc_max_streams as usize)),
                max_streams: config.grpc_max_streams as usize,
                max_events_per_request: config.grpc_max_events_per_request as usize,
                producer_token: config.producer_token().cloned(),
                idle_timeout: config.grpc_stream_idle_timeout(),
                stop: shutdown.requested.clone(),
                tracker: tasks.clone(),
                lost: metrics.lost_acks(),
            },
            health: health_service,
            max_message_bytes: config.grpc_max_message_bytes as usize,
            tls,
        };
        {
            let s = shutdown.clone();
            tasks.spawn(async move {
                let drained = s.pipeline_drained.clone();
                let signal = async move { drained.cancelled().await };
                if let Err(e) = grpc::serve(grpc_listener, services, signal).await {
                    s.fail(format!("gRPC server failed: {e:#}"));
                }
                s.grpc_closed.cancel();
            });
        }
        {
            let shared = http::Shared {
                stats: stats.clone(),
                health: health.clone(),
                admin_token: config.admin_token().cloned(),
                shutdown: shutdown.requested.clone(),
            };
            let stop = shutdown.background.clone();
            tasks.spawn(async move {
                http::serve(http_listener, shared, async move { stop.cancelled().await }).await;
            });
        }
        info!(grpc = %config.grpc_addr, http = %config.http_addr, "sales-ingest started");

        let outcome = shutdown.run(&health, config.shutdown_timeout()).await;
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

//! What `Application::build` assembles: the dependency state writers, the clients
//! start-up checks the configuration against, and `Parts`, which builds each component
//! (probes, the pipeline and its sink, the Kafka source, the services, the servers) as a
//! task ready to start.
use std::{future::Future, sync::Arc};

use tokio::{
    net::TcpListener,
    sync::{mpsc, watch, Semaphore},
};
use tokio_util::task::TaskTracker;

use crate::{
    config::{Config, SettingError},
    conn::Gate,
    deps::{self, Dependencies, Dependency, State, StateWriter},
    event::Incoming,
    format::{Registry, ValueDecoder},
    grpc::{self, admin::Admin, auth::AuthFailures, budget::Budget, ingest::Ingest},
    health::Health,
    http, librdkafka,
    metrics::Metrics,
    pipeline::{self, PipelineConfig},
    redrive::{Redriver, TopicSource},
    shutdown::Shutdown,
    sink::{
        dead_letter::{self, DlqProducer},
        dlq_topic::{self, DlqAdmin, TopicState},
        mongo, DeadLetters, MongoWriter, Store,
    },
    source::{
        kafka::{self, IngestConsumer, KafkaSource},
        seek::SeekHandle,
    },
    stats::Stats,
};

use super::{BuildError, Task};

/// The writer of each dependency state, handed to its owner at build time.
pub(super) struct StateWriters {
    pub(super) mongodb_reachable: StateWriter,
    pub(super) mongodb_writes: StateWriter,
    pub(super) dead_letters: StateWriter,
    pub(super) kafka: Option<StateWriter>,
    pub(super) schema_registry: Option<StateWriter>,
    pub(super) dead_letter_topic: Option<watch::Sender<TopicState>>,
    pub(super) deps: Dependencies,
}

impl StateWriters {
    pub(super) fn new(kafka: bool, registry: bool) -> Self {
        let (mongodb_reachable, reach) =
            deps::state("mongodb", State::Down("not checked yet".into()));
        let (mongodb_writes, writes) = deps::state("mongodb writes", State::Up);
        let (dead_letters, letters) = deps::state("dead letters", State::Up);
        let optional = |on: bool, name, initial: State| {
            on.then(|| deps::state(name, initial))
                .map_or((None, None), |(w, r)| (Some(w), Some(r)))
        };
        let (kafka, kafka_r) = optional(kafka, "kafka", State::Down("not connected yet".into()));
        let (schema_registry, registry_r) = optional(registry, "schema registry", State::Up);
        let (dead_letter_topic, topic_r) = kafka_r
            .is_some()
            .then(|| watch::channel(TopicState::Checking))
            .unzip();
        let mut deps = Dependencies::new(topic_r)
            .with(Dependency::Mongodb, [writes, reach])
            .with(Dependency::DeadLetters, [letters]);
        if let Some(state) = kafka_r {
            deps = deps.with(Dependency::Kafka, [state]);
        }
        if let Some(state) = registry_r {
            deps = deps.with(Dependency::SchemaRegistry, [state]);
        }
        StateWriters {
            mongodb_reachable,
            mongodb_writes,
            dead_letters,
            kafka,
            schema_registry,
            dead_letter_topic,
            deps,
        }
    }
}

/// The Kafka clients: the consumer, the dead-letter producer and the admin client that
/// provisions the dead-letter topic.
pub(super) struct KafkaClients {
    pub(super) consumer: Arc<IngestConsumer>,
    pub(super) producer: DlqProducer,
    pub(super) admin: DlqAdmin,
}

/// The clients start-up checks the configuration against.
pub(super) struct Clients {
    pub(super) db: mongodb::Database,
    pub(super) kafka: Option<KafkaClients>,
    pub(super) tls: Option<Arc<grpc::tls::Tls>>,
}

impl Clients {
    pub(super) async fn new(config: &Config) -> Result<Self, BuildError> {
        config.check()?;
        let client = mongo::client(&config.mongodb_url).await.map_err(|e| {
            let secrets = crate::config::url_secrets(&config.mongodb_url);
            let message = crate::config::scrub(&e.to_string(), &secrets);
            SettingError::new("MONGODB_URL", message)
        })?;
        let kafka = match config.kafka_enabled {
            true => {
                librdkafka::check(config)?;
                Some(KafkaClients {
                    consumer: kafka::consumer(config)?,
                    producer: dead_letter::producer(config)?,
                    admin: dlq_topic::admin(config)
                        .map_err(|e| SettingError::caused("KAFKA_PROPERTIES", e.to_string(), e))?,
                })
            }
            false => None,
        };
        let tls = match (&config.grpc_tls_cert, &config.grpc_tls_key) {
            (Some(cert), Some(key)) => Some(Arc::new(grpc::tls::Tls::load(grpc::tls::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: config.grpc_tls_client_ca.clone(),
            })?)),
            _ => None,
        };
        let db = client.database(&config.mongodb_database);
        Ok(Clients { db, kafka, tls })
    }
}

/// What the components share while they are built.
pub(super) struct Parts {
    pub(super) config: Config,
    pub(super) db: mongodb::Database,
    pub(super) metrics: Arc<Metrics>,
    pub(super) stats: Arc<Stats>,
    pub(super) shutdown: Shutdown,
    pub(super) tasks: TaskTracker,
    pub(super) components: Vec<Task>,
    /// Refused bearer tokens on both ports (`auth_failures_total`).
    pub(super) auth_failures: AuthFailures,
}

impl Parts {
    pub(super) fn start(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        self.components.push(Box::pin(task));
    }
}

impl Parts {
    /// The pipeline, its sink and probes, and the Kafka source: returns the channel gRPC
    /// events and re-drives share, the value decoder and the seek handle.
    pub(super) fn intake(
        &mut self,
        kafka: Option<KafkaClients>,
        mut writers: StateWriters,
        admin_paused: watch::Receiver<bool>,
    ) -> (mpsc::Sender<Incoming>, ValueDecoder, Option<SeekHandle>) {
        let background = self.shutdown.background.clone();
        self.start(mongo::probe(
            self.db.clone(),
            self.config.mongodb_collection.clone(),
            writers.mongodb_reachable,
            background.clone(),
        ));
        // gRPC events and re-drives share one channel; Kafka events have their own, so
        // that the pipeline can hold Kafka intake alone (a schema registry lookup).
        let (tx, rx) = self.queue();
        let registry = writers.schema_registry.map(|state| {
            let settings = self.config.schema_registry();
            Arc::new(Registry::new(settings, state, self.metrics.clone()))
        });
        if let Some(registry) = &registry {
            self.start(registry.clone().probe(background.clone()));
        }
        let values = ValueDecoder {
            format: self.config.kafka_value_format,
            registry,
        };
        let (consumer, producer, admin) = match kafka {
            Some(k) => (Some(k.consumer), Some(k.producer), Some(k.admin)),
            None => (None, None, None),
        };
        let topic_state = writers.dead_letter_topic.take();
        let mut store = self.store(producer, writers.mongodb_writes, writers.dead_letters);
        if let (Some(admin), Some(state)) = (admin, topic_state) {
            store.dead_letters = store.dead_letters.with_topic_state(state.subscribe());
            self.provision_dead_letter_topic(admin, state);
        }
        let mut queues = pipeline::Queues {
            others: rx,
            kafka: None,
        };
        let mut seek = None;
        if let (Some(consumer), Some(state)) = (consumer, writers.kafka) {
            self.start(kafka::probe(consumer.clone(), state, background));
            let (kafka_tx, kafka_rx) = self.queue();
            queues.kafka = Some(kafka_rx);
            let (seek_tx, seek_rx) = mpsc::channel(1);
            seek = Some(SeekHandle::new(consumer.clone(), seek_tx));
            let stats = self.stats.clone();
            let source = KafkaSource::new(consumer, kafka_tx, admin_paused, stats, seek_rx);
            let s = self.shutdown.clone();
            self.start(async move {
                source.run(s.requested, s.pipeline_drained).await;
                s.source_committed.cancel();
            });
        }
        self.pipeline(queues, store, values.clone());
        (tx, values, seek)
    }

    /// A pipeline input channel of `QUEUE_CAPACITY`, watched by the stats.
    pub(super) fn queue(&self) -> (mpsc::Sender<Incoming>, mpsc::Receiver<Incoming>) {
        let (tx, rx) = mpsc::channel(self.config.queue_capacity as usize);
        self.stats.watch_queue(tx.clone());
        (tx, rx)
    }

    /// The production sink: the MongoDB writer and the dead letters.
    pub(super) fn store(
        &self,
        producer: Option<DlqProducer>,
        writes: StateWriter,
        dead_letters: StateWriter,
    ) -> Store {
        let config = &self.config;
        let writer = MongoWriter::new(
            &self.db,
            &config.mongodb_collection,
            self.metrics.clone(),
            writes,
            config.max_retries,
            config.document_format,
        )
        .with_mode(config.write_mode)
        .with_legacy_lookup(config.legacy_event_id_lookup);
        Store {
            writer,
            dead_letters: DeadLetters::new(
                producer.map(|p| (p, config.dlq_topic())),
                &self.db,
                &config.dlq_collection(),
                self.metrics.clone(),
                dead_letters,
                config.dlq_max_attempts,
            ),
        }
    }

    /// Creates the dead-letter topic where it is missing (and may be created), the one
    /// writer of its state.
    pub(super) fn provision_dead_letter_topic(
        &mut self,
        admin: DlqAdmin,
        state: watch::Sender<TopicState>,
    ) {
        let config = &self.config;
        let provisioning = dlq_topic::Provisioning {
            admin: Arc::new(admin),
            source_topic: config.kafka_topic.clone(),
            topic: config.dlq_topic(),
            replication_factor: config.kafka_dlq_replication_factor,
            collection: config.dlq_collection(),
        };
        let background = self.shutdown.background.clone();
        self.start(provisioning.run(state, background));
    }

    pub(super) fn pipeline(
        &mut self,
        queues: pipeline::Queues,
        store: Store,
        values: ValueDecoder,
    ) {
        let config = &self.config;
        let cfg = PipelineConfig {
            batch_size: config.batch_size as usize,
            flush_interval: config.flush_interval(),
            write_concurrency: config.write_concurrency as usize,
            rules: config.rules(),
            values,
            write_mode: config.write_mode,
        };
        let (metrics, s) = (self.metrics.clone(), self.shutdown.clone());
        self.start(async move {
            pipeline::run(queues, Arc::new(store), metrics, cfg, s.clone()).await;
            s.pipeline_drained.cancel();
        });
    }

    /// The IngestAdmin service and the re-driver behind it.
    pub(super) fn admin(
        &self,
        paused: watch::Sender<bool>,
        seek: Option<SeekHandle>,
        tx: mpsc::Sender<Incoming>,
        values: ValueDecoder,
    ) -> Admin {
        let config = &self.config;
        let redrive = Arc::new(Redriver {
            db: self.db.clone(),
            events_collection: config.mongodb_collection.clone(),
            dlq_collection: config.dlq_collection(),
            topic: config.kafka_enabled.then(|| TopicSource {
                client: librdkafka::client_config(config, &[]),
                topic: config.dlq_topic(),
                group: config.kafka_group_id.clone(),
            }),
            tx,
            values,
            rules: config.rules(),
            stats: self.stats.clone(),
            stop: self.shutdown.requested.clone(),
            tasks: self.tasks.clone(),
        });
        Admin {
            stats: self.stats.clone(),
            admin_token: config.admin_token().cloned(),
            auth_failures: self.auth_failures.clone(),
            paused,
            shutdown: self.shutdown.requested.clone(),
            seek,
            redrive,
        }
    }

    /// The IngestEvents service.
    pub(super) fn ingest(&self, tx: mpsc::Sender<Incoming>) -> Ingest {
        let config = &self.config;
        Ingest {
            tx,
            streams: Arc::new(Semaphore::new(config.grpc_max_streams as usize)),
            max_streams: config.grpc_max_streams as usize,
            shares: grpc::shares::Shares::new(
                config
                    .limits
                    .streams_per_connection(config.grpc_max_streams),
            ),
            max_events_per_request: config.grpc_max_events_per_request as usize,
            budget: Budget::new(
                config.limits.grpc_max_buffered_bytes as usize,
                config.grpc_max_message_bytes as usize,
            ),
            producer_token: config.producer_token().cloned(),
            auth_failures: self.auth_failures.clone(),
            idle_timeout: config.grpc_stream_idle_timeout(),
            stop: self.shutdown.requested.clone(),
            tracker: self.tasks.clone(),
            lost: self.metrics.lost_acks(),
        }
    }

    /// The gRPC server (which ends once the pipeline drained) and the HTTP server
    /// (which ends with the background tasks).
    pub(super) fn servers(
        &mut self,
        grpc_listener: TcpListener,
        services: grpc::Services,
        http_listener: TcpListener,
        health: &Arc<Health>,
    ) {
        let s = self.shutdown.clone();
        self.start(async move {
            let drained = s.pipeline_drained.clone();
            let signal = async move { drained.cancelled().await };
            if let Err(e) = grpc::serve(grpc_listener, services, signal).await {
                s.fail(format!("gRPC server failed: {e:#}"));
            }
            s.grpc_closed.cancel();
        });
        let shared = http::Shared {
            stats: self.stats.clone(),
            health: health.clone(),
            admin_token: self.config.admin_token().cloned(),
            auth_failures: self.auth_failures.clone(),
            shutdown: self.shutdown.requested.clone(),
        };
        let stop = self.shutdown.background.clone();
        let gate = Gate::new(
            "HTTP_MAX_CONNECTIONS",
            self.config.limits.http_max_connections as usize,
            self.config.limits.connection_idle_timeout(),
        );
        self.start(async move {
            http::serve(http_listener, shared, gate, async move {
                stop.cancelled().await
            })
            .await;
        });
    }
}

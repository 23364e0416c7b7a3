//! Configuration: every setting is an environment variable (the Python service's names
//! kept) and the same as a CLI flag. Parsing is validation: a value that is out of range
//! stops start-up with a message naming the variable (exit code 2, clap's usage code).
use std::{fmt, net::SocketAddr};

use clap::{Parser, ValueEnum};
use secrecy::SecretString;

use crate::{
    format::ValueFormat,
    librdkafka::GroupProtocol,
    sink::{document::DocumentFormat, upsert::WriteMode},
    validate::{self, NaiveTs},
};

/// The largest `BATCH_SIZE`.
pub const MAX_BATCH_SIZE: u32 = 100_000;

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// sales-ingest: Kafka and gRPC SalesEvents into MongoDB, in batches, exactly once.
#[derive(Clone, Debug, Parser)]
#[command(name = "sales-ingest", version, about, long_about = None, args_override_self = true)]
pub struct Config {
    /// Kafka bootstrap servers (host:port, comma-separated).
    #[arg(
        long,
        env = "KAFKA_BOOTSTRAP_SERVERS",
        default_value = "localhost:9092"
    )]
    pub kafka_bootstrap_servers: String,
    /// Topic the SalesEvents are consumed from.
    #[arg(long, env = "KAFKA_TOPIC", default_value = validate::KAFKA_TOPIC, value_parser = topic_name)]
    pub kafka_topic: String,
    /// Consumer group id.
    #[arg(long, env = "KAFKA_GROUP_ID", default_value = "ingest_service", value_parser = non_empty)]
    pub kafka_group_id: String,
    /// Consume from Kafka; false runs the service gRPC-only.
    #[arg(long, env = "KAFKA_ENABLED", default_value_t = true, action = clap::ArgAction::Set, value_parser = parse_bool)]
    pub kafka_enabled: bool,
    /// Dead-letter topic for invalid Kafka events [default: <KAFKA_TOPIC>.dlq].
    #[arg(long, env = "KAFKA_DLQ_TOPIC", value_parser = topic_name)]
    pub kafka_dlq_topic: Option<String>,
    /// Replication factor of the dead-letter topic when the service creates it (it
    /// does when the topic is missing); -1 takes the brokers' default.replication.factor.
    #[arg(long, env = "KAFKA_DLQ_REPLICATION_FACTOR", default_value_t = -1, allow_negative_numbers = true, value_parser = replication_factor)]
    pub kafka_dlq_replication_factor: i32,
    /// Consumer-group protocol (librdkafka group.protocol): `classic` (the group's
    /// leader assigns, KAFKA_SESSION_TIMEOUT_MS, KAFKA_HEARTBEAT_INTERVAL_MS and
    /// KAFKA_PARTITION_ASSIGNMENT apply) or `consumer` (KIP-848, Kafka 4.0 or later: the
    /// broker assigns incrementally and sets the session timeout and heartbeat interval).
    #[arg(long, env = "KAFKA_GROUP_PROTOCOL", value_enum, default_value_t = GroupProtocol::Classic)]
    pub kafka_group_protocol: GroupProtocol,
    /// Consumer session timeout in milliseconds [default: 10000]; classic protocol only.
    #[arg(long, env = "KAFKA_SESSION_TIMEOUT_MS", value_parser = clap::value_parser!(u32).range(1000..=3_600_000))]
    pub kafka_session_timeout_ms: Option<u32>,
    /// Consumer heartbeat interval in milliseconds [default: 3000]; classic protocol only.
    #[arg(long, env = "KAFKA_HEARTBEAT_INTERVAL_MS", value_parser = clap::value_parser!(u32).range(100..=3_600_000))]
    pub kafka_heartbeat_interval_ms: Option<u32>,
    /// Maximum time between polls before the consumer leaves the group, milliseconds.
    #[arg(long, env = "KAFKA_MAX_POLL_INTERVAL_MS", default_value_t = 300_000, value_parser = clap::value_parser!(u32).range(1000..=86_400_000))]
    pub kafka_max_poll_interval_ms: u32,
    /// Consumer-group partition assignment (librdkafka partition.assignment.strategy)
    /// [default: cooperative-sticky]; classic protocol only. cooperative-sticky moves
    /// only the partitions that change owner; range and roundrobin are eager (every
    /// partition stops at each rebalance).
    #[arg(long, env = "KAFKA_PARTITION_ASSIGNMENT", value_parser = ["cooperative-sticky", "range", "roundrobin"])]
    pub kafka_partition_assignment: Option<String>,
    /// librdkafka security.protocol.
    #[arg(long, env = "KAFKA_SECURITY_PROTOCOL", value_parser = ["plaintext", "ssl", "sasl_plaintext", "sasl_ssl"])]
    pub kafka_security_protocol: Option<String>,
    /// librdkafka sasl.mechanism: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER
    /// (GSSAPI is refused: this build of librdkafka has no Kerberos support).
    #[arg(long, env = "KAFKA_SASL_MECHANISM", value_parser = sasl_mechanism)]
    pub kafka_sasl_mechanism: Option<String>,
    /// SASL user name.
    #[arg(long, env = "KAFKA_SASL_USERNAME")]
    pub kafka_sasl_username: Option<String>,
    /// SASL password (masked in logs).
    #[arg(long, env = "KAFKA_SASL_PASSWORD", hide_env_values = true, value_parser = secret)]
    pub kafka_sasl_password: Option<SecretString>,
    /// CA certificate file to verify the brokers (librdkafka ssl.ca.location).
    #[arg(long, env = "KAFKA_SSL_CA_LOCATION")]
    pub kafka_ssl_ca_location: Option<String>,
    /// Any other librdkafka properties, comma-separated key=value pairs
    /// (e.g. `fetch.max.bytes=52428800,client.id=ingest-1`); applied last.
    #[arg(long, env = "KAFKA_PROPERTIES", value_parser = parse_properties, default_value = "", hide_default_value = true, hide_env_values = true)]
    pub kafka_properties: Properties,
    /// How Kafka values are read: `auto` (detect each: Confluent framing, JSON or bare
    /// Protobuf), or one format pinned: `protobuf`, `confluent` or `json`.
    #[arg(long, env = "KAFKA_VALUE_FORMAT", value_enum, default_value_t = ValueFormat::Auto)]
    pub kafka_value_format: ValueFormat,
    /// Confluent Schema Registry URL; unset reads Confluent-framed values as SalesEvents
    /// without a lookup (message index [0] only).
    #[arg(long, env = "SCHEMA_REGISTRY_URL", value_parser = http_url, hide_env_values = true)]
    pub schema_registry_url: Option<MaskedUrl>,
    /// Schema registry user name (HTTP basic auth).
    #[arg(long, env = "SCHEMA_REGISTRY_USERNAME")]
    pub schema_registry_username: Option<String>,
    /// Schema registry password (masked in logs).
    #[arg(long, env = "SCHEMA_REGISTRY_PASSWORD", hide_env_values = true, value_parser = secret)]
    pub schema_registry_password: Option<SecretString>,
    /// MongoDB connection string (credentials allowed; they are masked in logs).
    #[arg(long, env = "MONGODB_URL", default_value = "mongodb://localhost:27017", value_parser = mongodb_url, hide_env_values = true)]
    pub mongodb_url: MaskedUrl,
    /// Database the events are stored in.
    #[arg(long, env = "MONGODB_DATABASE", default_value = "sales_db", value_parser = non_empty)]
    pub mongodb_database: String,
    /// Collection the events are stored in.
    #[arg(long, env = "MONGODB_COLLECTION", default_value = "raw_sales", value_parser = non_empty)]
    pub mongodb_collection: String,
    /// Collection for dead letters of gRPC events [default: <MONGODB_COLLECTION>_dlq].
    #[arg(long, env = "MONGODB_DLQ_COLLECTION")]
    pub mongodb_dlq_collection: Option<String>,
    /// How ts and processed_at are stored: `typed` (BSON dates) or `legacy` (the Python
    /// service's types: ts as the string sent, processed_at as epoch seconds).
    #[arg(long, env = "DOCUMENT_FORMAT", value_enum, default_value_t = DocumentFormat::Typed)]
    pub document_format: DocumentFormat,
    /// During a cut-over from the Python service onto a collection without a unique
    /// event_id index: look each batch's event ids up among the documents with a
    /// non-string _id (the old service's) and count those found as duplicates.
    #[arg(long, env = "LEGACY_EVENT_ID_LOOKUP", default_value_t = false, action = clap::ArgAction::Set, value_parser = parse_bool)]
    pub legacy_event_id_lookup: bool,
    /// A later event with a stored event_id: `insert` keeps the stored document (a
    /// duplicate), `upsert` replaces it (a correction).
    #[arg(long, env = "WRITE_MODE", value_enum, default_value_t = WriteMode::Insert)]
    pub write_mode: WriteMode,
    /// Events per MongoDB write.
    #[arg(long, env = "BATCH_SIZE", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=MAX_BATCH_SIZE as i64))]
    pub batch_size: u32,
    /// Seconds after which a partial batch is written.
    #[arg(long, env = "FLUSH_INTERVAL", default_value_t = 5.0, value_parser = positive_seconds)]
    pub flush_interval: f64,
    /// Consecutive failed write attempts after which MongoDB is reported down (writes keep
    /// being retried with capped backoff; nothing is dropped).
    #[arg(long, env = "MAX_RETRIES", default_value_t = 3, value_parser = clap::value_parser!(u32).range(0..=1000))]
    pub max_retries: u32,
    /// Attempts at the dead-letter topic before a dead letter is stored in the MongoDB
    /// dead-letter collection instead (a permanent refusal falls back at once).
    #[arg(long, env = "DLQ_MAX_ATTEMPTS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub dlq_max_attempts: u32,
    /// Batches written to MongoDB at once.
    #[arg(long, env = "WRITE_CONCURRENCY", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub write_concurrency: u32,
    /// Events the pipeline queue holds before sources are slowed down.
    #[arg(long, env = "QUEUE_CAPACITY", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub queue_capacity: u32,
    /// Largest accepted qty; larger is refused as invalid_qty.
    #[arg(long, env = "MAX_QTY", default_value_t = validate::MAX_QTY, value_parser = clap::value_parser!(i32).range(1..))]
    pub max_qty: i32,
    /// Largest accepted price; larger is refused as invalid_price.
    #[arg(long, env = "MAX_PRICE", default_value_t = validate::MAX_PRICE, value_parser = max_price)]
    pub max_price: f64,
    /// Longest accepted sku, in characters; longer is refused as sku_too_long.
    #[arg(long, env = "MAX_SKU_CHARS", default_value_t = validate::MAX_SKU_CHARS as u32, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_sku_chars: u32,
    /// Longest accepted event_id, in characters; longer is refused as event_id_too_long.
    #[arg(long, env = "MAX_EVENT_ID_CHARS", default_value_t = validate::MAX_EVENT_ID_CHARS as u32, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_event_id_chars: u32,
    /// A ts without a UTC offset: `utc` reads it as UTC, `reject` refuses it as invalid_ts.
    #[arg(long, env = "NAIVE_TS", value_enum, default_value_t = NaiveTs::Utc)]
    pub naive_ts: NaiveTs,
    /// gRPC listen address.
    #[arg(long, env = "GRPC_ADDR", default_value = "0.0.0.0:50051")]
    pub grpc_addr: SocketAddr,
    /// HTTP listen address (/metrics, /health, /stats, POST /shutdown).
    #[arg(long, env = "HTTP_ADDR", default_value = "0.0.0.0:8001")]
    pub http_addr: SocketAddr,
    /// Bearer token for the admin RPCs other than GetStats and for POST /shutdown; unset
    /// disables them.
    #[arg(long, env = "ADMIN_TOKEN", hide_env_values = true, value_parser = admin_token)]
    pub admin_token: Option<SecretString>,
    /// Bearer token IngestEvents producers must send; unset leaves the stream open (and
    /// start-up warns), blank is refused.
    #[arg(long, env = "PRODUCER_TOKEN", hide_env_values = true, value_parser = producer_token)]
    pub producer_token: Option<SecretString>,
    /// PEM certificate chain for gRPC TLS (with GRPC_TLS_KEY); unset serves plaintext.
    #[arg(long, env = "GRPC_TLS_CERT", requires = "grpc_tls_key")]
    pub grpc_tls_cert: Option<std::path::PathBuf>,
    /// PEM private key for gRPC TLS.
    #[arg(long, env = "GRPC_TLS_KEY", requires = "grpc_tls_cert")]
    pub grpc_tls_key: Option<std::path::PathBuf>,
    /// PEM CA bundle: when set, gRPC clients must present a certificate it signed (mTLS).
    #[arg(long, env = "GRPC_TLS_CLIENT_CA", requires = "grpc_tls_cert")]
    pub grpc_tls_client_ca: Option<std::path::PathBuf>,
    /// Maximum events in one IngestEvents request.
    #[arg(long, env = "GRPC_MAX_EVENTS_PER_REQUEST", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub grpc_max_events_per_request: u32,
    /// Maximum decoded gRPC message size in bytes.
    #[arg(long, env = "GRPC_MAX_MESSAGE_BYTES", default_value_t = 4 * 1024 * 1024, value_parser = clap::value_parser!(u32).range(1024..=268_435_456))]
    pub grpc_max_message_bytes: u32,
    /// Maximum concurrent IngestEvents streams.
    #[arg(long, env = "GRPC_MAX_STREAMS", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub grpc_max_streams: u32,
    /// Seconds an IngestEvents stream may stay open with no request and nothing owed
    /// before the server closes it (UNAVAILABLE), freeing its GRPC_MAX_STREAMS slot.
    #[arg(long, env = "GRPC_STREAM_IDLE_TIMEOUT", default_value_t = 60.0, value_parser = positive_seconds)]
    pub grpc_stream_idle_timeout: f64,
    /// Seconds a graceful shutdown may take before the process gives up and exits 1.
    #[arg(long, env = "SHUTDOWN_TIMEOUT", default_value_t = 30.0, value_parser = positive_seconds)]
    pub shutdown_timeout: f64,
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log filter (tracing EnvFilter syntax, e.g. info,sales_ingest=debug).
    #[arg(long, env = "RUST_LOG", default_value = "info", value_parser = log_filter)]
    pub rust_log: String,
    #[command(flatten)]
    pub limits: Limits,
}

/// librdkafka properties given as `key=value,key=value`; `Debug` masks the values of
/// secret-looking keys.
#[derive(Clone, Default, PartialEq)]
pub struct Properties(pub Vec<(String, String)>);

impl fmt::Debug for Properties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secret = is_secret_key;
        f.debug_map()
            .entries(
                self.0
                    .iter()
                    .map(|(k, v)| (k, if secret(k) { "****" } else { v.as_str() })),
            )
            .finish()
    }
}

/// A connection URL (MongoDB, the schema registry); `Debug` masks its password.
#[derive(Clone, PartialEq)]
pub struct MaskedUrl(pub String);

impl fmt::Debug for MaskedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&mask_url_password(&self.0))
    }
}

impl std::ops::Deref for MaskedUrl {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

mod derived;
mod error;
pub mod files;
mod limits;
mod mask;
mod values;
pub use error::SettingError;
pub use limits::Limits;
pub use mask::{
    is_secret_key, mask_url_password, mask_value, masked_parse_error, scrub, url_secrets,
};
use values::*;

#[cfg(test)]
mod tests;

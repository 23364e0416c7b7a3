//! sales-ingest: SalesEvents from Kafka and from gRPC producers, validated once,
//! written to MongoDB in batches, acknowledged only when durable.
//!
//! The modules follow the data flow (docs/architecture.md has a paragraph on each):
//!
//! ```text
//! source::kafka ─┐                                  ┌─► sink::mongo (insert_many)
//!                ├─► pipeline ─► validate ─► batcher ┤
//! grpc::ingest ──┘   (bounded channels of            └─► sink::dead_letter
//!                     event::Incoming: one for Kafka,
//!                     one for gRPC and re-drives)
//!     acks ─► source::acks (the Kafka source's offsets) / gRPC IngestAcks
//! grpc::admin, health, http: the control plane and observability over `stats`,
//! `metrics` and the dependency states of `deps`; grpc::admin's SeekConsumer drives
//! `source::seek`, and RedriveDeadLetters (`redrive`) feeds dead letters back into
//! the pipeline.
//! ```
//!
//! `config` parses the environment, `app` wires everything, `shutdown` is the stop
//! sequence, `telemetry` sets up logging. `main.rs` only calls these.
pub mod app;
pub mod batcher;
pub mod config;
pub mod conn;
pub mod deps;
pub mod doc_id;
pub mod event;
pub mod format;
pub mod grpc;
pub mod health;
pub mod healthcheck;
pub mod http;
pub mod librdkafka;
pub mod metrics;
pub mod pipeline;
pub mod proto;
pub mod redrive;
pub mod shutdown;
pub mod sink;
pub mod source;
pub mod stats;
pub mod telemetry;
pub mod validate;

#[cfg(test)]
mod docs_tests;

pub use app::{Application, BuildError};
pub use config::Config;
pub use shutdown::Stopped;

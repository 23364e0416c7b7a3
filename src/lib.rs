//! sales-ingest: SalesEvents from Kafka and from gRPC producers, validated once,
//! written to MongoDB in batches, acknowledged only when durable.
//!
//! The modules follow the data flow (see DESIGN.md):
//!
//! ```text
//! source::kafka ─┐                                  ┌─► sink::mongo (insert_many)
//!                ├─► pipeline ─► validate ─► batcher ┤
//! grpc::ingest ──┘   (one bounded channel of ack::Incoming)  └─► sink::dead_letter
//!                       acks ─► source::offsets (Kafka commits) / gRPC IngestAcks
//! grpc::admin, health, http: the control plane and observability over `stats`.
//! ```
//!
//! `config` parses the environment, `app` wires everything and owns shutdown,
//! `telemetry` sets up logging. `main.rs` only calls these.
pub mod ack;
pub mod app;
pub mod batcher;
pub mod config;
pub mod grpc;
pub mod health;
pub mod http;
pub mod pipeline;
pub mod probe;
pub mod proto;
pub mod sink;
pub mod source;
pub mod stats;
pub mod telemetry;
pub mod validate;

pub use app::{Application, BuildError, Stopped};
pub use config::Config;

//! Where events come from. The Kafka consumer lives here; the gRPC producer stream is a
//! source too but lives with the other RPCs in `grpc::ingest`. Both put `Incoming`
//! events on a bounded channel of the pipeline: Kafka on its own, gRPC on the one it
//! shares with the re-drives.
pub mod acks;
pub mod backpressure;
pub mod consumer;
pub mod kafka;
pub mod offsets;
pub mod reset;
pub mod seek;
pub mod seek_job;
pub mod trace;

//! The harness shared by the integration tests (`tests/api`) and the benchmark
//! (`bench`): the local Apache Kafka brokers ([`kafka`]) and MongoDB-protocol server
//! ([`servers`]),
//! child processes that cannot outlive their parent ([`supervisor`]), the sales-ingest
//! binary as a process with the test defaults ([`service`]) and what /proc tells about
//! a process ([`proc`]).
pub mod kafka;
pub mod proc;
pub mod servers;
pub mod service;
pub mod supervisor;

//! The harness shared by the integration tests (`tests/api`) and the benchmark
//! (`bench`): the local Kafka-protocol and MongoDB-protocol servers ([`servers`]),
//! child processes that cannot outlive their parent ([`supervisor`]), the sales-ingest
//! binary as a process with the test defaults ([`service`]) and what /proc tells about
//! a process ([`proc`]).
pub mod proc;
pub mod servers;
pub mod service;
pub mod supervisor;

//! The limits that keep hostile or broken clients from exhausting the server: memory
//! for requests in bytes, connections per port, HTTP/2 streams per connection, and
//! connection ages (docs/operations.md, Security, says what each protects against).
use std::time::Duration;

use clap::Args;

use super::positive_seconds;

/// Connection, stream and memory limits of both ports.
#[derive(Clone, Debug, Args)]
pub struct Limits {
    /// Bytes of IngestEvents requests held at once, from their arrival until their ack
    /// (every stream together); a stream whose next request does not fit waits.
    #[arg(long, env = "GRPC_MAX_BUFFERED_BYTES", default_value_t = 64 * 1024 * 1024, value_parser = clap::value_parser!(u32).range(1024..=4_294_967_295))]
    pub grpc_max_buffered_bytes: u32,
    /// Open connections to the gRPC port; past it the least recently active connection
    /// is closed for the new one.
    #[arg(long, env = "GRPC_MAX_CONNECTIONS", default_value_t = 128, value_parser = clap::value_parser!(u32).range(2..=100_000))]
    pub grpc_max_connections: u32,
    /// Concurrent HTTP/2 streams (calls) on one gRPC connection.
    #[arg(long, env = "GRPC_MAX_CONCURRENT_STREAMS", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub grpc_max_concurrent_streams: u32,
    /// IngestEvents streams one gRPC connection may hold of the GRPC_MAX_STREAMS slots
    /// (at most GRPC_MAX_STREAMS), so one connection cannot take every slot.
    #[arg(long, env = "GRPC_MAX_STREAMS_PER_CONNECTION", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub grpc_max_streams_per_connection: u32,
    /// Seconds a gRPC connection lives before the server asks it to close (GOAWAY);
    /// its calls then have GRPC_MAX_CONNECTION_AGE_GRACE more to finish.
    #[arg(long, env = "GRPC_MAX_CONNECTION_AGE", default_value_t = 3600.0, value_parser = positive_seconds)]
    pub grpc_max_connection_age: f64,
    /// Seconds the calls of a connection past GRPC_MAX_CONNECTION_AGE have to finish
    /// before the connection is closed.
    #[arg(long, env = "GRPC_MAX_CONNECTION_AGE_GRACE", default_value_t = 30.0, value_parser = positive_seconds)]
    pub grpc_max_connection_age_grace: f64,
    /// Open connections to the HTTP port; past it the least recently active connection
    /// is closed for the new one.
    #[arg(long, env = "HTTP_MAX_CONNECTIONS", default_value_t = 64, value_parser = clap::value_parser!(u32).range(2..=100_000))]
    pub http_max_connections: u32,
    /// Seconds a connection to either port may stay silent (nothing received, no
    /// request) before it is closed; a new connection has the same time to start.
    #[arg(long, env = "CONNECTION_IDLE_TIMEOUT", default_value_t = 120.0, value_parser = positive_seconds)]
    pub connection_idle_timeout: f64,
}

impl Limits {
    /// GRPC_MAX_CONNECTION_AGE as a duration.
    pub fn grpc_max_connection_age(&self) -> Duration {
        Duration::from_secs_f64(self.grpc_max_connection_age)
    }

    /// GRPC_MAX_CONNECTION_AGE_GRACE as a duration.
    pub fn grpc_max_connection_age_grace(&self) -> Duration {
        Duration::from_secs_f64(self.grpc_max_connection_age_grace)
    }

    /// The streams one gRPC connection may hold: GRPC_MAX_STREAMS_PER_CONNECTION, at
    /// most `max_streams` (GRPC_MAX_STREAMS).
    pub fn streams_per_connection(&self, max_streams: u32) -> usize {
        self.grpc_max_streams_per_connection.min(max_streams) as usize
    }

    /// CONNECTION_IDLE_TIMEOUT as a duration.
    pub fn connection_idle_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.connection_idle_timeout)
    }
}

//! The gRPC server: IngestAdmin, IngestEvents, grpc.health.v1 (tonic-health) and
//! server reflection v1 and v1alpha (tonic-reflection), on one listener, with HTTP/2
//! keepalive so dead peers are noticed, on the connections `listen` accepts (TLS, with
//! certificates reloaded when their files change, from `tls`).
pub mod admin;
pub mod auth;
pub mod budget;
pub mod ingest;
pub mod listen;
pub mod shares;
pub mod tls;
pub mod wire;

use std::{future::Future, sync::Arc, time::Duration};

use tokio::net::TcpListener;
use tonic::transport::Server;

use crate::conn::Gate;

use crate::proto::{
    ingest::v1::ingest_admin_server::IngestAdminServer,
    raw_ingest_events::ingest_events_server::IngestEventsServer, FILE_DESCRIPTOR_SET,
};

/// Streams a peer may reset by causing errors, per connection, before it is closed
/// (hyper's defence against "MadeYouReset", CVE-2025-8671).
const LOCAL_ERROR_RESETS: usize = 64;

/// Bytes of headers a call may send.
const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;

/// Time a call has until its response starts (unary admin calls answer within it; a
/// stream's response starts at once and lasts as long as the stream).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Everything the gRPC listener serves.
pub struct Services {
    pub admin: admin::Admin,
    pub ingest: ingest::Ingest,
    pub health: tonic_health::pb::health_server::HealthServer<tonic_health::server::HealthService>,
    pub max_message_bytes: usize,
    /// Connection and stream limits.
    pub limits: crate::config::Limits,
    /// TLS (and client-certificate verification) when configured.
    pub tls: Option<Arc<tls::Tls>>,
}

/// Serves until `shutdown` resolves, then finishes in-flight calls.
pub async fn serve(
    listener: TcpListener,
    services: Services,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let max = services.max_message_bytes;
    let limits = &services.limits;
    let mut builder = Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .max_concurrent_streams(limits.grpc_max_concurrent_streams)
        .http2_max_pending_accept_reset_streams(Some(limits.grpc_max_concurrent_streams as usize))
        .http2_max_local_error_reset_streams(Some(LOCAL_ERROR_RESETS))
        .http2_max_header_list_size(MAX_HEADER_LIST_BYTES)
        .max_connection_age(limits.grpc_max_connection_age())
        .max_connection_age_grace(limits.grpc_max_connection_age_grace())
        .timeout(CALL_TIMEOUT);
    let gate = Gate::new(
        "GRPC_MAX_CONNECTIONS",
        limits.grpc_max_connections as usize,
        limits.connection_idle_timeout(),
    );
    let incoming = listen::incoming(listener, gate, services.tls);
    builder
        .add_service(services.health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(IngestAdminServer::new(services.admin))
        .add_service(budget::Budgeted {
            budget: services.ingest.budget.clone(),
            inner: IngestEventsServer::new(services.ingest)
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        })
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}

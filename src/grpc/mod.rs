//! The gRPC server: IngestAdmin, IngestEvents, grpc.health.v1 (tonic-health) and
//! server reflection v1 and v1alpha (tonic-reflection), on one listener.
pub mod admin;
pub mod auth;
pub mod ingest;

use std::future::Future;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use crate::proto::{
    ingest::v1::{
        ingest_admin_server::IngestAdminServer, ingest_events_server::IngestEventsServer,
    },
    FILE_DESCRIPTOR_SET,
};

/// Everything the gRPC listener serves.
pub struct Services {
    pub admin: admin::Admin,
    pub ingest: ingest::Ingest,
    pub health: tonic_health::pb::health_server::HealthServer<tonic_health::server::HealthService>,
    pub max_message_bytes: usize,
    /// TLS (and client-certificate verification) when configured.
    pub tls: Option<ServerTlsConfig>,
}

/// The TLS settings from PEM files: a certificate chain and key, and optionally a CA
/// that client certificates must chain to (mTLS). Errors name the variable.
pub fn tls_config(
    cert: &std::path::Path,
    key: &std::path::Path,
    client_ca: Option<&std::path::Path>,
) -> Result<ServerTlsConfig, (&'static str, String)> {
    let read = |var: &'static str, path: &std::path::Path| {
        std::fs::read(path).map_err(|e| (var, format!("cannot read {}: {e}", path.display())))
    };
    let identity = Identity::from_pem(read("GRPC_TLS_CERT", cert)?, read("GRPC_TLS_KEY", key)?);
    let mut tls = ServerTlsConfig::new().identity(identity);
    if let Some(ca) = client_ca {
        tls = tls.client_ca_root(Certificate::from_pem(read("GRPC_TLS_CLIENT_CA", ca)?));
    }
    Ok(tls)
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
    let mut builder = Server::builder();
    if let Some(tls) = services.tls {
        builder = builder.tls_config(tls)?;
    }
    builder
        .add_service(services.health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(IngestAdminServer::new(services.admin))
        .add_service(
            IngestEventsServer::new(services.ingest)
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await?;
    Ok(())
}

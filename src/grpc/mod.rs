//! The gRPC server: IngestAdmin, IngestEvents, grpc.health.v1 (tonic-health) and
//! server reflection v1 and v1alpha (tonic-reflection), on one listener, with HTTP/2
//! keepalive so dead peers are noticed and a 10 s TLS handshake limit. TLS material is
//! parsed at start-up, so a bad certificate or key stops the process naming the variable.
pub mod admin;
pub mod auth;
pub mod budget;
pub mod ingest;
pub mod wire;

use std::{future::Future, path::Path, time::Duration};

use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use crate::{config::SettingError, conn::Gate};

use crate::proto::{
    ingest::v1::ingest_admin_server::IngestAdminServer,
    raw_ingest_events::ingest_events_server::IngestEventsServer, FILE_DESCRIPTOR_SET,
};

/// Streams a peer may reset by causing errors, per connection, before it is closed
/// (hyper's defence against "MadeYouReset", CVE-2025-8671).
const LOCAL_ERROR_RESETS: usize = 64;

/// Bytes of headers a call may send.
const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;

/// Time the calls of a connection past GRPC_MAX_CONNECTION_AGE have to finish.
const CONNECTION_AGE_GRACE: Duration = Duration::from_secs(30);

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
    pub tls: Option<ServerTlsConfig>,
}

/// The TLS settings from PEM files: a certificate chain and key, and optionally a CA
/// that client certificates must chain to (mTLS). Each file is read and parsed here;
/// errors name the variable.
pub fn tls_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<ServerTlsConfig, SettingError> {
    let read = |var: &'static str, path: &Path| {
        std::fs::read(path).map_err(|e| {
            SettingError::caused(var, format!("cannot read {}: {e}", path.display()), e)
        })
    };
    let certs = |var: &'static str, pem: &[u8], path: &Path| {
        let n = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| SettingError::caused(var, format!("{}: {e}", path.display()), e))?
            .len();
        if n == 0 {
            return Err(SettingError::new(
                var,
                format!("{} holds no PEM certificate", path.display()),
            ));
        }
        Ok(())
    };
    let cert_pem = read("GRPC_TLS_CERT", cert)?;
    certs("GRPC_TLS_CERT", &cert_pem, cert)?;
    let key_pem = read("GRPC_TLS_KEY", key)?;
    PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        SettingError::caused(
            "GRPC_TLS_KEY",
            format!("{} holds no PEM private key: {e}", key.display()),
            e,
        )
    })?;
    let mut tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(cert_pem, key_pem))
        .timeout(Duration::from_secs(10));
    if let Some(ca) = client_ca {
        let ca_pem = read("GRPC_TLS_CLIENT_CA", ca)?;
        certs("GRPC_TLS_CLIENT_CA", &ca_pem, ca)?;
        tls = tls.client_ca_root(Certificate::from_pem(ca_pem));
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
    let limits = &services.limits;
    let mut builder = Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .max_concurrent_streams(limits.grpc_max_concurrent_streams)
        .http2_max_pending_accept_reset_streams(Some(limits.grpc_max_concurrent_streams as usize))
        .http2_max_local_error_reset_streams(Some(LOCAL_ERROR_RESETS))
        .http2_max_header_list_size(MAX_HEADER_LIST_BYTES)
        .max_connection_age(limits.grpc_max_connection_age())
        .max_connection_age_grace(CONNECTION_AGE_GRACE)
        .timeout(CALL_TIMEOUT);
    let gate = Gate::new(
        "GRPC_MAX_CONNECTIONS",
        limits.grpc_max_connections as usize,
        limits.connection_idle_timeout(),
    );
    let incoming = futures::stream::unfold(listener, move |listener| {
        let gate = gate.clone();
        async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        return Some((Ok::<_, std::io::Error>(gate.admit(stream)), listener))
                    }
                    Err(e) => {
                        // Out of file descriptors, typically: wait instead of spinning.
                        tracing::warn!(error = %e, "gRPC accept error");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }
    });
    if let Some(tls) = services.tls {
        builder = builder.tls_config(tls)?;
    }
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

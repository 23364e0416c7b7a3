//! gRPC TLS from PEM files (GRPC_TLS_CERT, GRPC_TLS_KEY and, for mTLS,
//! GRPC_TLS_CLIENT_CA): read and parsed at start-up, where an error stops the process
//! naming the variable, and again when a file changes, so a rotated certificate is
//! served without a restart. A new connection takes the current configuration; at most
//! once a second it first compares the files' inode, size and modification time with
//! those last loaded. A changed set that loads replaces the configuration for new
//! connections (open ones keep theirs); one that does not load (a half-written file,
//! a key that does not match the certificate) is logged once and the previous one
//! stays in use.
use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use tokio_rustls::rustls::{
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
    server::WebPkiClientVerifier,
    RootCertStore, ServerConfig,
};
use tracing::{info, warn};

use crate::config::SettingError;

/// Time between two looks at the files.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Where the TLS material is.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

/// One version of a file: inode, size and modification time (None while unreadable).
type Stamp = Option<(u64, u64, SystemTime)>;

impl TlsFiles {
    fn stamps(&self) -> Vec<Stamp> {
        let stamp = |p: &Path| {
            let m = std::fs::metadata(p).ok()?;
            Some((m.ino(), m.len(), m.modified().ok()?))
        };
        [Some(&self.cert), Some(&self.key), self.client_ca.as_ref()]
            .into_iter()
            .flatten()
            .map(|p| stamp(p))
            .collect()
    }
}

/// The gRPC port's TLS configuration, kept current with its files.
#[derive(Debug)]
pub struct Tls {
    files: TlsFiles,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    config: Arc<ServerConfig>,
    /// The files' stamps when `config` was loaded, and when a load last failed.
    loaded: Vec<Stamp>,
    failed: Vec<Stamp>,
    checked: Instant,
}

impl Tls {
    /// Loads the files; an error names the variable whose file is wrong.
    pub fn load(files: TlsFiles) -> Result<Self, SettingError> {
        let loaded = files.stamps();
        let config = Arc::new(build(&files)?);
        Ok(Self {
            files,
            state: Mutex::new(State {
                config,
                loaded,
                failed: Vec::new(),
                checked: Instant::now(),
            }),
        })
    }

    /// The configuration for a new connection, reloaded first when a file changed.
    pub fn current(&self) -> Arc<ServerConfig> {
        let mut state = self.state.lock().expect("TLS state");
        if state.checked.elapsed() >= CHECK_EVERY {
            state.checked = Instant::now();
            let stamps = self.files.stamps();
            if stamps != state.loaded && stamps != state.failed {
                match build(&self.files) {
                    Ok(config) => {
                        info!("gRPC TLS files changed: new connections get the new certificate");
                        state.config = Arc::new(config);
                        state.loaded = stamps;
                    }
                    Err(e) => {
                        warn!(error = %e, "gRPC TLS files changed but do not load; the previous certificate stays in use");
                        state.failed = stamps;
                    }
                }
            }
        }
        state.config.clone()
    }
}

fn read(var: &'static str, path: &Path) -> Result<Vec<u8>, SettingError> {
    std::fs::read(path)
        .map_err(|e| SettingError::caused(var, format!("cannot read {}: {e}", path.display()), e))
}

fn certs(var: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, SettingError> {
    let pem = read(var, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| SettingError::caused(var, format!("{}: {e}", path.display()), e))?;
    if certs.is_empty() {
        return Err(SettingError::new(
            var,
            format!("{} holds no PEM certificate", path.display()),
        ));
    }
    Ok(certs)
}

/// The server configuration from the files: HTTP/2 by ALPN, client certificates
/// required when a client CA is set.
fn build(files: &TlsFiles) -> Result<ServerConfig, SettingError> {
    let chain = certs("GRPC_TLS_CERT", &files.cert)?;
    let key_pem = read("GRPC_TLS_KEY", &files.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        SettingError::caused(
            "GRPC_TLS_KEY",
            format!("{} holds no PEM private key: {e}", files.key.display()),
            e,
        )
    })?;
    let builder = ServerConfig::builder();
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            roots.add_parsable_certificates(certs("GRPC_TLS_CLIENT_CA", ca)?);
            let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
                .build()
                .map_err(|e| {
                    SettingError::caused("GRPC_TLS_CLIENT_CA", format!("{}: {e}", ca.display()), e)
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        SettingError::caused(
            "GRPC_TLS_KEY",
            format!(
                "{} does not go with the GRPC_TLS_CERT certificate: {e}",
                files.key.display()
            ),
            e,
        )
    })?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

//! A throw-away PKI written to files, for servers under test with `GRPC_TLS_*` set and
//! for the clients (the Python producer, grpcurl, grpc-health-probe) that talk to them:
//! a CA, a server certificate for `localhost` and `127.0.0.1`, a client certificate.
use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

/// PEM files of one PKI.
pub struct PkiFiles {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl PkiFiles {
    /// Generates the PKI and writes it into `dir`.
    pub fn write(dir: &Path) -> Self {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // Distinct subjects: OpenSSL-based clients (grpcio) take a leaf whose subject is
        // its issuer's for a self-signed certificate.
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "sales-ingest test CA");
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::from_params(&ca_params, &ca_key);
        let file = |name: &str, body: String| {
            let p = dir.join(name);
            std::fs::write(&p, body).unwrap();
            p
        };
        let leaf = |names: Vec<String>, stem: &str| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(names.clone()).unwrap();
            params
                .distinguished_name
                .push(DnType::CommonName, names[0].as_str());
            let cert = params.signed_by(&key, &issuer).unwrap();
            (
                file(&format!("{stem}.pem"), cert.pem()),
                file(&format!("{stem}.key"), key.serialize_pem()),
            )
        };
        let (server_cert, server_key) =
            leaf(vec!["localhost".into(), "127.0.0.1".into()], "server");
        let (client_cert, client_key) = leaf(vec!["producer".into()], "client");
        PkiFiles {
            ca: file("ca.pem", ca_cert.pem()),
            server_cert,
            server_key,
            client_cert,
            client_key,
        }
    }

    /// The server settings (`AppOptions::extra`) for TLS, and with `mtls` client
    /// certificates from this CA required.
    pub fn server_settings(&self, mtls: bool) -> Vec<(String, String)> {
        let mut s = vec![
            (
                "grpc-tls-cert".into(),
                self.server_cert.display().to_string(),
            ),
            ("grpc-tls-key".into(), self.server_key.display().to_string()),
        ];
        if mtls {
            s.push(("grpc-tls-client-ca".into(), self.ca.display().to_string()));
        }
        s
    }
}

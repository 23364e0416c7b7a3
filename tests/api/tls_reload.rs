//! Certificate rotation without a restart: the server watches its GRPC_TLS_* files, so
//! after they are replaced a new connection gets the new certificate (and is checked
//! against the new client CA), while a connection opened before keeps working.
use std::{path::Path, time::Duration};

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};

use test_support::servers::scratch_dir;

use crate::helpers::{pki::PkiFiles, *};

fn identity(pki: &PkiFiles) -> Identity {
    let read = |p: &Path| std::fs::read_to_string(p).unwrap();
    Identity::from_pem(read(&pki.client_cert), read(&pki.client_key))
}

/// A TLS connection trusting `ca_pem`, presenting `id`, with a health check on it.
async fn connect(port: u16, ca_pem: &str, id: Identity) -> Result<Channel, String> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost")
        .identity(id);
    let ch = Channel::from_shared(format!("https://localhost:{port}"))
        .unwrap()
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("{e:?}"))?;
    healthy(ch.clone()).await?;
    Ok(ch)
}

async fn healthy(ch: Channel) -> Result<(), String> {
    HealthClient::new(ch)
        .check(HealthCheckRequest::default())
        .await
        .map(|_| ())
        .map_err(|e| format!("{e:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_certificate_files_are_served_to_new_connections_without_a_restart() {
    let dir = scratch_dir(&unique("tls-reload"));
    let first = PkiFiles::write(&dir);
    let first_ca = std::fs::read_to_string(&first.ca).unwrap();
    let first_id = identity(&first);
    let app = spawn_app(AppOptions {
        kafka: false,
        extra: first.server_settings(true),
        ..Default::default()
    })
    .await;
    let port: u16 = app.grpc_url.rsplit(':').next().unwrap().parse().unwrap();
    let before = connect(port, &first_ca, first_id.clone())
        .await
        .expect("the first certificate is served");

    // Rotate: a new CA, server certificate and client certificate, in the same files.
    let second = PkiFiles::write(&dir);
    let second_ca = std::fs::read_to_string(&second.ca).unwrap();
    let second_id = identity(&second);
    assert_ne!(first_ca, second_ca);
    let mut last = String::new();
    let mut rotated = false;
    for _ in 0..100 {
        match connect(port, &second_ca, second_id.clone()).await {
            Ok(_) => {
                rotated = true;
                break;
            }
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(rotated, "no new connection got the new certificate: {last}");

    // The old certificate is no longer served, the old client CA no longer trusted.
    assert!(
        connect(port, &first_ca, first_id.clone()).await.is_err(),
        "a client trusting only the old CA connected"
    );
    assert!(
        connect(port, &second_ca, first_id).await.is_err(),
        "a client certificate of the old CA was accepted"
    );
    // The connection opened before the rotation is not cut.
    healthy(before)
        .await
        .expect("an open connection keeps working");
    app.stop().await;
}

//! Security: gRPC TLS and mTLS, the producer token, MongoDB authentication, and no
//! secret in the logs of a full run.
use std::time::Duration;

use mongodb::bson::doc;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use sales_ingest::proto::ingest::v1::{
    ingest_admin_client::IngestAdminClient, ingest_events_client::IngestEventsClient,
    GetStatsRequest, IngestRequest, PauseConsumerRequest, ResumeConsumerRequest,
};
use tokio_stream::StreamExt;
use tonic::{
    transport::{Certificate, Channel, ClientTlsConfig, Identity},
    Code,
};
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};

use test_support::{
    servers::{free_port, scratch_dir},
    service::server_env,
};

use crate::{
    backends::{backends, start_secantus, start_server},
    helpers::*,
};

struct Pki {
    ca: String,
    server_cert: String,
    server_key: String,
    client: Identity,
    rogue: Identity,
}

fn pki() -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::from_params(&ca_params, &ca_key);
    let leaf = |names: Vec<String>| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = leaf(vec!["localhost".into(), "127.0.0.1".into()]);
    let (client_cert, client_key) = leaf(vec!["producer".into()]);
    let rogue_key = KeyPair::generate().unwrap();
    let rogue_cert = CertificateParams::new(vec!["producer".to_string()])
        .unwrap()
        .self_signed(&rogue_key)
        .unwrap();
    Pki {
        ca: ca_cert.pem(),
        server_cert,
        server_key,
        client: Identity::from_pem(client_cert, client_key),
        rogue: Identity::from_pem(rogue_cert.pem(), rogue_key.serialize_pem()),
    }
}

async fn tls_channel(port: u16, ca: &str, identity: Option<Identity>) -> Result<Channel, String> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    if let Some(id) = identity {
        tls = tls.identity(id);
    }
    Channel::from_shared(format!("https://localhost:{port}"))
        .unwrap()
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("{e:?}"))
}

async fn health_ok(ch: Channel) -> bool {
    HealthClient::new(ch)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .is_ok()
}

fn port_of(url: &str) -> u16 {
    url.rsplit(':').next().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_tls_refuses_plaintext_and_mtls_refuses_clients_without_a_valid_certificate() {
    let pki = pki();
    let dir = scratch_dir(&unique("pki"));
    let write = |name: &str, body: &str| {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        p.display().to_string()
    };
    let (cert, key, ca) = (
        write("server.pem", &pki.server_cert),
        write("server.key", &pki.server_key),
        write("ca.pem", &pki.ca),
    );

    // TLS: a TLS client works, a plaintext one is refused.
    let app = spawn_app(AppOptions {
        kafka: false,
        extra: vec![
            ("grpc-tls-cert".into(), cert.clone()),
            ("grpc-tls-key".into(), key.clone()),
        ],
        ..Default::default()
    })
    .await;
    let port = port_of(&app.grpc_url);
    let ch = tls_channel(port, &pki.ca, None)
        .await
        .expect("TLS client connects");
    assert!(health_ok(ch.clone()).await);
    let req = IngestRequest {
        seq: 1,
        events: vec![valid_event(1, "tls-1")],
    };
    let ack = IngestEventsClient::new(ch)
        .stream(tokio_stream::iter([req]))
        .await
        .unwrap()
        .into_inner()
        .next()
        .await;
    assert_eq!(
        ack.unwrap().unwrap().accepted,
        1,
        "events over TLS are stored"
    );
    let plain = Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await;
    let refused = match plain {
        Err(_) => true,
        Ok(ch) => !health_ok(ch).await,
    };
    assert!(refused, "plaintext client refused");
    app.stop().await;

    // mTLS: only clients with a certificate from GRPC_TLS_CLIENT_CA get in.
    let app = spawn_app(AppOptions {
        kafka: false,
        extra: vec![
            ("grpc-tls-cert".into(), cert),
            ("grpc-tls-key".into(), key),
            ("grpc-tls-client-ca".into(), ca),
        ],
        ..Default::default()
    })
    .await;
    let port = port_of(&app.grpc_url);
    let ch = tls_channel(port, &pki.ca, Some(pki.client.clone()))
        .await
        .expect("client with a valid certificate");
    assert!(health_ok(ch).await);
    for (what, identity) in [
        ("no certificate", None),
        ("a certificate from another CA", Some(pki.rogue.clone())),
    ] {
        let refused = match tls_channel(port, &pki.ca, identity).await {
            Err(_) => true,
            Ok(ch) => !health_ok(ch).await,
        };
        assert!(refused, "client with {what} refused");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_token_is_required_when_configured() {
    let app = spawn_app(AppOptions {
        kafka: false,
        extra: vec![("producer-token".into(), "prod-tok-77-long-enough".into())],
        ..Default::default()
    })
    .await;
    let mut client = app.events().await;
    let req = || IngestRequest {
        seq: 1,
        events: vec![valid_event(1, "pt-1")],
    };
    let err = client
        .stream(tokio_stream::iter([req()]))
        .await
        .expect_err("no token");
    assert_eq!(err.code(), Code::Unauthenticated);
    let mut with = tonic::Request::new(tokio_stream::iter([req()]));
    with.metadata_mut().insert(
        "authorization",
        "Bearer prod-tok-77-long-enough".parse().unwrap(),
    );
    let ack = client
        .stream(with)
        .await
        .unwrap()
        .into_inner()
        .next()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ack.accepted, 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb_authentication_works_refuses_a_wrong_password_clearly_and_no_secret_is_logged() {
    const PASSWORD: &str = "Mongo-Pw-5150";
    const ADMIN: &str = "admin-token-c0ffee";
    const PRODUCER: &str = "producer-token-beef";
    let port = free_port();
    let data = scratch_dir(&unique("auth")).display().to_string();
    let _mongo = start_secantus(port, &data, &["--auth"]);
    let base = format!("mongodb://127.0.0.1:{port}/?directConnection=true");
    mongodb::Client::with_uri_str(&base)
        .await
        .unwrap()
        .database("admin")
        .run_command(doc! { "createUser": "ingest", "pwd": PASSWORD, "roles": [{ "role": "root", "db": "admin" }] })
        .await
        .expect("first user through the localhost exception");
    let url = |pw: &str| {
        format!("mongodb://ingest:{pw}@127.0.0.1:{port}/?directConnection=true&authSource=admin")
    };
    let dbname = unique("auth_db");

    // Wrong password: not serving, a clear reason, no crash, and the start-up warning.
    let env = server_env(
        backends(),
        &unique("auth_t"),
        &unique("auth_g"),
        &dbname,
        &[
            ("MONGODB_URL", url("wrong-pw")),
            ("KAFKA_ENABLED", "false".into()),
        ],
    );
    let env: Vec<_> = env
        .into_iter()
        .filter(|(k, _)| k != "ADMIN_TOKEN")
        .collect();
    let wrong = start_server("auth-wrong", &env);
    wrong
        .wait_health(503, Duration::from_secs(30))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Anyone sees MongoDB down; the reason, which names hosts, is for the log (and for
    // a caller with the admin token, which this server has none of).
    let (_, body) = get(&format!("{}/health", wrong.http_url)).await;
    assert!(body.contains(r#""mongodb":"down""#), "{body}");
    assert!(!body.contains("mongodb_error"), "{body}");
    let logs = wrong.logs();
    assert!(
        logs.to_lowercase().contains("authentication failed") && logs.contains("MONGODB_URL"),
        "the log says why MongoDB is down"
    );
    assert!(
        logs.contains("ADMIN_TOKEN is not set"),
        "start-up warns that admin RPCs are disabled"
    );
    assert!(
        logs.contains("PRODUCER_TOKEN is not set"),
        "start-up warns that IngestEvents is open"
    );
    assert!(!logs.contains("wrong-pw"), "password not logged");
    let (status, _) = wrong.terminate(Duration::from_secs(30)).unwrap();
    assert!(status.success());

    // Right password: a full run (Kafka and gRPC, admin calls) at debug level.
    let topic = unique("auth_t");
    create_topic(&topic, 2).await;
    produce(
        &topic,
        2,
        &(0..100)
            .map(|i| encode(&valid_event(i, &format!("ak-{i}"))))
            .collect::<Vec<_>>(),
    )
    .await;
    let env = server_env(
        backends(),
        &topic,
        &unique("auth_g"),
        &dbname,
        &[
            ("MONGODB_URL", url(PASSWORD)),
            ("ADMIN_TOKEN", ADMIN.into()),
            ("PRODUCER_TOKEN", PRODUCER.into()),
            ("RUST_LOG", "debug".into()),
        ],
    );
    let server = start_server("auth-right", &env);
    server
        .wait_health(200, Duration::from_secs(30))
        .await
        .unwrap();
    let ch = channel(&server.grpc_url).await;
    let mut req = tonic::Request::new(tokio_stream::iter([IngestRequest {
        seq: 1,
        events: (0..50)
            .map(|i| valid_event(i, &format!("ag-{i}")))
            .collect(),
    }]));
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {PRODUCER}").parse().unwrap(),
    );
    let ack = IngestEventsClient::new(ch.clone())
        .stream(req)
        .await
        .unwrap()
        .into_inner()
        .next()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ack.accepted, 50);
    let mut admin = IngestAdminClient::new(ch);
    for call in ["pause", "resume"] {
        let token = format!("Bearer {ADMIN}").parse().unwrap();
        if call == "pause" {
            let mut r = tonic::Request::new(PauseConsumerRequest {});
            r.metadata_mut().insert("authorization", token);
            admin.pause_consumer(r).await.unwrap();
        } else {
            let mut r = tonic::Request::new(ResumeConsumerRequest {});
            r.metadata_mut().insert("authorization", token);
            admin.resume_consumer(r).await.unwrap();
        }
    }
    let db = mongodb::Client::with_uri_str(url(PASSWORD))
        .await
        .unwrap()
        .database(&dbname);
    let coll = db.collection::<mongodb::bson::Document>("raw_sales");
    wait_until(
        Duration::from_secs(60),
        "150 stored with authentication",
        || {
            let coll = coll.clone();
            async move { coll.count_documents(doc! {}).await.unwrap() == 150 }
        },
    )
    .await;
    assert_eq!(
        admin
            .get_stats(GetStatsRequest {})
            .await
            .unwrap()
            .into_inner()
            .events_stored,
        150
    );
    let log_path = server.log().to_path_buf();
    let (status, _) = server.terminate(Duration::from_secs(30)).unwrap();
    assert!(status.success());
    let logs = std::fs::read_to_string(log_path).unwrap();
    assert!(
        logs.contains("effective configuration") && logs.contains("****"),
        "config logged, masked"
    );
    assert!(logs.contains("stopped cleanly"));
    for secret in [PASSWORD, ADMIN, PRODUCER] {
        assert!(!logs.contains(secret), "{secret} appears in the logs");
    }
}

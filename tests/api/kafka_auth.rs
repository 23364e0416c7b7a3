//! Authenticated and encrypted Kafka: a broker of the test's own with a SASL_SSL
//! listener (SCRAM-SHA-512 over TLS, a CA and server certificate the test makes). The
//! service, as a process, is refused with a wrong password and cannot verify a
//! certificate signed by a CA it does not trust: each time `/health` says Kafka is down
//! naming the cause and nothing is consumed; restarted with the right values it
//! consumes everything.
use std::{path::Path, time::Duration};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use test_support::{
    kafka::{KafkaOptions, Listener},
    servers::{scratch_dir, Backends},
    service::{server_env, Service},
};

use crate::{
    backends::{backends, start_kafka, start_server},
    faults::{count, payloads},
    helpers::*,
};

const USER: &str = "ingest";
const PASSWORD: &str = "scram-secret-1";
const EVENTS: usize = 2_000;
const PARTITIONS: i32 = 3;

/// A CA's certificate, and a server certificate it signed (with its key) for
/// 127.0.0.1 and localhost, all PEM. Each has its own subject: OpenSSL takes a leaf
/// whose subject is its issuer's for a self-signed certificate.
fn ca_and_server() -> (String, String, String) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    (ca_params.distinguished_name).push(DnType::CommonName, "sales-ingest test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::from_params(&ca_params, &ca_key);
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".into()]).unwrap();
    (params.distinguished_name).push(DnType::CommonName, "kafka broker");
    let cert = params.signed_by(&key, &issuer).unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

/// A broker whose SECURE listener takes SCRAM-SHA-512 over TLS with `keystore` (the
/// server key and certificate, PEM), and knows the user `USER`.
fn secure_broker(keystore: &Path) -> test_support::kafka::KafkaCluster {
    let jaas = "org.apache.kafka.common.security.scram.ScramLoginModule required;";
    let props = [
        ("sasl.enabled.mechanisms", "SCRAM-SHA-512".to_string()),
        (
            "listener.name.secure.sasl.enabled.mechanisms",
            "SCRAM-SHA-512".into(),
        ),
        (
            "listener.name.secure.scram-sha-512.sasl.jaas.config",
            jaas.into(),
        ),
        ("listener.name.secure.ssl.keystore.type", "PEM".into()),
        (
            "listener.name.secure.ssl.keystore.location",
            keystore.display().to_string(),
        ),
    ];
    start_kafka(&KafkaOptions {
        listeners: vec![Listener {
            name: "SECURE".into(),
            protocol: "SASL_SSL".into(),
        }],
        properties: props.map(|(k, v)| (k.to_string(), v)).to_vec(),
        format_args: vec![
            "--add-scram".into(),
            format!("SCRAM-SHA-512=[name={USER},password={PASSWORD}]"),
        ],
        ..Default::default()
    })
}

/// The service's environment against the SECURE listener at `bootstrap`.
fn secure_env(
    bootstrap: &str,
    topic: &str,
    db: &str,
    password: &str,
    ca: &Path,
) -> Vec<(String, String)> {
    let backends = Backends {
        kafka: bootstrap.to_string(),
        mongodb: backends().mongodb.clone(),
        kind: "local",
    };
    server_env(
        &backends,
        topic,
        &format!("{topic}_g"),
        db,
        &[
            ("KAFKA_SECURITY_PROTOCOL", "sasl_ssl".into()),
            ("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512".into()),
            ("KAFKA_SASL_USERNAME", USER.into()),
            ("KAFKA_SASL_PASSWORD", password.into()),
            ("KAFKA_SSL_CA_LOCATION", ca.display().to_string()),
        ],
    )
}

/// Waits until `/health` (asked with the admin token, which shows the reasons) answers
/// 503 with Kafka down for a reason containing `cause`; returns the body.
async fn kafka_down_because(svc: &Service, cause: &str) -> String {
    let url = format!("{}/health", svc.http_url);
    let token = test_support::service::default("ADMIN_TOKEN");
    let client = reqwest::Client::new();
    let mut last = String::new();
    for _ in 0..600 {
        let Ok(resp) = client.get(&url).bearer_auth(token).send().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        if status == 503 && body.contains("\"kafka\":\"down\"") && body.contains(cause) {
            return body;
        }
        last = format!("{status} {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "/health never said Kafka is down because of {cause:?}; last: {last}\n{}",
        svc.log_tail()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_over_tls_refuses_a_wrong_password_and_an_untrusted_ca_then_consumes_everything() {
    let dir = scratch_dir(&unique("sasl-ssl"));
    let (ca, cert, key) = ca_and_server();
    let (rogue_ca, _, _) = ca_and_server();
    let (keystore, ca_file, rogue_file) = (
        dir.join("server.pem"),
        dir.join("ca.pem"),
        dir.join("rogue-ca.pem"),
    );
    std::fs::write(&keystore, format!("{key}{cert}")).unwrap();
    std::fs::write(&ca_file, &ca).unwrap();
    std::fs::write(&rogue_file, &rogue_ca).unwrap();
    let mut cluster = secure_broker(&keystore);
    let plain = cluster.bootstrap();
    let secure = format!("127.0.0.1:{}", cluster.nodes[0].listener_ports[0]);
    let (topic, dbname) = (unique("secure"), unique("secure_db"));
    create_topic_at(&plain, &topic, PARTITIONS).await;
    produce_at(&plain, &topic, PARTITIONS, &payloads("sec", EVENTS)).await;
    let db = mongo_client().await.database(&dbname);

    let wrong = start_server(
        "sasl-wrong",
        &secure_env(&secure, &topic, &dbname, "not-the-password", &ca_file),
    );
    let body = kafka_down_because(&wrong, "SASL authentication error").await;
    assert!(body.contains("SCRAM-SHA-512"), "{body}");
    eprintln!("wrong password: /health {body}");
    assert!(
        !body.contains("not-the-password"),
        "no secret in /health: {body}"
    );
    wrong.stop().unwrap();

    let untrusted = start_server(
        "sasl-untrusted",
        &secure_env(&secure, &topic, &dbname, PASSWORD, &rogue_file),
    );
    let body = kafka_down_because(&untrusted, "certificate verify failed").await;
    assert!(body.contains("SSL handshake failed"), "{body}");
    eprintln!("untrusted CA: /health {body}");
    untrusted.stop().unwrap();
    assert_eq!(
        count(&db).await,
        0,
        "nothing consumed without authentication"
    );

    let mut right = start_server(
        "sasl-right",
        &secure_env(&secure, &topic, &dbname, PASSWORD, &ca_file),
    );
    right.wait_serving(Duration::from_secs(60)).await.unwrap();
    let db2 = db.clone();
    wait_until(Duration::from_secs(60), "every event stored", || {
        let db = db2.clone();
        async move { count(&db).await >= EVENTS as u64 }
    })
    .await;
    let group = format!("{topic}_g");
    let ends = crate::faults::ends(EVENTS, PARTITIONS);
    wait_until(
        Duration::from_secs(30),
        "offsets committed to the end",
        || {
            let (plain, topic, group, ends) =
                (plain.clone(), topic.clone(), group.clone(), ends.clone());
            async move { committed_at(&plain, &topic, &group, PARTITIONS) == ends }
        },
    )
    .await;
    assert_eq!(count(&db).await, EVENTS as u64, "every event exactly once");
    assert!(
        !right.logs().contains(PASSWORD),
        "the password is never logged"
    );
    right.stop().unwrap();
    cluster.stop(Duration::from_secs(20)).unwrap();
    eprintln!("RELIABILITY sasl_ssl: sent={EVENTS} stored={EVENTS} lost=0 duplicated=0 wrong password and untrusted CA named in /health");
}

//! Secrets masked everywhere: one recognisable secret (each containing `Zq9`) in every
//! secret-bearing setting — the MongoDB password (also with a `/`) and a URI option, the
//! schema registry's URL and password, KAFKA_PROPERTIES (`sasl.oauthbearer.config`,
//! `ssl.key.password`), KAFKA_SASL_PASSWORD, the OTLP endpoint's credentials (refused:
//! OTLP/gRPC does not send them) and both tokens — and none of them appears in anything the server prints or serves: logs at
//! debug level, `--help`, the errors of refused values, `/health`, `/stats`, `/metrics`.
use std::{process::Command, time::Duration};

use test_support::service::server_env;

use crate::{
    backends::{backends, start_server},
    helpers::*,
};

const MARK: &str = "Zq9";

fn secrets(mongodb: &str) -> Vec<(&'static str, String)> {
    let host = mongodb
        .strip_prefix("mongodb://")
        .unwrap_or(mongodb)
        .split(['/', '?'])
        .next()
        .unwrap()
        .to_string();
    vec![
        (
            "MONGODB_URL",
            format!("mongodb://ingest:Zq9mongo-pw@{host}/?directConnection=true"),
        ),
        (
            "SCHEMA_REGISTRY_URL",
            "http://reg:Zq9regurl@127.0.0.1:1".into(),
        ),
        ("SCHEMA_REGISTRY_USERNAME", "reader".into()),
        ("SCHEMA_REGISTRY_PASSWORD", "Zq9regpw".into()),
        (
            "KAFKA_PROPERTIES",
            "sasl.oauthbearer.config=principal=Zq9oauth,ssl.key.password=Zq9sslkey".into(),
        ),
        ("KAFKA_SASL_PASSWORD", "Zq9sasl".into()),
        ("ADMIN_TOKEN", "Zq9admin-token-0123456789".into()),
        ("PRODUCER_TOKEN", "Zq9producer-token-0123456789".into()),
    ]
}

/// The binary's stdout and stderr with `env` (and nothing else inherited) and `args`.
fn run(env: &[(&str, String)], args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_sales-ingest"))
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .args(args)
        .output()
        .expect("run the binary");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn assert_clean(what: &str, text: &str) {
    let at = text.find(MARK);
    assert!(
        at.is_none(),
        "{what} shows a secret: …{}…",
        &text[at.unwrap().saturating_sub(120)..(at.unwrap() + 60).min(text.len())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_appears_in_logs_help_errors_or_served_pages() {
    let all = secrets(&backends().mongodb);
    assert_clean("--help", &run(&all, &["--help"]));

    // Refused values: clap would quote the raw value.
    for (var, value, says) in [
        (
            "SCHEMA_REGISTRY_URL",
            "ftp://u:Zq9scheme@x",
            "SCHEMA_REGISTRY_URL",
        ),
        (
            "KAFKA_PROPERTIES",
            "sasl.oauthbearer.config=Zq9prop,broken",
            "key=value",
        ),
        ("PRODUCER_TOKEN", "Zq9short", "at least 16"),
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://otel:Zq9otlp@127.0.0.1:1",
            "OTEL_EXPORTER_OTLP_HEADERS",
        ),
        (
            "MONGODB_URL",
            "mongodb://u:Zq9/tls@h/?tlsCertificateKeyFilePassword=Zq9opt&tls=maybe",
            "",
        ),
    ] {
        let out = run(
            &[(var, value.to_string()), ("KAFKA_ENABLED", "false".into())],
            &[],
        );
        assert!(out.contains(says), "{var}: {out}");
        assert_clean(var, &out);
    }

    // A running server with every secret set, at debug level: MongoDB refuses the
    // login and the registry and the OTLP collector are unreachable, so each secret's
    // setting is used and fails, and its failures are logged and reported.
    let all: Vec<_> = all
        .into_iter()
        .filter(|(k, _)| !k.starts_with("OTEL"))
        .collect();
    let topic = unique("secrets_t");
    create_topic(&topic, 1).await;
    let mut extra: Vec<(&str, String)> = all.clone();
    extra.push(("RUST_LOG", "debug".into()));
    let env = server_env(
        backends(),
        &topic,
        &unique("secrets_g"),
        &unique("secrets_db"),
        &extra,
    );
    let server = start_server("secrets", &env);
    server
        .wait_health(503, Duration::from_secs(60))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    for page in ["health", "stats", "metrics", ""] {
        let (_, body) = get(&format!("{}/{page}", server.http_url)).await;
        assert_clean(&format!("/{page}"), &body);
    }
    // The reasons, where a host or a password could show, go to the admin token only.
    let admin = all
        .iter()
        .find(|(k, _)| *k == "ADMIN_TOKEN")
        .unwrap()
        .1
        .clone();
    let health = reqwest::Client::new()
        .get(format!("{}/health", server.http_url))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(health.contains("mongodb_error"), "{health}");
    assert_clean("/health with the admin token", &health);
    let logs = server.logs();
    assert!(logs.contains("effective configuration"), "{logs}");
    let (_, _) = server.terminate(Duration::from_secs(30)).unwrap();
    assert_clean("the log", &logs);
}

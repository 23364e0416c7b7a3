//! `ingestctl` (clients/ingestctl) against the real server: the binary is built once
//! per test process with the same cargo, then run as a subprocess against `spawn_app`.
use std::{
    path::PathBuf,
    process::{Command, Stdio},
    sync::{mpsc, OnceLock},
    time::Duration,
};

use mongodb::bson::{doc, Document};
use sales_ingest::Stopped;
use serde_json::Value;
use test_support::servers::free_port;

use crate::{backends::backends, helpers::*};

/// The ingestctl binary, built by `cargo build` on first use. `--all-targets` over
/// the workspace resolves the same features as `cargo test --workspace`, so nothing
/// but the ingestctl binary itself is compiled again.
fn ingestctl_path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_string());
        let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build",
            "--workspace",
            "--all-targets",
            "--message-format=json-render-diagnostics",
            "--manifest-path",
            manifest,
        ]);
        if !cfg!(debug_assertions) {
            cmd.arg("--release");
        }
        let out = cmd.stdin(Stdio::null()).output().expect("run cargo build");
        assert!(
            out.status.success(),
            "cargo build of ingestctl failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|m| {
                m["reason"] == "compiler-artifact"
                    && m["target"]["name"] == "ingestctl"
                    && m["profile"]["test"] == false
                    && m["executable"].is_string()
            })
            .and_then(|m| m["executable"].as_str().map(PathBuf::from))
            .expect("cargo reported the ingestctl executable")
    })
}

/// One finished ingestctl run.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }
}

/// Runs ingestctl with `args` (no inherited INGEST_*/ADMIN_TOKEN/KAFKA_* settings).
pub async fn ingestctl(args: &[&str]) -> Run {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let child = Command::new(ingestctl_path())
            .args(&args)
            .env_remove("INGEST_ADDR")
            .env_remove("ADMIN_TOKEN")
            .env_remove("KAFKA_BOOTSTRAP_SERVERS")
            .env_remove("KAFKA_TOPIC")
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ingestctl");
        let pid = child.id();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        // A guard against a hang, not a performance assertion.
        let Ok(out) = rx.recv_timeout(Duration::from_secs(300)) else {
            let _ = Command::new("kill").arg(pid.to_string()).status();
            panic!("ingestctl {args:?} did not finish within 300 s");
        };
        let out = out.expect("ingestctl output");
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    })
    .await
    .expect("ingestctl task")
}

/// The last word of the line starting with `key` in a key/value summary.
pub fn value_of<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().last())
        .unwrap_or_else(|| panic!("no {key:?} line in\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_serving_for_every_service_and_unknown_services_fail() {
    let app = spawn_app(AppOptions::default()).await;
    app.wait_serving().await;
    let run = ingestctl(&["--addr", &app.grpc_url, "health"]).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    for service in [
        "\"\" (server)",
        "ingest.v1.IngestAdmin",
        "ingest.v1.IngestEvents",
    ] {
        let line = run
            .stdout
            .lines()
            .find(|l| l.starts_with(service))
            .unwrap_or_else(|| panic!("no line for {service} in {run:?}"));
        assert!(line.ends_with(" SERVING"), "{line}");
    }
    let run = ingestctl(&["--addr", &app.grpc_url, "health", "--service", "nope.v1.X"]).await;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stdout.contains("NOT_FOUND"), "{run:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_prints_a_table_and_json_with_the_servers_figures() {
    let app = spawn_app(AppOptions::default()).await;
    app.wait_serving().await;
    let run = ingestctl(&["--addr", &app.grpc_url, "stats", "--json"]).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let json = run.json();
    assert_eq!(json["events_stored"], 0);
    assert_eq!(json["kafka_enabled"], true);
    assert_eq!(json["mongodb_connected"], true);
    assert_eq!(json["consumer_paused"], false);
    assert!(json["partitions"].is_array() && json["rejected_by_reason"].is_object());

    let run = ingestctl(&["--addr", &app.grpc_url, "stats"]).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(
        run.stdout
            .contains("SOURCE  STORED  DUPLICATE  REJECTED  FAILED  UPDATED\n"),
        "{run:?}"
    );
    assert_eq!(value_of(&run.stdout, "mongodb"), "connected");
    assert_eq!(value_of(&run.stdout, "total"), "0");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_stores_the_valid_events_and_reports_what_the_server_acked() {
    let app = spawn_app(AppOptions {
        kafka: false,
        batch_size: 300,
        ..Default::default()
    })
    .await;
    app.wait_serving().await;
    let run_id = unique("ctlrun");
    let args = [
        "--addr",
        &app.grpc_url,
        "stream",
        "--count",
        "2000",
        "--batch",
        "200",
        "--invalid",
        "5",
        "--run-id",
        &run_id,
        "--json",
    ];
    let run = ingestctl(&args).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let s = run.json();
    assert_eq!(s["requests"], 10);
    assert_eq!(s["acked_events"], 2000);
    assert_eq!(s["accepted"], 1900);
    assert_eq!(s["duplicates"], 0);
    assert_eq!(s["rejected"], 100);
    assert_eq!(s["events_invalid_generated"], 100);
    for reason in ["invalid_qty", "missing_sku", "invalid_ts", "invalid_price"] {
        assert_eq!(s["rejected_by_reason"][reason], 25, "{reason}: {s}");
    }
    assert_eq!(s["ack_latency"]["samples"], 10);
    assert!(
        s["ack_latency"]["p99_ms"].as_f64().unwrap()
            >= s["ack_latency"]["p50_ms"].as_f64().unwrap()
    );

    assert_eq!(app.stored().await, 1900, "exactly the valid events stored");
    let coll = app.db.collection::<Document>("raw_sales");
    let ours = coll
        .count_documents(doc! { "source": "grpc", "event_id": { "$regex": format!("^{run_id}-") } })
        .await
        .unwrap();
    assert_eq!(ours, 1900);
    let snap = app.stats.snapshot();
    assert_eq!(
        (snap.grpc.unwrap().stored, snap.grpc.unwrap().rejected),
        (1900, 100)
    );

    // The same run id again, over two streams: every valid event is a duplicate.
    let mut replay = args.to_vec();
    replay.extend(["--streams", "2"]);
    let run = ingestctl(&replay).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let s = run.json();
    assert_eq!(
        (s["accepted"].as_u64(), s["duplicates"].as_u64()),
        (Some(0), Some(1900))
    );
    assert_eq!(s["rejected"], 100);
    assert_eq!(app.stored().await, 1900, "a replay stores nothing twice");

    let stats = ingestctl(&["--addr", &app.grpc_url, "stats", "--json"])
        .await
        .json();
    assert_eq!(stats["events_stored"], 1900);
    assert_eq!(stats["events_duplicate"], 1900);
    assert_eq!(stats["grpc"]["rejected"], 200);
    assert_eq!(stats["rejected_by_reason"]["invalid_ts"], 50);

    // The text summary of a small run.
    let run = ingestctl(&[
        "--addr",
        &app.grpc_url,
        "stream",
        "--count",
        "10",
        "--batch",
        "3",
    ])
    .await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(value_of(&run.stdout, "requests"), "4");
    assert_eq!(value_of(&run.stdout, "accepted"), "10");
    assert_eq!(value_of(&run.stdout, "rejected"), "0");
    assert!(run.stdout.contains("ack latency p99"), "{run:?}");
    assert_eq!(app.stored().await, 1910);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_and_shutdown_need_the_right_token() {
    let app = spawn_app(AppOptions::default()).await;
    let token = app.admin_token.clone().expect("token");
    let addr = app.grpc_url.clone();

    let run = ingestctl(&["--addr", &addr, "--token", "wrong", "pause"]).await;
    assert_eq!(run.code, Some(3), "{run:?}");
    assert!(
        run.stderr
            .contains("error: the server refused the admin token (UNAUTHENTICATED)"),
        "{run:?}"
    );
    assert!(!run.stderr.contains("panicked"), "{run:?}");
    assert!(!app.stats.snapshot().consumer_paused);
    let run = ingestctl(&["--addr", &addr, "pause"]).await;
    assert_eq!(run.code, Some(3), "{run:?}");
    assert!(run.stderr.contains("no admin token given"), "{run:?}");

    let run = ingestctl(&["--addr", &addr, "--token", &token, "pause"]).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(run.stdout, "consumer paused\n");
    assert!(app.stats.snapshot().consumer_paused);
    let run = ingestctl(&["--addr", &addr, "stats", "--json"]).await;
    assert_eq!(run.json()["consumer_paused"], true);
    let run = ingestctl(&["--addr", &addr, "--token", &token, "resume"]).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(run.stdout, "consumer resumed\n");
    assert!(!app.stats.snapshot().consumer_paused);

    let run = ingestctl(&["--addr", &addr, "--token", "wrong", "shutdown"]).await;
    assert_eq!(run.code, Some(3), "{run:?}");
    assert!(run.stderr.contains("UNAUTHENTICATED"), "{run:?}");
    assert!(
        !app.handle.is_finished(),
        "a refused shutdown leaves it running"
    );

    let run = ingestctl(&["--addr", &addr, "--token", &token, "shutdown"]).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stdout.starts_with("shutdown accepted"), "{run:?}");
    let stopped = tokio::time::timeout(Duration::from_secs(30), app.handle)
        .await
        .expect("server stops within 30 s")
        .expect("server task");
    assert_eq!(stopped, Stopped::Clean);

    let run = ingestctl(&["--addr", &addr, "health"]).await;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stderr
            .starts_with(&format!("error: cannot reach sales-ingest at {addr}: ")),
        "{run:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_calls_to_a_server_without_a_token_say_they_are_disabled() {
    let app = spawn_app(AppOptions {
        kafka: false,
        admin_token: None,
        ..Default::default()
    })
    .await;
    let run = ingestctl(&["--addr", &app.grpc_url, "--token", "x", "shutdown"]).await;
    assert_eq!(run.code, Some(3), "{run:?}");
    assert!(run.stderr.contains("(FAILED_PRECONDITION)"), "{run:?}");
    assert!(run.stderr.contains("admin RPCs are disabled"), "{run:?}");
    assert!(!app.handle.is_finished());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_a_clear_error_without_a_backtrace() {
    let addr = format!("127.0.0.1:{}", free_port());
    for args in [
        vec!["stats"],
        vec!["stream", "--count", "10"],
        vec!["--token", "t", "pause"],
    ] {
        let mut full = vec!["--addr", addr.as_str()];
        full.extend(args);
        let run = ingestctl(&full).await;
        assert_eq!(run.code, Some(1), "{run:?}");
        assert!(
            run.stderr.starts_with(&format!(
                "error: cannot reach sales-ingest at http://{addr}: "
            )),
            "{run:?}"
        );
        assert_eq!(
            run.stderr.lines().count(),
            1,
            "one line, no backtrace: {run:?}"
        );
        assert!(run.stdout.is_empty(), "{run:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_delivers_500_events_that_the_server_stores() {
    let app = spawn_app(AppOptions::default()).await;
    create_topic(&app.topic, 2).await;
    let run = ingestctl(&[
        "produce",
        "--count",
        "500",
        "--brokers",
        &backends().kafka,
        "--topic",
        &app.topic,
        "--json",
    ])
    .await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let s = run.json();
    assert_eq!(
        (s["delivered"].as_u64(), s["failed"].as_u64()),
        (Some(500), Some(0))
    );
    let stats = app.stats.clone();
    wait_until(Duration::from_secs(90), "500 stored from Kafka", || {
        let s = stats.snapshot();
        async move { s.kafka.unwrap().stored == 500 }
    })
    .await;
    assert_eq!(app.stored().await, 500);
    let kafka_docs = app
        .db
        .collection::<Document>("raw_sales")
        .count_documents(doc! { "source": "kafka" })
        .await
        .unwrap();
    assert_eq!(kafka_docs, 500);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_sends_the_producer_token() {
    let app = spawn_app(AppOptions {
        kafka: false,
        extra: vec![("producer-token".into(), "ctl-prod-tok".into())],
        ..Default::default()
    })
    .await;
    app.wait_serving().await;
    let base = [
        "--addr",
        &app.grpc_url,
        "stream",
        "--count",
        "100",
        "--batch",
        "50",
    ];
    let refused = ingestctl(&base).await;
    assert_ne!(refused.code, Some(0), "no token: refused {refused:?}");
    let mut with = base.to_vec();
    with.extend(["--producer-token", "ctl-prod-tok", "--json"]);
    let run = ingestctl(&with).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(run.json()["accepted"], 100);
    assert_eq!(app.stored().await, 100);
    app.stop().await;
}

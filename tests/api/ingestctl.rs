//! `ingestctl` (clients/ingestctl) against the real server: the binary is built once
//! per test process with the same cargo, then run as a subprocess against `spawn_app`.
use std::{
    path::PathBuf,
    process::{Command, Stdio},
    sync::{mpsc, OnceLock},
    time::Duration,
};

use sales_ingest::Stopped;
use serde_json::Value;
use test_support::servers::free_port;

use crate::helpers::*;

mod producing;

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
    // The source applies the resume at its next turn (fetching restarts then).
    let stats = app.stats.clone();
    wait_until(Duration::from_secs(5), "fetching resumed", || {
        let paused = stats.snapshot().consumer_paused;
        async move { !paused }
    })
    .await;

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
async fn a_malformed_addr_exits_2_naming_addr_before_connecting() {
    for addr in ["not a url", "ftp://127.0.0.1:50051"] {
        let run = ingestctl(&["--addr", addr, "stats"]).await;
        assert_eq!(run.code, Some(2), "{run:?}");
        assert!(run.stderr.contains("--addr"), "{run:?}");
        assert!(!run.stderr.contains("cannot reach"), "{run:?}");
    }
}

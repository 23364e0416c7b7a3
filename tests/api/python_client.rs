//! The Python client (clients/python) against the real server: the producer's printed
//! acks, what MongoDB and the stats then hold, an idempotent replay, and the health
//! check's exit codes.
use std::process::Command;

use mongodb::bson::{doc, Document};
use serde_json::Value;

use crate::{helpers::*, tools::*};

fn python(script: &str, args: &[&str]) -> Command {
    let mut cmd = python3();
    cmd.arg(repo_path(&format!("clients/python/{script}")))
        .args(args);
    cmd
}

/// The producer's stdout: one JSON ack per line.
fn acks(stdout: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("ack line {l:?}: {e}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_producer_streams_events_and_prints_every_ack() {
    require_python_grpc();
    let app = spawn_app(AppOptions {
        kafka: false,
        ..Default::default()
    })
    .await;
    app.wait_serving().await;
    let target = app.grpc_url.trim_start_matches("http://").to_string();

    // 60 events in requests of 10, every 7th invalid: events 6, 13, ..., 55 (8 of
    // them), cycling through missing_sku, invalid_qty, invalid_price, invalid_ts.
    let args = [
        "--target",
        &target,
        "--count",
        "60",
        "--batch-size",
        "10",
        "--invalid-every",
        "7",
        "--id-prefix",
        "pyt",
    ];
    let out = run_async(python("producer.py", &args), PYTHON).await;
    assert!(out.status.success(), "producer failed: {}", describe(&out));
    let got = acks(&out.stdout);
    assert_eq!(got.len(), 6, "one ack per request: {}", describe(&out));
    let reasons = ["missing_sku", "invalid_qty", "invalid_price", "invalid_ts"];
    for (i, ack) in got.iter().enumerate() {
        assert_eq!(ack["seq"], i as u64 + 1, "acks in request order");
        let bad: Vec<usize> = (i * 10..i * 10 + 10).filter(|n| (n + 1) % 7 == 0).collect();
        let rejected = ack["rejected"].as_array().expect("rejected list");
        let got_idx: Vec<u64> = rejected
            .iter()
            .map(|r| r["index"].as_u64().unwrap())
            .collect();
        let want_idx: Vec<u64> = bad.iter().map(|n| (n % 10) as u64).collect();
        assert_eq!(got_idx, want_idx, "rejected indexes of ack {ack}");
        for (r, n) in rejected.iter().zip(&bad) {
            assert_eq!(r["reason"], reasons[((n + 1) / 7 - 1) % 4], "{ack}");
            assert!(!r["detail"].as_str().unwrap().is_empty(), "{ack}");
        }
        assert_eq!(ack["accepted"], (10 - bad.len()) as u64, "{ack}");
        assert_eq!(ack["duplicates"], 0, "{ack}");
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("6 acks, accepted 52, duplicates 0, rejected 8"),
        "{stderr}"
    );

    // Acked means durable: MongoDB and the stats agree with the acks.
    assert_eq!(app.stored().await, 52);
    let dlq = app
        .db
        .collection::<Document>("raw_sales_dlq")
        .count_documents(doc! {})
        .await
        .unwrap();
    assert_eq!(dlq, 8, "gRPC rejects are dead-lettered to MongoDB");
    let s = app.stats.snapshot();
    assert_eq!(
        (
            s.grpc.unwrap().stored,
            s.grpc.unwrap().rejected,
            s.grpc.unwrap().duplicate
        ),
        (52, 8, 0)
    );
    for reason in reasons {
        assert_eq!(s.rejected_by_reason[reason], 2, "{reason}");
    }
    let (_, body) = get(&format!("{}/stats", app.http_url)).await;
    let stats: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(stats["events_stored"], 52);
    assert_eq!(stats["events_rejected"], 8);

    // The same ids again are duplicates, stored once.
    let replay = [
        "--target",
        &target,
        "--count",
        "10",
        "--batch-size",
        "10",
        "--invalid-every",
        "7",
        "--id-prefix",
        "pyt",
        "--seq-start",
        "100",
    ];
    let out = run_async(python("producer.py", &replay), PYTHON).await;
    assert!(out.status.success(), "replay failed: {}", describe(&out));
    let got = acks(&out.stdout);
    assert_eq!(got.len(), 1, "{}", describe(&out));
    assert_eq!(got[0]["seq"], 100);
    assert_eq!(got[0]["accepted"], 0);
    assert_eq!(got[0]["duplicates"], 9);
    assert_eq!(got[0]["rejected"].as_array().unwrap().len(), 1);
    assert_eq!(app.stored().await, 52);
    assert_eq!(app.stats.snapshot().events_duplicate, 9);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_health_check_exits_0_when_serving_and_1_when_not_serving_or_unreachable() {
    require_python_grpc();
    let app = spawn_app(AppOptions {
        kafka: false,
        ..Default::default()
    })
    .await;
    app.wait_serving().await;
    let target = app.grpc_url.trim_start_matches("http://").to_string();
    for service in ["", "ingest.v1.IngestEvents", "ingest.v1.IngestAdmin"] {
        let out = run_async(
            python(
                "healthcheck.py",
                &["--target", &target, "--service", service],
            ),
            PYTHON,
        )
        .await;
        assert_eq!(
            out.status.code(),
            Some(0),
            "{service:?}: {}",
            describe(&out)
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("SERVING"),
            "{}",
            describe(&out)
        );
    }

    // Nothing listening: exit 1 and a message.
    let closed = format!("127.0.0.1:{}", test_support::servers::free_port());
    let out = run_async(python("healthcheck.py", &["--target", &closed]), PYTHON).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("UNAVAILABLE"),
        "{}",
        describe(&out)
    );
    app.stop().await;

    // MongoDB unreachable: the server answers NOT_SERVING, the check exits 1.
    let down = spawn_app_with_unreachable_mongodb().await;
    let target = down.grpc_url.trim_start_matches("http://").to_string();
    let out = run_async(python("healthcheck.py", &["--target", &target]), PYTHON).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("NOT_SERVING"),
        "{}",
        describe(&out)
    );
    down.shutdown.cancel();
    down.handle.await.unwrap();
}

/// The producer against a secured server: PRODUCER_TOKEN with TLS, then mTLS. Without
/// the token, or without a client certificate under mTLS, it fails (exit 1) and stores
/// nothing; with them every event is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_producer_sends_the_token_over_tls_and_mtls() {
    require_python_grpc();
    let dir = test_support::servers::scratch_dir(&unique("py-pki"));
    let pki = crate::helpers::pki::PkiFiles::write(&dir);
    let token = "py-producer-token";
    for mtls in [false, true] {
        let mut extra = pki.server_settings(mtls);
        extra.push(("producer-token".into(), token.into()));
        let app = spawn_app(AppOptions {
            kafka: false,
            extra,
            ..Default::default()
        })
        .await;
        let target = format!("127.0.0.1:{}", app.grpc_url.rsplit(':').next().unwrap());
        let ca = pki.ca.display().to_string();
        let (cert, key) = (
            pki.client_cert.display().to_string(),
            pki.client_key.display().to_string(),
        );
        let mut base = vec![
            "--target",
            &target,
            "--server-name",
            "localhost",
            "--ca",
            &ca,
            "--count",
            "20",
            "--batch-size",
            "10",
        ];
        let with_cert = ["--cert", cert.as_str(), "--key", key.as_str()];
        if mtls {
            // No client certificate: the TLS handshake is refused.
            let mut cmd = python(
                "producer.py",
                &[base.as_slice(), &["--token", token]].concat(),
            );
            cmd.env_remove("PRODUCER_TOKEN");
            let out = run_async(cmd, PYTHON).await;
            assert_eq!(
                out.status.code(),
                Some(1),
                "mTLS without a certificate: {}",
                describe(&out)
            );
            base.extend(with_cert);
        }
        // No token: UNAUTHENTICATED.
        let mut cmd = python(
            "producer.py",
            &[base.as_slice(), &["--id-prefix", "no-token"]].concat(),
        );
        cmd.env_remove("PRODUCER_TOKEN");
        let out = run_async(cmd, PYTHON).await;
        assert_eq!(
            out.status.code(),
            Some(1),
            "without the token: {}",
            describe(&out)
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("UNAUTHENTICATED"),
            "{}",
            describe(&out)
        );
        assert_eq!(app.stored().await, 0);
        // --token, then PRODUCER_TOKEN from the environment.
        let out = run_async(
            python(
                "producer.py",
                &[base.as_slice(), &["--token", token, "--id-prefix", "flag"]].concat(),
            ),
            PYTHON,
        )
        .await;
        assert!(
            out.status.success(),
            "--token (mtls {mtls}): {}",
            describe(&out)
        );
        assert_eq!(acks(&out.stdout).len(), 2, "{}", describe(&out));
        let mut cmd = python(
            "producer.py",
            &[base.as_slice(), &["--id-prefix", "env"]].concat(),
        );
        cmd.env("PRODUCER_TOKEN", token);
        let out = run_async(cmd, PYTHON).await;
        assert!(
            out.status.success(),
            "PRODUCER_TOKEN (mtls {mtls}): {}",
            describe(&out)
        );
        assert_eq!(
            app.stored().await,
            40,
            "every acked event is stored (mtls {mtls})"
        );
        app.stop().await;
    }
}

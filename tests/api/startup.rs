//! Start-up and configuration values from outside: bad values stop the process with
//! exit 2 naming the variable; a token read from a file keeps working.
use sales_ingest::proto::ingest::v1::PauseConsumerRequest;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_token_read_from_a_file_with_its_newline_still_matches() {
    let app = spawn_app(AppOptions {
        admin_token: Some("file-token\n".into()),
        ..Default::default()
    })
    .await;
    let mut req = tonic::Request::new(PauseConsumerRequest {});
    req.metadata_mut()
        .insert("authorization", "Bearer file-token".parse().unwrap());
    let resp = app.admin().await.pause_consumer(req).await.unwrap();
    assert!(resp.into_inner().paused);
    app.stop().await;
}

/// Runs the release or debug binary of this build with `env`; its exit code and stderr.
fn run_binary(env: &[(&str, &str)]) -> (Option<i32>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sales-ingest"))
        .env_clear()
        .env("KAFKA_ENABLED", "false")
        .env(
            "MONGODB_URL",
            "mongodb://127.0.0.1:1/?directConnection=true",
        )
        .env("GRPC_ADDR", "127.0.0.1:0")
        .env("HTTP_ADDR", "127.0.0.1:0")
        .envs(env.iter().copied())
        .output()
        .expect("run the server binary");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_start_up_values_exit_2_naming_the_variable() {
    let dir = std::env::temp_dir().join(unique("tls"));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert_path = dir.join("server.pem");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    let cert_path = cert_path.to_str().unwrap();
    // A certificate where the key belongs.
    let (code, err) = run_binary(&[("GRPC_TLS_CERT", cert_path), ("GRPC_TLS_KEY", cert_path)]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("GRPC_TLS_KEY"), "{err}");
    for (var, value) in [
        ("RUST_LOG", "info,["),
        ("KAFKA_DLQ_TOPIC", "bad/dlq name"),
        ("KAFKA_TOPIC", "spaces are not allowed"),
        ("KAFKA_PARTITION_ASSIGNMENT", "range,cooperative-sticky"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317"),
    ] {
        let (code, err) = run_binary(&[(var, value)]);
        assert_eq!(code, Some(2), "{var}: {err}");
        assert!(err.contains(var), "{var}: {err}");
    }
    std::fs::remove_dir_all(dir).ok();
}

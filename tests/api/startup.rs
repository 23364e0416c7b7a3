//! Start-up and configuration values from outside: bad values (the `OTEL_*` variables
//! of an enabled trace exporter and incomplete schema registry credentials among them)
//! stop the process with exit 2 naming the variable, a port in use with exit 1 naming the
//! listener's variable and the address; a token read from a file keeps
//! working.
use sales_ingest::proto::ingest::v1::PauseConsumerRequest;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_token_read_from_a_file_with_its_newline_still_matches() {
    let app = spawn_app(AppOptions {
        admin_token: Some("file-token-0123456789\n".into()),
        ..Default::default()
    })
    .await;
    let mut req = tonic::Request::new(PauseConsumerRequest {});
    req.metadata_mut().insert(
        "authorization",
        "Bearer file-token-0123456789".parse().unwrap(),
    );
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
fn a_port_in_use_exits_1_naming_the_variable_and_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    for var in ["GRPC_ADDR", "HTTP_ADDR"] {
        let (code, err) = run_binary(&[(var, addr.as_str())]);
        assert_eq!(code, Some(1), "{var}: {err}");
        assert!(err.contains(var) && err.contains(&addr), "{var}: {err}");
    }
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

#[test]
fn unusable_otel_values_and_incomplete_registry_credentials_exit_2_naming_the_variable() {
    let traces = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1");
    for (var, value, says) in [
        ("OTEL_TRACES_SAMPLER", "sometimes", "parentbased_always_on"),
        (
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            "http/protobuf",
            "OTLP/gRPC only",
        ),
        (
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "http/json",
            "OTLP/gRPC only",
        ),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "10s", "non-negative integer"),
        (
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
            "-1",
            "non-negative integer",
        ),
        ("OTEL_BSP_SCHEDULE_DELAY", "soon", "non-negative integer"),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "lots", "non-negative integer"),
        ("OTEL_EXPORTER_OTLP_HEADERS", "api-key", "key=value"),
        (
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
            "bad key=v",
            "header name",
        ),
    ] {
        let (code, err) = run_binary(&[traces, (var, value)]);
        assert_eq!(code, Some(2), "{var}={value}: {err}");
        assert!(
            err.contains(var) && err.contains(says),
            "{var}={value}: {err}"
        );
    }
    let ratio = [
        traces,
        ("OTEL_TRACES_SAMPLER", "traceidratio"),
        ("OTEL_TRACES_SAMPLER_ARG", "1.5"),
    ];
    let (code, err) = run_binary(&ratio);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("OTEL_TRACES_SAMPLER_ARG") && err.contains("from 0 to 1"),
        "{err}"
    );
    let url = ("SCHEMA_REGISTRY_URL", "http://127.0.0.1:1");
    for (env, missing) in [
        (
            vec![
                ("SCHEMA_REGISTRY_USERNAME", "u"),
                ("SCHEMA_REGISTRY_PASSWORD", "p"),
            ],
            "SCHEMA_REGISTRY_URL",
        ),
        (
            vec![("SCHEMA_REGISTRY_PASSWORD", "p")],
            "SCHEMA_REGISTRY_URL",
        ),
        (
            vec![url, ("SCHEMA_REGISTRY_USERNAME", "u")],
            "SCHEMA_REGISTRY_PASSWORD",
        ),
        (
            vec![url, ("SCHEMA_REGISTRY_PASSWORD", "p")],
            "SCHEMA_REGISTRY_USERNAME",
        ),
    ] {
        let (code, err) = run_binary(&env);
        assert_eq!(code, Some(2), "{env:?}: {err}");
        assert!(
            err.contains(&format!("{missing} is missing")),
            "{env:?}: {err}"
        );
    }
}

#[test]
fn a_blank_or_short_token_exits_2_naming_the_variable() {
    for (var, value, says) in [
        ("PRODUCER_TOKEN", "", "blank"),
        ("PRODUCER_TOKEN", "  \n", "blank"),
        ("PRODUCER_TOKEN", "change-me-too", "at least 16"),
        ("ADMIN_TOKEN", "change-me", "at least 16"),
    ] {
        let (code, err) = run_binary(&[(var, value)]);
        assert_eq!(code, Some(2), "{var}={value:?}: {err}");
        assert!(
            err.contains(var) && err.contains(says),
            "{var}={value:?}: {err}"
        );
    }
}

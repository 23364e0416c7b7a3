//! Start-up configuration errors from the real binary.
use std::process::Command;

fn run_with(env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sales-ingest"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run sales-ingest");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_bad_value_stops_start_up_with_exit_2_naming_the_variable() {
    for (var, value) in [
        ("BATCH_SIZE", "0"),
        ("BATCH_SIZE", "lots"),
        ("FLUSH_INTERVAL", "-3"),
        ("KAFKA_ENABLED", "perhaps"),
        ("GRPC_ADDR", "not-an-address"),
        ("LOG_FORMAT", "xml"),
        ("KAFKA_SESSION_TIMEOUT_MS", "5"),
        ("MONGODB_URL", "postgres://nope"),
        ("KAFKA_SECURITY_PROTOCOL", "tls"),
        ("KAFKA_PROPERTIES", "no.such.property=1"),
        ("KAFKA_PROPERTIES", "fetch.max.bytes"),
        ("GRPC_MAX_STREAMS", "0"),
        ("KAFKA_VALUE_FORMAT", "xml"),
        ("SCHEMA_REGISTRY_URL", "registry:8081"),
        ("WRITE_MODE", "merge"),
    ] {
        let (code, stderr) = run_with(&[
            (var, value),
            (
                "GRPC_ADDR",
                if var == "GRPC_ADDR" {
                    value
                } else {
                    "127.0.0.1:0"
                },
            ),
            ("HTTP_ADDR", "127.0.0.1:0"),
        ]);
        assert_eq!(code, Some(2), "{var}={value}: {stderr}");
        assert!(
            stderr.contains(var),
            "{var}={value}: message does not name it: {stderr}"
        );
    }
}

#[test]
fn unreadable_tls_files_stop_start_up_naming_the_variable() {
    let (code, stderr) = run_with(&[
        ("GRPC_TLS_CERT", "/nonexistent/cert.pem"),
        ("GRPC_TLS_KEY", "/nonexistent/key.pem"),
        ("KAFKA_ENABLED", "false"),
        ("GRPC_ADDR", "127.0.0.1:0"),
        ("HTTP_ADDR", "127.0.0.1:0"),
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("GRPC_TLS_CERT") && stderr.contains("/nonexistent/cert.pem"),
        "{stderr}"
    );
}

#[test]
fn help_lists_every_variable_with_defaults() {
    let out = Command::new(env!("CARGO_BIN_EXE_sales-ingest"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for var in [
        "KAFKA_BOOTSTRAP_SERVERS",
        "KAFKA_TOPIC",
        "KAFKA_GROUP_ID",
        "KAFKA_ENABLED",
        "KAFKA_DLQ_TOPIC",
        "KAFKA_SESSION_TIMEOUT_MS",
        "KAFKA_HEARTBEAT_INTERVAL_MS",
        "KAFKA_MAX_POLL_INTERVAL_MS",
        "MONGODB_URL",
        "MONGODB_DATABASE",
        "MONGODB_COLLECTION",
        "BATCH_SIZE",
        "FLUSH_INTERVAL",
        "MAX_RETRIES",
        "WRITE_MODE",
        "GRPC_ADDR",
        "HTTP_ADDR",
        "ADMIN_TOKEN",
        "SHUTDOWN_TIMEOUT",
        "LOG_FORMAT",
        "RUST_LOG",
    ] {
        assert!(help.contains(&format!("env: {var}")), "--help lacks {var}");
    }
    assert!(help.contains("[default: sales_txn]") && help.contains("[default: 100]"));
}

#[test]
fn the_consumer_group_protocol_refuses_the_settings_the_broker_owns_with_exit_2() {
    let consumer = ("KAFKA_GROUP_PROTOCOL", "consumer");
    for (var, value, names) in [
        (
            "KAFKA_SESSION_TIMEOUT_MS",
            "6000",
            "KAFKA_SESSION_TIMEOUT_MS",
        ),
        (
            "KAFKA_HEARTBEAT_INTERVAL_MS",
            "1000",
            "KAFKA_HEARTBEAT_INTERVAL_MS",
        ),
        (
            "KAFKA_PARTITION_ASSIGNMENT",
            "range",
            "KAFKA_PARTITION_ASSIGNMENT",
        ),
        (
            "KAFKA_PROPERTIES",
            "session.timeout.ms=6000",
            "session.timeout.ms in KAFKA_PROPERTIES",
        ),
        (
            "KAFKA_PROPERTIES",
            "partition.assignment.strategy=range",
            "partition.assignment.strategy in KAFKA_PROPERTIES",
        ),
    ] {
        let (code, stderr) = run_with(&[
            consumer,
            (var, value),
            (
                "MONGODB_URL",
                "mongodb://127.0.0.1:1/?directConnection=true",
            ),
            ("GRPC_ADDR", "127.0.0.1:0"),
            ("HTTP_ADDR", "127.0.0.1:0"),
        ]);
        assert_eq!(code, Some(2), "{var}={value}: {stderr}");
        assert!(
            stderr.contains(&format!("invalid value for {var}"))
                && stderr.contains(names)
                && stderr.contains("KAFKA_GROUP_PROTOCOL=consumer"),
            "{var}={value}: {stderr}"
        );
        assert!(
            !stderr.contains("sales-ingest started"),
            "nothing half-started: {stderr}"
        );
    }
    let (code, stderr) = run_with(&[
        ("KAFKA_PROPERTIES", "group.protocol=consumer"),
        ("GRPC_ADDR", "127.0.0.1:0"),
        ("HTTP_ADDR", "127.0.0.1:0"),
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("KAFKA_PROPERTIES") && stderr.contains("KAFKA_GROUP_PROTOCOL"),
        "{stderr}"
    );
    let (code, stderr) = run_with(&[("KAFKA_GROUP_PROTOCOL", "next-gen")]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("KAFKA_GROUP_PROTOCOL"), "{stderr}");
}

#[test]
fn gssapi_is_refused_with_exit_2_saying_the_build_has_no_kerberos() {
    let (code, stderr) = run_with(&[
        ("KAFKA_SECURITY_PROTOCOL", "sasl_plaintext"),
        ("KAFKA_SASL_MECHANISM", "GSSAPI"),
        ("GRPC_ADDR", "127.0.0.1:0"),
        ("HTTP_ADDR", "127.0.0.1:0"),
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("KAFKA_SASL_MECHANISM") && stderr.contains("no GSSAPI support"),
        "{stderr}"
    );
}

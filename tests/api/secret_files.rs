//! Secrets given as files (`ADMIN_TOKEN_FILE`, `PRODUCER_TOKEN_FILE`,
//! `MONGODB_URL_FILE`, …), against the binary: the file's contents, without the
//! trailing newline, are the value; both forms at once, or a file that cannot be read,
//! exit 2 naming the `*_FILE` variable.
use std::time::Duration;

use sales_ingest::proto::ingest::v1::{ingest_events_client::IngestEventsClient, IngestRequest};
use test_support::{servers::scratch_dir, service::server_env};
use tokio_stream::StreamExt;

use crate::{
    backends::{backends, start_server},
    helpers::*,
};

/// Runs the binary with only `env` (and a gRPC-only set-up); its exit code and stderr.
fn run_binary(env: &[(&str, String)]) -> (Option<i32>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sales-ingest"))
        .env_clear()
        .env("KAFKA_ENABLED", "false")
        .env("GRPC_ADDR", "127.0.0.1:0")
        .env("HTTP_ADDR", "127.0.0.1:0")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("run the server binary");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn both_forms_or_an_unreadable_file_exit_2_naming_the_file_variable() {
    let dir = scratch_dir(&unique("secret-files"));
    let token = dir.join("admin-token");
    std::fs::write(&token, "a-secret-admin-token-in-a-file\n").unwrap();
    let token = token.display().to_string();
    let missing = dir.join("absent").display().to_string();
    let cases = [
        vec![
            ("ADMIN_TOKEN_FILE", token.clone()),
            ("ADMIN_TOKEN", "another-admin-token-value".to_string()),
        ],
        vec![("PRODUCER_TOKEN_FILE", missing.clone())],
        vec![("MONGODB_URL_FILE", missing.clone())],
    ];
    for env in cases {
        let var = env[0].0;
        let (code, err) = run_binary(&env);
        assert_eq!(code, Some(2), "{env:?}: {err}");
        assert!(err.contains(var), "{var}: {err}");
        assert!(
            !err.contains("a-secret-admin-token-in-a-file") && !err.contains("another-admin"),
            "{err}"
        );
    }
    let (_, err) = run_binary(&[("MONGODB_URL_FILE", missing.clone())]);
    assert!(err.contains(&missing), "the error names the file: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_the_mongodb_url_are_read_from_files_without_their_newline() {
    let dir = scratch_dir(&unique("secret-files-ok"));
    let file = |name: &str, body: &str| {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        p.display().to_string()
    };
    const PRODUCER: &str = "producer-token-from-a-file";
    const ADMIN: &str = "admin-token-from-a-file";
    let dbname = unique("files_db");
    let mut env = server_env(
        backends(),
        "unused",
        "unused",
        &dbname,
        &[
            ("KAFKA_ENABLED", "false".into()),
            (
                "PRODUCER_TOKEN_FILE",
                file("producer", &format!("{PRODUCER}\n")),
            ),
            ("ADMIN_TOKEN_FILE", file("admin", &format!("{ADMIN}\r\n"))),
            (
                "MONGODB_URL_FILE",
                file("url", &format!("{}\n", backends().mongodb)),
            ),
        ],
    );
    env.retain(|(k, _)| !matches!(k.as_str(), "ADMIN_TOKEN" | "MONGODB_URL" | "PRODUCER_TOKEN"));
    let server = start_server("secret-files", &env);
    // SERVING: MONGODB_URL came from its file.
    server
        .wait_health(200, Duration::from_secs(30))
        .await
        .unwrap();
    let request = IngestRequest {
        seq: 1,
        events: vec![valid_event(1, "from-files-1")],
    };
    let mut req = tonic::Request::new(tokio_stream::iter([request]));
    let bearer = format!("Bearer {PRODUCER}").parse().unwrap();
    req.metadata_mut().insert("authorization", bearer);
    let mut acks = IngestEventsClient::new(channel(&server.grpc_url).await)
        .stream(req)
        .await
        .expect("the producer token from its file is accepted")
        .into_inner();
    assert_eq!(acks.next().await.unwrap().unwrap().accepted, 1);
    let unauthenticated = IngestEventsClient::new(channel(&server.grpc_url).await)
        .stream(tokio_stream::iter(Vec::<IngestRequest>::new()))
        .await
        .unwrap_err();
    assert_eq!(unauthenticated.code(), tonic::Code::Unauthenticated);
    let shutdown = reqwest::Client::new()
        .post(format!("{}/shutdown", server.http_url))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(
        shutdown.status().as_u16(),
        202,
        "the admin token from its file"
    );
    let logs = server.logs();
    assert!(
        !logs.contains(ADMIN) && !logs.contains(PRODUCER),
        "a token from a file is not logged"
    );
    let (status, _) = server.terminate(Duration::from_secs(30)).unwrap();
    assert!(status.success());
}

//! Refused credentials are counted: `auth_failures_total{port, kind}` on /metrics
//! counts every missing or wrong bearer token on the producer stream, the admin RPCs
//! and `POST /shutdown`, and none of those calls gets through.
use sales_ingest::proto::ingest::v1::{
    ingest_admin_client::IngestAdminClient, ingest_events_client::IngestEventsClient,
    IngestRequest, PauseConsumerRequest,
};
use tonic::{metadata::MetadataValue, Code, Request};

use crate::helpers::*;

const PRODUCER_TOKEN: &str = "producer-token-of-the-test";

/// The value of `auth_failures_total` for `port` and `kind` on /metrics.
async fn failures(http_url: &str, port: &str, kind: &str) -> u64 {
    let (_, body) = get(&format!("{http_url}/metrics")).await;
    let series = format!("auth_failures_total{{kind=\"{kind}\",port=\"{port}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&series))
        .unwrap_or_else(|| panic!("no {series} in /metrics"))
        .parse()
        .unwrap()
}

fn with_token<T>(msg: T, token: Option<&str>) -> Request<T> {
    let mut req = Request::new(msg);
    if let Some(t) = token {
        let v: MetadataValue<_> = format!("Bearer {t}").parse().unwrap();
        req.metadata_mut().insert("authorization", v);
    }
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_and_wrong_tokens_are_refused_and_counted_by_port_and_kind() {
    let app = spawn_app(AppOptions {
        kafka: false,
        extra: vec![("producer-token".into(), PRODUCER_TOKEN.into())],
        ..Default::default()
    })
    .await;
    let url = app.http_url.clone();
    for (port, kind) in [
        ("grpc", "missing"),
        ("grpc", "invalid"),
        ("http", "invalid"),
    ] {
        assert_eq!(failures(&url, port, kind).await, 0, "{port} {kind}");
    }
    let request = || IngestRequest {
        seq: 1,
        events: vec![valid_event(1, "auth-1")],
    };
    let mut events = app.events().await;
    for token in [None, Some("not-the-producer-token"), Some("x")] {
        let stream = tokio_stream::iter([request()]);
        let err = events.stream(with_token(stream, token)).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{token:?}");
    }
    let mut admin = IngestAdminClient::new(channel(&app.grpc_url).await);
    let err = admin
        .pause_consumer(with_token(
            PauseConsumerRequest {},
            Some("wrong-admin-token"),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let refused = reqwest::Client::new()
        .post(format!("{url}/shutdown"))
        .header("authorization", "Bearer wrong-admin-token")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 401);

    assert_eq!(failures(&url, "grpc", "missing").await, 1);
    assert_eq!(failures(&url, "grpc", "invalid").await, 3);
    assert_eq!(failures(&url, "http", "invalid").await, 1);
    assert_eq!(failures(&url, "http", "missing").await, 0);
    assert_eq!(app.stored().await, 0, "no refused event was stored");

    // The right token passes and counts nothing.
    let stream = tokio_stream::iter([request()]);
    let mut acks = IngestEventsClient::new(channel(&app.grpc_url).await)
        .stream(with_token(stream, Some(PRODUCER_TOKEN)))
        .await
        .unwrap()
        .into_inner();
    use tokio_stream::StreamExt;
    assert_eq!(acks.next().await.unwrap().unwrap().accepted, 1);
    assert_eq!(failures(&url, "grpc", "invalid").await, 3);
    app.stop().await;
}

//! Health, reflection, /metrics, /health, /stats.
use std::time::Duration;

use tokio_stream::StreamExt;
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_serving_for_every_name_and_reflection_v1alpha_answers() {
    let app = spawn_app(AppOptions::default()).await;
    let mut health = HealthClient::new(channel(&app.grpc_url).await);
    for service in ["", "ingest.v1.IngestAdmin", "ingest.v1.IngestEvents"] {
        let mut status = ServingStatus::Unknown;
        for _ in 0..200 {
            status = health
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .unwrap()
                .into_inner()
                .status();
            if status == ServingStatus::Serving {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(status, ServingStatus::Serving, "service {service:?}");
    }

    // Reflection v1 is what grpcurl uses: doc_commands runs the docs' `grpcurl ... list`
    // and `describe` against the server. v1alpha is for older clients.
    use tonic_reflection::pb::v1alpha;
    let mut alpha = v1alpha::server_reflection_client::ServerReflectionClient::new(
        channel(&app.grpc_url).await,
    );
    let req = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
                "ingest.v1.IngestEvents".into(),
            ),
        ),
    };
    let mut resp = alpha
        .server_reflection_info(tokio_stream::iter([req]))
        .await
        .unwrap()
        .into_inner();
    let got = resp.next().await.unwrap().unwrap().message_response;
    assert!(
        matches!(got, Some(v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(ref f)) if !f.file_descriptor_proto.is_empty()),
        "{got:?}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_health_and_stats_answer_over_http() {
    let app = spawn_app(AppOptions {
        kafka: false,
        ..Default::default()
    })
    .await;
    app.wait_serving().await;
    let url = app.http_url.clone();
    let (code, body) = get(&format!("{url}/health")).await;
    assert_eq!(code, 200);
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "serving");
    assert_eq!(health["mongodb"], "up");
    assert_eq!(health["kafka"], "disabled");

    // Store a few events over gRPC so counters move.
    let events: Vec<_> = (0..5).map(|i| valid_event(i, &format!("m-{i}"))).collect();
    assert_eq!(app.ingest(events).await.accepted, 5);

    let (code, text) = get(&format!("{url}/metrics")).await;
    assert_eq!(code, 200);
    for name in [
        "sales_events_processed_total",
        "sales_events_per_second",
        "kafka_consumer_lag_milliseconds",
        "mongodb_writes_total",
        "event_processing_duration_seconds",
        "service_uptime_seconds",
        "mongodb_batch_size",
        "mongodb_write_duration_seconds",
        "ingest_queue_depth",
        "sales_events_rejected_total",
        "kafka_consumer_paused",
    ] {
        assert!(text.contains(&format!("# TYPE {name} ")), "{name} missing");
    }
    // Every sample line parses: name{labels} value.
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (_, value) = line.rsplit_once(' ').expect("sample has a value");
        value
            .parse::<f64>()
            .unwrap_or_else(|_| panic!("bad sample: {line}"));
    }
    assert!(text.contains(r#"sales_events_processed_total{source="grpc",status="stored"} 5"#));
    assert!(text.contains(r#"mongodb_writes_total{status="success"} 1"#));

    let (code, body) = get(&format!("{url}/stats")).await;
    assert_eq!(code, 200);
    let stats: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(stats["events_stored"], 5);
    assert_eq!(stats["grpc"]["stored"], 5);
    assert_eq!(stats["mongodb_connected"], true);
    for key in [
        "uptime_seconds",
        "events_duplicate",
        "events_rejected",
        "events_failed",
        "batches_written",
        "queue_depth",
        "events_per_second",
        "consumer_paused",
        "kafka_connected",
        "consumer_lag",
        "partitions",
    ] {
        assert!(stats.get(key).is_some(), "/stats lacks {key}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_mongodb_means_not_serving_and_503() {
    let app = spawn_app_with_unreachable_mongodb().await;
    let (code, body) = get_as_admin(&format!("{}/health", app.http_url)).await;
    assert_eq!(code, 503, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["mongodb"], "down");
    let why = health["mongodb_error"].as_str().unwrap_or_default();
    assert!(
        why.contains("ping timed out") || why.to_lowercase().contains("refused"),
        "a failed ping: {body}"
    );
    let mut client = HealthClient::new(channel(&app.grpc_url).await);
    let status = client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .status();
    assert_eq!(status, ServingStatus::NotServing);
    assert!(!app.handle.is_finished(), "no crash while MongoDB is away");
    app.shutdown.cancel();
    app.handle.await.unwrap();
}

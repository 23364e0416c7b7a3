//! The admin RPCs: tokens, Shutdown draining a stream in flight, and what happens
//! without a token.
use std::time::{Duration, Instant};

use sales_ingest::{
    proto::ingest::v1::{GetStatsRequest, IngestRequest, PauseConsumerRequest, ShutdownRequest},
    Stopped,
};
use tokio_stream::StreamExt;
use tonic::Code;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_needs_the_token_then_drains_and_the_server_exits() {
    let mut app = spawn_app(AppOptions {
        kafka: false,
        flush_interval: 30.0,
        ..Default::default()
    })
    .await;
    let mut admin = app.admin().await;
    let err = admin.shutdown(ShutdownRequest {}).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let mut wrong = tonic::Request::new(ShutdownRequest {});
    wrong
        .metadata_mut()
        .insert("authorization", "Bearer wrong".parse().unwrap());
    assert_eq!(
        admin.shutdown(wrong).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    let err = admin
        .pause_consumer(PauseConsumerRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(
        !app.handle.is_finished(),
        "still running after refused calls"
    );

    // Group commit: with a 30 s flush interval and an idle pipeline, a request is
    // written and acked at once, not when the interval runs out.
    let events: Vec<_> = (0..10).map(|i| valid_event(i, &format!("s-{i}"))).collect();
    let (mut acks, tx) = app
        .held_stream(vec![IngestRequest { seq: 1, events }])
        .await;
    let ack = tokio::time::timeout(Duration::from_secs(5), acks.next())
        .await
        .expect("acked well before FLUSH_INTERVAL")
        .expect("an ack")
        .expect("ok ack");
    assert_eq!(ack.accepted, 10);
    assert_eq!(app.stats.snapshot().batches_written, 1);

    // Work in flight: a producer keeps a second stream full while Shutdown is called.
    let producer = pump(&app.grpc_url, "sd", 200);
    producer.wait_acked(5, Duration::from_secs(30)).await;
    let asked = Instant::now();
    let resp = admin
        .shutdown(app.authed(ShutdownRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert!(resp.message.contains("shutting down"));
    let end = tokio::time::timeout(Duration::from_secs(10), acks.next())
        .await
        .expect("the stream ends")
        .expect("with a status");
    let status = end.unwrap_err();
    assert_eq!(
        status.code(),
        Code::Unavailable,
        "not half-closed: {status:?}"
    );
    assert!(status.message().contains("0 request(s)"), "{status:?}");
    drop(tx);
    assert_eq!(app.stopped().await, Stopped::Clean);
    let pumped = producer.ended(Duration::from_secs(10)).await;
    assert!(
        pumped.acks_after(asked) > 0,
        "requests in flight at the Shutdown call are drained and acked"
    );
    let code = pumped.end.as_ref().map(|s| s.code());
    assert_eq!(code, Some(Code::Unavailable), "{:?}", pumped.end);
    pumped.check_drained(&app.db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_configured_token_mutating_rpcs_are_refused_with_a_hint_and_stats_are_open() {
    let app = spawn_app(AppOptions {
        kafka: false,
        admin_token: None,
        ..Default::default()
    })
    .await;
    let mut admin = app.admin().await;
    let mut req = tonic::Request::new(ShutdownRequest {});
    req.metadata_mut()
        .insert("authorization", "Bearer anything".parse().unwrap());
    let err = admin.shutdown(req).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("ADMIN_TOKEN"), "{}", err.message());
    let stats = admin
        .get_stats(GetStatsRequest {})
        .await
        .expect("GetStats is open")
        .into_inner();
    assert!(!stats.kafka_enabled);
    assert!(stats.kafka.is_some() && stats.grpc.is_some());
    app.shutdown.cancel();
    app.handle.await.unwrap();
}

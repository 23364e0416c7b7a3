//! SeekConsumer: back to a time, forward to the end, to explicit offsets (and their
//! range check), partitions not owned, refusals.
use std::time::Duration;

use sales_ingest::proto::ingest::v1::{
    seek_consumer_request::Target, GetStatsRequest, PartitionOffsets, PauseConsumerRequest,
    ResumeConsumerRequest, SeekConsumerRequest, SeekConsumerResponse, SeekPosition,
};
use tonic::Code;

use super::*;

/// Calls SeekConsumer with the admin token.
async fn seek(
    app: &TestApp,
    target: Target,
    partitions: Vec<i32>,
) -> Result<SeekConsumerResponse, tonic::Status> {
    let req = SeekConsumerRequest {
        target: Some(target),
        partitions,
    };
    app.admin()
        .await
        .seek_consumer(app.authed(req))
        .await
        .map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seek_back_to_a_time_replays_exactly_the_later_events_as_duplicates() {
    let app = spawn_app(AppOptions::default()).await;
    create_topic(&app.topic, 2).await;
    produce(&app.topic, 2, &payloads("before", 20)).await;
    wait_committed(&app, vec![10, 10], "the first 20 committed").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let from = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(50)).await;
    produce(&app.topic, 2, &payloads("after", 10)).await;
    wait_committed(&app, vec![15, 15], "all 30 committed").await;
    assert_eq!(app.stored().await, 30);

    let resp = seek(&app, Target::Timestamp(from.to_rfc3339()), vec![])
        .await
        .expect("seek");
    let moved: Vec<_> = resp
        .partitions
        .iter()
        .map(|p| (p.partition, p.from_offset, p.to_offset))
        .collect();
    assert_eq!(moved, vec![(0, 15, 10), (1, 15, 10)]);
    assert!(resp.not_owned.is_empty());

    let stats = app.stats.clone();
    wait_until(Duration::from_secs(60), "10 duplicates", || {
        let k = stats.snapshot().kafka.unwrap_or_default();
        async move { k.duplicate >= 10 }
    })
    .await;
    wait_committed(&app, vec![15, 15], "offsets back at the log end").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        kafka_counts(&app),
        (30, 10),
        "exactly the 10 later events replayed"
    );
    assert_eq!(app.stored().await, 30, "none stored twice");
    let stats = app.stats.clone();
    wait_until(
        Duration::from_secs(10),
        "GetStats shows the log end committed",
        || {
            let committed: Vec<i64> = stats
                .snapshot()
                .partitions
                .iter()
                .map(|p| p.committed_offset)
                .collect();
            async move { committed == [15, 15] }
        },
    )
    .await;
    app.stop().await;
}

/// Explicit offsets as a seek target: `{partition: offset}`.
fn offsets(pairs: &[(i32, i64)]) -> Target {
    Target::Offsets(PartitionOffsets {
        offsets: pairs.iter().copied().collect(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seek_to_explicit_offsets_replays_from_each_and_refuses_one_outside_the_log() {
    let app = spawn_app(AppOptions::default()).await;
    create_topic(&app.topic, 2).await;
    produce(&app.topic, 2, &payloads("exp", 40)).await;
    wait_committed(&app, vec![20, 20], "all 40 committed").await;

    // One offset past partition 1's log end: refused, and nothing moves, not even
    // partition 0's valid offset.
    let err = seek(&app, offsets(&[(0, 5), (1, 21)]), vec![])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
    assert!(
        err.message()
            .contains("offset 21 of partition 1 is outside its log"),
        "{}",
        err.message()
    );
    let err = seek(&app, offsets(&[(0, -3)]), vec![]).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        kafka_counts(&app),
        (40, 0),
        "nothing replayed after refusals"
    );

    // Partition 0 back to 5, partition 1 back to 12: 15 + 8 events replayed.
    let resp = seek(&app, offsets(&[(0, 5), (1, 12)]), vec![])
        .await
        .expect("seek");
    let mut moved: Vec<_> = resp
        .partitions
        .iter()
        .map(|p| (p.partition, p.from_offset, p.to_offset))
        .collect();
    moved.sort();
    assert_eq!(moved, vec![(0, 20, 5), (1, 20, 12)]);
    let stats = app.stats.clone();
    wait_until(Duration::from_secs(60), "23 duplicates", || {
        let k = stats.snapshot().kafka.unwrap_or_default();
        async move { k.duplicate >= 23 }
    })
    .await;
    wait_committed(&app, vec![20, 20], "offsets back at the log end").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        kafka_counts(&app),
        (40, 23),
        "exactly the events after each offset replayed"
    );
    assert_eq!(app.stored().await, 40, "none stored twice");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seek_to_latest_skips_what_was_not_consumed() {
    let app = spawn_app(AppOptions::default()).await;
    create_topic(&app.topic, 1).await;
    produce(&app.topic, 1, &payloads("early", 5)).await;
    wait_committed(&app, vec![5], "the first 5 committed").await;
    let mut admin = app.admin().await;
    admin
        .pause_consumer(app.authed(PauseConsumerRequest {}))
        .await
        .unwrap();
    produce(&app.topic, 1, &payloads("skipped", 7)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let resp = seek(&app, Target::Position(SeekPosition::Latest as i32), vec![0])
        .await
        .expect("seek");
    let moved: Vec<_> = resp
        .partitions
        .iter()
        .map(|p| (p.partition, p.from_offset, p.to_offset))
        .collect();
    assert_eq!(moved, vec![(0, 5, 12)]);
    assert!(resp.not_owned.is_empty(), "{resp:?}");
    wait_committed(&app, vec![12], "the log end committed at once").await;
    admin
        .resume_consumer(app.authed(ResumeConsumerRequest {}))
        .await
        .unwrap();
    produce(&app.topic, 1, &payloads("late", 3)).await;
    wait_committed(&app, vec![15], "the later 3 consumed").await;
    assert_eq!(
        kafka_counts(&app),
        (8, 0),
        "the 7 skipped were never consumed"
    );
    assert_eq!(app.stored().await, 8);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seek_refuses_bad_requests_clearly() {
    let app = spawn_app(AppOptions::default()).await;
    create_topic(&app.topic, 1).await;
    wait_assigned(&app, 1).await;
    let err = seek(&app, Target::Timestamp("last tuesday".into()), vec![])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("RFC 3339"), "{}", err.message());
    let err = seek(&app, Target::Position(0), vec![]).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let earliest = Target::Position(SeekPosition::Earliest as i32);
    let err = seek(&app, earliest, vec![7]).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("partition 7 does not exist: topic")
            && err.message().contains("has 1 partitions"),
        "{}",
        err.message()
    );
    let unauthenticated = app
        .admin()
        .await
        .seek_consumer(SeekConsumerRequest {
            target: Some(Target::TimestampMs(0)),
            partitions: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(unauthenticated.code(), Code::Unauthenticated);
    app.stop().await;

    let app = spawn_app(AppOptions {
        kafka: false,
        ..Default::default()
    })
    .await;
    let err = seek(
        &app,
        Target::Position(SeekPosition::Earliest as i32),
        vec![],
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("KAFKA_ENABLED"), "{}", err.message());
    let stats = app
        .admin()
        .await
        .get_stats(GetStatsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(!stats.redrive_running);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seek_whose_events_cannot_become_durable_gives_up_after_the_drain_limit_and_moves_nothing(
) {
    // MongoDB refuses this service's inserts: the consumed events stay in flight.
    let mongo = crate::write_health::ReadOnlyMongo::start().await;
    let app = spawn_app(AppOptions {
        database: Some(mongo.dbname.clone()),
        extra: vec![("mongodb-url".into(), mongo.reader_url())],
        ..Default::default()
    })
    .await;
    create_topic(&app.topic, 1).await;
    wait_assigned(&app, 1).await;
    produce(&app.topic, 1, &payloads("held", 10)).await;
    let url = format!("{}/health", app.http_url);
    wait_until(Duration::from_secs(60), "writes failing", || {
        let url = url.clone();
        async move { get(&url).await.0 == 503 }
    })
    .await;

    let started = std::time::Instant::now();
    let refused = seek(
        &app,
        Target::Position(SeekPosition::Earliest as i32),
        vec![0],
    )
    .await
    .expect_err("the seek cannot drain");
    let waited = started.elapsed();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(
        refused
            .message()
            .contains("did not become durable within 30 s")
            && refused.message().contains("nothing was moved"),
        "{refused:?}"
    );
    assert!(
        waited >= Duration::from_secs(29),
        "gave up after {waited:?}"
    );

    // Once inserts succeed, the held events are stored once and committed where they
    // were: the abandoned seek moved nothing.
    mongo.grant_writes().await;
    wait_committed(&app, vec![10], "the held events committed").await;
    let stored = mongo
        .root
        .database(&mongo.dbname)
        .collection::<mongodb::bson::Document>("raw_sales")
        .count_documents(mongodb::bson::doc! {})
        .await
        .unwrap();
    assert_eq!(stored, 10);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let k = app.stats.snapshot().kafka.unwrap_or_default();
    assert_eq!((k.stored, k.duplicate), (10, 0), "nothing replayed");
    app.stop().await;
}

//! Day-two operations: SeekConsumer (replay from a time, skip to the end, partitions
//! another instance owns) and RedriveDeadLetters (from the collection and the topic,
//! twice, and as a dry run).
use std::time::Duration;

use mongodb::bson::{doc, spec::BinarySubtype, Binary, Bson, DateTime, Document};
use rdkafka::{
    message::{Header, OwnedHeaders},
    producer::{FutureProducer, FutureRecord},
    ClientConfig,
};
use sales_ingest::proto::{
    ingest::v1::{
        seek_consumer_request::Target, DeadLetterSource, GetStatsRequest, PauseConsumerRequest,
        RedriveProgress, RedriveRequest, ResumeConsumerRequest, SeekConsumerRequest,
        SeekConsumerResponse, SeekPosition,
    },
    sales::v1::SalesEvent,
};
use tokio_stream::StreamExt;
use tonic::Code;

use crate::{backends::backends, helpers::*};

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

/// Waits until the group's committed offsets are `ends`.
async fn wait_committed(app: &TestApp, ends: Vec<i64>, what: &str) {
    let (topic, group) = (app.topic.clone(), app.group.clone());
    wait_until(Duration::from_secs(60), what, || {
        let (topic, group, ends) = (topic.clone(), group.clone(), ends.clone());
        async move { committed(&topic, &group, ends.len() as i32) == ends }
    })
    .await;
}

/// Waits until this instance has `n` partitions assigned.
async fn wait_assigned(app: &TestApp, n: usize) {
    let stats = app.stats.clone();
    wait_until(Duration::from_secs(30), "partitions assigned", || {
        let got = stats.snapshot().partitions.len();
        async move { got == n }
    })
    .await;
}

/// Produces each payload as its own record batch, waiting for each delivery. (tansu
/// reports a partition's high watermark as one past the first offset of its last
/// batch, so a seek to the end is exact only over batches of one.)
async fn produce_singly(topic: &str, payloads: &[Vec<u8>]) {
    for p in payloads {
        produce(topic, 1, std::slice::from_ref(p)).await;
    }
}

fn payloads(prefix: &str, n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| encode(&valid_event(i, &format!("{prefix}-{i}"))))
        .collect()
}

/// (stored, duplicate) as the Kafka source counted them.
fn kafka_counts(app: &TestApp) -> (u64, u64) {
    let k = app.stats.snapshot().kafka.unwrap_or_default();
    (k.stored, k.duplicate)
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
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seek_to_latest_skips_what_was_not_consumed_and_reports_partitions_not_owned() {
    let app = spawn_app(AppOptions::default()).await;
    create_topic(&app.topic, 1).await;
    produce(&app.topic, 1, &payloads("early", 5)).await;
    wait_committed(&app, vec![5], "the first 5 committed").await;
    let mut admin = app.admin().await;
    admin
        .pause_consumer(app.authed(PauseConsumerRequest {}))
        .await
        .unwrap();
    produce_singly(&app.topic, &payloads("skipped", 7)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let resp = seek(
        &app,
        Target::Position(SeekPosition::Latest as i32),
        vec![0, 7],
    )
    .await
    .expect("seek");
    let moved: Vec<_> = resp
        .partitions
        .iter()
        .map(|p| (p.partition, p.from_offset, p.to_offset))
        .collect();
    assert_eq!(moved, vec![(0, 5, 12)]);
    assert_eq!(resp.not_owned, vec![7], "partition 7 is nobody's here");
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

    // A partition only another instance owns: nothing moves here.
    let resp = seek(
        &app,
        Target::Position(SeekPosition::Earliest as i32),
        vec![3],
    )
    .await
    .expect("seek");
    assert!(resp.partitions.is_empty());
    assert_eq!(resp.not_owned, vec![3]);
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

/// Calls RedriveDeadLetters and reads the stream to its end: every progress message,
/// and the last, which must say done.
async fn redrive(app: &TestApp, req: RedriveRequest) -> (Vec<RedriveProgress>, RedriveProgress) {
    let mut stream = app
        .admin()
        .await
        .redrive_dead_letters(app.authed(req))
        .await
        .expect("re-drive started")
        .into_inner();
    let mut all = Vec::new();
    while let Some(msg) = stream.next().await {
        all.push(msg.expect("progress"));
    }
    let last = all.last().cloned().expect("at least the final message");
    assert!(last.done, "the last message says done: {all:?}");
    assert_eq!(all.iter().filter(|p| p.done).count(), 1);
    (all, last)
}

fn request(source: DeadLetterSource) -> RedriveRequest {
    RedriveRequest {
        source: source as i32,
        ..Default::default()
    }
}

fn still_invalid(p: &RedriveProgress) -> Vec<(String, u64)> {
    p.still_invalid
        .iter()
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

fn counts(p: &RedriveProgress) -> (u64, u64, u64, u64) {
    (p.examined, p.stored, p.duplicates, p.skipped)
}

fn binary(bytes: Vec<u8>) -> Binary {
    Binary {
        subtype: BinarySubtype::Generic,
        bytes,
    }
}

/// A dead letter as the collection holds it, for a gRPC event.
fn grpc_letter(reason: &str, payload: Vec<u8>) -> Document {
    doc! {
        "reason": reason,
        "detail": "refused by an older rule",
        "source": "grpc",
        "payload": binary(payload),
        "dead_lettered_at": DateTime::now(),
    }
}

/// An event that is valid under the current rules.
fn now_valid(id: &str) -> Vec<u8> {
    encode(&valid_event(1, id))
}

/// An event the current rules refuse (qty 0).
fn still_refused(id: &str) -> Vec<u8> {
    encode(&SalesEvent {
        qty: 0,
        ..valid_event(2, id)
    })
}

/// Dead letters in the collection: 3 valid now (one of them already stored), one from
/// Kafka without an event id, 2 still invalid, one re-driven earlier.
async fn seed_collection(app: &TestApp, kafka_topic: &str) {
    app.ingest(vec![valid_event(0, "r-dup")]).await;
    let mut kafka = grpc_letter("invalid_ts", now_valid(""));
    kafka.insert("source", "kafka");
    kafka.insert("source_topic", kafka_topic);
    kafka.insert("source_partition", 2);
    kafka.insert("source_offset", 41_i64);
    kafka.insert("dlq_topic_error", "the topic refused it");
    let mut earlier = grpc_letter("invalid_ts", now_valid("r-earlier"));
    earlier.insert("redriven_at", DateTime::now());
    let letters = vec![
        grpc_letter("invalid_ts", now_valid("r-0")),
        grpc_letter("reserved_event_id", now_valid("r-1")),
        grpc_letter("invalid_ts", now_valid("r-dup")),
        kafka,
        grpc_letter("invalid_qty", still_refused("r-bad")),
        grpc_letter("malformed", vec![0xff, 0xff, 0xff]),
        earlier,
    ];
    app.db
        .collection::<Document>("raw_sales_dlq")
        .insert_many(letters)
        .await
        .unwrap();
}

async fn marked(app: &TestApp) -> u64 {
    app.db
        .collection::<Document>("raw_sales_dlq")
        .count_documents(doc! { "redriven_at": { "$exists": true } })
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redrive_from_the_collection_stores_the_now_valid_ones_once_and_marks_them() {
    let app = spawn_app(AppOptions {
        kafka: false,
        ..Default::default()
    })
    .await;
    seed_collection(&app, "sales_old").await;
    let still = vec![("invalid_qty".to_string(), 1), ("malformed".to_string(), 1)];

    // A dry run counts and writes nothing.
    let (_, dry) = redrive(
        &app,
        RedriveRequest {
            dry_run: true,
            ..request(DeadLetterSource::Mongodb)
        },
    )
    .await;
    assert_eq!(counts(&dry), (6, 3, 1, 1), "{dry:?}");
    assert_eq!(still_invalid(&dry), still);
    assert_eq!(app.stored().await, 1, "only the event stored before");
    assert_eq!(marked(&app).await, 1, "nothing marked by a dry run");

    let (_, run) = redrive(&app, request(DeadLetterSource::All)).await;
    assert_eq!(counts(&run), (6, 3, 1, 1), "{run:?}");
    assert_eq!(still_invalid(&run), still);
    assert_eq!(app.stored().await, 4);
    let events = app.db.collection::<Document>("raw_sales");
    let kafka = events
        .find_one(doc! { "_id": "sales_old:2:41" })
        .await
        .unwrap()
        .expect("the Kafka event is stored under its original coordinates");
    assert_eq!(kafka.get_str("source").unwrap(), "kafka");
    for id in ["r-0", "r-1"] {
        let d = events.find_one(doc! { "_id": id }).await.unwrap();
        assert_eq!(d.unwrap().get_str("source").unwrap(), "grpc");
    }
    assert_eq!(marked(&app).await, 5, "the 4 re-driven and the earlier one");

    // Again: the re-driven ones are skipped, the still invalid ones examined again.
    let (_, again) = redrive(&app, request(DeadLetterSource::Mongodb)).await;
    assert_eq!(counts(&again), (2, 0, 0, 5), "{again:?}");
    assert_eq!(still_invalid(&again), still);
    assert_eq!(app.stored().await, 4, "nothing stored twice");
    let stats = app.stats.snapshot();
    assert!(!stats.redrive_running);
    assert_eq!((stats.redrive_examined, stats.redrive_stored), (2, 0));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redrive_filters_by_reason_time_and_limit_and_refuses_bad_requests() {
    let app = spawn_app(AppOptions {
        kafka: false,
        ..Default::default()
    })
    .await;
    seed_collection(&app, "sales_old").await;
    let (_, only_ts) = redrive(
        &app,
        RedriveRequest {
            reasons: vec!["invalid_ts".into()],
            dry_run: true,
            ..request(DeadLetterSource::Mongodb)
        },
    )
    .await;
    assert_eq!(counts(&only_ts), (3, 2, 1, 1), "{only_ts:?}");
    let (_, future) = redrive(
        &app,
        RedriveRequest {
            since: (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339(),
            ..request(DeadLetterSource::Mongodb)
        },
    )
    .await;
    assert_eq!(counts(&future), (0, 0, 0, 0));
    let (_, limited) = redrive(
        &app,
        RedriveRequest {
            limit: 2,
            ..request(DeadLetterSource::Mongodb)
        },
    )
    .await;
    assert_eq!(limited.examined, 2);
    assert_eq!(
        app.stored().await,
        3,
        "r-dup before, and the first two letters"
    );

    let mut admin = app.admin().await;
    for (bad, code) in [
        (
            request(DeadLetterSource::Unspecified),
            Code::InvalidArgument,
        ),
        (
            RedriveRequest {
                until: "tomorrow".into(),
                ..request(DeadLetterSource::Mongodb)
            },
            Code::InvalidArgument,
        ),
        (
            RedriveRequest {
                reasons: vec!["bogus".into()],
                ..request(DeadLetterSource::Mongodb)
            },
            Code::InvalidArgument,
        ),
        (request(DeadLetterSource::Kafka), Code::FailedPrecondition),
    ] {
        let err = admin
            .redrive_dead_letters(app.authed(bad))
            .await
            .map(|_| ())
            .unwrap_err();
        assert_eq!(err.code(), code, "{}", err.message());
    }
    let err = admin
        .redrive_dead_letters(request(DeadLetterSource::Mongodb))
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    app.stop().await;
}

/// Produces a dead letter to `topic` as the service does: the payload and the headers.
async fn produce_letter(topic: &str, payload: &[u8], headers: &[(&str, String)]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &backends().kafka)
        .set("message.timeout.ms", "30000")
        .create()
        .expect("producer");
    let mut h = OwnedHeaders::new();
    for (k, v) in headers {
        h = h.insert(Header {
            key: k,
            value: Some(v.as_str()),
        });
    }
    producer
        .send(
            FutureRecord::<(), [u8]>::to(topic)
                .payload(payload)
                .headers(h),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)
        .expect("delivered");
}

fn kafka_headers(reason: &str, topic: &str, offset: i64) -> Vec<(&'static str, String)> {
    vec![
        ("reason", reason.to_string()),
        ("detail", "refused by an older rule".into()),
        ("source_topic", topic.to_string()),
        ("source_partition", "0".into()),
        ("source_offset", offset.to_string()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redrive_from_the_topic_stores_the_now_valid_ones_under_their_original_ids() {
    let app = spawn_app(AppOptions::default()).await;
    create_topic(&app.topic, 1).await;
    let dlq = format!("{}.dlq", app.topic);
    create_topic(&dlq, 1).await;
    // One record at a time: each its own batch (see produce_singly).
    let letters: Vec<(Vec<u8>, &str)> = vec![
        (now_valid("t-0"), "invalid_ts"),
        (now_valid("t-1"), "reserved_event_id"),
        (now_valid(""), "invalid_ts"),
        (still_refused("t-bad"), "invalid_qty"),
        (now_valid("t-other"), "missing_sku"),
    ];
    for (offset, (payload, reason)) in letters.iter().enumerate() {
        produce_letter(
            &dlq,
            payload,
            &kafka_headers(reason, &app.topic, offset as i64),
        )
        .await;
    }
    let reasons = || {
        vec![
            "invalid_ts".into(),
            "reserved_event_id".into(),
            "invalid_qty".into(),
        ]
    };
    let (_, dry) = redrive(
        &app,
        RedriveRequest {
            reasons: reasons(),
            dry_run: true,
            ..request(DeadLetterSource::Kafka)
        },
    )
    .await;
    assert_eq!(counts(&dry), (4, 3, 0, 0), "{dry:?}");
    assert_eq!(app.stored().await, 0, "a dry run writes nothing");

    let (_, run) = redrive(
        &app,
        RedriveRequest {
            reasons: reasons(),
            ..request(DeadLetterSource::Kafka)
        },
    )
    .await;
    assert_eq!(counts(&run), (4, 3, 0, 0), "{run:?}");
    assert_eq!(still_invalid(&run), vec![("invalid_qty".to_string(), 1)]);
    assert_eq!(app.stored().await, 3);
    let coordinates = format!("{}:0:2", app.topic);
    let stored = app
        .db
        .collection::<Document>("raw_sales")
        .find_one(doc! { "_id": &coordinates })
        .await
        .unwrap()
        .expect("stored under its original coordinates");
    assert_eq!(stored.get_str("source").unwrap(), "kafka");

    // Again: the topic is read again and every valid one is a duplicate.
    let (_, again) = redrive(
        &app,
        RedriveRequest {
            reasons: reasons(),
            ..request(DeadLetterSource::All)
        },
    )
    .await;
    assert_eq!(counts(&again), (4, 0, 3, 0), "{again:?}");
    assert_eq!(app.stored().await, 3, "nothing stored twice");
    assert_eq!(
        committed(&dlq, &app.group, 1),
        vec![-1],
        "the main group never reads the dead-letter topic"
    );
    assert!(matches!(
        app.db
            .collection::<Document>("raw_sales")
            .find_one(doc! { "_id": "t-0" })
            .await
            .unwrap()
            .and_then(|d| d.get("ts").cloned()),
        Some(Bson::DateTime(_))
    ));
    app.stop().await;
}

//! RedriveDeadLetters from the collection and from the topic: what is stored, under
//! which id, what a second run and a dry run do, filters and refusals.
use std::time::Duration;

use mongodb::bson::{doc, Bson, Document};
use rdkafka::{
    message::{Header, OwnedHeaders},
    producer::{FutureProducer, FutureRecord},
    ClientConfig,
};
use sales_ingest::proto::ingest::v1::{DeadLetterSource, RedriveProgress, RedriveRequest};
use tokio_stream::StreamExt;
use tonic::Code;

use super::*;
use crate::{
    backends::backends,
    status_page::{attr, rendered_dom, text},
};

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
    // The status page shows the last run's figures.
    let dom = rendered_dom(&format!("{}/", app.http_url)).await;
    assert_eq!(attr(&dom, "redrive-state", "data-state"), "idle");
    assert_eq!(
        text(&dom, "redrive-figures"),
        "last run: 2 examined, 0 stored"
    );
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

/// In upsert mode a re-drive stores what was never stored and nothing else: a dead
/// letter whose id has since been stored by a correction is a duplicate, in the dry run
/// and in the real run, and the correction stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_upsert_mode_a_redrive_never_overwrites_a_later_correction() {
    let database = unique("redrive_upsert");
    let options = |naive: &str| AppOptions {
        kafka: false,
        database: Some(database.clone()),
        extra: vec![
            ("write-mode".into(), "upsert".into()),
            ("naive-ts".into(), naive.into()),
        ],
        ..Default::default()
    };
    let app = spawn_app(options("reject")).await;
    app.wait_serving().await;
    let naive = SalesEvent {
        qty: 1,
        ts: "2026-11-25 10:00:00".into(),
        ..valid_event(0, "rd-x")
    };
    let ack = app.ingest(vec![naive]).await;
    assert_eq!(ack.rejected.len(), 1, "{ack:?}");
    let corrected = SalesEvent {
        qty: 2,
        ..valid_event(0, "rd-x")
    };
    let ack = app.ingest(vec![corrected]).await;
    assert_eq!(ack.accepted, 1, "{ack:?}");
    app.stop().await;

    // Naive timestamps are now read as UTC, so the dead letter would pass validation.
    let app = spawn_app(options("utc")).await;
    app.wait_serving().await;
    let (_, dry) = redrive(
        &app,
        RedriveRequest {
            dry_run: true,
            ..request(DeadLetterSource::Mongodb)
        },
    )
    .await;
    let (_, run) = redrive(&app, request(DeadLetterSource::Mongodb)).await;
    for p in [&dry, &run] {
        assert_eq!((counts(p), p.updated), ((1, 0, 1, 0), 0), "{p:?}");
    }
    let d = app
        .db
        .collection::<Document>("raw_sales")
        .find_one(doc! { "_id": "rd-x" })
        .await
        .unwrap()
        .expect("stored");
    assert_eq!(d.get_i32("qty").unwrap(), 2, "the correction stays");
    app.stop().await;
}

//! Promises under faults the happy path never stages: a dead letter the topic refuses,
//! clients that hold streams open, ids that could collide, unique indexes, malformed
//! strings inside one event, and what each does to health, acks and offsets.
use std::time::{Duration, Instant};

use futures::StreamExt;
use mongodb::{
    bson::{doc, Document},
    options::IndexOptions,
    IndexModel,
};
use prost::Message;
use rdkafka::{
    producer::{FutureProducer, FutureRecord},
    ClientConfig,
};
use sales_ingest::{
    grpc::wire::RawIngestRequest,
    proto::{
        ingest::v1::{IngestAck, IngestRequest},
        sales::v1::SalesEvent,
    },
};
use tonic::Code;
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};

use crate::helpers::*;

/// A gRPC-only server (KAFKA_ENABLED=false), serving.
async fn grpc_only() -> TestApp {
    let app = spawn_app(AppOptions {
        kafka: false,
        ..Default::default()
    })
    .await;
    app.wait_serving().await;
    app
}

/// Produces one record of `bytes` bytes, over the dead-letter producer's 1,000,000-byte
/// message limit (the test producer's limit is raised for it).
async fn produce_oversized(topic: &str, bytes: usize) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &crate::backends::backends().kafka)
        .set("message.max.bytes", "2000000")
        .create()
        .expect("producer");
    let payload = vec![0xffu8; bytes];
    producer
        .send(
            FutureRecord::<(), [u8]>::to(topic)
                .payload(&payload)
                .partition(0),
            Duration::from_secs(30),
        )
        .await
        .expect("oversized record accepted by the broker");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_the_topic_refuses_falls_back_to_the_collection_and_offsets_advance() {
    let app = spawn_app(AppOptions::default()).await;
    create_topic(&app.topic, 1).await;
    app.wait_serving().await;
    // Offset 0: too big for the dead-letter producer; then 300 invalid events and 100
    // valid ones.
    produce_oversized(&app.topic, 1_040_000).await;
    let mut payloads: Vec<Vec<u8>> = (0..300)
        .map(|i| {
            encode(&SalesEvent {
                qty: -1,
                ..valid_event(i, &format!("bad-{i}"))
            })
        })
        .collect();
    payloads.extend((0..100).map(|i| encode(&valid_event(i, &format!("ok-{i}")))));
    let started = Instant::now();
    produce(&app.topic, 1, &payloads).await;
    let (topic, group) = (app.topic.clone(), app.group.clone());
    wait_until(
        Duration::from_secs(60),
        "offset committed past all 401",
        || {
            let (topic, group) = (topic.clone(), group.clone());
            async move { committed(&topic, &group, 1) == vec![401] }
        },
    )
    .await;
    let took = started.elapsed();
    assert_eq!(app.stored().await, 100);
    eprintln!(
        "RELIABILITY dlq-refused: sent=401 stored=100 dead_lettered=301 lost=0 committed_to_end={:.1}s",
        took.as_secs_f64()
    );
    let letters = app
        .db
        .collection::<Document>("raw_sales_dlq")
        .find_one(doc! { "source_offset": 0i64 })
        .await
        .unwrap()
        .expect("the oversized record is in the dead-letter collection");
    assert_eq!(letters.get_str("reason").unwrap(), "malformed");
    assert_eq!(letters.get_str("source_topic").unwrap(), app.topic);
    let refusal = letters.get_str("dlq_topic_error").unwrap();
    assert!(refusal.to_lowercase().contains("size"), "{refusal}");
    let payload = letters.get_binary_generic("payload").unwrap();
    assert_eq!(payload.len(), 1_040_000, "the bytes received are kept");
    let s = app.stats.snapshot();
    assert_eq!(s.kafka.unwrap().rejected, 301);
    let (code, body) = get(&format!("{}/health", app.http_url)).await;
    assert_eq!(code, 200, "{body}");
    let (_, metrics) = get(&format!("{}/metrics", app.http_url)).await;
    assert!(
        metrics.contains(r#"dead_letters_total{destination="mongodb"} 1"#),
        "one letter in the collection"
    );
    assert!(metrics.contains(r#"dead_letters_total{destination="kafka"} 300"#));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_health_watcher_and_a_producer_that_never_reads_acks_cannot_hold_shutdown() {
    let app = grpc_only().await;
    let mut health = HealthClient::new(channel(&app.grpc_url).await);
    let mut watch = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(watch.next().await.is_some(), "first status");
    // A producer that sends requests and never reads its acks.
    let (tx, rx) = tokio::sync::mpsc::channel(1000);
    for seq in 0..200 {
        let events = (0..50)
            .map(|i| valid_event(i, &format!("w-{seq}-{i}")))
            .collect();
        tx.send(IngestRequest { seq, events }).await.unwrap();
    }
    let _acks = app
        .events()
        .await
        .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = Instant::now();
    app.stop().await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(8), "stopped cleanly in {took:?}");
    eprintln!(
        "RELIABILITY held-streams-at-shutdown: watch=1 unread_acks_producer=1 stopped={:.1}s",
        took.as_secs_f64()
    );
    drop(tx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_ids_cannot_take_a_kafka_coordinate_id_and_blank_ids_are_absent() {
    let app = spawn_app(AppOptions::default()).await;
    create_topic(&app.topic, 1).await;
    app.wait_serving().await;
    let forged = SalesEvent {
        event_id: format!("{}:0:0", app.topic),
        ..valid_event(1, "")
    };
    let blank = SalesEvent {
        event_id: "   ".into(),
        ..valid_event(2, "")
    };
    let ack = app.ingest(vec![forged, blank]).await;
    assert_eq!(ack.accepted, 1, "{ack:?}");
    assert_eq!(ack.rejected.len(), 1);
    assert_eq!(ack.rejected[0].reason, "reserved_event_id");
    // The real Kafka event at partition 0, offset 0 is stored with its own values.
    let real = SalesEvent {
        qty: 7,
        ..valid_event(3, "")
    };
    produce(&app.topic, 1, &[encode(&real)]).await;
    let stats = app.stats.clone();
    wait_until(Duration::from_secs(90), "the Kafka event stored", || {
        let s = stats.snapshot();
        async move { s.kafka.unwrap().stored == 1 }
    })
    .await;
    let coll = app.db.collection::<Document>("raw_sales");
    let id = format!("{}:0:0", app.topic);
    let d = coll.find_one(doc! { "_id": &id }).await.unwrap().unwrap();
    assert_eq!(d.get_i32("qty").unwrap(), 7);
    let blank_doc = coll
        .find_one(doc! { "source": "grpc" })
        .await
        .unwrap()
        .unwrap();
    assert_ne!(blank_doc.get_str("_id").unwrap().trim(), "", "generated id");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unique_index_on_another_field_refuses_for_good_and_is_never_a_duplicate() {
    let app = grpc_only().await;
    let coll = app.db.collection::<Document>("raw_sales");
    // Not `{sku: 1}` alone: the service made that key pattern (`sku_1`) at start-up, and
    // MongoDB-protocol servers that refuse a second index on one key pattern exist.
    coll.create_index(
        IndexModel::builder()
            .keys(doc! { "sku": 1, "qty": 1 })
            .options(
                IndexOptions::builder()
                    .unique(true)
                    .name("sku_unique".to_string())
                    .build(),
            )
            .build(),
    )
    .await
    .unwrap();
    let first = SalesEvent {
        sku: "ONE".into(),
        ..valid_event(1, "u-1")
    };
    assert_eq!(app.ingest(vec![first.clone()]).await.accepted, 1);
    let same_sku = SalesEvent {
        event_id: "u-2".into(),
        ..first.clone()
    };
    let ack = app.ingest(vec![same_sku, first]).await;
    assert_eq!((ack.accepted, ack.duplicates), (0, 1), "{ack:?}");
    assert_eq!(ack.rejected.len(), 1);
    assert_eq!(ack.rejected[0].reason, "write_failed");
    // The index by name where the server names it (MongoDB, secantusd-rs); FerretDB
    // names none, and the service found no document with the event's _id.
    let detail = &ack.rejected[0].detail;
    assert!(
        detail.contains("unique index sku_unique refused")
            || detail.contains("a unique index refused the document; no document has its _id"),
        "{ack:?}"
    );
    let letter = app
        .db
        .collection::<Document>("raw_sales_dlq")
        .find_one(doc! {})
        .await
        .unwrap()
        .expect("dead letter");
    let sent = SalesEvent::decode(letter.get_binary_generic("payload").unwrap().as_slice());
    assert_eq!(sent.unwrap().event_id, "u-2", "the bytes received");
    let s = app.stats.snapshot();
    assert_eq!((s.events_failed, s.events_duplicate), (1, 1));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_streams_expire_so_a_real_producer_gets_in() {
    let app = spawn_app(AppOptions {
        kafka: false,
        extra: vec![
            ("grpc-max-streams".into(), "2".into()),
            ("grpc-stream-idle-timeout".into(), "1".into()),
        ],
        ..Default::default()
    })
    .await;
    app.wait_serving().await;
    let mut idle = Vec::new();
    let mut senders = Vec::new();
    for _ in 0..2 {
        let (tx, rx) = tokio::sync::mpsc::channel::<IngestRequest>(1);
        let stream = app
            .events()
            .await
            .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        idle.push(stream);
        senders.push(tx);
    }
    let (_tx, rx) = tokio::sync::mpsc::channel::<IngestRequest>(1);
    let refused = app
        .events()
        .await
        .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    for mut stream in idle {
        let end = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("closed by the server")
            .expect("a status");
        let status = end.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable);
        assert!(
            status.message().contains("GRPC_STREAM_IDLE_TIMEOUT"),
            "{status:?}"
        );
    }
    let ack = app.ingest(vec![valid_event(1, "after-idle")]).await;
    assert_eq!(ack.accepted, 1);
    drop(senders);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_in_one_event_is_one_malformed_rejection() {
    let app = grpc_only().await;
    let good = encode(&valid_event(1, "utf-ok"));
    let bad = vec![0x0a, 0x02, 0xff, 0xfe]; // sku = two bytes that are not UTF-8
    let request = RawIngestRequest {
        seq: 5,
        events: vec![good.into(), bad.clone().into()],
    };
    let mut grpc = tonic::client::Grpc::new(channel(&app.grpc_url).await);
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<RawIngestRequest, IngestAck>::default();
    let path = "/ingest.v1.IngestEvents/Stream".parse().unwrap();
    let mut acks = grpc
        .streaming(
            tonic::Request::new(futures::stream::iter([request])),
            path,
            codec,
        )
        .await
        .unwrap()
        .into_inner();
    let ack = acks.next().await.unwrap().unwrap();
    assert_eq!((ack.seq, ack.accepted), (5, 1), "{ack:?}");
    assert_eq!(ack.rejected[0].index, 1);
    assert_eq!(ack.rejected[0].reason, "malformed");
    let letter = app
        .db
        .collection::<Document>("raw_sales_dlq")
        .find_one(doc! {})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(letter.get_binary_generic("payload").unwrap(), &bad);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_without_an_ack_is_told_so_at_shutdown() {
    let app = grpc_only().await;
    let (tx, rx) = tokio::sync::mpsc::channel(10_000);
    let mut acks = app
        .events()
        .await
        .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    // Keep sending while the server shuts down.
    let sender = tokio::spawn(async move {
        let mut seq = 0u64;
        loop {
            let events = (0..20)
                .map(|i| valid_event(i, &format!("s-{seq}-{i}")))
                .collect();
            if tx.send(IngestRequest { seq, events }).await.is_err() {
                return seq;
            }
            seq += 1;
            if seq.is_multiple_of(50) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    app.shutdown.cancel();
    let mut acked = 0u64;
    let end = loop {
        match tokio::time::timeout(Duration::from_secs(20), acks.next())
            .await
            .expect("the stream ends")
        {
            Some(Ok(ack)) => {
                assert_eq!(ack.seq, acked, "acks in order");
                assert_eq!(ack.accepted, 20);
                acked += 1;
            }
            Some(Err(status)) => break Some(status),
            None => break None,
        }
    };
    sender.abort();
    assert!(acked > 0);
    let status = end.expect("requests were still arriving: the stream must not end OK");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("resent"), "{status:?}");
    // Every acked event is stored; of the request cut off by the shutdown some events
    // may be stored too (its resend finds them as duplicates).
    let stored = app.stored().await;
    assert!(
        (acked * 20..acked * 20 + 20).contains(&stored),
        "{stored} stored, {acked} requests acked"
    );
    let _ = app.handle.await;
}

//! Hostile input and gRPC limits: garbage mixed into real traffic, oversize and
//! overlong requests, too many streams, and a producer faster than MongoDB.
use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use mongodb::bson::{doc, Document};
use prost::Message;
use rand::{rngs::StdRng, Rng, SeedableRng};
use sales_ingest::proto::{
    ingest::v1::{ingest_events_client::IngestEventsClient, IngestRequest},
    sales::v1::SalesEvent,
};
use tokio_stream::StreamExt;
use tonic::Code;

use crate::{backends::serving_grpc_server, faults::count, helpers::*};

/// The one rule a decoded event breaks, judged by this test from its fields (never by
/// the validator): None unless exactly one rule is broken and the timestamp is still
/// the valid one it was built with, so the answer cannot depend on the order in which
/// the validator checks.
fn broken_rule(e: &SalesEvent) -> Option<&'static str> {
    if e.ts != valid_event(0, "").ts || e.event_id.contains(':') {
        return None;
    }
    let broken: Vec<&'static str> = [
        (e.sku.trim().is_empty(), "missing_sku"),
        (e.sku.chars().count() > 64, "sku_too_long"),
        (!(1..=1_000_000).contains(&e.qty), "invalid_qty"),
        (
            !(e.price.is_finite() && (0.0..=1e9).contains(&e.price)),
            "invalid_price",
        ),
        (e.event_id.chars().count() > 128, "event_id_too_long"),
    ]
    .into_iter()
    .filter_map(|(broken, reason)| broken.then_some(reason))
    .collect();
    (broken.len() == 1).then(|| broken[0])
}

/// Whether the service reads `bytes` as bare Protobuf: not framed (first byte 0), not
/// JSON (first byte past JSON blanks `{`).
fn read_as_protobuf(bytes: &[u8]) -> bool {
    let first = bytes.iter().find(|b| !b" \t\r\n".contains(b));
    bytes.first() != Some(&0) && first != Some(&b'{') && !bytes.starts_with(b"\xef\xbb\xbf")
}

/// Bytes the service must reject and the reason this test expects: random garbage or
/// a valid event with bytes flipped or cut, kept when they are not Protobuf at all
/// (`malformed`) or decode to an event that breaks exactly one rule.
fn garbage(rng: &mut StdRng, i: usize) -> (Vec<u8>, &'static str) {
    loop {
        let bytes = if rng.random_bool(0.5) {
            let n = rng.random_range(1..200);
            (0..n).map(|_| rng.random()).collect::<Vec<u8>>()
        } else {
            let mut b = encode(&valid_event(i, &format!("h-bad-{i}")));
            for _ in 0..rng.random_range(1..6) {
                let at = rng.random_range(0..b.len());
                b[at] = rng.random();
            }
            let keep = rng.random_range(1..=b.len());
            b.truncate(keep);
            b
        };
        if !read_as_protobuf(&bytes) {
            continue;
        }
        match SalesEvent::decode(bytes.as_slice()) {
            Err(_) => return (bytes, "malformed"),
            Ok(e) => {
                if let Some(reason) = broken_rule(&e) {
                    return (bytes, reason);
                }
            }
        }
    }
}

/// A decoded event with one hostile field, and the reason the rules give for it.
fn hostile_event(rng: &mut StdRng, i: usize) -> (SalesEvent, &'static str) {
    let mut e = valid_event(i, &format!("hg-bad-{i}"));
    let reason = match rng.random_range(0..6) {
        0 => {
            // 7 characters, 20 times: over MAX_SKU_CHARS (64).
            e.sku = "\u{0}\u{1b}[31m💥".repeat(20);
            "sku_too_long"
        }
        1 => {
            e.qty = rng.random_range(i32::MIN..=0);
            "invalid_qty"
        }
        2 => {
            e.price = [f64::NAN, f64::INFINITY, -1.0, 1e300][rng.random_range(0..4)];
            "invalid_price"
        }
        3 => {
            e.ts = "2026-02-30T25:61:00Z".into();
            "invalid_ts"
        }
        4 => {
            e.sku = String::new();
            "missing_sku"
        }
        _ => {
            e.event_id = "x".repeat(500);
            "event_id_too_long"
        }
    };
    (e, reason)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_mixed_into_kafka_and_grpc_is_dead_lettered_once_and_valid_events_stored() {
    const VALID: usize = 20_000;
    const BAD: usize = 10_000;
    const PARTITIONS: i32 = 3;
    let mut rng = StdRng::seed_from_u64(7);
    let app = spawn_app(AppOptions::default()).await;
    create_topic(&app.topic, PARTITIONS).await;
    let mut payloads = Vec::new();
    let mut reasons = Vec::new();
    let (mut v, mut b) = (0, 0);
    while v < VALID || b < BAD {
        if b < BAD && (v == VALID || rng.random_ratio(1, 3)) {
            let (bytes, reason) = garbage(&mut rng, b);
            payloads.push(bytes);
            reasons.push(Some(reason));
            b += 1;
        } else {
            payloads.push(encode(&valid_event(v, &format!("h-{v}"))));
            reasons.push(None);
            v += 1;
        }
    }
    produce(&app.topic, PARTITIONS, &payloads).await;

    // gRPC: 20 requests of 100 events, a fifth of them hostile.
    let mut requests = Vec::new();
    let mut grpc_bad = Vec::new();
    let mut grpc_events = Vec::new();
    for seq in 0..20u64 {
        let mut events = Vec::new();
        let mut bad = Vec::new();
        for i in 0..100usize {
            if rng.random_ratio(1, 5) {
                let (e, reason) = hostile_event(&mut rng, seq as usize * 100 + i);
                grpc_events.push((e.clone(), reason));
                events.push(e);
                bad.push((i as u32, reason));
            } else {
                events.push(valid_event(i, &format!("hg-{seq}-{i}")));
            }
        }
        grpc_bad.push(bad);
        requests.push(IngestRequest { seq, events });
    }
    let mut client = app.events().await;
    let mut acks = client
        .stream(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let mut grpc_valid = 0;
    while let Some(ack) = acks.next().await {
        let ack = ack.unwrap();
        let got: Vec<(u32, &str)> = ack
            .rejected
            .iter()
            .map(|r| (r.index, r.reason.as_str()))
            .collect();
        assert_eq!(got, grpc_bad[ack.seq as usize], "request {}", ack.seq);
        grpc_valid += ack.accepted as usize;
    }

    let stats = app.stats.clone();
    wait_until(
        Duration::from_secs(120),
        "all Kafka messages resolved",
        || {
            let s = stats.snapshot();
            async move {
                s.kafka.unwrap().stored as usize == VALID
                    && s.kafka.unwrap().rejected as usize == BAD
            }
        },
    )
    .await;
    // Every letter the topic holds is read: exactly one per bad message.
    let dlq = consume_all(&format!("{}.dlq", app.topic), Duration::from_secs(60)).await;
    assert_eq!(dlq.len(), BAD, "one letter per bad message");
    let mut seen = HashSet::new();
    for (payload, h) in &dlq {
        let (p, o): (usize, usize) = (
            h["source_partition"].parse().unwrap(),
            h["source_offset"].parse().unwrap(),
        );
        assert!(seen.insert((p, o)), "dead-lettered once: {p}/{o}");
        let i = o * PARTITIONS as usize + p;
        assert_eq!(&payloads[i], payload);
        assert_eq!(
            Some(h["reason"].as_str()),
            reasons[i],
            "reason of message {i}"
        );
    }
    assert_eq!(seen.len(), BAD);
    // Every gRPC letter in the collection, each the bytes of one hostile event.
    let mut letters = app
        .db
        .collection::<Document>("raw_sales_dlq")
        .find(doc! { "source": "grpc" })
        .await
        .unwrap();
    let mut got = Vec::new();
    while let Some(letter) = letters.next().await {
        let letter = letter.unwrap();
        let bytes = letter.get_binary_generic("payload").unwrap();
        let event = SalesEvent::decode(bytes.as_slice()).expect("the bytes received");
        got.push((event, letter.get_str("reason").unwrap().to_string()));
    }
    let mut got: Vec<String> = got.iter().map(|(e, r)| format!("{e:?} {r}")).collect();
    let mut want: Vec<String> = grpc_events
        .iter()
        .map(|(e, r)| format!("{e:?} {r}"))
        .collect();
    got.sort();
    want.sort();
    assert_eq!(got, want, "each hostile gRPC event dead-lettered once");
    assert_eq!(app.stored().await as usize, VALID + grpc_valid);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_limits_are_enforced_with_resource_exhausted() {
    let app = spawn_app(AppOptions {
        kafka: false,
        extra: vec![
            ("grpc-max-message-bytes".into(), "65536".into()),
            ("grpc-max-events-per-request".into(), "100".into()),
            ("grpc-max-streams".into(), "2".into()),
        ],
        ..Default::default()
    })
    .await;
    let mut client = app.events().await;

    // Oversize message.
    let big = SalesEvent {
        sku: "x".repeat(100_000),
        ..valid_event(0, "big")
    };
    let req = IngestRequest {
        seq: 1,
        events: vec![big],
    };
    assert!(req.encoded_len() > 65_536);
    let mut acks = client
        .stream(tokio_stream::iter([req]))
        .await
        .unwrap()
        .into_inner();
    let err = acks.next().await.expect("an answer").expect_err("refused");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("GRPC_MAX_MESSAGE_BYTES"));

    // Too many events in one request; the requests before it are still acked.
    let ok = IngestRequest {
        seq: 1,
        events: (0..100)
            .map(|i| valid_event(i, &format!("l-{i}")))
            .collect(),
    };
    let over = IngestRequest {
        seq: 2,
        events: (0..101)
            .map(|i| valid_event(i, &format!("m-{i}")))
            .collect(),
    };
    let mut acks = client
        .stream(tokio_stream::iter([ok, over]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(acks.next().await.unwrap().unwrap().accepted, 100);
    let err = acks.next().await.unwrap().expect_err("refused");
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(err.message().contains("GRPC_MAX_EVENTS_PER_REQUEST"));

    // Concurrent streams: two are allowed, the third is refused, a slot frees on close.
    let (tx1, rx1) = tokio::sync::mpsc::channel::<IngestRequest>(1);
    let (tx2, rx2) = tokio::sync::mpsc::channel::<IngestRequest>(1);
    let mut c1 = app.events().await;
    let mut c2 = app.events().await;
    let s1 = c1
        .stream(tokio_stream::wrappers::ReceiverStream::new(rx1))
        .await
        .unwrap();
    let _s2 = c2
        .stream(tokio_stream::wrappers::ReceiverStream::new(rx2))
        .await
        .unwrap();
    let mut c3 = app.events().await;
    let third = c3
        .stream(tokio_stream::iter(Vec::<IngestRequest>::new()))
        .await;
    let err = match third {
        Err(e) => e,
        Ok(resp) => resp
            .into_inner()
            .next()
            .await
            .expect("answer")
            .expect_err("refused"),
    };
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    drop(tx1);
    let mut s1 = s1.into_inner();
    assert!(s1.next().await.is_none(), "first stream ends");
    let mut fourth = None;
    for _ in 0..50 {
        let req = IngestRequest {
            seq: 9,
            events: vec![valid_event(1, "after")],
        };
        match c3.stream(tokio_stream::iter([req])).await {
            Ok(resp) => {
                if let Some(Ok(ack)) = resp.into_inner().next().await {
                    fourth = Some(ack);
                    break;
                }
            }
            Err(e) => assert_eq!(e.code(), Code::ResourceExhausted),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(fourth.expect("a freed slot is usable").accepted, 1);
    drop(tx2);
    app.stop().await;
}

/// Resident memory bound for the debug build streaming 1,000,000 events through
/// 4 streams with default limits: the pipeline queue (10,000 events), 4 batches in
/// flight and one request per stream being read, plus the runtime and drivers.
const RSS_BOUND_MIB: u64 = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_faster_than_mongodb_is_slowed_and_memory_stays_bounded() {
    const STREAMS: u64 = 4;
    const REQUESTS: u64 = 250;
    const PER_REQUEST: usize = 1_000;
    let (server, dbname) = serving_grpc_server("pressure", &[("BATCH_SIZE", "1000".into())]).await;
    let idle = server.memory().unwrap().rss_kib;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for s in 0..STREAMS {
        let url = server.grpc_url.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = IngestEventsClient::new(channel(&url).await);
            let requests = tokio_stream::iter(0..REQUESTS).map(move |seq| IngestRequest {
                seq,
                events: (0..PER_REQUEST)
                    .map(|i| valid_event(i, &format!("bp-{s}-{seq}-{i}")))
                    .collect(),
            });
            let mut acks = client.stream(requests).await.unwrap().into_inner();
            let mut accepted = 0u64;
            while let Some(ack) = acks.next().await {
                accepted += ack.unwrap().accepted as u64;
            }
            accepted
        }));
    }
    let mut peak = 0;
    let deadline = Instant::now() + Duration::from_secs(600);
    while !tasks.iter().all(|t| t.is_finished()) {
        assert!(
            Instant::now() < deadline,
            "1,000,000 events not acked in 10 min"
        );
        peak = peak.max(server.memory().unwrap().rss_kib);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut accepted = 0;
    for t in tasks {
        accepted += t.await.unwrap();
    }
    let elapsed = started.elapsed();
    let total = STREAMS * REQUESTS * PER_REQUEST as u64;
    assert_eq!(accepted, total);
    let db = mongo_client().await.database(&dbname);
    assert_eq!(count(&db).await, total);
    let hwm = server.memory().unwrap().hwm_kib;
    eprintln!(
        "BACKPRESSURE events={total} secs={:.1} rate={:.0}/s idle_rss={}MiB peak_rss_sampled={}MiB vmhwm={}MiB bound={RSS_BOUND_MIB}MiB",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        idle / 1024,
        peak / 1024,
        hwm / 1024
    );
    assert!(
        hwm / 1024 <= RSS_BOUND_MIB,
        "peak resident memory {} MiB over {RSS_BOUND_MIB} MiB",
        hwm / 1024
    );
    let (status, _) = server.terminate(Duration::from_secs(30)).unwrap();
    assert!(status.success());
}

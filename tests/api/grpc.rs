//! gRPC producers: IngestEvents/Stream acks, in order, after durability.
use mongodb::bson::{doc, Document};
use sales_ingest::proto::ingest::v1::IngestRequest;
use tokio_stream::StreamExt;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_of_50_requests_gets_50_ordered_acks_after_the_documents_are_durable() {
    let app = spawn_app(AppOptions {
        kafka: false,
        batch_size: 300,
        ..Default::default()
    })
    .await;
    app.wait_serving().await;
    let mut requests = Vec::new();
    let mut expected = Vec::new();
    for seq in 0..50u64 {
        let mut events = Vec::new();
        let mut bad = Vec::new();
        for i in 0..200usize {
            let mut e = valid_event(i, &format!("g-{seq}-{i}"));
            if (i + seq as usize).is_multiple_of(37) {
                e.qty = -5;
                bad.push(i as u32);
            }
            events.push(e);
        }
        expected.push(bad);
        requests.push(IngestRequest {
            seq: 1000 + seq,
            events,
        });
    }
    let ids: Vec<Vec<String>> = requests
        .iter()
        .map(|r| {
            r.events
                .iter()
                .filter(|e| e.qty > 0)
                .map(|e| e.event_id.clone())
                .collect()
        })
        .collect();
    let mut client = app.events().await;
    let mut acks = client
        .stream(tokio_stream::iter(requests))
        .await
        .expect("stream opened")
        .into_inner();
    let coll = app.db.collection::<Document>("raw_sales");
    let mut n = 0;
    while let Some(ack) = acks.next().await {
        let ack = ack.expect("ack");
        let i = n as usize;
        assert_eq!(ack.seq, 1000 + n, "acks in request order");
        let indexes: Vec<u32> = ack.rejected.iter().map(|r| r.index).collect();
        assert_eq!(indexes, expected[i], "rejected indexes of request {n}");
        assert!(ack
            .rejected
            .iter()
            .all(|r| r.reason == "invalid_qty" && !r.detail.is_empty()));
        assert_eq!(ack.accepted as usize, 200 - expected[i].len());
        assert_eq!(ack.duplicates, 0);
        // Acked means durable: the accepted documents are already readable.
        let found = coll
            .count_documents(doc! { "_id": { "$in": ids[i].clone() } })
            .await
            .unwrap();
        assert_eq!(
            found as usize,
            ids[i].len(),
            "request {n}'s documents readable at ack time"
        );
        n += 1;
    }
    assert_eq!(n, 50, "exactly one ack per request");
    let s = app.stats.snapshot();
    let rejected: usize = expected.iter().map(Vec::len).sum();
    assert_eq!(s.grpc.unwrap().stored as usize, 10_000 - rejected);
    assert_eq!(s.grpc.unwrap().rejected as usize, rejected);
    assert_eq!(app.stored().await as usize, 10_000 - rejected);
    // gRPC rejects are dead-lettered to the MongoDB collection.
    let dlq = app.db.collection::<Document>("raw_sales_dlq");
    let letters = dlq
        .count_documents(doc! { "reason": "invalid_qty", "source": "grpc" })
        .await
        .unwrap();
    assert_eq!(letters as usize, rejected);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resent_requests_are_acked_as_duplicates() {
    let app = spawn_app(AppOptions {
        kafka: false,
        ..Default::default()
    })
    .await;
    let events: Vec<_> = (0..20).map(|i| valid_event(i, &format!("r-{i}"))).collect();
    let mut client = app.events().await;
    for (seq, (accepted, duplicates)) in [(20, 0), (0, 20)].into_iter().enumerate() {
        let req = IngestRequest {
            seq: seq as u64,
            events: events.clone(),
        };
        let mut acks = client
            .stream(tokio_stream::iter([req]))
            .await
            .unwrap()
            .into_inner();
        let ack = acks.next().await.expect("one ack").expect("ok");
        assert_eq!((ack.accepted, ack.duplicates), (accepted, duplicates));
        assert!(acks.next().await.is_none());
    }
    assert_eq!(app.stored().await, 20);
    app.stop().await;
}

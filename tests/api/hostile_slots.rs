//! Stream-slot squatting: streams that trickle one small request at a time keep their
//! GRPC_MAX_STREAMS slots past the idle timeout, so each connection holds at most
//! GRPC_MAX_STREAMS_PER_CONNECTION of them and connections are aged
//! (GRPC_MAX_CONNECTION_AGE, then GRPC_MAX_CONNECTION_AGE_GRACE).
use std::time::Duration;

use sales_ingest::proto::ingest::v1::{ingest_events_client::IngestEventsClient, IngestRequest};
use tokio::{sync::mpsc, task::JoinHandle};
use tokio_stream::{wrappers::ReceiverStream, StreamExt};
use tonic::{transport::Channel, Code, Status};

use crate::helpers::*;

/// A stream on `channel` that sends a one-event request every 200 ms until the stream
/// ends; yields how many acks came back and the status the stream ended with.
async fn trickle(channel: Channel, name: String) -> Result<JoinHandle<(u64, Status)>, Status> {
    let (tx, rx) = mpsc::channel::<IngestRequest>(1);
    let mut acks = IngestEventsClient::new(channel)
        .stream(ReceiverStream::new(rx))
        .await?
        .into_inner();
    Ok(tokio::spawn(async move {
        let sender = tokio::spawn(async move {
            for seq in 0u64.. {
                let events = vec![valid_event(seq as usize, &format!("{name}-{seq}"))];
                if tx.send(IngestRequest { seq, events }).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        let mut acked = 0;
        let end = loop {
            match acks.next().await {
                Some(Ok(_)) => acked += 1,
                Some(Err(status)) => break status,
                None => break Status::ok("ended"),
            }
        };
        sender.abort();
        (acked, end)
    }))
}

/// `n` trickling streams held open on one new connection to `url`, and the connection.
async fn hold_streams(
    url: &str,
    n: usize,
    name: &str,
) -> (Channel, Vec<JoinHandle<(u64, Status)>>) {
    let connection = channel(url).await;
    let mut held = Vec::new();
    for i in 0..n {
        held.push(
            trickle(connection.clone(), format!("{name}-{i}"))
                .await
                .unwrap(),
        );
    }
    (connection, held)
}

/// Sends `n` requests of 10 events on a new stream of `channel`; the events stored.
async fn produce_on(channel: Channel, n: u64, name: &str) -> Result<u64, Status> {
    let name = name.to_string();
    let requests = (0..n).map(move |seq| IngestRequest {
        seq,
        events: (0..10)
            .map(|i| valid_event(i, &format!("{name}-{seq}-{i}")))
            .collect(),
    });
    let mut acks = IngestEventsClient::new(channel)
        .stream(tokio_stream::iter(requests))
        .await?
        .into_inner();
    // Stored by this stream or, for a stream sent again after a transport error, by
    // an earlier one whose acks were lost with its connection (then duplicates).
    let mut stored = 0;
    while let Some(ack) = acks.next().await {
        let ack = ack?;
        stored += (ack.accepted + ack.duplicates) as u64;
    }
    Ok(stored)
}

/// The error a stream is refused with, whether at its start or as its first answer.
async fn refusal(channel: Channel) -> Status {
    let opened = IngestEventsClient::new(channel)
        .stream(tokio_stream::iter(Vec::<IngestRequest>::new()))
        .await;
    match opened {
        Err(status) => status,
        Ok(resp) => match resp.into_inner().next().await {
            Some(Err(status)) => status,
            other => panic!("the stream was not refused: {other:?}"),
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_holding_its_share_of_streams_cannot_lock_out_another_producer() {
    let app = spawn_app(AppOptions {
        kafka: false,
        extra: vec![
            ("grpc-max-streams".into(), "4".into()),
            ("grpc-max-streams-per-connection".into(), "2".into()),
            ("grpc-stream-idle-timeout".into(), "1".into()),
        ],
        ..Default::default()
    })
    .await;
    let (squatter, held) = hold_streams(&app.grpc_url, 2, "squat").await;
    let refused = refusal(squatter.clone()).await;
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused
            .message()
            .contains("GRPC_MAX_STREAMS_PER_CONNECTION=2"),
        "{refused:?}"
    );
    // Longer than the idle timeout: a trickle is not idle, its slots stay held.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(held.iter().all(|h| !h.is_finished()), "the trickles go on");

    // Another producer, on its own connection, is served meanwhile: both remaining
    // slots at once.
    let other = channel(&app.grpc_url).await;
    let (a, b) = tokio::join!(
        produce_on(other.clone(), 20, "other-a"),
        produce_on(other.clone(), 20, "other-b")
    );
    assert_eq!(a.unwrap() + b.unwrap(), 400);
    assert!(held.iter().all(|h| !h.is_finished()), "the trickles go on");

    let stored = app.stored().await;
    assert!(stored >= 400, "{stored} documents stored");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aged_connection_is_closed_and_its_slots_go_to_other_producers() {
    let app = spawn_app(AppOptions {
        kafka: false,
        extra: vec![
            ("grpc-max-streams".into(), "2".into()),
            ("grpc-max-streams-per-connection".into(), "2".into()),
            ("grpc-max-connection-age".into(), "2".into()),
            ("grpc-max-connection-age-grace".into(), "1".into()),
        ],
        ..Default::default()
    })
    .await;
    let (_squatter, held) = hold_streams(&app.grpc_url, 2, "aged").await;
    let other = channel(&app.grpc_url).await;
    let refused = refusal(other.clone()).await;
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("GRPC_MAX_STREAMS"),
        "{refused:?}"
    );

    // Age (2 s) plus grace (1 s): the squatter's connection is closed, its streams end
    // with an error after the acks of what they sent.
    for h in held {
        let (acked, end) = tokio::time::timeout(Duration::from_secs(15), h)
            .await
            .expect("the aged connection's streams end")
            .unwrap();
        assert!(acked > 0, "requests before the close were acked");
        assert_ne!(end.code(), Code::Ok, "{end:?}");
    }
    let mut accepted = None;
    for _ in 0..50 {
        match produce_on(other.clone(), 5, "after-age").await {
            Ok(n) => {
                accepted = Some(n);
                break;
            }
            // Refused while the slots are held; a transport error while this
            // channel's own aged connection is replaced (Unavailable, or Unknown with
            // h2's broken pipe when the close meets a request on its way).
            Err(s) => assert!(
                matches!(s.code(), Code::ResourceExhausted | Code::Unavailable)
                    || (s.code() == Code::Unknown && s.message().contains("h2 protocol error")),
                "{s:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(accepted, Some(50), "the freed slots serve another producer");
    let stored = app
        .db
        .collection::<mongodb::bson::Document>("raw_sales")
        .count_documents(mongodb::bson::doc! { "_id": { "$regex": "^after-age-" } })
        .await
        .unwrap();
    assert_eq!(stored, 50, "each of its events stored once");
    app.stop().await;
}

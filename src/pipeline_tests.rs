//! Pipeline unit tests on paused tokio time with an in-memory sink.
use std::sync::Mutex;

use super::*;
use crate::{
    ack::{GrpcAck, RequestAck},
    proto::sales::v1::SalesEvent,
    validate::Reason,
};

#[derive(Default)]
struct MemorySink {
    /// (batch size, when written)
    batches: Mutex<Vec<(usize, Instant)>>,
    ids: Mutex<Vec<String>>,
    letters: Mutex<Vec<DeadLetter>>,
}

impl Sink for MemorySink {
    async fn write(&self, batch: Vec<Pending>) -> Vec<(Pending, Outcome)> {
        self.batches
            .lock()
            .unwrap()
            .push((batch.len(), Instant::now()));
        let mut ids = self.ids.lock().unwrap();
        batch
            .into_iter()
            .map(|p| {
                let outcome = if ids.contains(&p.id) {
                    Outcome::Duplicate
                } else {
                    ids.push(p.id.clone());
                    Outcome::Stored
                };
                (p, outcome)
            })
            .collect()
    }

    async fn dead_letter(&self, letter: DeadLetter) {
        self.letters.lock().unwrap().push(letter);
    }
}

fn event(i: usize) -> SalesEvent {
    SalesEvent {
        sku: format!("SKU-{i}"),
        qty: 1,
        price: 1.5,
        ts: "2026-11-25T10:00:00Z".into(),
        event_id: format!("e-{i}"),
    }
}

struct Harness {
    tx: mpsc::Sender<Incoming>,
    sink: Arc<MemorySink>,
    stats: Arc<Stats>,
    stop: CancellationToken,
    done: tokio::task::JoinHandle<()>,
}

fn start(batch_size: usize, flush: Duration) -> Harness {
    let (tx, rx) = mpsc::channel(1000);
    let sink = Arc::new(MemorySink::default());
    let stats = Arc::new(Stats::new(false));
    let stop = CancellationToken::new();
    let cfg = PipelineConfig {
        batch_size,
        flush_interval: flush,
        write_concurrency: 2,
    };
    let done = tokio::spawn(run(rx, sink.clone(), stats.clone(), cfg, stop.clone()));
    Harness {
        tx,
        sink,
        stats,
        stop,
        done,
    }
}

/// Sends a request of events over the channel, as the gRPC handler does.
async fn send_request(
    tx: &mpsc::Sender<Incoming>,
    seq: u64,
    events: Vec<SalesEvent>,
) -> tokio::sync::oneshot::Receiver<crate::ack::AckResult> {
    let (req, rx) = RequestAck::new(seq, events.len());
    for (i, e) in events.into_iter().enumerate() {
        let ack = Ack::Grpc(GrpcAck {
            request: req.clone(),
            index: i as u32,
        });
        let item = Incoming {
            payload: Payload::Decoded(e),
            ack,
            received: std::time::Instant::now(),
        };
        tx.send(item).await.unwrap();
    }
    rx
}

#[tokio::test(start_paused = true)]
async fn full_batches_are_written_at_once_and_the_rest_at_the_flush_interval() {
    let h = start(100, Duration::from_secs(5));
    let t0 = Instant::now();
    let ack = send_request(&h.tx, 1, (0..250).map(event).collect()).await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    let sizes: Vec<_> = h.sink.batches.lock().unwrap().iter().map(|b| b.0).collect();
    assert_eq!(sizes, vec![100, 100], "the 50 left wait for the interval");
    tokio::time::sleep(Duration::from_secs(6)).await;
    let batches = h.sink.batches.lock().unwrap().clone();
    assert_eq!(batches.len(), 3);
    assert_eq!(batches[2].0, 50);
    let waited = batches[2].1 - t0;
    assert!(
        waited >= Duration::from_secs(5) && waited < Duration::from_millis(5100),
        "{waited:?}"
    );
    let ack = ack.await.unwrap().unwrap();
    assert_eq!((ack.accepted, ack.duplicates), (250, 0));
    assert_eq!(h.stats.snapshot().batches_written, 3);
}

#[tokio::test(start_paused = true)]
async fn invalid_events_are_dead_lettered_with_their_reason_and_acked_by_index() {
    let h = start(10, Duration::from_secs(1));
    let mut events: Vec<_> = (0..5).map(event).collect();
    events[1].qty = 0;
    events[3].ts = "yesterday".into();
    let ack = send_request(&h.tx, 9, events).await.await.unwrap().unwrap();
    assert_eq!(ack.accepted, 3);
    let got: Vec<_> = ack
        .rejected
        .iter()
        .map(|r| (r.index, r.reason.as_str()))
        .collect();
    assert_eq!(got, vec![(1, "invalid_qty"), (3, "invalid_ts")]);
    let letters = h.sink.letters.lock().unwrap().clone();
    assert_eq!(letters.len(), 2);
    assert!(letters.iter().all(|l| l.origin == Origin::Grpc));
    let decoded = SalesEvent::decode(letters[0].payload.as_slice()).unwrap();
    assert!(decoded.qty == 0 || decoded.ts == "yesterday");
    let s = h.stats.snapshot();
    assert_eq!((s.grpc.stored, s.grpc.rejected), (3, 2));
    assert_eq!(
        s.rejected_by_reason.get(Reason::InvalidQty.code()),
        Some(&1)
    );
}

#[tokio::test(start_paused = true)]
async fn replayed_events_are_duplicates() {
    let h = start(10, Duration::from_millis(100));
    let first = send_request(&h.tx, 1, (0..4).map(event).collect()).await;
    assert_eq!(first.await.unwrap().unwrap().accepted, 4);
    let again = send_request(&h.tx, 2, (0..4).map(event).collect()).await;
    let ack = again.await.unwrap().unwrap();
    assert_eq!((ack.accepted, ack.duplicates), (0, 4));
}

#[tokio::test(start_paused = true)]
async fn stop_flushes_the_partial_batch_without_waiting_for_the_interval() {
    let h = start(100, Duration::from_secs(3600));
    let ack = send_request(&h.tx, 1, (0..7).map(event).collect()).await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(h.sink.batches.lock().unwrap().is_empty());
    let t0 = Instant::now();
    h.stop.cancel();
    h.done.await.unwrap();
    assert!(Instant::now() - t0 < Duration::from_secs(1));
    assert_eq!(ack.await.unwrap().unwrap().accepted, 7);
    assert!(
        h.tx.send(Incoming {
            payload: Payload::Encoded(vec![]),
            ack: Ack::Grpc(GrpcAck {
                request: RequestAck::new(0, 1).0,
                index: 0
            }),
            received: std::time::Instant::now(),
        })
        .await
        .is_err(),
        "closed after stop"
    );
}

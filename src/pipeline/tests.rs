//! Pipeline unit tests on paused tokio time with an in-memory sink whose writes take a
//! set time, so group commit, backpressure and the flush bound can be observed.
use std::sync::Mutex;

use bytes::Bytes;
use prost::Message;

use super::*;
use crate::{
    deps::Dependencies,
    event::{GrpcAck, Origin, RequestAck, RequestResult},
    proto::sales::v1::SalesEvent,
    stats::Stats,
    validate::Reason,
};

#[derive(Default)]
struct MemorySink {
    /// How long each write takes.
    write_time: Duration,
    /// (batch size, when the write started)
    batches: Mutex<Vec<(usize, Instant)>>,
    ids: Mutex<Vec<String>>,
    letters: Mutex<Vec<DeadLetter>>,
    /// A write of a batch holding this id panics.
    panic_on: Option<String>,
}

impl Sink for MemorySink {
    async fn write(&self, batch: Vec<Pending>) -> Vec<(Pending, Outcome)> {
        self.batches
            .lock()
            .unwrap()
            .push((batch.len(), Instant::now()));
        tokio::time::sleep(self.write_time).await;
        if let Some(id) = &self.panic_on {
            assert!(batch.iter().all(|p| &p.id != id), "the sink panics on {id}");
        }
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

    async fn dead_letter(&self, letters: Vec<DeadLetter>) {
        self.letters.lock().unwrap().extend(letters);
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
    stats: Stats,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
    done: tokio::task::JoinHandle<()>,
}

fn start_with(batch_size: usize, flush: Duration, slots: usize, write_time: Duration) -> Harness {
    start_in(batch_size, flush, slots, write_time, WriteMode::Insert)
}

fn start_in(
    batch_size: usize,
    flush: Duration,
    slots: usize,
    write_time: Duration,
    write_mode: WriteMode,
) -> Harness {
    let sink = MemorySink {
        write_time,
        ..Default::default()
    };
    start_sink(sink, batch_size, flush, slots, write_mode)
}

fn start_sink(
    sink: MemorySink,
    batch_size: usize,
    flush: Duration,
    slots: usize,
    write_mode: WriteMode,
) -> Harness {
    let (tx, rx) = mpsc::channel(1000);
    let sink = Arc::new(sink);
    let metrics = Arc::new(Metrics::new());
    let deps = Dependencies::all_up_for_tests(false);
    let stats = Stats::new(metrics.clone(), deps, tokio::sync::watch::channel(false).1);
    let shutdown = Shutdown::new(false);
    let cfg = PipelineConfig {
        batch_size,
        flush_interval: flush,
        write_concurrency: slots,
        rules: crate::validate::Rules::DEFAULT,
        values: Default::default(),
        write_mode,
    };
    let queues = Queues {
        others: rx,
        kafka: None,
    };
    let done = tokio::spawn(run(
        queues,
        sink.clone(),
        metrics.clone(),
        cfg,
        shutdown.clone(),
    ));
    Harness {
        tx,
        sink,
        stats,
        metrics,
        shutdown,
        done,
    }
}

fn start(batch_size: usize, flush: Duration) -> Harness {
    start_with(batch_size, flush, 2, Duration::ZERO)
}

/// Sends a request of events over the channel, as the gRPC handler does.
async fn send_request(
    h: &Harness,
    seq: u64,
    events: Vec<SalesEvent>,
) -> tokio::sync::oneshot::Receiver<RequestResult> {
    let (req, rx) = RequestAck::new(seq, events.len(), h.metrics.lost_acks());
    for (i, e) in events.into_iter().enumerate() {
        let ack = Ack::Grpc(GrpcAck::new(req.clone(), i as u32));
        let item = Incoming {
            payload: Bytes::from(e.encode_to_vec()),
            valid: None,
            ack,
            received: std::time::Instant::now(),
            trace: None,
        };
        h.tx.send(item).await.unwrap();
    }
    rx
}

fn sizes(h: &Harness) -> Vec<usize> {
    h.sink.batches.lock().unwrap().iter().map(|b| b.0).collect()
}

#[tokio::test(start_paused = true)]
async fn an_idle_pipeline_with_a_free_slot_writes_a_single_event_at_once() {
    let h = start(100, Duration::from_secs(5));
    let t0 = Instant::now();
    let ack = send_request(&h, 1, vec![event(0)]).await;
    let ack = ack.await.unwrap().unwrap();
    assert_eq!(ack.accepted, 1);
    assert!(
        Instant::now() - t0 < Duration::from_millis(10),
        "no flush wait"
    );
    assert_eq!(sizes(&h), vec![1]);
}

#[tokio::test(start_paused = true)]
async fn while_every_slot_is_busy_the_batch_fills_up_to_batch_size() {
    let h = start_with(100, Duration::from_secs(60), 1, Duration::from_secs(1));
    let first = send_request(&h, 1, vec![event(0)]).await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    let rest = send_request(&h, 2, (1..251).map(event).collect()).await;
    assert_eq!(first.await.unwrap().unwrap().accepted, 1);
    assert_eq!(rest.await.unwrap().unwrap().accepted, 250);
    assert_eq!(sizes(&h), vec![1, 100, 100, 50]);
    assert_eq!(h.stats.snapshot().batches_written, 4);
}

#[tokio::test(start_paused = true)]
async fn a_partial_batch_goes_out_when_a_slot_frees_not_at_the_flush_interval() {
    let h = start_with(100, Duration::from_secs(5), 1, Duration::from_secs(2));
    let t0 = Instant::now();
    let first = send_request(&h, 1, vec![event(0)]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = send_request(&h, 2, (1..4).map(event).collect()).await;
    second.await.unwrap().unwrap();
    first.await.unwrap().unwrap();
    let batches = h.sink.batches.lock().unwrap().clone();
    assert_eq!(batches.len(), 2);
    assert_eq!(batches[1].0, 3);
    let started = batches[1].1 - t0;
    assert!(
        started >= Duration::from_secs(2) && started < Duration::from_millis(2100),
        "written when the slot freed: {started:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn full_batches_are_cut_at_batch_size() {
    let h = start_with(100, Duration::from_secs(5), 4, Duration::from_millis(5));
    let ack = send_request(&h, 1, (0..250).map(event).collect()).await;
    let ack = ack.await.unwrap().unwrap();
    assert_eq!((ack.accepted, ack.duplicates), (250, 0));
    let s = sizes(&h);
    assert!(s.iter().all(|&n| n <= 100), "{s:?}");
    assert_eq!(s.iter().sum::<usize>(), 250);
}

#[tokio::test(start_paused = true)]
async fn invalid_events_are_dead_lettered_with_their_reason_and_acked_by_index() {
    let h = start(10, Duration::from_secs(1));
    let mut events: Vec<_> = (0..5).map(event).collect();
    events[1].qty = 0;
    events[3].ts = "yesterday".into();
    let ack = send_request(&h, 9, events).await.await.unwrap().unwrap();
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
    let decoded = SalesEvent::decode(letters[0].payload.clone()).unwrap();
    assert!(decoded.qty == 0 || decoded.ts == "yesterday");
    let s = h.stats.snapshot();
    let grpc = s.grpc.unwrap();
    assert_eq!((grpc.stored, grpc.rejected), (3, 2));
    assert_eq!(
        s.rejected_by_reason.get(Reason::InvalidQty.code()),
        Some(&1)
    );
}

#[tokio::test(start_paused = true)]
async fn a_flood_of_invalid_events_is_dead_lettered_in_batches() {
    let h = start_with(50, Duration::from_secs(5), 1, Duration::ZERO);
    let events: Vec<_> = (0..500)
        .map(|i| SalesEvent {
            qty: -1,
            ..event(i)
        })
        .collect();
    let ack = send_request(&h, 1, events).await.await.unwrap().unwrap();
    assert_eq!(ack.rejected.len(), 500);
    assert_eq!(h.sink.letters.lock().unwrap().len(), 500);
}

#[tokio::test(start_paused = true)]
async fn replayed_events_are_duplicates() {
    let h = start(10, Duration::from_millis(100));
    let first = send_request(&h, 1, (0..4).map(event).collect()).await;
    assert_eq!(first.await.unwrap().unwrap().accepted, 4);
    let again = send_request(&h, 2, (0..4).map(event).collect()).await;
    let ack = again.await.unwrap().unwrap();
    assert_eq!((ack.accepted, ack.duplicates), (0, 4));
}

#[tokio::test(start_paused = true)]
async fn stop_flushes_the_partial_batch_and_closes_the_channel() {
    let h = start_with(100, Duration::from_secs(3600), 1, Duration::from_secs(1));
    let busy = send_request(&h, 1, vec![event(100)]).await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    let ack = send_request(&h, 2, (0..7).map(event).collect()).await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(sizes(&h), vec![1], "the 7 wait for the busy slot");
    h.shutdown.requested.cancel();
    h.done.await.unwrap();
    assert_eq!(busy.await.unwrap().unwrap().accepted, 1);
    assert_eq!(ack.await.unwrap().unwrap().accepted, 7);
    assert!(
        h.tx.send(Incoming {
            payload: Bytes::new(),
            valid: None,
            ack: Ack::Grpc(GrpcAck::new(
                RequestAck::new(0, 1, h.metrics.lost_acks()).0,
                0
            )),
            received: std::time::Instant::now(),
            trace: None,
        })
        .await
        .is_err(),
        "closed after stop"
    );
}

#[tokio::test(start_paused = true)]
async fn a_redriven_kafka_event_without_an_id_gets_its_original_coordinate_id() {
    let h = start(10, Duration::from_millis(100));
    let (req, rx) = RequestAck::new(0, 2, h.metrics.lost_acks());
    let origins = [
        Origin::Kafka {
            topic: "sales".into(),
            partition: 3,
            offset: 17,
        },
        Origin::Grpc,
    ];
    for (i, origin) in origins.into_iter().enumerate() {
        let e = SalesEvent {
            event_id: String::new(),
            ..event(i)
        };
        let ack = Ack::Redrive(crate::event::RedriveAck::new(origin, req.clone(), i as u32));
        let item = Incoming {
            payload: Bytes::from(e.encode_to_vec()),
            valid: Some(Rules::DEFAULT.validate(e).unwrap()),
            ack,
            received: std::time::Instant::now(),
            trace: None,
        };
        h.tx.send(item).await.unwrap();
    }
    assert_eq!(rx.await.unwrap().unwrap().accepted, 2);
    let ids = h.sink.ids.lock().unwrap().clone();
    assert_eq!(ids[0], "sales:3:17");
    assert_eq!(
        ids[1].len(),
        24,
        "a gRPC event without an id gets an ObjectId"
    );
}

#[tokio::test(start_paused = true)]
async fn a_redriven_event_arrives_validated_and_is_not_validated_again() {
    let h = start(10, Duration::from_millis(100));
    let (req, rx) = RequestAck::new(0, 1, h.metrics.lost_acks());
    let origin = Origin::Kafka {
        topic: "sales".into(),
        partition: 0,
        offset: 5,
    };
    // Bytes no validator takes: only the re-drive's validated event can be stored.
    let item = Incoming {
        payload: Bytes::from_static(&[0xff, 0xff, 0xff]),
        valid: Some(Rules::DEFAULT.validate(event(7)).unwrap()),
        ack: Ack::Redrive(crate::event::RedriveAck::new(origin, req, 0)),
        received: std::time::Instant::now(),
        trace: None,
    };
    h.tx.send(item).await.unwrap();
    let ack = rx.await.unwrap().unwrap();
    assert_eq!((ack.accepted, ack.rejected.len()), (1, 0));
    assert_eq!(*h.sink.ids.lock().unwrap(), vec!["e-7".to_string()]);
    assert!(h.sink.letters.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn in_upsert_mode_a_batch_waits_for_an_earlier_batch_writing_the_same_id() {
    let write = Duration::from_millis(100);
    for (mode, second_starts) in [(WriteMode::Insert, 0), (WriteMode::Upsert, 100)] {
        let h = start_in(2, Duration::from_secs(5), 4, write, mode);
        let t0 = Instant::now();
        // Three batches of two: the third repeats an id of the first.
        let events = [0, 1, 2, 3, 0, 4].map(event).to_vec();
        let ack = send_request(&h, 1, events).await;
        let ack = ack.await.unwrap().unwrap();
        assert_eq!(ack.accepted + ack.duplicates, 6, "{mode:?}");
        let starts: Vec<u64> = h
            .sink
            .batches
            .lock()
            .unwrap()
            .iter()
            .map(|(_, at)| (*at - t0).as_millis() as u64)
            .collect();
        assert_eq!(starts, vec![0, 0, second_starts], "{mode:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_write_task_that_panics_fails_the_service_and_its_acks_report_themselves_lost() {
    let sink = MemorySink {
        write_time: Duration::from_millis(5),
        panic_on: Some("e-1".into()),
        ..Default::default()
    };
    let h = start_sink(sink, 2, Duration::from_secs(5), 2, WriteMode::Insert);
    let good = send_request(&h, 1, vec![event(0)]).await;
    assert_eq!(good.await.unwrap().unwrap().accepted, 1);
    assert!(h.shutdown.failure().is_none());
    let doomed = send_request(&h, 2, vec![event(1), event(2)]).await;
    let why = doomed.await.unwrap().unwrap_err();
    assert!(why.contains("was lost"), "{why}");
    tokio::time::timeout(Duration::from_secs(10), h.done)
        .await
        .expect("the pipeline stops")
        .unwrap();
    let failure = h.shutdown.failure().expect("the service fails loudly");
    assert!(failure.contains("pipeline task died"), "{failure}");
    assert!(h.shutdown.requested.is_cancelled(), "the shutdown starts");
    assert_eq!(h.metrics.lost_acks().grpc.get(), 2);
    assert_eq!(*h.sink.ids.lock().unwrap(), vec!["e-0".to_string()]);
}

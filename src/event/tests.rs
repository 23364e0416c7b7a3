//! Unit tests of `event`: request acks, resolution in runs, lost and released acks.
use super::*;
use crate::{metrics::Metrics, validate::Reason};

fn lost() -> LostAcks {
    Metrics::new().lost_acks()
}

#[tokio::test]
async fn request_ack_is_sent_after_the_last_event_with_sorted_rejections() {
    let (req, mut rx) = RequestAck::new(7, 3, lost());
    let ack = |i| Ack::Grpc(GrpcAck::new(req.clone(), i));
    let bad = Outcome::Rejected(Rejection {
        reason: Reason::InvalidTs,
        detail: "x".into(),
    });
    ack(2).resolve(Outcome::Failed("too big".into()));
    ack(0).resolve(Outcome::Stored);
    assert!(rx.try_recv().is_err(), "one event still open");
    ack(1).resolve(bad);
    let got = rx.await.unwrap().unwrap();
    assert_eq!((got.seq, got.accepted, got.duplicates), (7, 1, 0));
    let idx: Vec<_> = got.rejected.iter().map(|r| r.index).collect();
    assert_eq!(idx, vec![1, 2]);
    assert_eq!(got.rejected[0].reason, "invalid_ts");
    assert_eq!(got.rejected[1].reason, "write_failed");
}

#[test]
fn resolve_all_resolves_kafka_and_grpc_acks() {
    let (to, mut source) = mpsc::unbounded_channel();
    let mut acks = Vec::new();
    for offset in 0..3 {
        let k = KafkaAck::new("t".into(), (0, offset, 7), to.clone());
        acks.push((Ack::Kafka(k), Outcome::Stored));
    }
    let (req, mut rx) = RequestAck::new(1, 1, lost());
    acks.push((Ack::Grpc(GrpcAck::new(req, 0)), Outcome::Duplicate));
    resolve_all(acks);
    let one_report = KafkaAcked::Resolved(vec![(0, 7, 0), (0, 7, 1), (0, 7, 2)]);
    assert_eq!(source.try_recv().unwrap(), one_report);
    assert!(source.try_recv().is_err());
    assert_eq!(rx.try_recv().unwrap().unwrap().duplicates, 1);
}

#[tokio::test]
async fn a_redrive_ack_keeps_the_original_origin_and_fills_its_chunk_ack() {
    let (req, rx) = RequestAck::new(0, 2, lost());
    let origin = Origin::Kafka {
        topic: "sales".into(),
        partition: 2,
        offset: 41,
    };
    let kafka = Ack::Redrive(RedriveAck::new(origin.clone(), req.clone(), 0));
    let grpc = Ack::Redrive(RedriveAck::new(Origin::Grpc, req, 1));
    assert_eq!((kafka.source(), kafka.origin()), (Source::Kafka, origin));
    assert_eq!(grpc.source(), Source::Grpc);
    resolve_all([(kafka, Outcome::Stored), (grpc, Outcome::Duplicate)]);
    let ack = rx.await.unwrap().unwrap();
    assert_eq!((ack.accepted, ack.duplicates), (1, 1));
}

#[tokio::test]
async fn empty_request_is_acked_at_once_and_abandon_wins_over_late_outcomes() {
    let (_req, rx) = RequestAck::new(1, 0, lost());
    assert_eq!(rx.await.unwrap().unwrap().seq, 1);
    let (req, rx) = RequestAck::new(2, 2, lost());
    req.abandon("shutting down".into());
    Ack::Grpc(GrpcAck::new(req.clone(), 0)).resolve(Outcome::Stored);
    assert_eq!(rx.await.unwrap().unwrap_err(), "shutting down");
}

#[tokio::test]
async fn a_dropped_ack_is_counted_and_fails_its_request_or_reports_its_offset() {
    let counters = lost();
    let (req, rx) = RequestAck::new(3, 2, counters.clone());
    Ack::Grpc(GrpcAck::new(req.clone(), 0)).resolve(Outcome::Stored);
    drop(Ack::Grpc(GrpcAck::new(req, 1)));
    let why = rx.await.unwrap().unwrap_err();
    assert!(why.contains("event 1 was lost"), "{why}");
    assert_eq!((counters.grpc.get(), counters.kafka.get()), (1, 0));

    let (to, mut source) = mpsc::unbounded_channel();
    let kafka = |offset| KafkaAck::new("t".into(), (0, offset, 1), to.clone());
    drop(kafka(5));
    Ack::Kafka(kafka(6)).release();
    let lost = KafkaAcked::Lost {
        partition: 0,
        generation: 1,
        offset: 5,
    };
    assert_eq!(source.try_recv().unwrap(), lost);
    assert!(source.try_recv().is_err(), "a released ack reports nothing");
}

#[test]
fn a_released_ack_is_not_lost() {
    let counters = lost();
    let (req, mut rx) = RequestAck::new(4, 1, counters.clone());
    Ack::Grpc(GrpcAck::new(req.clone(), 0)).release();
    req.abandon("stopping".into());
    assert_eq!(rx.try_recv().unwrap().unwrap_err(), "stopping");
    assert_eq!(counters.grpc.get(), 0);
}

//! Unit tests of `metrics`.
use super::*;
use crate::validate::Rejection;

#[test]
fn outcomes_are_counted_by_source_status_and_reason() {
    let m = Metrics::new();
    let t = Duration::from_millis(3);
    m.event_resolved(Source::Kafka, &Outcome::Stored, t);
    m.event_resolved(Source::Grpc, &Outcome::Duplicate, t);
    let bad = Rejection {
        reason: Reason::InvalidQty,
        detail: "qty 0".into(),
    };
    m.event_resolved(Source::Grpc, &Outcome::Rejected(bad), t);
    m.event_resolved(Source::Kafka, &Outcome::Failed("too big".into()), t);
    m.event_resolved(Source::Grpc, &Outcome::Updated, t);
    assert_eq!(m.counts(Source::Kafka), [1, 0, 0, 1, 0]);
    assert_eq!(m.counts(Source::Grpc), [0, 1, 1, 0, 1]);
    let reasons: Vec<_> = m.rejected_by_reason().collect();
    assert_eq!(
        reasons,
        [("invalid_qty", 1)],
        "a write refusal is no rejected input"
    );
    let text = m.render();
    assert!(text.contains(r#"sales_events_processed_total{source="grpc",status="duplicate"} 1"#));
    assert!(text.contains(r#"sales_events_processed_total{source="kafka",status="failed"} 1"#));
    assert!(text.contains(r#"sales_events_processed_total{source="grpc",status="updated"} 1"#));
    assert!(text.contains(r#"sales_events_processed_total{source="kafka",status="updated"} 0"#));
    assert!(text.contains(r#"sales_events_rejected_total{reason="invalid_qty"} 1"#));
    assert!(!text.contains("write_failed"), "{text}");
}

#[test]
fn writes_and_partitions_are_exposed() {
    let m = Metrics::new();
    m.write_attempt(WriteStatus::Retry, Duration::from_millis(2));
    m.batch_written(10);
    m.partition_lags([(0, 5), (1, 0)]);
    m.dependency_up(Dependency::Mongodb, true);
    m.dependency_up(Dependency::SchemaRegistry, false);
    m.dependency_up(Dependency::DeadLetters, true);
    let text = m.render();
    assert!(text.contains(r#"dependency_up{dependency="schema_registry"} 0"#));
    assert!(text.contains(r#"dependency_up{dependency="dead_letters"} 1"#));
    assert!(text.contains(r#"mongodb_writes_total{status="retry"} 1"#));
    assert!(text.contains(r#"kafka_consumer_lag_messages{partition="0"} 5"#));
    assert!(text.contains(r#"dependency_up{dependency="mongodb"} 1"#));
    assert_eq!(m.batches_written(), 1);
}

//! The event ids no producer may send: those equal to an `_id` the service generates
//! itself. A Kafka event without an event id (consumed, replayed after a seek, or
//! re-driven from a dead letter) is stored under `<topic>:<partition>:<offset>`, with
//! the topic the service reads and both numbers in their canonical decimal form. Only
//! ids of exactly that form are reserved: `store:12:345`, `other.topic:0:0` or
//! `sales_txn:00:1` can never be such an `_id`, so they are ordinary event ids.

/// Whether `id` is the `_id` the Kafka event at some partition and offset of `topic`
/// gets when it has no event id; `Some((partition, offset))` when it is.
pub fn generated_coordinates(id: &str, topic: &str) -> Option<(i32, i64)> {
    let rest = id.strip_prefix(topic)?.strip_prefix(':')?;
    let (partition, offset) = rest.split_once(':')?;
    Some((canonical(partition)?, canonical(offset)?))
}

/// `s` as a non-negative number when it is written as `format!("{n}")` writes it: ASCII
/// digits, no sign, no leading zero (but `0` itself).
fn canonical<N: std::str::FromStr + ToString + Default + PartialOrd>(s: &str) -> Option<N> {
    let plain = s.bytes().all(|b| b.is_ascii_digit()) && !(s.len() > 1 && s.starts_with('0'));
    let n: N = s.parse().ok().filter(|_| plain)?;
    (n >= N::default()).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        proto::sales::v1::SalesEvent,
        validate::{validate, Reason, Rules},
    };

    fn with_id(id: &str) -> SalesEvent {
        SalesEvent {
            sku: "SKU-1".into(),
            qty: 3,
            price: 9.99,
            ts: "2026-11-25T10:00:00Z".into(),
            event_id: id.into(),
        }
    }

    #[test]
    fn the_validator_refuses_only_ids_generated_for_the_topic_read() {
        let err = validate(with_id("sales_txn:0:5")).unwrap_err();
        assert_eq!(err.reason, Reason::ReservedEventId);
        assert!(
            err.detail
                .contains("partition 0, offset 5 of topic sales_txn"),
            "{}",
            err.detail
        );
        for id in ["store:12:345", "other.topic:0:0", "sales_txn:00:1"] {
            assert_eq!(validate(with_id(id)).unwrap().event_id, id);
        }
        let orders = Rules {
            kafka_topic: "orders".into(),
            ..Rules::DEFAULT
        };
        let reason = |id: &str| orders.validate(with_id(id)).err().map(|r| r.reason);
        assert_eq!(reason("orders:3:7"), Some(Reason::ReservedEventId));
        assert_eq!(reason("sales_txn:0:5"), None, "not the topic read");
        let blank = validate(with_id("  \t")).unwrap();
        assert_eq!(blank.event_id, "", "a blank id is no id");
    }

    #[test]
    fn the_ids_the_service_generates_for_its_topic_are_reserved() {
        for (id, want) in [
            ("sales_txn:0:0", (0, 0)),
            ("sales_txn:0:5", (0, 5)),
            ("sales_txn:12:345", (12, 345)),
            (
                "sales_txn:2147483647:9223372036854775807",
                (i32::MAX, i64::MAX),
            ),
        ] {
            assert_eq!(generated_coordinates(id, "sales_txn"), Some(want), "{id}");
        }
        assert_eq!(generated_coordinates("a.b-c:1:2", "a.b-c"), Some((1, 2)));
    }

    #[test]
    fn ids_that_no_generated_id_can_equal_are_free() {
        for id in [
            "store:12:345",
            "other.topic:0:0",
            "sales_txn.dlq:0:0",
            "xsales_txn:0:0",
            "sales_tx:0:0",
            "sales_txn:00:1",
            "sales_txn:0:01",
            "sales_txn:+1:1",
            "sales_txn:-1:1",
            "sales_txn:1:-1",
            "sales_txn: 1:1",
            "sales_txn:1:1 ",
            "sales_txn:1:",
            "sales_txn::1",
            "sales_txn:1",
            "sales_txn:1:2:3",
            "sales_txn:x:1",
            "sales_txn:2147483648:0",
            "sales_txn:0:9223372036854775808",
            "sales_txn:١:٢",
            "SALES_TXN:0:0",
            "sales_txn",
            "",
        ] {
            assert_eq!(generated_coordinates(id, "sales_txn"), None, "{id}");
        }
    }
}

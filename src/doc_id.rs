//! Document ids, in one place: the `_id` each event is stored under (built by the
//! pipeline, recovered by the re-drive for a dead letter) and the ids the service
//! generates itself, which the validator recognises so that no producer can send one.
//!
//! The `_id` is the producer's event id. A Kafka event without one (consumed, replayed
//! after a seek, or re-driven from a dead letter) is stored under its coordinates
//! `<topic>:<partition>:<offset>`, so a redelivery can never make a second document; a
//! gRPC event without one gets a fresh ObjectId (such producers get no idempotent
//! retries). A re-driven dead letter gets the id its event got when it was first
//! received, from its original coordinates. Only ids of exactly the generated form are
//! reserved — the topic the service reads and both numbers in their canonical decimal
//! form: `store:12:345`, `other.topic:0:0` or `sales_txn:00:1` can never be such an
//! `_id`, so they are ordinary event ids.
use mongodb::bson::oid::ObjectId;

/// Where a Kafka message was read: topic, partition, offset.
pub type Coordinates<'a> = (&'a str, i32, i64);

/// The `_id` of an event whose event id is `event_id` (empty when it has none), read
/// from Kafka at `coordinates` (None for a gRPC event): [`stable_id`], else a fresh
/// ObjectId.
pub fn document_id(event_id: &str, coordinates: Option<Coordinates<'_>>) -> String {
    stable_id(event_id, coordinates).unwrap_or_else(|| ObjectId::new().to_hex())
}

/// The `_id` the event gets every time it is received or re-driven: its event id, else
/// its coordinates; None for a gRPC event without an event id (it gets a fresh one).
pub fn stable_id(event_id: &str, coordinates: Option<Coordinates<'_>>) -> Option<String> {
    if !event_id.is_empty() {
        return Some(event_id.to_string());
    }
    coordinates.map(|(topic, partition, offset)| coordinate_id(topic, partition, offset))
}

/// The `_id` of a Kafka event sent without an event id: `<topic>:<partition>:<offset>`.
pub fn coordinate_id(topic: &str, partition: i32, offset: i64) -> String {
    format!("{topic}:{partition}:{offset}")
}

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

    #[test]
    fn the_id_is_the_event_id_else_the_coordinates_else_a_fresh_one() {
        let at = Some(("sales_txn", 3, 42));
        assert_eq!(document_id("e-1", at), "e-1");
        assert_eq!(document_id("e-1", None), "e-1");
        assert_eq!(document_id("", at), "sales_txn:3:42");
        assert_eq!(stable_id("", None), None);
        let (a, b) = (document_id("", None), document_id("", None));
        assert!(ObjectId::parse_str(&a).is_ok(), "{a}");
        assert_ne!(a, b, "a fresh id each time");
    }

    #[test]
    fn every_generated_coordinate_id_is_recognised() {
        for (topic, partition, offset) in [
            ("sales_txn", 0, 0),
            ("a.b-c", 7, 12),
            ("t", i32::MAX, i64::MAX),
        ] {
            let id = coordinate_id(topic, partition, offset);
            assert_eq!(
                generated_coordinates(&id, topic),
                Some((partition, offset)),
                "{id}"
            );
        }
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

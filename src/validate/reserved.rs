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

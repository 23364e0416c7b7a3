//! The bench's events: valid `SalesEvent`s with unique ids `<prefix>-<n>`, varied sku,
//! qty, price and an RFC 3339 `ts` with milliseconds, like a till would send.
use chrono::{DateTime, SecondsFormat, Utc};
use sales_ingest::proto::sales::v1::SalesEvent;

/// 2026-11-25T00:00:00Z in milliseconds.
const BASE_MS: i64 = 1_795_564_800_000;

/// Event `n` of a run, with `ts` spread over one day.
pub fn event(prefix: &str, n: u64) -> SalesEvent {
    event_at(prefix, n, BASE_MS + (n % 86_400_000) as i64)
}

/// Event `n` with `ts` = `ts_ms` (Unix milliseconds).
pub fn event_at(prefix: &str, n: u64, ts_ms: i64) -> SalesEvent {
    let ts = DateTime::<Utc>::from_timestamp_millis(ts_ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true);
    SalesEvent {
        sku: format!("SKU-{:05}", n % 10_000),
        qty: (n % 7 + 1) as i32,
        price: 1.0 + (n % 10_000) as f64 / 100.0,
        ts,
        event_id: id(prefix, n),
    }
}

/// The event id of event `n`.
pub fn id(prefix: &str, n: u64) -> String {
    format!("{prefix}-{n}")
}

/// The `n` of an id made by [`id`] with `prefix`.
pub fn parse_id(prefix: &str, id: &str) -> Option<u64> {
    id.strip_prefix(prefix)?.strip_prefix('-')?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_valid_and_ids_round_trip() {
        for n in [0, 1, 999_999, 86_400_001] {
            let e = event("k", n);
            assert!(sales_ingest::validate::validate(e.clone()).is_ok(), "{e:?}");
            assert_eq!(parse_id("k", &e.event_id), Some(n));
        }
        assert_eq!(event("k", 0).ts, "2026-11-25T00:00:00.000Z");
        assert_eq!(parse_id("k", "g-5"), None);
    }
}

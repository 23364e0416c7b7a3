//! The stored document, in the format `DOCUMENT_FORMAT` names. Both have the fields
//! `{_id, event_id, sku, qty, price, ts, processed_at, source}` in that order; they
//! differ in two types:
//!
//! - `typed` (the default): `ts` and `processed_at` are BSON dates, so range queries and
//!   the `ts_1` index order events by time;
//! - `legacy`: the Python service's types, `ts` the string the producer sent and
//!   `processed_at` epoch seconds as a double, for collections that already hold that
//!   service's documents and readers that expect them.
//!
//! The BSON is written straight into one buffer of the exact size (the fields and their
//! types are fixed), instead of `RawDocumentBuf::append_ref`, whose buffer grows by
//! reallocation field after field: that was 12 % of the service's CPU in a perf profile
//! of the Kafka phase of the benchmark. Tests check the bytes equal `append_ref`'s.
use mongodb::bson::{DateTime, RawDocumentBuf};

use crate::validate::ValidEvent;

/// How `ts` and `processed_at` are stored (`DOCUMENT_FORMAT`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum DocumentFormat {
    /// `ts` and `processed_at` as BSON dates.
    #[default]
    Typed,
    /// The Python service's types: `ts` as sent (a string), `processed_at` as epoch
    /// seconds (a double).
    Legacy,
}

impl DocumentFormat {
    /// The document for one event, written at `now`.
    pub fn encode(
        self,
        id: &str,
        event: &ValidEvent,
        source: &str,
        now: DateTime,
    ) -> RawDocumentBuf {
        match self {
            DocumentFormat::Typed => to_document(id, event, source, now),
            DocumentFormat::Legacy => to_legacy_document(id, event, source, now),
        }
    }
}

/// The `typed` document: `ts` and `processed_at` are BSON dates.
pub fn to_document(id: &str, event: &ValidEvent, source: &str, now: DateTime) -> RawDocumentBuf {
    write([
        ("_id", Value::String(id)),
        ("event_id", Value::String(id)),
        ("sku", Value::String(event.sku())),
        ("qty", Value::Int32(event.qty())),
        ("price", Value::Double(event.price())),
        ("ts", Value::DateTime(event.ts_millis())),
        ("processed_at", Value::DateTime(now.timestamp_millis())),
        ("source", Value::String(source)),
    ])
}

/// The `legacy` document: `ts` is the string the producer sent, `processed_at` epoch
/// seconds as a double (millisecond precision).
pub fn to_legacy_document(
    id: &str,
    event: &ValidEvent,
    source: &str,
    now: DateTime,
) -> RawDocumentBuf {
    write([
        ("_id", Value::String(id)),
        ("event_id", Value::String(id)),
        ("sku", Value::String(event.sku())),
        ("qty", Value::Int32(event.qty())),
        ("price", Value::Double(event.price())),
        ("ts", Value::String(event.ts())),
        (
            "processed_at",
            Value::Double(now.timestamp_millis() as f64 / 1000.0),
        ),
        ("source", Value::String(source)),
    ])
}

/// The field values a stored document uses.
#[derive(Clone, Copy)]
enum Value<'a> {
    String(&'a str),
    Int32(i32),
    Double(f64),
    /// Epoch milliseconds.
    DateTime(i64),
}

impl Value<'_> {
    fn kind(&self) -> u8 {
        match self {
            Value::Double(_) => 0x01,
            Value::String(_) => 0x02,
            Value::DateTime(_) => 0x09,
            Value::Int32(_) => 0x10,
        }
    }

    /// Encoded length of the value (a string is its i32 length, bytes and NUL).
    fn len(&self) -> usize {
        match self {
            Value::String(s) => 4 + s.len() + 1,
            Value::Int32(_) => 4,
            Value::Double(_) | Value::DateTime(_) => 8,
        }
    }
}

/// Writes the fields as one BSON document into a buffer of the exact size.
fn write<const N: usize>(fields: [(&str, Value); N]) -> RawDocumentBuf {
    // i32 length + per field (type byte + key + NUL + value) + the final NUL.
    let len = 4
        + fields
            .iter()
            .map(|(k, v)| 1 + k.len() + 1 + v.len())
            .sum::<usize>()
        + 1;
    let mut b = Vec::with_capacity(len);
    b.extend_from_slice(&(len as i32).to_le_bytes());
    for (k, v) in fields {
        b.push(v.kind());
        b.extend_from_slice(k.as_bytes());
        b.push(0);
        match v {
            Value::String(s) => {
                b.extend_from_slice(&((s.len() + 1) as i32).to_le_bytes());
                b.extend_from_slice(s.as_bytes());
                b.push(0);
            }
            Value::Int32(n) => b.extend_from_slice(&n.to_le_bytes()),
            Value::Double(x) => b.extend_from_slice(&x.to_le_bytes()),
            Value::DateTime(ms) => b.extend_from_slice(&ms.to_le_bytes()),
        }
    }
    b.push(0);
    debug_assert_eq!(b.len(), len);
    RawDocumentBuf::from_bytes(b).expect("a well-formed BSON document of the computed length")
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::{spec::ElementType, RawBsonRef};

    const KEYS: [&str; 8] = [
        "_id",
        "event_id",
        "sku",
        "qty",
        "price",
        "ts",
        "processed_at",
        "source",
    ];

    fn event(sku: &str, qty: i32, price: f64, ts: &str, ts_millis: i64) -> ValidEvent {
        ValidEvent::unchecked((sku, qty, price), (ts, ts_millis), "")
    }

    #[test]
    fn document_has_the_python_service_fields_with_dates() {
        let e = event("A", 2, 3.5, "1970-01-01T00:00:01Z", 1_000);
        let d = to_document("x", &e, "kafka", DateTime::from_millis(5));
        let keys: Vec<_> = d.iter().map(|r| r.unwrap().0.to_string()).collect();
        assert_eq!(keys, KEYS);
        assert_eq!(d.get_datetime("ts").unwrap().timestamp_millis(), 1_000);
        assert_eq!(d.get_i32("qty").unwrap(), 2);
        assert_eq!(
            DocumentFormat::default().encode("x", &e, "kafka", DateTime::from_millis(5)),
            d
        );
    }

    #[test]
    fn legacy_document_has_the_string_ts_and_float_processed_at() {
        let e = event("A", 2, 3.5, "2026-11-25 10:00:00", 1_795_600_800_000);
        let now = DateTime::from_millis(1_764_000_000_123);
        let d = DocumentFormat::Legacy.encode("x", &e, "grpc", now);
        let keys: Vec<_> = d.iter().map(|r| r.unwrap().0.to_string()).collect();
        assert_eq!(keys, KEYS);
        assert_eq!(d.get_str("ts").unwrap(), "2026-11-25 10:00:00");
        assert_eq!(d.get_f64("processed_at").unwrap(), 1_764_000_000.123);
        let types: Vec<_> = d.iter().map(|r| r.unwrap().1.element_type()).collect();
        let (s, i, f) = (ElementType::String, ElementType::Int32, ElementType::Double);
        assert_eq!(types, [s, s, s, i, f, s, f, s]);
    }

    type Case<'a> = (&'a str, &'a str, i32, f64, &'a str, i64, &'a str);

    /// Multi-byte UTF-8, empty and long strings, and extreme numbers.
    fn cases() -> Vec<Case<'static>> {
        let long_id: &'static str = "i".repeat(300).leak();
        let long_sku: &'static str = "k".repeat(70000).leak();
        vec![
            ("x", "A", 2, 3.5, "1970-01-01T00:00:01Z", 1_000, "kafka"),
            (
                "évé-∑-1",
                "SKU-ü",
                i32::MAX,
                f64::MAX,
                "2026-11-25T10:00:00.5+0100",
                i64::MAX,
                "grpc",
            ),
            ("", "s", i32::MIN, -0.0, "", i64::MIN, ""),
            (
                long_id,
                long_sku,
                0,
                1e-300,
                "2026-11-25 10:00:00",
                0,
                "kafka",
            ),
        ]
    }

    /// The hand-written BSON is byte for byte what the bson crate writes.
    #[test]
    fn document_bytes_equal_the_bson_crate_s() {
        for (id, sku, qty, price, ts, ts_millis, source) in cases() {
            let e = event(sku, qty, price, ts, ts_millis);
            let now = DateTime::from_millis(1_764_000_000_123);
            let mut want = RawDocumentBuf::new();
            want.append_ref("_id", RawBsonRef::String(id));
            want.append_ref("event_id", RawBsonRef::String(id));
            want.append_ref("sku", RawBsonRef::String(sku));
            want.append_ref("qty", RawBsonRef::Int32(qty));
            want.append_ref("price", RawBsonRef::Double(price));
            want.append_ref("ts", RawBsonRef::DateTime(DateTime::from_millis(ts_millis)));
            want.append_ref("processed_at", RawBsonRef::DateTime(now));
            want.append_ref("source", RawBsonRef::String(source));
            let got = to_document(id, &e, source, now);
            assert_eq!(got.as_bytes(), want.as_bytes(), "id {id:.20}");
            assert_eq!(got.get_str("sku").unwrap(), sku);
        }
    }

    /// The legacy document too.
    #[test]
    fn legacy_document_bytes_equal_the_bson_crate_s() {
        for (id, sku, qty, price, ts, ts_millis, source) in cases() {
            let e = event(sku, qty, price, ts, ts_millis);
            let now = DateTime::from_millis(1_764_000_000_123);
            let mut want = RawDocumentBuf::new();
            want.append_ref("_id", RawBsonRef::String(id));
            want.append_ref("event_id", RawBsonRef::String(id));
            want.append_ref("sku", RawBsonRef::String(sku));
            want.append_ref("qty", RawBsonRef::Int32(qty));
            want.append_ref("price", RawBsonRef::Double(price));
            want.append_ref("ts", RawBsonRef::String(ts));
            want.append_ref("processed_at", RawBsonRef::Double(1_764_000_000.123));
            want.append_ref("source", RawBsonRef::String(source));
            let got = to_legacy_document(id, &e, source, now);
            assert_eq!(got.as_bytes(), want.as_bytes(), "id {id:.20}");
        }
    }
}

//! The one validator both sources use: the bytes of a `SalesEvent` in, a `ValidEvent`
//! (which cannot be invalid) or a `Rejection` with a reason code out.
use prost::Message;

use crate::proto::sales::v1::SalesEvent;

/// Longest accepted sku, in characters.
pub const MAX_SKU_CHARS: usize = 64;
/// Longest accepted event id, in characters.
pub const MAX_EVENT_ID_CHARS: usize = 128;
/// Largest accepted quantity.
pub const MAX_QTY: i32 = 1_000_000;
/// Largest accepted unit price.
pub const MAX_PRICE: f64 = 1e9;

/// Why an event was refused. The string codes (`Reason::code`, also `Display`) are part
/// of the interface: dead-letter headers, acks, metrics labels.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    strum::Display,
    strum::IntoStaticStr,
    strum::VariantArray,
)]
#[strum(serialize_all = "snake_case")]
pub enum Reason {
    Malformed,
    MissingSku,
    SkuTooLong,
    InvalidQty,
    InvalidPrice,
    InvalidTs,
    EventIdTooLong,
    ReservedEventId,
}

impl Reason {
    /// The reason code as it appears on the wire.
    pub fn code(self) -> &'static str {
        self.into()
    }
}

/// A refused event: the reason code and a human-readable detail.
#[derive(Clone, Debug, PartialEq)]
pub struct Rejection {
    pub reason: Reason,
    pub detail: String,
}

impl Rejection {
    fn new(reason: Reason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }
}

/// An event that passed validation. `ts_millis` is the parsed timestamp.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidEvent {
    pub sku: String,
    pub qty: i32,
    pub price: f64,
    pub ts_millis: i64,
    /// Empty when the producer sent none.
    pub event_id: String,
}

/// Decodes Protobuf bytes, then validates.
pub fn decode(bytes: &[u8]) -> Result<ValidEvent, Rejection> {
    let event = SalesEvent::decode(bytes)
        .map_err(|e| Rejection::new(Reason::Malformed, format!("protobuf decode: {e}")))?;
    validate(event)
}

/// Validates a decoded event, field by field in wire order.
pub fn validate(event: SalesEvent) -> Result<ValidEvent, Rejection> {
    let ts_millis = rules(&event)?;
    let SalesEvent {
        sku,
        qty,
        price,
        mut event_id,
        ..
    } = event;
    if event_id.trim().is_empty() {
        // A blank id is no id: the event is stored under a generated one.
        event_id.clear();
    }
    Ok(ValidEvent {
        sku,
        qty,
        price,
        ts_millis,
        event_id,
    })
}

fn parse_ts(ts: &str) -> Result<i64, chrono::ParseError> {
    chrono::DateTime::parse_from_rfc3339(ts).map(|t| t.timestamp_millis())
}

/// Checks every rule in wire order: the parsed timestamp, or the first rule broken.
fn rules(event: &SalesEvent) -> Result<i64, Rejection> {
    let SalesEvent {
        sku,
        qty,
        price,
        ts,
        event_id,
    } = event;
    let (qty, price) = (*qty, *price);
    if sku.trim().is_empty() {
        return Err(Rejection::new(Reason::MissingSku, "sku is empty"));
    }
    let sku_chars = sku.chars().count();
    if sku_chars > MAX_SKU_CHARS {
        return Err(Rejection::new(
            Reason::SkuTooLong,
            format!("sku has {sku_chars} characters, at most {MAX_SKU_CHARS} allowed"),
        ));
    }
    if qty <= 0 || qty > MAX_QTY {
        return Err(Rejection::new(
            Reason::InvalidQty,
            format!("qty {qty} is not in 1..={MAX_QTY}"),
        ));
    }
    if !price.is_finite() || !(0.0..=MAX_PRICE).contains(&price) {
        return Err(Rejection::new(
            Reason::InvalidPrice,
            format!("price {price} is not a finite number in 0..={MAX_PRICE}"),
        ));
    }
    let ts_millis = parse_ts(ts).map_err(|e| {
        Rejection::new(
            Reason::InvalidTs,
            format!("ts {:?} is not RFC 3339: {e}", truncate(ts, 64)),
        )
    })?;
    let id_chars = event_id.chars().count();
    if id_chars > MAX_EVENT_ID_CHARS {
        return Err(Rejection::new(
            Reason::EventIdTooLong,
            format!("event_id has {id_chars} characters, at most {MAX_EVENT_ID_CHARS} allowed"),
        ));
    }
    if is_coordinate_id(event_id) {
        return Err(Rejection::new(
            Reason::ReservedEventId,
            format!(
                "event_id {:?} has the form <topic>:<partition>:<offset>, which is reserved for Kafka events sent without an event_id",
                truncate(event_id, 64)
            ),
        ));
    }
    Ok(ts_millis)
}

/// Whether `id` has the form of the `_id` a Kafka event without an event id gets:
/// `<topic>:<partition>:<offset>` with a legal topic name and two decimal numbers.
pub fn is_coordinate_id(id: &str) -> bool {
    let mut parts = id.rsplitn(3, ':');
    let (Some(offset), Some(partition), Some(topic)) = (parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let number = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let topic_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    number(offset) && number(partition) && !topic.is_empty() && topic.chars().all(topic_char)
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> SalesEvent {
        SalesEvent {
            sku: "SKU-1".into(),
            qty: 3,
            price: 9.99,
            ts: "2026-11-25T10:00:00Z".into(),
            event_id: "e-1".into(),
        }
    }

    fn reason_of(event: SalesEvent) -> Reason {
        validate(event).expect_err("should be rejected").reason
    }

    #[test]
    fn a_good_event_passes_with_its_timestamp_parsed() {
        let v = validate(good()).unwrap();
        assert_eq!(v.ts_millis, 1_795_600_800_000);
        assert_eq!(v.sku, "SKU-1");
        let offset = validate(SalesEvent {
            ts: "2026-11-25T11:00:00+01:00".into(),
            ..good()
        })
        .unwrap();
        assert_eq!(offset.ts_millis, v.ts_millis);
    }

    #[test]
    fn malformed_bytes() {
        let err = decode(&[0xff, 0xff, 0xff]).unwrap_err();
        assert_eq!(err.reason, Reason::Malformed);
        assert!(err.detail.contains("protobuf"));
    }

    #[test]
    fn encoded_event_round_trips() {
        let bytes = good().encode_to_vec();
        assert_eq!(decode(&bytes).unwrap().event_id, "e-1");
    }

    #[test]
    fn missing_sku() {
        assert_eq!(
            reason_of(SalesEvent {
                sku: String::new(),
                ..good()
            }),
            Reason::MissingSku
        );
        assert_eq!(
            reason_of(SalesEvent {
                sku: "  ".into(),
                ..good()
            }),
            Reason::MissingSku
        );
    }

    #[test]
    fn sku_too_long() {
        let ok = SalesEvent {
            sku: "é".repeat(64),
            ..good()
        };
        assert!(validate(ok).is_ok());
        assert_eq!(
            reason_of(SalesEvent {
                sku: "x".repeat(65),
                ..good()
            }),
            Reason::SkuTooLong
        );
    }

    #[test]
    fn invalid_qty() {
        for qty in [0, -1, i32::MIN, MAX_QTY + 1] {
            assert_eq!(
                reason_of(SalesEvent { qty, ..good() }),
                Reason::InvalidQty,
                "{qty}"
            );
        }
        assert!(validate(SalesEvent {
            qty: MAX_QTY,
            ..good()
        })
        .is_ok());
    }

    #[test]
    fn invalid_price() {
        for price in [-0.01, f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e9 + 1.0] {
            assert_eq!(
                reason_of(SalesEvent { price, ..good() }),
                Reason::InvalidPrice,
                "{price}"
            );
        }
        assert!(validate(SalesEvent {
            price: 0.0,
            ..good()
        })
        .is_ok());
        assert!(validate(SalesEvent {
            price: 1e9,
            ..good()
        })
        .is_ok());
    }

    #[test]
    fn invalid_ts() {
        for ts in [
            "",
            "yesterday",
            "2026-11-25",
            "2026-11-25T10:00:00",
            "2026-13-01T00:00:00Z",
        ] {
            assert_eq!(
                reason_of(SalesEvent {
                    ts: ts.into(),
                    ..good()
                }),
                Reason::InvalidTs,
                "{ts}"
            );
        }
    }

    #[test]
    fn event_id_too_long() {
        assert!(validate(SalesEvent {
            event_id: "i".repeat(128),
            ..good()
        })
        .is_ok());
        assert_eq!(
            reason_of(SalesEvent {
                event_id: "i".repeat(129),
                ..good()
            }),
            Reason::EventIdTooLong
        );
    }

    #[test]
    fn empty_event_id_is_allowed() {
        assert!(validate(SalesEvent {
            event_id: String::new(),
            ..good()
        })
        .is_ok());
    }

    #[test]
    fn coordinate_shaped_ids_are_reserved_and_blank_ids_are_absent() {
        for id in ["sales_txn:0:5", "a.b-c:12:0"] {
            let e = SalesEvent {
                event_id: id.into(),
                ..good()
            };
            assert_eq!(reason_of(e), Reason::ReservedEventId, "{id}");
        }
        for id in [
            "sales:txn",
            "t:0:x",
            "t:0:",
            "a b:0:1",
            "order-1:2",
            ":1:2",
            "x:y:1:2",
        ] {
            assert!(!is_coordinate_id(id), "{id}");
        }
        let blank = validate(SalesEvent {
            event_id: "  \t".into(),
            ..good()
        })
        .unwrap();
        assert_eq!(blank.event_id, "");
    }

    #[test]
    fn codes_are_distinct_and_match_display() {
        use strum::VariantArray;
        let mut codes: Vec<_> = Reason::VARIANTS.iter().map(|r| r.code()).collect();
        for r in Reason::VARIANTS {
            assert_eq!(r.to_string(), r.code());
        }
        assert_eq!(Reason::EventIdTooLong.code(), "event_id_too_long");
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), Reason::VARIANTS.len());
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        fn checks_hold(v: &ValidEvent) -> bool {
            !v.sku.trim().is_empty()
                && v.sku.chars().count() <= MAX_SKU_CHARS
                && (1..=MAX_QTY).contains(&v.qty)
                && v.price.is_finite()
                && (0.0..=MAX_PRICE).contains(&v.price)
                && v.event_id.chars().count() <= MAX_EVENT_ID_CHARS
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(10_000))]

            /// Any bytes: no panic; a rejection carries a known reason, an
            /// acceptance satisfies every rule.
            #[test]
            fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
                match decode(&bytes) {
                    Ok(v) => prop_assert!(checks_hold(&v)),
                    Err(r) => prop_assert!(<Reason as strum::VariantArray>::VARIANTS.contains(&r.reason) && !r.detail.is_empty()),
                }
            }

            /// Any field values, including hostile strings and floats.
            #[test]
            fn validate_never_panics(
                sku in ".{0,80}",
                qty in any::<i32>(),
                price in any::<f64>(),
                ts in prop_oneof![".{0,40}", "20[0-9]{2}-[01][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,9})?(Z|[+-][01][0-9]:[0-5][0-9])"],
                event_id in ".{0,140}",
            ) {
                let e = SalesEvent { sku, qty, price, ts, event_id };
                let bytes = e.encode_to_vec();
                let direct = validate(e);
                prop_assert_eq!(direct.clone(), decode(&bytes), "decoding then validating agrees");
                match direct {
                    Ok(v) => prop_assert!(checks_hold(&v)),
                    Err(r) => prop_assert!(<Reason as strum::VariantArray>::VARIANTS.contains(&r.reason)),
                }
            }

            /// A valid event with bytes flipped or cut: no panic, known reasons.
            #[test]
            fn corrupted_events_never_panic(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8), cut in any::<usize>()) {
                let mut bytes = good().encode_to_vec();
                for (i, b) in flips {
                    let n = bytes.len();
                    bytes[i % n] ^= b;
                }
                bytes.truncate(cut % (bytes.len() + 1));
                if let Err(r) = decode(&bytes) {
                    prop_assert!(<Reason as strum::VariantArray>::VARIANTS.contains(&r.reason));
                }
            }
        }
    }
}

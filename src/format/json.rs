//! A `SalesEvent` in the proto3 JSON mapping: one object whose keys are the
//! lowerCamelCase JSON names or the proto field names (`eventId` or `event_id`);
//! `qty` a number or a numeric string, `price` a number (or the mapping's strings,
//! `"NaN"` and `"Infinity"` among them, which the validator then refuses); `null` is
//! the field's default. A field given twice, under either name, is an error. Unknown
//! keys are ignored, as the Protobuf decoder ignores unknown fields. A leading UTF-8
//! byte order mark is skipped. Anything else is an error whose text becomes the
//! `malformed` detail; it quotes at most 64 characters of an offending value and is
//! at most 256 characters long, so a producer cannot make the service copy a large
//! value into every dead letter, ack and log line.
use std::fmt;

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;

use crate::proto::sales::v1::SalesEvent;

/// The UTF-8 byte order mark some producers put before JSON text.
pub const BOM: &[u8] = b"\xEF\xBB\xBF";

/// The SalesEvent fields, by the index `field` gives them, under their proto names.
const FIELDS: [&str; 5] = ["sku", "qty", "price", "ts", "event_id"];

/// The most characters of an offending value a detail quotes.
const MAX_QUOTE_CHARS: usize = 64;

/// The most characters of a detail.
const MAX_DETAIL_CHARS: usize = 256;

/// `s` cut to `max` characters, saying how long it was.
fn bounded(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_string(),
        Some((at, _)) => format!("{}… ({} bytes in all)", &s[..at], s.len()),
    }
}

/// The field a key names, under either name style.
fn field(key: &str) -> Option<usize> {
    Some(match key {
        "sku" => 0,
        "qty" => 1,
        "price" => 2,
        "ts" => 3,
        "eventId" | "event_id" => 4,
        _ => return None,
    })
}

/// The object's SalesEvent keys and values in the order given, duplicates kept;
/// the values of other keys are skipped unread.
struct Fields(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Fields {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct FieldsVisitor;
        impl<'de> Visitor<'de> for FieldsVisitor {
            type Value = Fields;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object (a SalesEvent)")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields, A::Error> {
                let mut fields = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    if field(&key).is_some() {
                        let value = map.next_value::<Value>()?;
                        fields.push((key, value));
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(Fields(fields))
            }
        }
        d.deserialize_map(FieldsVisitor)
    }
}

/// Parses a JSON SalesEvent.
pub fn parse(bytes: &[u8]) -> Result<SalesEvent, String> {
    let bytes = bytes.strip_prefix(BOM).unwrap_or(bytes);
    if crate::format::first_non_blank(bytes) == Some(b'[') {
        return Err("json: the value is a JSON array, not a SalesEvent object".into());
    }
    let Fields(fields) = serde_json::from_slice(bytes)
        .map_err(|e| bounded(&format!("json: {e}"), MAX_DETAIL_CHARS))?;
    let mut event = SalesEvent::default();
    let mut seen: [Option<&str>; 5] = [None; 5];
    for (key, value) in &fields {
        let field = field(key).expect("only SalesEvent keys are kept");
        if let Some(first) = seen[field].replace(key) {
            let name = FIELDS[field];
            return Err(if first == key {
                format!("json: field {name:?} is given twice")
            } else {
                format!("json: field {name:?} is given twice, as {first:?} and as {key:?}")
            });
        }
        if value.is_null() {
            continue;
        }
        let wrong = |expected: &str| {
            let quoted = bounded(&value.to_string(), MAX_QUOTE_CHARS);
            format!("json: field {key:?} must be {expected}, not {quoted}")
        };
        match field {
            0 => event.sku = string(value).ok_or_else(|| wrong("a string"))?,
            1 => event.qty = int32(value).ok_or_else(|| wrong("an int32 number or string"))?,
            2 => event.price = double(value).ok_or_else(|| wrong("a number"))?,
            3 => event.ts = string(value).ok_or_else(|| wrong("a string"))?,
            _ => event.event_id = string(value).ok_or_else(|| wrong("a string"))?,
        }
    }
    Ok(event)
}

fn string(v: &Value) -> Option<String> {
    v.as_str().map(str::to_string)
}

/// An int32: an integral number (`3`, `3.0`, `3e0`) or a string holding one.
fn int32(v: &Value) -> Option<i32> {
    let n = match v {
        Value::Number(n) => n.as_i64().or_else(|| integral(n.as_f64()?))?,
        Value::String(s) => {
            let s = s.as_str();
            match s.parse::<i64>() {
                Ok(n) => n,
                Err(_) => integral(s.parse::<f64>().ok().filter(|_| is_plain_number(s))?)?,
            }
        }
        _ => return None,
    };
    i32::try_from(n).ok()
}

fn integral(f: f64) -> Option<i64> {
    (f.is_finite() && f.fract() == 0.0 && f.abs() < 1e18).then_some(f as i64)
}

/// A double: a number, or a string with a number or `NaN`, `Infinity`, `-Infinity`.
fn double(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.as_str() {
            "NaN" => Some(f64::NAN),
            "Infinity" => Some(f64::INFINITY),
            "-Infinity" => Some(f64::NEG_INFINITY),
            s if is_plain_number(s) => s.parse().ok(),
            _ => None,
        },
        _ => None,
    }
}

/// A JSON-style number (no surrounding space, no `inf`/`nan` words Rust also parses).
fn is_plain_number(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(id_key: &str) -> String {
        format!(
            r#"{{"sku": "SKU-1", "qty": 2, "price": 9.99, "ts": "2026-11-25T10:00:00Z", "{id_key}": "e-1"}}"#
        )
    }

    #[test]
    fn both_field_name_styles_are_read() {
        for key in ["eventId", "event_id"] {
            let e = parse(full(key).as_bytes()).unwrap();
            assert_eq!(
                e,
                SalesEvent {
                    sku: "SKU-1".into(),
                    qty: 2,
                    price: 9.99,
                    ts: "2026-11-25T10:00:00Z".into(),
                    event_id: "e-1".into(),
                }
            );
        }
    }

    #[test]
    fn a_field_given_twice_is_refused_naming_it() {
        for (json, name) in [
            (r#"{"eventId": "a", "event_id": "b"}"#, "event_id"),
            (r#"{"event_id": "a", "eventId": "a"}"#, "event_id"),
            (r#"{"eventId": "a", "eventId": "b"}"#, "event_id"),
            (r#"{"qty": 1, "sku": "S", "qty": 5}"#, "qty"),
            (r#"{"sku": "S", "sku": "S"}"#, "sku"),
            (r#"{"price": 1, "price": null}"#, "price"),
            (r#"{"ts": null, "ts": "2026-11-25T10:00:00Z"}"#, "ts"),
        ] {
            let err = parse(json.as_bytes()).unwrap_err();
            assert!(err.starts_with("json: "), "{json}: {err}");
            assert!(
                err.contains(&format!("field {name:?} is given twice")),
                "{json}: {err}"
            );
        }
        let err = parse(br#"{"eventId": "a", "event_id": "b"}"#).unwrap_err();
        assert!(err.contains(r#"as "eventId" and as "event_id""#), "{err}");
        // Unknown keys are ignored, twice or not.
        let e = parse(br#"{"sku": "S", "colour": 1, "colour": 2}"#).unwrap();
        assert_eq!(e.sku, "S");
    }

    #[test]
    fn a_byte_order_mark_is_skipped_and_an_array_named() {
        let with_bom = [BOM, full("eventId").as_bytes()].concat();
        assert_eq!(parse(&with_bom).unwrap().event_id, "e-1");
        let err = parse(b" [{\"sku\": \"S\"}]").unwrap_err();
        assert!(
            err.contains("a JSON array, not a SalesEvent object"),
            "{err}"
        );
    }

    #[test]
    fn qty_may_be_a_numeric_string_and_price_a_mapped_string() {
        let e = parse(br#"{"qty": "7", "price": "1.5"}"#).unwrap();
        assert_eq!((e.qty, e.price), (7, 1.5));
        assert_eq!(parse(br#"{"qty": 7.0}"#).unwrap().qty, 7);
        assert_eq!(parse(br#"{"qty": "7e0"}"#).unwrap().qty, 7);
        assert_eq!(parse(br#"{"qty": -3}"#).unwrap().qty, -3);
        assert!(parse(br#"{"price": "NaN"}"#).unwrap().price.is_nan());
        assert_eq!(
            parse(br#"{"price": "-Infinity"}"#).unwrap().price,
            f64::NEG_INFINITY
        );
    }

    #[test]
    fn nulls_and_unknown_keys_leave_defaults() {
        let e = parse(br#"{"sku": null, "colour": "red", "qty": 1}"#).unwrap();
        assert_eq!(e.sku, "");
        assert_eq!(e.qty, 1);
        assert_eq!(parse(b" {} ").unwrap(), SalesEvent::default());
    }

    #[test]
    fn wrong_types_are_errors_naming_the_field() {
        for (json, field) in [
            (r#"{"sku": 5}"#, "sku"),
            (r#"{"qty": "seven"}"#, "qty"),
            (r#"{"qty": 1.5}"#, "qty"),
            (r#"{"qty": 3000000000}"#, "qty"),
            (r#"{"qty": " 7"}"#, "qty"),
            (r#"{"qty": true}"#, "qty"),
            (r#"{"price": "cheap"}"#, "price"),
            (r#"{"price": "inf"}"#, "price"),
            (r#"{"price": [1]}"#, "price"),
            (r#"{"ts": 1764064800}"#, "ts"),
            (r#"{"eventId": {}}"#, "eventId"),
        ] {
            let err = parse(json.as_bytes()).unwrap_err();
            assert!(err.contains(&format!("{field:?}")), "{json}: {err}");
        }
    }

    #[test]
    fn broken_json_reports_the_parse_error() {
        let err = parse(br#"{"sku": "SKU-1", "qty": "#).unwrap_err();
        assert!(err.starts_with("json: "), "{err}");
        assert!(err.contains("line 1"), "{err}");
        assert!(parse(b"[1, 2]").unwrap_err().contains("json"));
        assert!(parse(br#"{"sku": "a"} trailing"#).is_err());
    }

    #[test]
    fn a_detail_quotes_a_bounded_part_of_a_large_value() {
        let big = "x".repeat(100_000);
        let err = parse(format!(r#"{{"qty": "{big}"}}"#).as_bytes()).unwrap_err();
        assert!(
            err.starts_with(r#"json: field "qty" must be an int32 number or string, not "xxx"#),
            "{err}"
        );
        assert!(err.ends_with("(100002 bytes in all)"), "{err}");
        assert!(err.chars().count() < 150, "{err}");
        let err = parse(format!(r#""{big}""#).as_bytes()).unwrap_err();
        assert!(
            err.chars().count() <= 256 + 30,
            "{} characters",
            err.chars().count()
        );
        assert!(err.starts_with("json: "), "{err}");
        let small = parse(br#"{"sku": 5}"#).unwrap_err();
        assert_eq!(small, r#"json: field "sku" must be a string, not 5"#);
    }
}

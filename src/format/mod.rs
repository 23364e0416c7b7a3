//! Kafka value formats: which format a value is in (`KAFKA_VALUE_FORMAT`: detected, or
//! pinned), unwrapping it into a `SalesEvent`, then the one validator. A bare Protobuf
//! `SalesEvent`; Confluent Schema Registry framing around one (`confluent`, checked
//! against the registry when `SCHEMA_REGISTRY_URL` is set, `registry`); or the proto3
//! JSON mapping (`json`). Detection: a value starting with byte 0 is Confluent-framed
//! (field number 0 does not exist, so no SalesEvent starts with it), one whose first
//! non-whitespace byte (after a UTF-8 byte order mark) is `{` is JSON, anything else is
//! Protobuf. A bare SalesEvent starts with the tag of its first field, `0x0a` for sku,
//! which is JSON whitespace: when a value that looks like JSON does not start with `{`
//! itself and is not JSON, it is read as Protobuf before being refused. gRPC events are
//! Protobuf only and do not come here.
pub mod confluent;
pub mod json;
pub mod proto_schema;
pub mod registry;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::{
    proto::sales::v1::SalesEvent,
    validate::{self, Reason, Rejection, Rules, ValidEvent},
};
pub use registry::{Registry, RegistrySettings};

/// The formats a Kafka value may be in (`KAFKA_VALUE_FORMAT`).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    clap::ValueEnum,
    strum::Display,
    strum::IntoStaticStr,
)]
#[strum(serialize_all = "lowercase")]
pub enum ValueFormat {
    /// Detect each value's format.
    #[default]
    Auto,
    /// A bare serialized SalesEvent.
    Protobuf,
    /// Confluent Schema Registry framing around a SalesEvent.
    Confluent,
    /// The proto3 JSON mapping of a SalesEvent.
    Json,
}

/// The first byte that is not JSON whitespace (space, tab, line feed, carriage return).
pub(crate) fn first_non_blank(bytes: &[u8]) -> Option<u8> {
    bytes
        .iter()
        .copied()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
}

/// The value without a leading UTF-8 byte order mark.
fn without_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(json::BOM).unwrap_or(bytes)
}

/// The format a value looks like it is in.
pub fn detect(bytes: &[u8]) -> ValueFormat {
    match bytes.first() {
        Some(&confluent::MAGIC) => ValueFormat::Confluent,
        _ => match first_non_blank(without_bom(bytes)) {
            Some(b'{') => ValueFormat::Json,
            _ => ValueFormat::Protobuf,
        },
    }
}

/// Turns Kafka values into validated events: the configured format and, for Confluent
/// framing, the registry when there is one.
#[derive(Clone, Default)]
pub struct ValueDecoder {
    pub format: ValueFormat,
    pub registry: Option<Arc<Registry>>,
}

impl ValueDecoder {
    /// Whether decoding `bytes` asks the schema registry first (a framed value whose
    /// schema id is not cached), so that the caller may decode it aside.
    pub fn needs_registry(&self, bytes: &[u8]) -> bool {
        let Some(registry) = &self.registry else {
            return false;
        };
        let format = match self.format {
            ValueFormat::Auto => detect(bytes),
            pinned => pinned,
        };
        format == ValueFormat::Confluent
            && confluent::parse(bytes).is_ok_and(|f| !registry.is_cached(f.schema_id))
    }

    /// Unwraps `bytes` in the configured format and validates the event under `rules`.
    /// None when `stop` fires while the schema registry cannot answer: the event is
    /// left unresolved (a Kafka event is then delivered again).
    pub async fn decode(
        &self,
        bytes: &[u8],
        rules: &Rules,
        stop: &CancellationToken,
    ) -> Option<Result<ValidEvent, Rejection>> {
        Some(match self.event(bytes, stop).await? {
            Ok(event) => rules.validate(event),
            Err(rejection) => Err(rejection),
        })
    }

    async fn event(
        &self,
        bytes: &[u8],
        stop: &CancellationToken,
    ) -> Option<Result<SalesEvent, Rejection>> {
        let pinned = self.format != ValueFormat::Auto;
        let format = if pinned { self.format } else { detect(bytes) };
        let expected = |e: String| {
            let e = if pinned {
                format!("expected {format} (KAFKA_VALUE_FORMAT): {e}")
            } else {
                e
            };
            Rejection::new(Reason::Malformed, e)
        };
        Some(match format {
            ValueFormat::Json => match json::parse(bytes) {
                // Blank bytes before the `{`: perhaps a bare SalesEvent whose sku starts
                // with `{` and whose length byte is blank. The JSON error stands unless
                // the value decodes as one.
                Err(e) if !pinned && bytes.first() != Some(&b'{') => {
                    validate::decode_protobuf(bytes).map_err(|_| expected(e))
                }
                parsed => parsed.map_err(expected),
            },
            ValueFormat::Confluent => match confluent::parse(bytes) {
                Ok(framed) => return self.unframe(framed, stop).await,
                Err(e) => Err(expected(format!("confluent framing: {e}"))),
            },
            // A `{` first is JSON (field 15, a group, never starts a SalesEvent).
            _ if bytes.first() == Some(&b'{') => {
                Err(expected("the value starts with `{`: JSON?".into()))
            }
            // A `[` first (after blanks) that is not Protobuf either is a JSON array.
            _ => validate::decode_protobuf(bytes).map_err(|r| {
                let array = !pinned && first_non_blank(without_bom(bytes)) == Some(b'[');
                match array.then(|| json::parse(bytes).err()).flatten() {
                    Some(e) => expected(e),
                    None => expected(r.detail),
                }
            }),
        })
    }

    /// Checks a framed value's schema reference, then decodes its payload.
    async fn unframe(
        &self,
        framed: confluent::Framed<'_>,
        stop: &CancellationToken,
    ) -> Option<Result<SalesEvent, Rejection>> {
        let confluent::Framed {
            schema_id: id,
            indexes,
            payload,
        } = framed;
        let incompatible =
            |e: String| Rejection::new(Reason::IncompatibleSchema, format!("schema id {id}: {e}"));
        match &self.registry {
            None if indexes != [0] => {
                return Some(Err(incompatible(format!(
                    "message index {indexes:?}: without SCHEMA_REGISTRY_URL only the first message ([0]) is read, as a SalesEvent"
                ))))
            }
            None => {}
            Some(registry) => match registry.lookup(id, stop).await? {
                registry::Lookup::Unknown => {
                    return Some(Err(Rejection::new(
                        Reason::UnknownSchema,
                        format!("schema id {id} is not in the schema registry"),
                    )))
                }
                registry::Lookup::Unreadable(e) => return Some(Err(incompatible(e))),
                registry::Lookup::Found(schema) => {
                    if let Err(e) = schema.check(&indexes) {
                        return Some(Err(incompatible(e)));
                    }
                }
            },
        }
        Some(validate::decode_protobuf(payload))
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;

    fn good() -> SalesEvent {
        SalesEvent {
            sku: "SKU-1".into(),
            qty: 2,
            price: 9.99,
            ts: "2026-11-25T10:00:00Z".into(),
            event_id: "e-1".into(),
        }
    }

    fn decode(format: ValueFormat, bytes: &[u8]) -> Result<ValidEvent, Rejection> {
        let decoder = ValueDecoder {
            format,
            registry: None,
        };
        let stop = CancellationToken::new();
        futures::executor::block_on(decoder.decode(bytes, &Rules::DEFAULT, &stop)).unwrap()
    }

    #[test]
    fn detection() {
        assert_eq!(detect(&good().encode_to_vec()), ValueFormat::Protobuf);
        assert_eq!(detect(&[0, 0, 0, 0, 1, 0]), ValueFormat::Confluent);
        assert_eq!(detect(b" \n\t{}"), ValueFormat::Json);
        assert_eq!(detect(b""), ValueFormat::Protobuf);
        assert_eq!(detect(&[json::BOM, b" {}"].concat()), ValueFormat::Json);
        assert_eq!(detect(b"\n["), ValueFormat::Protobuf);
    }

    fn with_sku(sku: &str) -> SalesEvent {
        SalesEvent {
            sku: sku.into(),
            ..good()
        }
    }

    #[test]
    fn a_bare_event_whose_sku_starts_with_a_brace_is_protobuf_at_every_length() {
        for len in 1..=64 {
            let event = with_sku(&format!("{{{}", "S".repeat(len - 1)));
            let pb = event.encode_to_vec();
            let want = Rules::DEFAULT.validate(event);
            assert!(want.is_ok(), "sku length {len}");
            assert_eq!(decode(ValueFormat::Auto, &pb), want, "sku length {len}");
        }
        // Length 10 is `\n`: the value reads `\n\n{SKU-0001}…`.
        let pb = with_sku("{SKU-0001}").encode_to_vec();
        assert_eq!(&pb[..3], b"\n\n{");
        assert_eq!(detect(&pb), ValueFormat::Json);
        assert_eq!(decode(ValueFormat::Auto, &pb).unwrap().sku(), "{SKU-0001}");
        // Pinned to JSON, it is not read as Protobuf.
        let err = decode(ValueFormat::Json, &pb).unwrap_err();
        assert!(err.detail.starts_with("expected json"), "{}", err.detail);
    }

    #[test]
    fn blank_then_brace_that_is_neither_format_keeps_the_json_error() {
        for value in [&b"\n\t{bad"[..], b" {\"sku\": ", b"{\n\n{SKU-0001}"] {
            let err = decode(ValueFormat::Auto, value).unwrap_err();
            assert_eq!(err.reason, Reason::Malformed);
            assert!(err.detail.starts_with("json: "), "{}", err.detail);
        }
    }

    #[test]
    fn a_byte_order_mark_before_json_is_skipped() {
        let json =
            br#"{"sku":"SKU-1","qty":2,"price":9.99,"ts":"2026-11-25T10:00:00Z","eventId":"e-1"}"#;
        let want = validate::validate(good());
        for format in [ValueFormat::Auto, ValueFormat::Json] {
            assert_eq!(
                decode(format, &[json::BOM, json].concat()),
                want,
                "{format}"
            );
        }
    }

    #[test]
    fn a_json_array_is_named_as_one() {
        let with_bom = [json::BOM, b"[]"].concat();
        for value in [&b"[1, 2]"[..], b" \n[{\"sku\": \"S\"}]", &with_bom] {
            let err = decode(ValueFormat::Auto, value).unwrap_err();
            assert_eq!(err.reason, Reason::Malformed);
            let detail = err.detail;
            assert!(
                detail.contains("a JSON array, not a SalesEvent object"),
                "{detail}"
            );
        }
        // A bare event whose sku is 91 bytes long starts with `\n[`: still Protobuf.
        let pb = with_sku(&"S".repeat(91)).encode_to_vec();
        assert_eq!(&pb[..2], b"\n[");
        let err = decode(ValueFormat::Auto, &pb).unwrap_err();
        assert_eq!(err.reason, Reason::SkuTooLong);
    }

    proptest::proptest! {
        #[test]
        fn bare_events_with_a_brace_first_round_trip_in_auto_mode(
            sku in "\\{[ -~]{0,63}",
            qty in 1..=1000i32,
            cents in 0..100_000u32,
            id in "[A-Za-z0-9-]{1,40}",
        ) {
            let event = SalesEvent { sku, qty, price: f64::from(cents) / 100.0, event_id: id, ..good() };
            let want = Rules::DEFAULT.validate(event.clone());
            proptest::prop_assert!(want.is_ok());
            proptest::prop_assert_eq!(decode(ValueFormat::Auto, &event.encode_to_vec()), want);
        }
    }

    #[test]
    fn every_format_reaches_the_one_validator() {
        let pb = good().encode_to_vec();
        let framed = confluent::frame(3, &[0], &pb);
        let json = br#"{"sku":"SKU-1","qty":"2","price":9.99,"ts":"2026-11-25T10:00:00Z","eventId":"e-1"}"#;
        let want = validate::validate(good()).unwrap();
        for (format, bytes) in [
            (ValueFormat::Protobuf, &pb[..]),
            (ValueFormat::Confluent, &framed[..]),
            (ValueFormat::Json, &json[..]),
        ] {
            assert_eq!(decode(ValueFormat::Auto, bytes).as_ref(), Ok(&want));
            assert_eq!(decode(format, bytes).as_ref(), Ok(&want), "{format}");
        }
        let bad = br#"{"sku":"","qty":1,"price":1,"ts":"2026-11-25T10:00:00Z"}"#;
        assert_eq!(
            decode(ValueFormat::Auto, bad).unwrap_err().reason,
            Reason::MissingSku
        );
    }

    #[test]
    fn a_pinned_format_refuses_the_others_naming_itself() {
        let json = br#"{"sku":"SKU-1"}"#;
        let err = decode(ValueFormat::Protobuf, json).unwrap_err();
        assert_eq!(err.reason, Reason::Malformed);
        assert!(err.detail.contains("expected protobuf"), "{}", err.detail);
        let err = decode(ValueFormat::Json, &good().encode_to_vec()).unwrap_err();
        assert!(err.detail.contains("expected json"), "{}", err.detail);
        let err = decode(ValueFormat::Confluent, json).unwrap_err();
        assert!(err.detail.contains("expected confluent"), "{}", err.detail);
    }

    #[test]
    fn framing_without_a_registry_reads_the_first_message_only() {
        let pb = good().encode_to_vec();
        let explicit = [&[0, 0, 0, 0, 3, 2, 0][..], &pb].concat();
        assert!(decode(ValueFormat::Auto, &explicit).is_ok());
        let err = decode(ValueFormat::Auto, &confluent::frame(3, &[1], &pb)).unwrap_err();
        assert_eq!(err.reason, Reason::IncompatibleSchema);
        assert!(err.detail.contains("schema id 3"), "{}", err.detail);
        let err = decode(ValueFormat::Auto, &[0, 0, 0]).unwrap_err();
        assert_eq!(err.reason, Reason::Malformed);
        assert!(err.detail.contains("confluent framing"), "{}", err.detail);
    }

    #[test]
    fn broken_json_is_malformed_with_the_parse_error() {
        let err = decode(ValueFormat::Auto, br#"{"sku": "#).unwrap_err();
        assert_eq!(err.reason, Reason::Malformed);
        assert!(err.detail.starts_with("json: "), "{}", err.detail);
    }
}

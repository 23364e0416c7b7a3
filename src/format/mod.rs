//! Kafka value formats: which format a value is in (`KAFKA_VALUE_FORMAT`: detected, or
//! pinned), unwrapping it into a `SalesEvent`, then the one validator. A bare Protobuf
//! `SalesEvent`; Confluent Schema Registry framing around one (`confluent`, checked
//! against the registry when `SCHEMA_REGISTRY_URL` is set, `registry`); or the proto3
//! JSON mapping (`json`). Detection: a value starting with byte 0 is Confluent-framed
//! (field number 0 does not exist, so no SalesEvent starts with it), one whose first
//! non-whitespace byte is `{` is JSON, anything else is Protobuf. gRPC events are
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

/// The format a value looks like it is in.
pub fn detect(bytes: &[u8]) -> ValueFormat {
    match bytes.first() {
        Some(&confluent::MAGIC) => ValueFormat::Confluent,
        _ => match bytes
            .iter()
            .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        {
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
            ValueFormat::Json => json::parse(bytes).map_err(expected),
            ValueFormat::Confluent => match confluent::parse(bytes) {
                Ok(framed) => return self.unframe(framed, stop).await,
                Err(e) => Err(expected(format!("confluent framing: {e}"))),
            },
            // A `{` first is JSON (field 15, a group, never starts a SalesEvent).
            _ if bytes.first() == Some(&b'{') => {
                Err(expected("the value starts with `{`: JSON?".into()))
            }
            _ => validate::decode_protobuf(bytes).map_err(|r| expected(r.detail)),
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

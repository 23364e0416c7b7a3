//! The one validator both sources use: the bytes of a `SalesEvent` in, a `ValidEvent`
//! (which cannot be invalid) or a `Rejection` with a reason code out. The limits, the
//! naive-timestamp policy and the topic whose generated ids are reserved are a `Rules`
//! value (from the configuration); `validate` and `decode` apply the defaults.
//! Timestamp parsing is in `ts`; the reserved event ids are the ones `doc_id` generates.
mod ts;

use std::borrow::Cow;

use prost::Message;

use crate::{doc_id::generated_coordinates, proto::sales::v1::SalesEvent};

pub use ts::NaiveTs;

/// Longest accepted sku by default, in characters (`MAX_SKU_CHARS`).
pub const MAX_SKU_CHARS: usize = 64;
/// Longest accepted event id by default, in characters (`MAX_EVENT_ID_CHARS`).
pub const MAX_EVENT_ID_CHARS: usize = 128;
/// Largest accepted quantity by default (`MAX_QTY`).
pub const MAX_QTY: i32 = 1_000_000;
/// Largest accepted unit price by default (`MAX_PRICE`).
pub const MAX_PRICE: f64 = 1e9;
/// The topic consumed by default (`KAFKA_TOPIC`).
pub const KAFKA_TOPIC: &str = "sales_txn";

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
    /// A Confluent-framed Kafka value whose schema id the schema registry does not know.
    UnknownSchema,
    /// A Confluent-framed Kafka value whose schema message does not decode as a
    /// SalesEvent.
    IncompatibleSchema,
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
    /// A rejection with `reason` and `detail`.
    pub fn new(reason: Reason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }
}

/// An event that passed validation: only the validator makes one (`Rules::validate`),
/// so holding one means every rule held; the rest of the service reads its fields.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidEvent {
    sku: String,
    qty: i32,
    price: f64,
    ts: String,
    ts_millis: i64,
    event_id: String,
}

impl ValidEvent {
    /// The sku: not blank, at most `MAX_SKU_CHARS` characters.
    pub fn sku(&self) -> &str {
        &self.sku
    }

    /// The quantity, in `1..=MAX_QTY`.
    pub fn qty(&self) -> i32 {
        self.qty
    }

    /// The unit price: finite, in `0..=MAX_PRICE`.
    pub fn price(&self) -> f64 {
        self.price
    }

    /// The `ts` string the producer sent, moved out of the decoded event (no copy), for
    /// the `legacy` document format.
    pub fn ts(&self) -> &str {
        &self.ts
    }

    /// The parsed timestamp, UTC epoch milliseconds.
    pub fn ts_millis(&self) -> i64 {
        self.ts_millis
    }

    /// The producer's event id; empty when it sent none (or a blank one).
    pub fn event_id(&self) -> &str {
        &self.event_id
    }

    /// An event with any field values, valid or not, for the tests of what reads one
    /// (the document encoding at the types' extremes).
    #[cfg(test)]
    pub(crate) fn unchecked(
        (sku, qty, price): (&str, i32, f64),
        (ts, ts_millis): (&str, i64),
        event_id: &str,
    ) -> Self {
        Self {
            sku: sku.into(),
            qty,
            price,
            ts: ts.into(),
            ts_millis,
            event_id: event_id.into(),
        }
    }
}

/// The limits and the timestamp policy the validator applies (`MAX_QTY`, `MAX_PRICE`,
/// `MAX_SKU_CHARS`, `MAX_EVENT_ID_CHARS`, `NAIVE_TS`), and the topic the service reads
/// (`KAFKA_TOPIC`), whose generated `_id`s no event id may take. `Rules::DEFAULT` is
/// what `validate` and `decode` apply.
#[derive(Clone, Debug, PartialEq)]
pub struct Rules {
    pub max_qty: i32,
    pub max_price: f64,
    pub max_sku_chars: usize,
    pub max_event_id_chars: usize,
    pub naive_ts: NaiveTs,
    pub kafka_topic: Cow<'static, str>,
}

impl Default for Rules {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Decodes Protobuf bytes, then validates, with the default rules.
pub fn decode(bytes: &[u8]) -> Result<ValidEvent, Rejection> {
    Rules::DEFAULT.decode(bytes)
}

/// Decodes Protobuf bytes into a SalesEvent; a decode error is `malformed`.
pub fn decode_protobuf(bytes: &[u8]) -> Result<SalesEvent, Rejection> {
    SalesEvent::decode(bytes)
        .map_err(|e| Rejection::new(Reason::Malformed, format!("protobuf decode: {e}")))
}

/// Validates a decoded event with the default rules.
pub fn validate(event: SalesEvent) -> Result<ValidEvent, Rejection> {
    Rules::DEFAULT.validate(event)
}

impl Rules {
    /// The defaults: qty 1..=1,000,000, price 0..=1e9, sku up to 64 characters, event id
    /// up to 128, naive timestamps read as UTC, the ids generated for `sales_txn` reserved.
    pub const DEFAULT: Rules = Rules {
        max_qty: MAX_QTY,
        max_price: MAX_PRICE,
        max_sku_chars: MAX_SKU_CHARS,
        max_event_id_chars: MAX_EVENT_ID_CHARS,
        naive_ts: NaiveTs::Utc,
        kafka_topic: Cow::Borrowed(KAFKA_TOPIC),
    };

    /// Decodes Protobuf bytes, then validates.
    pub fn decode(&self, bytes: &[u8]) -> Result<ValidEvent, Rejection> {
        self.validate(decode_protobuf(bytes)?)
    }

    /// Validates a decoded event, field by field in wire order.
    pub fn validate(&self, event: SalesEvent) -> Result<ValidEvent, Rejection> {
        let ts_millis = self.check(&event)?;
        let SalesEvent {
            sku,
            qty,
            price,
            ts,
            mut event_id,
        } = event;
        if event_id.trim().is_empty() {
            // A blank id is no id: the event is stored under a generated one.
            event_id.clear();
        }
        Ok(ValidEvent {
            sku,
            qty,
            price,
            ts,
            ts_millis,
            event_id,
        })
    }

    /// Checks every rule in wire order: the parsed timestamp, or the first rule broken.
    fn check(&self, event: &SalesEvent) -> Result<i64, Rejection> {
        let SalesEvent {
            sku,
            qty,
            price,
            ts,
            event_id,
        } = event;
        let (qty, price) = (*qty, *price);
        let (max_qty, max_price) = (self.max_qty, self.max_price);
        if sku.trim().is_empty() {
            return Err(Rejection::new(Reason::MissingSku, "sku is empty"));
        }
        let sku_chars = sku.chars().count();
        if sku_chars > self.max_sku_chars {
            return Err(Rejection::new(
                Reason::SkuTooLong,
                format!(
                    "sku has {sku_chars} characters, at most {} allowed",
                    self.max_sku_chars
                ),
            ));
        }
        if qty <= 0 || qty > max_qty {
            return Err(Rejection::new(
                Reason::InvalidQty,
                format!("qty {qty} is not in 1..={max_qty}"),
            ));
        }
        if !price.is_finite() || !(0.0..=max_price).contains(&price) {
            return Err(Rejection::new(
                Reason::InvalidPrice,
                format!("price {price} is not a finite number in 0..={max_price}"),
            ));
        }
        let ts_millis = ts::parse(ts, self.naive_ts).map_err(|e| {
            Rejection::new(Reason::InvalidTs, format!("ts {:?} {e}", truncate(ts, 64)))
        })?;
        let id_chars = event_id.chars().count();
        if id_chars > self.max_event_id_chars {
            return Err(Rejection::new(
                Reason::EventIdTooLong,
                format!(
                    "event_id has {id_chars} characters, at most {} allowed",
                    self.max_event_id_chars
                ),
            ));
        }
        self.check_not_reserved(event_id)?;
        Ok(ts_millis)
    }

    /// Refuses an event id equal to the `_id` the service generates for a Kafka event of
    /// the topic it reads (`doc_id`).
    fn check_not_reserved(&self, event_id: &str) -> Result<(), Rejection> {
        match generated_coordinates(event_id, &self.kafka_topic) {
            None => Ok(()),
            Some((partition, offset)) => Err(Rejection::new(
                Reason::ReservedEventId,
                format!(
                    "event_id {event_id:?} is reserved: it is the _id of the event at \
                     partition {partition}, offset {offset} of topic {} when that event \
                     has no event_id",
                    self.kafka_topic
                ),
            )),
        }
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests;

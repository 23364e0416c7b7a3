//! The server's view of an `IngestRequest`: the same wire format (`seq` = 1, `events` =
//! 2), with each event kept as the bytes received. The validator decodes each event on
//! its own, so one malformed event (invalid UTF-8 in a string, say) is one `malformed`
//! rejection instead of a failed request, and its dead letter carries exactly what the
//! producer sent.
//!
//! The server decodes a request into a [`ScannedRequest`]: the message's bytes, its
//! `seq` and its event count, checked in one pass that allocates nothing per event.
//! Events are sliced out of those bytes one at a time as they are queued, so a request
//! of millions of empty events costs its own size in memory and is refused by count
//! before any event exists.
use bytes::{Buf, Bytes};
use tonic::{
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    Status,
};

use crate::proto::ingest::v1::IngestAck;

/// `ingest.v1.IngestRequest` with its events undecoded (what clients and tests encode).
#[derive(Clone, PartialEq, prost::Message)]
pub struct RawIngestRequest {
    #[prost(uint64, tag = "1")]
    pub seq: u64,
    #[prost(bytes = "bytes", repeated, tag = "2")]
    pub events: Vec<Bytes>,
}

/// One received `IngestRequest`: its bytes, checked to be well-formed, its `seq` (the
/// last one on the wire, as Protobuf merges) and how many events it holds.
#[derive(Clone, Debug)]
pub struct ScannedRequest {
    pub seq: u64,
    pub count: usize,
    body: Bytes,
}

/// A field of the request as it is laid out on the wire.
enum Field {
    Seq(u64),
    Event(std::ops::Range<usize>),
    Other,
}

fn varint(b: &[u8], at: &mut usize) -> Result<u64, &'static str> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*at).ok_or("truncated varint")?;
        *at += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Ok(v);
        }
    }
    Err("varint longer than 10 bytes")
}

/// Reads the field at `*at` and moves past it.
fn field(b: &[u8], at: &mut usize) -> Result<Field, &'static str> {
    let key = varint(b, at)?;
    let (number, wire_type) = (key >> 3, key & 7);
    let skip = |at: &mut usize, n: usize| {
        let end = at
            .checked_add(n)
            .filter(|&e| e <= b.len())
            .ok_or("truncated field")?;
        let start = *at;
        *at = end;
        Ok::<_, &'static str>(start..end)
    };
    match (number, wire_type) {
        (0, _) => Err("field number 0"),
        (1, 0) => Ok(Field::Seq(varint(b, at)?)),
        (1, _) | (2, 0 | 1 | 5) => Err("wrong wire type"),
        (_, 0) => varint(b, at).map(|_| Field::Other),
        (_, 1) => skip(at, 8).map(|_| Field::Other),
        (_, 5) => skip(at, 4).map(|_| Field::Other),
        (number, 2) => {
            let len = usize::try_from(varint(b, at)?).map_err(|_| "length too large")?;
            let range = skip(at, len)?;
            Ok(if number == 2 {
                Field::Event(range)
            } else {
                Field::Other
            })
        }
        _ => Err("unsupported wire type"),
    }
}

impl ScannedRequest {
    /// Checks `body` field by field and counts its events.
    pub fn scan(body: Bytes) -> Result<Self, &'static str> {
        let (mut at, mut seq, mut count) = (0, 0, 0);
        while at < body.len() {
            match field(&body, &mut at)? {
                Field::Seq(s) => seq = s,
                Field::Event(_) => count += 1,
                Field::Other => {}
            }
        }
        Ok(Self { seq, count, body })
    }

    /// The request's size on the wire.
    pub fn wire_len(&self) -> usize {
        self.body.len()
    }

    /// The events in order, each a slice of the request's bytes.
    pub fn events(&self) -> impl Iterator<Item = Bytes> + '_ {
        let mut at = 0;
        std::iter::from_fn(move || loop {
            if at >= self.body.len() {
                return None;
            }
            // Scanned already: every field parses.
            if let Ok(Field::Event(r)) = field(&self.body, &mut at) {
                return Some(self.body.slice(r));
            }
        })
    }
}

/// The IngestEvents server codec: requests scanned, acks encoded with prost.
#[derive(Clone, Copy, Debug, Default)]
pub struct ScanCodec;

/// Encodes acks.
#[derive(Debug)]
pub struct AckEncoder;

/// Scans requests.
#[derive(Debug)]
pub struct ScanDecoder;

impl Codec for ScanCodec {
    type Encode = IngestAck;
    type Decode = ScannedRequest;
    type Encoder = AckEncoder;
    type Decoder = ScanDecoder;

    fn encoder(&mut self) -> AckEncoder {
        AckEncoder
    }

    fn decoder(&mut self) -> ScanDecoder {
        ScanDecoder
    }
}

impl Encoder for AckEncoder {
    type Item = IngestAck;
    type Error = Status;

    fn encode(&mut self, item: IngestAck, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        prost::Message::encode(&item, dst).map_err(|e| Status::internal(e.to_string()))
    }
}

impl Decoder for ScanDecoder {
    type Item = ScannedRequest;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<ScannedRequest>, Status> {
        let body = src.copy_to_bytes(src.remaining());
        ScannedRequest::scan(body)
            .map(Some)
            .map_err(|why| Status::invalid_argument(format!("malformed IngestRequest: {why}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{ingest::v1::IngestRequest, sales::v1::SalesEvent};
    use prost::Message;

    #[test]
    fn the_raw_view_reads_what_the_generated_request_writes() {
        let event = SalesEvent {
            sku: "A".into(),
            qty: 1,
            price: 2.0,
            ts: "2026-11-25T10:00:00Z".into(),
            event_id: "e".into(),
        };
        let req = IngestRequest {
            seq: 42,
            events: vec![event.clone(), SalesEvent::default()],
        };
        let raw = RawIngestRequest::decode(req.encode_to_vec().as_slice()).unwrap();
        assert_eq!(raw.seq, 42);
        assert_eq!(raw.events.len(), 2);
        assert_eq!(SalesEvent::decode(raw.events[0].clone()).unwrap(), event);
        assert!(raw.events[1].is_empty());
        let scanned = ScannedRequest::scan(req.encode_to_vec().into()).unwrap();
        assert_eq!((scanned.seq, scanned.count), (42, 2));
        let events: Vec<Bytes> = scanned.events().collect();
        assert_eq!(events, raw.events);
    }

    #[test]
    fn a_scan_counts_millions_of_empty_events_without_holding_them() {
        let wire: Vec<u8> = [0x08, 0x03]
            .into_iter()
            .chain([0x12, 0x00].repeat(2_000_000))
            .collect();
        let scanned = ScannedRequest::scan(wire.into()).unwrap();
        assert_eq!((scanned.seq, scanned.count), (3, 2_000_000));
        assert_eq!(scanned.wire_len(), 4_000_002);
    }

    #[test]
    fn a_scan_refuses_what_prost_refuses_and_skips_unknown_fields() {
        for bad in [
            &[0x12, 0x05, 0x01][..],
            &[0x08],
            &[0x0a, 0x00],
            &[0x10, 0xff],
            &[0x00],
        ] {
            assert!(
                ScannedRequest::scan(Bytes::copy_from_slice(bad)).is_err(),
                "{bad:?}"
            );
            assert!(RawIngestRequest::decode(bad).is_err(), "{bad:?}");
        }
        // field 3 varint, field 4 fixed32, field 5 bytes, then one event.
        let wire = [
            0x18, 0x01, 0x25, 1, 2, 3, 4, 0x2a, 0x01, 0x09, 0x12, 0x01, 0x07,
        ];
        let scanned = ScannedRequest::scan(Bytes::copy_from_slice(&wire)).unwrap();
        assert_eq!(scanned.count, 1);
        assert_eq!(scanned.events().next().unwrap().as_ref(), &[0x07]);
    }

    #[test]
    fn invalid_utf8_in_one_event_does_not_fail_the_request() {
        // field 1 (sku), length 2, bytes 0xff 0xfe: not UTF-8.
        let bad = vec![0x0a, 0x02, 0xff, 0xfe];
        let mut wire = vec![0x08, 0x07];
        wire.extend([0x12, bad.len() as u8]);
        wire.extend(&bad);
        assert!(IngestRequest::decode(wire.as_slice()).is_err());
        let raw = RawIngestRequest::decode(wire.as_slice()).unwrap();
        assert_eq!((raw.seq, raw.events[0].as_ref()), (7, bad.as_slice()));
    }
}

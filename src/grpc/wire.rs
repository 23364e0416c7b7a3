//! The server's view of an `IngestRequest`: the same wire format (`seq` = 1, `events` =
//! 2), with each event kept as the bytes received. The validator decodes each event on
//! its own, so one malformed event (invalid UTF-8 in a string, say) is one `malformed`
//! rejection instead of a failed request, and its dead letter carries exactly what the
//! producer sent.
use bytes::Bytes;

/// `ingest.v1.IngestRequest` with its events undecoded.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RawIngestRequest {
    #[prost(uint64, tag = "1")]
    pub seq: u64,
    #[prost(bytes = "bytes", repeated, tag = "2")]
    pub events: Vec<Bytes>,
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

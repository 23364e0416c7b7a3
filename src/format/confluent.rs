//! The Confluent Schema Registry wire framing: magic byte 0, the schema id (4 bytes,
//! big-endian), the message-index list (a zig-zag varint count, then that many zig-zag
//! varint indexes; a count of 0, the single byte `0x00`, is the shorthand for `[0]`),
//! then the Protobuf bytes. Parsing never allocates more than the input can describe.
use std::fmt;

/// The magic byte every Confluent-framed value starts with.
pub const MAGIC: u8 = 0;

/// A framed value, unwrapped: the schema id, the message-index path (into the
/// schema's top-level messages, then their nested ones) and the Protobuf payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Framed<'a> {
    pub schema_id: u32,
    pub indexes: Vec<u32>,
    pub payload: &'a [u8],
}

/// Why a value is not a well-formed Confluent frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The first byte is not the magic byte 0.
    Magic(Option<u8>),
    /// The value ends inside the 5-byte header.
    ShortHeader(usize),
    /// The value ends inside the message-index list.
    TruncatedIndexes,
    /// A varint longer than 5 bytes (more than 32 bits).
    VarintTooLong,
    /// The count is negative or larger than the bytes that follow could hold.
    BadCount(i64),
    /// A negative message index.
    NegativeIndex(i32),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Magic(None) => write!(f, "the value is empty"),
            FrameError::Magic(Some(b)) => write!(f, "magic byte is {b:#04x}, not 0x00"),
            FrameError::ShortHeader(n) => {
                write!(
                    f,
                    "the value has {n} bytes, fewer than the 5-byte header (magic byte, schema id)"
                )
            }
            FrameError::TruncatedIndexes => write!(f, "the message-index list is truncated"),
            FrameError::VarintTooLong => write!(f, "a message-index varint exceeds 32 bits"),
            FrameError::BadCount(n) => write!(
                f,
                "message-index count {n} is negative or longer than the value"
            ),
            FrameError::NegativeIndex(i) => write!(f, "message index {i} is negative"),
        }
    }
}

/// Unwraps a Confluent-framed value.
pub fn parse(bytes: &[u8]) -> Result<Framed<'_>, FrameError> {
    match bytes.first() {
        Some(&MAGIC) => {}
        other => return Err(FrameError::Magic(other.copied())),
    }
    if bytes.len() < 5 {
        return Err(FrameError::ShortHeader(bytes.len()));
    }
    let schema_id = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    let mut rest = &bytes[5..];
    let count = i64::from(zigzag(&mut rest)?);
    let indexes = if count == 0 {
        vec![0]
    } else {
        // Each index takes at least one byte, so a count beyond the bytes left is a lie.
        if count < 0 || count > rest.len() as i64 {
            return Err(FrameError::BadCount(count));
        }
        let mut indexes = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let i = zigzag(&mut rest)?;
            if i < 0 {
                return Err(FrameError::NegativeIndex(i));
            }
            indexes.push(i as u32);
        }
        indexes
    };
    Ok(Framed {
        schema_id,
        indexes,
        payload: rest,
    })
}

/// Frames a Protobuf payload (for producers and tests): the `[0]` shorthand when
/// `indexes` is `[0]`, the explicit list otherwise.
pub fn frame(schema_id: u32, indexes: &[u32], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.push(MAGIC);
    out.extend_from_slice(&schema_id.to_be_bytes());
    if indexes == [0] {
        out.push(0);
    } else {
        put_zigzag(&mut out, indexes.len() as i32);
        for &i in indexes {
            put_zigzag(&mut out, i as i32);
        }
    }
    out.extend_from_slice(payload);
    out
}

/// Reads one zig-zag varint of at most 32 bits, advancing `rest`.
fn zigzag(rest: &mut &[u8]) -> Result<i32, FrameError> {
    let mut value: u32 = 0;
    for (i, &b) in rest.iter().enumerate() {
        if i == 5 {
            return Err(FrameError::VarintTooLong);
        }
        value |= u32::from(b & 0x7f).checked_shl(7 * i as u32).unwrap_or(0);
        if b & 0x80 == 0 {
            *rest = &rest[i + 1..];
            return Ok(((value >> 1) as i32) ^ -((value & 1) as i32));
        }
    }
    Err(FrameError::TruncatedIndexes)
}

fn put_zigzag(out: &mut Vec<u8>, v: i32) {
    let mut u = ((v << 1) ^ (v >> 31)) as u32;
    while u >= 0x80 {
        out.push((u as u8) | 0x80);
        u >>= 7;
    }
    out.push(u as u8);
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn the_shorthand_is_the_first_message() {
        let v = [0, 0, 0, 0, 42, 0, 0x0a, 0x01, b'x'];
        let f = parse(&v).unwrap();
        assert_eq!(f.schema_id, 42);
        assert_eq!(f.indexes, vec![0]);
        assert_eq!(f.payload, &[0x0a, 0x01, b'x']);
        assert_eq!(frame(42, &[0], &[0x0a, 0x01, b'x']), v);
    }

    #[test]
    fn an_explicit_list_is_read_in_order() {
        // Count 2 (zig-zag 4), indexes 1 (2) and 3 (6); schema id 0x01020304.
        let v = [0, 1, 2, 3, 4, 4, 2, 6, 0x0a];
        let f = parse(&v).unwrap();
        assert_eq!(f.schema_id, 0x0102_0304);
        assert_eq!(f.indexes, vec![1, 3]);
        assert_eq!(f.payload, &[0x0a]);
        assert_eq!(frame(0x0102_0304, &[1, 3], &[0x0a]), v);
        // An explicit [0] is the same message as the shorthand.
        assert_eq!(parse(&[0, 0, 0, 0, 1, 2, 0]).unwrap().indexes, vec![0]);
        // Multi-byte varints: index 300.
        let big = frame(7, &[300], b"");
        assert_eq!(parse(&big).unwrap().indexes, vec![300]);
    }

    #[test]
    fn an_empty_payload_is_a_frame() {
        assert_eq!(parse(&[0, 0, 0, 0, 1, 0]).unwrap().payload, b"");
    }

    #[test]
    fn truncated_headers_are_refused() {
        assert_eq!(parse(&[]), Err(FrameError::Magic(None)));
        assert_eq!(parse(&[1, 0, 0, 0, 0, 0]), Err(FrameError::Magic(Some(1))));
        for n in 1..5 {
            assert_eq!(parse(&[0; 5][..n]), Err(FrameError::ShortHeader(n)));
        }
        // Header complete, no index list at all.
        assert_eq!(parse(&[0, 0, 0, 0, 1]), Err(FrameError::TruncatedIndexes));
        // Count 2, one index, then the end.
        assert_eq!(
            parse(&[0, 0, 0, 0, 1, 4, 2, 0x80]),
            Err(FrameError::TruncatedIndexes)
        );
    }

    #[test]
    fn huge_counts_are_refused_without_allocating() {
        let mut v = vec![0, 0, 0, 0, 1];
        put_zigzag(&mut v, i32::MAX);
        assert_eq!(parse(&v), Err(FrameError::BadCount(i64::from(i32::MAX))));
        let mut v = vec![0, 0, 0, 0, 1];
        put_zigzag(&mut v, 3);
        v.extend_from_slice(&[2, 2]);
        assert_eq!(parse(&v), Err(FrameError::BadCount(3)));
        let mut v = vec![0, 0, 0, 0, 1];
        put_zigzag(&mut v, -1);
        assert_eq!(parse(&v), Err(FrameError::BadCount(-1)));
        // Six varint bytes.
        let v = [0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert_eq!(parse(&v), Err(FrameError::VarintTooLong));
    }

    #[test]
    fn negative_indexes_are_refused() {
        let mut v = vec![0, 0, 0, 0, 1];
        put_zigzag(&mut v, 1);
        put_zigzag(&mut v, -2);
        assert_eq!(parse(&v), Err(FrameError::NegativeIndex(-2)));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(10_000))]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse(&bytes);
            let mut framed = vec![0, 0, 0, 0, 9];
            framed.extend_from_slice(&bytes);
            if let Ok(f) = parse(&framed) {
                prop_assert!(f.indexes.len() <= bytes.len().max(1));
            }
        }

        #[test]
        fn frames_round_trip(id in any::<u32>(), indexes in proptest::collection::vec(0u32..=i32::MAX as u32, 1..8),
                             payload in proptest::collection::vec(any::<u8>(), 0..32)) {
            let v = frame(id, &indexes, &payload);
            let f = parse(&v).unwrap();
            prop_assert_eq!(f.schema_id, id);
            prop_assert_eq!(f.indexes, indexes);
            prop_assert_eq!(f.payload, &payload[..]);
        }
    }
}

//! Timestamp parsing: the ISO 8601 date-times the Python service accepted, to UTC epoch
//! milliseconds. RFC 3339 (chrono's parser, the common case) is tried first; the other
//! forms go through `iso8601`: `T`, `t` or a space between date and time, seconds
//! required, any number of fractional digits or none, and an offset of `Z`, `±HH:MM`,
//! `±HHMM`, `±HH` or none. A value without an offset is read as UTC or refused, as
//! `NAIVE_TS` says. Date-only values and epoch numbers are refused, and so is an instant
//! outside 0001-01-01T00:00:00Z..=9999-12-31T23:59:59.999Z (years a BSON date reader
//! such as Python's `datetime` can hold), whatever offset brought it there.
use std::fmt;

use chrono::{DateTime, NaiveDate, NaiveTime};

/// What a timestamp without a UTC offset means (`NAIVE_TS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum NaiveTs {
    /// Read it as UTC, as the Python service stored it.
    Utc,
    /// Refuse it as `invalid_ts`.
    Reject,
}

/// The forms accepted, for rejection details.
const EXPECTED: &str = "expected an ISO 8601 date-time with seconds, e.g. \
     2026-11-25T10:00:00Z, 2026-11-25 10:00:00.250+01:00 or 2026-11-25T10:00:00-0500";

/// The earliest accepted instant, 0001-01-01T00:00:00Z, in epoch milliseconds.
pub const MIN_MILLIS: i64 = -62_135_596_800_000;
/// The latest accepted instant, 9999-12-31T23:59:59.999Z, in epoch milliseconds.
pub const MAX_MILLIS: i64 = 253_402_300_799_999;

/// Why a timestamp was refused; `Display` is the rejection detail after the value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TsError {
    /// A bare number such as epoch seconds.
    Number,
    /// `YYYY-MM-DD` with no time.
    DateOnly,
    /// No UTC offset, and `NAIVE_TS=reject`.
    NoOffset,
    /// A field out of range (month 13, hour 25, offset +24:00).
    OutOfRange,
    /// A valid date-time whose UTC instant is before year 1 or after year 9999.
    BeyondRange,
    /// Anything else.
    Invalid,
}

impl fmt::Display for TsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TsError::Number => write!(
                f,
                "is a number; epoch timestamps are not accepted: {EXPECTED}"
            ),
            TsError::DateOnly => write!(f, "is a date without a time: {EXPECTED}"),
            TsError::NoOffset => write!(
                f,
                "has no UTC offset, and NAIVE_TS=reject requires one \
                 (Z, ±HH:MM, ±HHMM or ±HH), e.g. 2026-11-25T10:00:00Z"
            ),
            TsError::OutOfRange => write!(f, "has a field out of range: {EXPECTED}"),
            TsError::BeyondRange => write!(
                f,
                "is outside the accepted range: in UTC it must be from \
                 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999Z"
            ),
            TsError::Invalid => write!(f, "is not an ISO 8601 date-time: {EXPECTED}"),
        }
    }
}

/// Parses `ts` to UTC epoch milliseconds in `MIN_MILLIS..=MAX_MILLIS`.
pub fn parse(ts: &str, naive: NaiveTs) -> Result<i64, TsError> {
    let millis = match DateTime::parse_from_rfc3339(ts) {
        Ok(t) => t.timestamp_millis(),
        Err(_) => match iso8601(ts.as_bytes()) {
            Ok((_, None)) if naive == NaiveTs::Reject => return Err(TsError::NoOffset),
            Ok((millis, offset)) => millis - i64::from(offset.unwrap_or(0)) * 1000,
            Err(e) => return Err(classify(ts, e)),
        },
    };
    if (MIN_MILLIS..=MAX_MILLIS).contains(&millis) {
        Ok(millis)
    } else {
        Err(TsError::BeyondRange)
    }
}

/// Names the common mistakes (a number, a date alone) for the detail.
fn classify(ts: &str, e: TsError) -> TsError {
    let t = ts.trim();
    let number = t.strip_prefix('-').unwrap_or(t);
    if !number.is_empty()
        && number.bytes().any(|b| b.is_ascii_digit())
        && number.bytes().all(|b| b.is_ascii_digit() || b == b'.')
    {
        TsError::Number
    } else if t.len() == 10 && iso_date(t.as_bytes()).is_ok() {
        TsError::DateOnly
    } else {
        e
    }
}

/// `n` ASCII digits at `b[at..]` as a number.
fn digits(b: &[u8], at: usize, n: usize) -> Result<u32, TsError> {
    let field = b.get(at..at + n).ok_or(TsError::Invalid)?;
    field.iter().try_fold(0u32, |acc, &d| match d {
        b'0'..=b'9' => Ok(acc * 10 + u32::from(d - b'0')),
        _ => Err(TsError::Invalid),
    })
}

fn expect(b: &[u8], at: usize, want: u8) -> Result<(), TsError> {
    (b.get(at) == Some(&want))
        .then_some(())
        .ok_or(TsError::Invalid)
}

/// `YYYY-MM-DD` at the start of `b`.
fn iso_date(b: &[u8]) -> Result<NaiveDate, TsError> {
    let year = digits(b, 0, 4)?;
    expect(b, 4, b'-')?;
    let month = digits(b, 5, 2)?;
    expect(b, 7, b'-')?;
    let day = digits(b, 8, 2)?;
    NaiveDate::from_ymd_opt(year as i32, month, day).ok_or(TsError::OutOfRange)
}

/// `YYYY-MM-DD[Tt ]HH:MM:SS[.f+][Z|z|±HH[[:]MM]]`: the date-time as if it were UTC, in
/// epoch milliseconds, and the offset in seconds east of UTC when one is given.
fn iso8601(b: &[u8]) -> Result<(i64, Option<i32>), TsError> {
    let date = iso_date(b)?;
    if !matches!(b.get(10), Some(b'T' | b't' | b' ')) {
        return Err(TsError::Invalid);
    }
    let hour = digits(b, 11, 2)?;
    expect(b, 13, b':')?;
    let minute = digits(b, 14, 2)?;
    expect(b, 16, b':')?;
    let second = digits(b, 17, 2)?;
    let mut at = 19;
    let mut nanos = 0u32;
    if b.get(at) == Some(&b'.') {
        at += 1;
        let n = b[at..].iter().take_while(|d| d.is_ascii_digit()).count();
        if n == 0 {
            return Err(TsError::Invalid);
        }
        // Nanosecond precision; digits past the ninth are dropped.
        let kept = n.min(9);
        nanos = digits(b, at, kept)? * 10u32.pow(9 - kept as u32);
        at += n;
    }
    // A leap second (:60) is the last second of the minute extended, as chrono reads it.
    let (second, nanos) = match second {
        60 => (59, nanos + 1_000_000_000),
        s => (s, nanos),
    };
    let time =
        NaiveTime::from_hms_nano_opt(hour, minute, second, nanos).ok_or(TsError::OutOfRange)?;
    let millis = date.and_time(time).and_utc().timestamp_millis();
    Ok((millis, offset(&b[at..])?))
}

/// The rest after the time: nothing, `Z`/`z`, or `±HH`, `±HHMM`, `±HH:MM` (at most
/// 23:59), in seconds east of UTC.
fn offset(b: &[u8]) -> Result<Option<i32>, TsError> {
    let sign = match b.first() {
        None => return Ok(None),
        Some(b'Z' | b'z') if b.len() == 1 => return Ok(Some(0)),
        Some(b'+') => 1,
        Some(b'-') => -1,
        Some(_) => return Err(TsError::Invalid),
    };
    let hours = digits(b, 1, 2)?;
    let minutes = match b.len() {
        3 => 0,
        5 => digits(b, 3, 2)?,
        6 if b[3] == b':' => digits(b, 4, 2)?,
        _ => return Err(TsError::Invalid),
    };
    if hours > 23 || minutes > 59 {
        return Err(TsError::OutOfRange);
    }
    Ok(Some(sign * (hours * 3600 + minutes * 60) as i32))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-25T10:00:00Z
    const T0: i64 = 1_795_600_800_000;

    fn utc(ts: &str) -> Result<i64, TsError> {
        parse(ts, NaiveTs::Utc)
    }

    #[test]
    fn rfc3339_forms() {
        for ts in [
            "2026-11-25T10:00:00Z",
            "2026-11-25t10:00:00z",
            "2026-11-25T11:00:00+01:00",
            "2026-11-25T05:30:00-04:30",
            "2026-11-25 10:00:00Z",
            "2026-11-25T10:00:00.000Z",
        ] {
            assert_eq!(utc(ts), Ok(T0), "{ts}");
        }
    }

    #[test]
    fn offsets_without_colon_or_minutes() {
        assert_eq!(utc("2026-11-25T11:00:00+0100"), Ok(T0));
        assert_eq!(utc("2026-11-25T05:30:00-0430"), Ok(T0));
        assert_eq!(utc("2026-11-25T11:00:00+01"), Ok(T0));
        assert_eq!(utc("2026-11-25T00:00:00-10"), Ok(T0));
        assert_eq!(utc("2026-11-25 11:00:00.5+0100"), Ok(T0 + 500));
        assert_eq!(utc("2026-11-25T10:00:00+00"), Ok(T0));
        assert_eq!(utc("2026-11-25T10:00:00-0000"), Ok(T0));
    }

    #[test]
    fn fractions_of_any_length_or_none() {
        assert_eq!(utc("2026-11-25T10:00:00.1Z"), Ok(T0 + 100));
        assert_eq!(utc("2026-11-25T10:00:00.12+00"), Ok(T0 + 120));
        assert_eq!(utc("2026-11-25T10:00:00.123456+0000"), Ok(T0 + 123));
        assert_eq!(utc("2026-11-25T10:00:00.999999999999"), Ok(T0 + 999));
        assert_eq!(utc("2026-11-25 10:00:00.25"), Ok(T0 + 250));
        for ts in [
            "2026-11-25T10:00:00.Z",
            "2026-11-25T10:00:00.",
            "2026-11-25T10:00:00.+01",
        ] {
            assert_eq!(utc(ts), Err(TsError::Invalid), "{ts}");
        }
    }

    #[test]
    fn naive_values_follow_the_policy() {
        for (ts, want) in [
            ("2026-11-25T10:00:00", T0),
            ("2026-11-25 10:00:00", T0),
            ("2026-11-25t10:00:00.750", T0 + 750),
        ] {
            assert_eq!(utc(ts), Ok(want), "{ts}");
            assert_eq!(parse(ts, NaiveTs::Reject), Err(TsError::NoOffset), "{ts}");
        }
        assert_eq!(
            parse("2026-11-25T10:00:00+01", NaiveTs::Reject),
            Ok(T0 - 3_600_000)
        );
        assert!(TsError::NoOffset.to_string().contains("offset"));
    }

    #[test]
    fn leap_second_reads_as_chrono_reads_it() {
        let rfc = utc("2026-12-31T23:59:60Z").unwrap();
        assert_eq!(utc("2026-12-31T23:59:60+00"), Ok(rfc));
        assert_eq!(utc("2026-12-31 23:59:60"), Ok(rfc));
    }

    #[test]
    fn dates_numbers_and_garbage_are_refused_with_what_was_expected() {
        for (ts, want) in [
            ("2026-11-25", TsError::DateOnly),
            ("1795600800", TsError::Number),
            ("1795600800.5", TsError::Number),
            ("-12", TsError::Number),
            ("1795600800000", TsError::Number),
            ("", TsError::Invalid),
            ("yesterday", TsError::Invalid),
            ("2026-11-25T10:00Z", TsError::Invalid),
            ("2026-11-25T10:00", TsError::Invalid),
            ("2026-11-25T10", TsError::Invalid),
            ("2026-11-25T10:00:00 Z", TsError::Invalid),
            ("2026-11-25T10:00:00+1", TsError::Invalid),
            ("2026-11-25T10:00:00+01:0", TsError::Invalid),
            ("2026-11-25T10:00:00+010", TsError::Invalid),
            ("2026-11-25T10:00:00+01:00:00", TsError::Invalid),
            ("2026-11-25T10:00:00Zjunk", TsError::Invalid),
            ("2026-11-25_10:00:00Z", TsError::Invalid),
            ("26-11-25T10:00:00Z", TsError::Invalid),
            ("2026-13-01T00:00:00Z", TsError::OutOfRange),
            ("2026-02-30T00:00:00", TsError::OutOfRange),
            ("2026-11-25T24:00:00", TsError::OutOfRange),
            ("2026-11-25T10:61:00+01", TsError::OutOfRange),
            ("2026-11-25T10:00:00+24", TsError::OutOfRange),
            ("2026-11-25T10:00:00+0160", TsError::OutOfRange),
        ] {
            assert_eq!(utc(ts), Err(want), "{ts}");
        }
        assert!(TsError::DateOnly
            .to_string()
            .contains("2026-11-25T10:00:00Z"));
        assert!(TsError::Number.to_string().contains("epoch"));
    }

    #[test]
    fn the_utc_instant_must_be_within_years_1_to_9999() {
        for (ts, want) in [
            ("0001-01-01T00:00:00Z", Ok(MIN_MILLIS)),
            ("0001-01-01T00:00:00.000000001Z", Ok(MIN_MILLIS)),
            ("0001-01-01 01:00:00+01", Ok(MIN_MILLIS)),
            ("9999-12-31T23:59:59.999Z", Ok(MAX_MILLIS)),
            ("9999-12-31T23:59:59.999999999Z", Ok(MAX_MILLIS)),
            ("9999-12-31T23:59:59", Ok(MAX_MILLIS - 999)),
            ("9999-12-31T22:59:59.999-01:00", Ok(MAX_MILLIS)),
            ("0000-12-31T23:59:59.999Z", Err(TsError::BeyondRange)),
            ("0000-01-01T00:00:00Z", Err(TsError::BeyondRange)),
            ("0000-12-31 23:59:59", Err(TsError::BeyondRange)),
            ("0001-01-01T00:00:00+00:01", Err(TsError::BeyondRange)),
            ("0001-01-01T00:59:59.999+01", Err(TsError::BeyondRange)),
            ("9999-12-31T23:59:59-23:59", Err(TsError::BeyondRange)),
            ("9999-12-31T23:00:00-0100", Err(TsError::BeyondRange)),
            ("9999-12-31T23:59:60Z", Err(TsError::BeyondRange)),
        ] {
            assert_eq!(utc(ts), want, "{ts}");
        }
        let detail = TsError::BeyondRange.to_string();
        assert!(
            detail.contains("0001-01-01T00:00:00Z") && detail.contains("9999-12-31T23:59:59.999Z"),
            "{detail}"
        );
    }

    #[test]
    fn multibyte_input_never_panics() {
        for ts in [
            "2026-11-25T10:00:00+é",
            "2026-11-25T10:00:00.9é",
            "é026-11-25",
            "2026-11-25T10:00:00−01:00",
        ] {
            let _ = utc(ts);
        }
    }
}

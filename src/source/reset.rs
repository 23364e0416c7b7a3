//! Offsets the consumer skips because the log no longer holds them: when the position
//! falls off the log (retention deleted it), librdkafka resets it as
//! `auto.offset.reset` says and logs the reset with the offset it was at. This module
//! owns the resets announced and not yet followed by a message; the first message of
//! such a partition tells how many offsets were skipped.
use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Mutex,
    },
};

/// Offset resets librdkafka announced, by partition: the offset the position was at.
#[derive(Debug, Default)]
pub struct Resets {
    any: AtomicBool,
    pending: Mutex<HashMap<i32, i64>>,
}

impl Resets {
    /// Notes a reset of a partition of `topic` if the librdkafka log line (facility
    /// `fac`) announces one; returns whether it did.
    pub fn note_log(&self, topic: &str, fac: &str, line: &str) -> bool {
        let Some((partition, at)) = parse(topic, fac, line) else {
            return false;
        };
        let mut pending = self.pending.lock().expect("resets lock");
        pending.insert(partition, at);
        self.any.store(true, Ordering::SeqCst);
        true
    }

    /// For the first message of a partition after a reset: the reset's origin and how
    /// many offsets lie between it and `offset` (0 when the reset moved backwards).
    /// None when no reset is pending for the partition.
    pub fn skipped(&self, partition: i32, offset: i64) -> Option<(i64, i64)> {
        if !self.any.load(Ordering::SeqCst) {
            return None;
        }
        let mut pending = self.pending.lock().expect("resets lock");
        let at = pending.remove(&partition)?;
        self.any.store(!pending.is_empty(), Ordering::SeqCst);
        Some((at, (offset - at).max(0)))
    }
}

/// Reads `<topic> [<partition>]: offset reset (at offset <n> (leader epoch <e>), ...`,
/// the line librdkafka logs under `OFFSET` when a fetch error resets the position.
fn parse(topic: &str, fac: &str, line: &str) -> Option<(i32, i64)> {
    if fac != "OFFSET" {
        return None;
    }
    // librdkafka opens its lines with the thread, `[thrd:main]: `.
    let line = match line.strip_prefix("[thrd:") {
        Some(rest) => rest.split_once("]: ")?.1,
        None => line,
    };
    let rest = line.strip_prefix(topic)?.strip_prefix(" [")?;
    let (partition, rest) = rest.split_once("]: offset reset (at offset ")?;
    let digits = rest.split(|c: char| !c.is_ascii_digit()).next()?;
    Some((partition.parse().ok()?, digits.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str =
        "[thrd:main]: sales [2]: offset reset (at offset 10 (leader epoch 0), broker 1) \
        to offset BEGINNING: fetch failed due to requested offset not available on the \
        broker: Broker: Offset out of range";

    #[test]
    fn a_reset_line_names_the_partition_and_the_offset_it_was_at() {
        assert_eq!(parse("sales", "OFFSET", LINE), Some((2, 10)));
        assert_eq!(parse("sales-2", "OFFSET", LINE), None, "another topic");
        assert_eq!(parse("sales", "FETCH", LINE), None);
        assert_eq!(
            parse("sales", "OFFSET", &LINE[13..]),
            Some((2, 10)),
            "no thread"
        );
        let logical = "sales [0]: offset reset (at offset END (leader epoch -1), broker 1)";
        assert_eq!(parse("sales", "OFFSET", logical), None);
    }

    #[test]
    fn the_first_message_after_a_reset_counts_the_gap_once() {
        let r = Resets::default();
        assert_eq!(r.skipped(2, 50), None);
        assert!(r.note_log("sales", "OFFSET", LINE));
        assert_eq!(r.skipped(1, 50), None, "another partition");
        assert_eq!(r.skipped(2, 110), Some((10, 100)));
        assert_eq!(r.skipped(2, 111), None, "counted once");
    }
}

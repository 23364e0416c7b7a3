//! Per-partition offset tracking: which consumed offsets are still in flight, and so how
//! far it is safe to commit. An offset is committable only when every earlier offset of
//! its partition is durable, a duplicate, or dead-lettered — contiguous per partition.
//! A partition that is revoked and assigned again, or moved by SeekConsumer, gets a new
//! generation, so acks from before the rebalance or the seek cannot move the new
//! position's offsets.
use std::collections::{BTreeSet, HashMap};

#[derive(Debug)]
struct PartitionState {
    generation: u64,
    /// Offsets handed to the pipeline and not yet resolved.
    pending: BTreeSet<i64>,
    /// One past the highest offset seen in this generation; None before the first.
    next: Option<i64>,
    /// The last offset committed (the next offset to consume), or None.
    committed: Option<i64>,
}

/// Offsets in flight for every assigned partition.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    partitions: HashMap<i32, PartitionState>,
    generations: u64,
}

impl OffsetTracker {
    /// Starts tracking a newly assigned partition; returns its generation.
    pub fn assign(&mut self, partition: i32) -> u64 {
        self.generations += 1;
        let generation = self.generations;
        self.partitions.insert(
            partition,
            PartitionState {
                generation,
                pending: BTreeSet::new(),
                next: None,
                committed: None,
            },
        );
        generation
    }

    /// Stops tracking a revoked partition.
    pub fn revoke(&mut self, partition: i32) {
        self.partitions.remove(&partition);
    }

    /// Partitions currently tracked, sorted.
    pub fn assigned(&self) -> Vec<i32> {
        let mut v: Vec<_> = self.partitions.keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// Records a consumed offset; returns the generation to resolve it with. An offset
    /// of a partition that is not assigned is tracked under a fresh assignment.
    pub fn received(&mut self, partition: i32, offset: i64) -> u64 {
        if !self.partitions.contains_key(&partition) {
            self.assign(partition);
        }
        let p = self.partitions.get_mut(&partition).expect("just assigned");
        p.pending.insert(offset);
        p.next = Some(p.next.map_or(offset + 1, |n| n.max(offset + 1)));
        p.generation
    }

    /// Marks an offset as done (durable, duplicate or dead-lettered). Acks from an
    /// older generation are ignored.
    pub fn resolved(&mut self, partition: i32, generation: u64, offset: i64) {
        if let Some(p) = self.partitions.get_mut(&partition) {
            if p.generation == generation {
                p.pending.remove(&offset);
            }
        }
    }

    /// The offset it is safe to commit for a partition (the next to consume): the
    /// lowest pending offset, or one past the highest seen when nothing is pending.
    pub fn committable(&self, partition: i32) -> Option<i64> {
        let p = self.partitions.get(&partition)?;
        p.pending.first().copied().or(p.next)
    }

    /// Partitions whose committable offset moved past what was last committed.
    pub fn to_commit(&self) -> Vec<(i32, i64)> {
        let mut v: Vec<_> = self
            .partitions
            .iter()
            .filter_map(|(&part, p)| {
                let c = self.committable(part)?;
                (p.committed.is_none_or(|done| c > done)).then_some((part, c))
            })
            .collect();
        v.sort_unstable();
        v
    }

    /// Records a successful commit. Commits never go backwards, except through `seek`;
    /// a commit beyond the position of this generation is a late report from before a
    /// seek and is ignored.
    pub fn mark_committed(&mut self, partition: i32, offset: i64) {
        if let Some(p) = self.partitions.get_mut(&partition) {
            if p.next.is_some_and(|next| offset > next) {
                return;
            }
            p.committed = Some(p.committed.map_or(offset, |c| c.max(offset)));
        }
    }

    /// Moves a drained partition's next offset to `position` (the consumer's, which is
    /// past records never handed out: transaction markers, aborted records). Nothing
    /// pending, nothing moves backwards, and an untracked partition stays untracked.
    pub fn pass_to(&mut self, partition: i32, position: i64) {
        if let Some(p) = self.partitions.get_mut(&partition) {
            if p.pending.is_empty() && p.next.is_none_or(|n| position > n) {
                p.next = Some(position);
            }
        }
    }

    /// Whether every offset handed out for the partition is resolved (true for a
    /// partition that is not tracked).
    pub fn is_drained(&self, partition: i32) -> bool {
        self.partitions
            .get(&partition)
            .is_none_or(|p| p.pending.is_empty())
    }

    /// Whether the partition is tracked (assigned to this instance).
    pub fn is_assigned(&self, partition: i32) -> bool {
        self.partitions.contains_key(&partition)
    }

    /// Restarts a drained partition at `offset` (SeekConsumer): a new generation whose
    /// next offset is `offset` and which has committed nothing yet, so `to_commit`
    /// lists `offset` even when it lies before the last commit. Returns the generation,
    /// or None when the partition is not tracked or still has offsets in flight (a seek
    /// must never let a commit pass an event that is not durable).
    pub fn seek(&mut self, partition: i32, offset: i64) -> Option<u64> {
        let p = self.partitions.get(&partition)?;
        if !p.pending.is_empty() {
            return None;
        }
        self.generations += 1;
        let generation = self.generations;
        self.partitions.insert(
            partition,
            PartitionState {
                generation,
                pending: BTreeSet::new(),
                next: Some(offset),
                committed: None,
            },
        );
        Some(generation)
    }

    /// The last committed offset of a partition.
    pub fn committed(&self, partition: i32) -> Option<i64> {
        self.partitions.get(&partition)?.committed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_only_up_to_the_first_unresolved_offset() {
        let mut t = OffsetTracker::default();
        let g = t.assign(0);
        for o in 10..15 {
            assert_eq!(t.received(0, o), g);
        }
        assert_eq!(t.committable(0), Some(10));
        t.resolved(0, g, 11);
        t.resolved(0, g, 12);
        assert_eq!(t.committable(0), Some(10), "10 still in flight");
        t.resolved(0, g, 10);
        assert_eq!(t.committable(0), Some(13));
        t.resolved(0, g, 13);
        t.resolved(0, g, 14);
        assert_eq!(t.committable(0), Some(15), "all done: one past the last");
    }

    #[test]
    fn to_commit_lists_only_partitions_that_advanced() {
        let mut t = OffsetTracker::default();
        let g0 = t.assign(0);
        let g1 = t.assign(1);
        t.received(0, 0);
        t.received(1, 0);
        t.resolved(0, g0, 0);
        assert_eq!(t.to_commit(), vec![(0, 1), (1, 0)]);
        t.mark_committed(0, 1);
        t.mark_committed(1, 0);
        assert!(t.to_commit().is_empty());
        t.resolved(1, g1, 0);
        assert_eq!(t.to_commit(), vec![(1, 1)]);
        assert!(t.partitions.values().all(|p| p.pending.is_empty()));
    }

    #[test]
    fn a_drained_partition_passes_records_never_handed_out() {
        let mut t = OffsetTracker::default();
        let g = t.assign(0);
        t.received(0, 4);
        t.pass_to(0, 6);
        assert_eq!(t.committable(0), Some(4), "offset 4 still in flight");
        t.resolved(0, g, 4);
        assert_eq!(t.committable(0), Some(5));
        t.pass_to(0, 6);
        assert_eq!(t.committable(0), Some(6), "past the commit marker at 5");
        t.pass_to(0, 3);
        assert_eq!(t.committable(0), Some(6), "never backwards");
        t.pass_to(7, 10);
        assert!(!t.is_assigned(7));
    }

    #[test]
    fn acks_from_before_a_rebalance_are_ignored() {
        let mut t = OffsetTracker::default();
        let old = t.assign(3);
        t.received(3, 100);
        t.revoke(3);
        assert_eq!(t.committable(3), None);
        let new = t.assign(3);
        assert_ne!(old, new);
        t.received(3, 100);
        t.resolved(3, old, 100);
        assert_eq!(t.committable(3), Some(100), "stale ack must not advance");
        t.resolved(3, new, 100);
        assert_eq!(t.committable(3), Some(101));
    }

    #[test]
    fn unassigned_partitions_are_tracked_on_first_message() {
        let mut t = OffsetTracker::default();
        let g = t.received(7, 5);
        t.resolved(7, g, 5);
        assert_eq!(t.to_commit(), vec![(7, 6)]);
        assert_eq!(t.assigned(), vec![7]);
    }

    #[test]
    fn seek_waits_for_a_drained_partition_and_starts_a_new_generation() {
        let mut t = OffsetTracker::default();
        let old = t.assign(0);
        for o in 40..45 {
            t.received(0, o);
        }
        assert!(!t.is_drained(0));
        assert_eq!(t.seek(0, 10), None, "offsets 40..45 are in flight");
        assert_eq!(t.seek(9, 10), None, "not assigned");
        for o in 40..45 {
            t.resolved(0, old, o);
        }
        t.mark_committed(0, 45);
        assert!(t.is_drained(0));
        let new = t.seek(0, 10).expect("drained");
        assert_ne!(old, new);
        assert_eq!(t.committable(0), Some(10));
        assert_eq!(t.to_commit(), vec![(0, 10)], "a commit backwards is due");
        t.mark_committed(0, 10);
        assert_eq!(t.committed(0), Some(10));
        assert!(t.to_commit().is_empty());
    }

    #[test]
    fn after_a_seek_old_acks_and_late_commit_reports_change_nothing() {
        let mut t = OffsetTracker::default();
        let old = t.assign(0);
        t.received(0, 50);
        t.resolved(0, old, 50);
        let new = t.seek(0, 5).unwrap();
        t.received(0, 5);
        t.received(0, 6);
        t.resolved(0, old, 5);
        assert_eq!(t.committable(0), Some(5), "an ack of the old generation");
        t.mark_committed(0, 51);
        assert_eq!(
            t.committed(0),
            None,
            "a late report of a commit before the seek"
        );
        t.resolved(0, new, 5);
        assert_eq!(t.committable(0), Some(6), "6 is not durable yet");
        t.resolved(0, new, 6);
        assert_eq!(t.to_commit(), vec![(0, 7)]);
    }

    #[test]
    fn seek_forward_skips_and_commits_the_new_position() {
        let mut t = OffsetTracker::default();
        let g = t.assign(2);
        t.received(2, 0);
        t.resolved(2, g, 0);
        t.mark_committed(2, 1);
        t.seek(2, 1_000).unwrap();
        assert_eq!(t.to_commit(), vec![(2, 1_000)]);
        let g = t.received(2, 1_000);
        t.mark_committed(2, 1_000);
        t.resolved(2, g, 1_000);
        assert_eq!(t.to_commit(), vec![(2, 1_001)]);
    }

    #[test]
    fn commits_never_go_backwards() {
        let mut t = OffsetTracker::default();
        let g = t.assign(0);
        t.received(0, 0);
        t.resolved(0, g, 0);
        t.mark_committed(0, 1);
        t.mark_committed(0, 0);
        assert_eq!(t.committed(0), Some(1));
    }
}

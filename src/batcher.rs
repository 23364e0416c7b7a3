//! The batch being collected: cut when it reaches `BATCH_SIZE` events, due when
//! `FLUSH_INTERVAL` has passed since its first event (the pipeline also hands it over
//! earlier, whenever a write slot is free and nothing more is ready). Pure state; the
//! pipeline drives it with tokio time, so tests can pause the clock.
use std::time::Duration;

use tokio::time::Instant;

/// Collects items into batches.
#[derive(Debug)]
pub struct Batcher<T> {
    items: Vec<T>,
    max: usize,
    interval: Duration,
    deadline: Option<Instant>,
}

impl<T> Batcher<T> {
    /// A batcher cutting at `max` items (at least 1) or `interval` after the first.
    pub fn new(max: usize, interval: Duration) -> Self {
        let max = max.max(1);
        Self {
            items: Vec::with_capacity(max),
            max,
            interval,
            deadline: None,
        }
    }

    /// Adds an item; returns the full batch when it reached the size limit. `now` is
    /// read only for the first item of a batch (it starts the flush deadline).
    pub fn push(&mut self, item: T, now: impl FnOnce() -> Instant) -> Option<Vec<T>> {
        if self.items.is_empty() {
            self.deadline = Some(now() + self.interval);
        }
        self.items.push(item);
        (self.items.len() >= self.max).then(|| self.take())
    }

    /// When the current partial batch is due, if there is one.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Takes whatever is collected, possibly nothing.
    pub fn take(&mut self) -> Vec<T> {
        self.deadline = None;
        std::mem::replace(&mut self.items, Vec::with_capacity(self.max))
    }

    /// True when nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_at_the_size_limit() {
        let now = Instant::now();
        let mut b = Batcher::new(3, Duration::from_secs(5));
        assert!(b.push(1, || now).is_none());
        assert!(b.push(2, || now).is_none());
        assert_eq!(b.push(3, || now), Some(vec![1, 2, 3]));
        assert!(b.is_empty());
        assert_eq!(b.deadline(), None);
    }

    #[test]
    fn deadline_runs_from_the_first_item_of_a_batch() {
        let t0 = Instant::now();
        let mut b = Batcher::new(10, Duration::from_secs(5));
        b.push('a', || t0);
        b.push('b', || t0 + Duration::from_secs(4));
        assert_eq!(b.deadline(), Some(t0 + Duration::from_secs(5)));
        assert_eq!(b.take(), vec!['a', 'b']);
        b.push('c', || t0 + Duration::from_secs(6));
        assert_eq!(b.deadline(), Some(t0 + Duration::from_secs(11)));
        assert_eq!(b.items.len(), 1);
    }

    #[test]
    fn size_zero_is_treated_as_one() {
        let mut b = Batcher::new(0, Duration::from_secs(1));
        assert_eq!(b.push(9, Instant::now), Some(vec![9]));
    }
}

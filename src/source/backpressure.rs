//! When the Kafka source pauses fetching: while PauseConsumer is in force, and when a
//! full pipeline has held the source's backlog full for longer than
//! `STALL_BEFORE_PAUSE`. A full pipeline first only stops the source taking messages
//! (librdkafka's prefetch queue waits); pausing at every full channel would throw the
//! prefetched messages away and fetch them again. While paused the consumer keeps
//! polling, so the group session survives long MongoDB outages. Pure state driven with
//! tokio time, so tests can pause the clock.
use std::time::Duration;

use tokio::time::Instant;

use crate::metrics::PauseReason;

/// Messages the source holds when the pipeline is full before it stops taking more.
pub const BACKLOG_MAX: usize = 1024;
/// How long a full backlog may block the source before fetching is paused.
pub const STALL_BEFORE_PAUSE: Duration = Duration::from_secs(1);

/// The pause decision, updated once per turn of the source loop.
#[derive(Debug, Default)]
pub struct Backpressure {
    stalled_since: Option<Instant>,
    paused: bool,
}

impl Backpressure {
    /// Updates the decision from the backlog length and PauseConsumer; returns the new
    /// pause state when it changed.
    pub fn update(&mut self, backlog: usize, admin_paused: bool, now: Instant) -> Option<bool> {
        self.stalled_since = if backlog >= BACKLOG_MAX {
            self.stalled_since.or(Some(now))
        } else {
            None
        };
        let stalled = self
            .stalled_since
            .is_some_and(|t| now.duration_since(t) >= STALL_BEFORE_PAUSE);
        let want = admin_paused || stalled;
        (want != self.paused).then(|| {
            self.paused = want;
            want
        })
    }

    /// Whether fetching is paused.
    pub fn paused(&self) -> bool {
        self.paused
    }

    /// Why fetching is paused: PauseConsumer when it is in force, else backpressure.
    pub fn reason(&self, admin_paused: bool) -> Option<PauseReason> {
        match (self.paused, admin_paused) {
            (false, _) => None,
            (true, true) => Some(PauseReason::Admin),
            (true, false) => Some(PauseReason::Backpressure),
        }
    }

    /// Whether the source takes messages: while the backlog has room, or while paused
    /// (polling goes on, and paused partitions deliver nothing new).
    pub fn take_messages(&self, backlog: usize) -> bool {
        backlog < BACKLOG_MAX || self.paused
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_full_backlog_pauses_only_after_the_stall_time() {
        let mut b = Backpressure::default();
        assert_eq!(b.update(BACKLOG_MAX, false, Instant::now()), None);
        assert!(!b.take_messages(BACKLOG_MAX));
        tokio::time::advance(STALL_BEFORE_PAUSE - Duration::from_millis(1)).await;
        assert_eq!(b.update(BACKLOG_MAX, false, Instant::now()), None);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(b.update(BACKLOG_MAX, false, Instant::now()), Some(true));
        assert!(b.paused() && b.take_messages(BACKLOG_MAX));
        assert_eq!(b.reason(false), Some(PauseReason::Backpressure));
        assert_eq!(b.reason(true), Some(PauseReason::Admin));
        assert_eq!(
            b.update(BACKLOG_MAX - 1, false, Instant::now()),
            Some(false)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_backlog_that_drains_in_time_never_pauses() {
        let mut b = Backpressure::default();
        b.update(BACKLOG_MAX, false, Instant::now());
        tokio::time::advance(Duration::from_millis(900)).await;
        assert_eq!(b.update(10, false, Instant::now()), None);
        b.update(BACKLOG_MAX, false, Instant::now());
        tokio::time::advance(Duration::from_millis(900)).await;
        assert_eq!(
            b.update(BACKLOG_MAX, false, Instant::now()),
            None,
            "stall restarted"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn pause_consumer_pauses_at_once_and_resume_waits_for_the_backlog() {
        let mut b = Backpressure::default();
        assert_eq!(b.update(0, true, Instant::now()), Some(true));
        assert_eq!(b.reason(true), Some(PauseReason::Admin));
        assert_eq!(b.update(0, true, Instant::now()), None);
        assert_eq!(b.update(0, false, Instant::now()), Some(false));
        assert_eq!(b.reason(false), None);
        b.update(BACKLOG_MAX, true, Instant::now());
        tokio::time::advance(STALL_BEFORE_PAUSE).await;
        assert_eq!(
            b.update(BACKLOG_MAX, false, Instant::now()),
            None,
            "still stalled"
        );
    }
}

//! The order of one event id's writes across batches in flight (`WRITE_MODE=upsert`):
//! a batch holding an id waits for the earlier batches still writing it, so the last
//! event per id in source order is the one written last.
use std::collections::HashMap;

use tokio::sync::watch;

/// The batches in flight by event id, so that a batch holding an id waits for the
/// earlier batches still writing it: writes run `WRITE_CONCURRENCY` at once, and without
/// this a correction written in one batch could land before the original written in an
/// earlier one. The pipeline registers batches in source order.
#[derive(Debug)]
pub struct InFlight {
    last: HashMap<String, watch::Receiver<bool>>,
    /// Size at which finished batches are dropped from `last`.
    prune_at: usize,
}

impl Default for InFlight {
    fn default() -> Self {
        Self {
            last: HashMap::new(),
            prune_at: 4096,
        }
    }
}

/// A registered batch: its done signal (sent, or dropped, when its write has ended) and
/// the earlier batches it waits for.
pub struct Turn {
    pub done: watch::Sender<bool>,
    pub after: Vec<watch::Receiver<bool>>,
}

impl Turn {
    /// Waits until every earlier batch holding one of this batch's ids has ended.
    pub async fn wait(&mut self) {
        for w in &mut self.after {
            // An error means the earlier batch's task is gone: nothing to wait for.
            let _ = w.wait_for(|done| *done).await;
        }
    }
}

impl InFlight {
    /// Registers the next batch in source order by the event ids it holds.
    pub fn register<'a>(&mut self, ids: impl Iterator<Item = &'a str>) -> Turn {
        if self.last.len() >= self.prune_at {
            self.last
                .retain(|_, rx| !*rx.borrow() && rx.has_changed().is_ok());
            self.prune_at = (self.last.len() * 2).max(4096);
        }
        let (done, rx) = watch::channel(false);
        let mut after: Vec<watch::Receiver<bool>> = Vec::new();
        for id in ids {
            if let Some(prev) = self.last.insert(id.to_string(), rx.clone()) {
                let open = !*prev.borrow() && prev.has_changed().is_ok();
                if open && !prev.same_channel(&rx) && !after.iter().any(|w| w.same_channel(&prev)) {
                    after.push(prev);
                }
            }
        }
        Turn { done, after }
    }

    /// Ids currently tracked (finished batches included until the next prune).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.last.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_batch_waits_only_for_earlier_batches_holding_its_ids() {
        let mut f = InFlight::default();
        let first = f.register(["a", "b"].into_iter());
        let mut second = f.register(["c", "a", "a"].into_iter());
        let mut third = f.register(["d"].into_iter());
        assert_eq!((second.after.len(), third.after.len()), (1, 0));
        third.wait().await;
        let waited = tokio::time::timeout(std::time::Duration::from_secs(1), second.wait()).await;
        assert!(
            waited.is_err(),
            "the second batch waits while the first writes"
        );
        first.done.send(true).unwrap();
        second.wait().await;
        // A finished batch holds nobody up; a dropped one neither.
        drop(second);
        let fourth = f.register(["a", "b", "c"].into_iter());
        assert!(fourth.after.is_empty());
        assert_eq!(f.len(), 4);
    }
}

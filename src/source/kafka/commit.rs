//! The source's commits: every second the partitions whose durable offset advanced
//! (asynchronously; the commit callback reports what the broker took), drained
//! partitions moved past the records librdkafka consumed without handing them over, and
//! the final commit at shutdown, synchronous on a blocking thread.
use rdkafka::consumer::{CommitMode, Consumer};
use tracing::warn;

use super::KafkaSource;

impl KafkaSource {
    /// Commits every partition whose durable offset advanced; the commit callback
    /// records what the broker took.
    pub(super) fn commit_async(&mut self, seeking: bool) {
        if !seeking {
            self.pass_unseen_records();
        }
        let offsets = self.offsets.tracker().to_commit();
        if offsets.is_empty() {
            return;
        }
        let tpl = self.ctx().offsets_list(&offsets);
        if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
            warn!(error = %e, "offset commit failed; will retry");
        }
    }

    /// Moves drained partitions past the records librdkafka consumed without handing
    /// them over (transaction markers, aborted records): its position is then beyond
    /// the last message, and the commit follows it, so no lag waits on them.
    fn pass_unseen_records(&mut self) {
        let Ok(positions) = self.consumer.position() else {
            return;
        };
        let t = self.offsets.tracker_mut();
        for e in positions.elements_for_topic(&self.topic) {
            if let rdkafka::Offset::Offset(o) = e.offset() {
                t.pass_to(e.partition(), o);
            }
        }
    }

    /// The last commit, synchronous, on a blocking thread so a broker outage cannot
    /// hold a runtime worker (the shutdown timeout bounds the wait).
    pub(super) async fn commit_final(&mut self) {
        let offsets = self.offsets.tracker().to_commit();
        if offsets.is_empty() {
            return;
        }
        let consumer = self.consumer.clone();
        let tpl = self.ctx().offsets_list(&offsets);
        let result =
            tokio::task::spawn_blocking(move || consumer.commit(&tpl, CommitMode::Sync)).await;
        match result {
            Ok(Ok(())) => self.offsets.committed(&offsets),
            Ok(Err(e)) => {
                warn!(error = %e, "final offset commit failed; those events will be redelivered")
            }
            Err(e) => warn!(error = %e, "final offset commit did not finish"),
        }
    }
}

//! The Kafka source's offsets and everything that reports to them. `Offsets` owns the
//! `OffsetTracker` outright and lives in the source task; what changes it arrives as
//! messages: acks from the pipeline (`KafkaAcked`, on the channel every `KafkaAck`
//! holds) and rebalances and commit reports from librdkafka's callbacks
//! (`FromConsumer`). The revoke callback commits what is durable from `durable`, the
//! list of due commits this module alone writes after each change.
use std::sync::{Arc, Mutex};

use prometheus::IntCounter;
use tokio::sync::mpsc;
use tracing::error;

use crate::{
    event::{KafkaAck, KafkaAcked},
    source::offsets::OffsetTracker,
};

/// What the consumer's callbacks tell the source.
#[derive(Debug, PartialEq)]
pub enum FromConsumer {
    /// Partitions assigned to this member.
    Assigned(Vec<i32>),
    /// Partitions taken away.
    Revoked(Vec<i32>),
    /// Offsets the broker took.
    Committed(Vec<(i32, i64)>),
}

/// A report to the offsets.
#[derive(Debug)]
pub enum Report {
    /// From the pipeline.
    Acked(KafkaAcked),
    /// From the consumer's callbacks.
    Consumer(FromConsumer),
}

/// Where the consumer's callbacks send what happened.
pub type ConsumerEvents = mpsc::UnboundedSender<FromConsumer>;

/// The due commits (partition, offset) as of the last change, for the revoke callback.
pub type Durable = Arc<Mutex<Vec<(i32, i64)>>>;

/// The source's offsets: the tracker and its two inboxes.
pub struct Offsets {
    tracker: OffsetTracker,
    acks_tx: mpsc::UnboundedSender<KafkaAcked>,
    acks: mpsc::UnboundedReceiver<KafkaAcked>,
    consumer: mpsc::UnboundedReceiver<FromConsumer>,
    durable: Durable,
    /// `ingest_acks_lost_total{source="kafka"}`.
    lost: IntCounter,
}

impl Offsets {
    /// Offsets fed by the callbacks' `consumer` channel, publishing to `durable`.
    pub fn new(
        consumer: mpsc::UnboundedReceiver<FromConsumer>,
        durable: Durable,
        lost: IntCounter,
    ) -> Self {
        let (acks_tx, acks) = mpsc::unbounded_channel();
        Self {
            tracker: OffsetTracker::default(),
            acks_tx,
            acks,
            consumer,
            durable,
            lost,
        }
    }

    /// The tracker, for reading (commits, lag, seeks).
    pub fn tracker(&self) -> &OffsetTracker {
        &self.tracker
    }

    /// The tracker, for a seek restarting partitions.
    pub fn tracker_mut(&mut self) -> &mut OffsetTracker {
        &mut self.tracker
    }

    /// Records a consumed message and returns its ack. Callback reports are applied
    /// first: a rebalance served by the same poll comes before the message.
    pub fn received(&mut self, topic: &Arc<str>, partition: i32, offset: i64) -> KafkaAck {
        self.apply_consumer();
        let generation = self.tracker.received(partition, offset);
        KafkaAck::new(
            topic.clone(),
            (partition, offset, generation),
            self.acks_tx.clone(),
        )
    }

    /// The next report, acks first.
    pub async fn next(&mut self) -> Report {
        tokio::select! {
            biased;
            acked = self.acks.recv() => Report::Acked(acked.expect("Offsets holds a sender")),
            Some(event) = self.consumer.recv() => Report::Consumer(event),
        }
    }

    /// Applies a report and every other one of its kind already waiting.
    pub fn handle(&mut self, report: Report) {
        match report {
            Report::Acked(acked) => self.apply_acks(acked),
            Report::Consumer(event) => self.apply(event),
        }
    }

    /// The next report of the pipeline (never ends: this holds a sender).
    pub async fn next_ack(&mut self) -> KafkaAcked {
        self.acks.recv().await.expect("Offsets holds a sender")
    }

    /// Applies an ack report and every other one already waiting.
    pub fn apply_acks(&mut self, first: KafkaAcked) {
        let mut next = Some(first);
        while let Some(acked) = next {
            match acked {
                KafkaAcked::Resolved(done) => {
                    for (partition, generation, offset) in done {
                        self.tracker.resolved(partition, generation, offset);
                    }
                }
                KafkaAcked::Lost {
                    partition,
                    generation,
                    offset,
                } => {
                    self.lost.inc();
                    error!(
                        partition,
                        generation,
                        offset,
                        "an event's ack was dropped unresolved; its offset stays uncommitted \
                         and is delivered again after a restart or a rebalance"
                    );
                }
            }
            next = self.acks.try_recv().ok();
        }
        self.publish();
    }

    /// Applies one callback report and every other one already waiting.
    pub fn apply(&mut self, first: FromConsumer) {
        let mut next = Some(first);
        while let Some(event) = next {
            match event {
                FromConsumer::Assigned(parts) => parts.iter().for_each(|&p| {
                    self.tracker.assign(p);
                }),
                FromConsumer::Revoked(parts) => parts.iter().for_each(|&p| self.tracker.revoke(p)),
                FromConsumer::Committed(offsets) => {
                    for (p, o) in offsets {
                        self.tracker.mark_committed(p, o);
                    }
                }
            }
            next = self.consumer.try_recv().ok();
        }
        self.publish();
    }

    /// Applies the callback reports already waiting.
    pub fn apply_consumer(&mut self) {
        if let Ok(first) = self.consumer.try_recv() {
            self.apply(first);
        }
    }

    /// Restarts a drained partition at `offset` (`OffsetTracker::seek`).
    pub fn seek(&mut self, partition: i32, offset: i64) -> Option<u64> {
        let generation = self.tracker.seek(partition, offset);
        self.publish();
        generation
    }

    /// Applies the ack reports already waiting (the last ones, at stop).
    pub fn apply_waiting_acks(&mut self) {
        if let Ok(first) = self.acks.try_recv() {
            self.apply_acks(first);
        }
    }

    /// Records a commit this task made and the broker took.
    pub fn committed(&mut self, offsets: &[(i32, i64)]) {
        for &(p, o) in offsets {
            self.tracker.mark_committed(p, o);
        }
        self.publish();
    }

    /// Publishes the due commits for the revoke callback.
    fn publish(&self) {
        *self.durable.lock().expect("durable lock") = self.tracker.to_commit();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{
        event::{Ack, Outcome},
        metrics::Metrics,
    };

    fn offsets() -> (Offsets, ConsumerEvents, Durable, IntCounter) {
        let (tx, rx) = mpsc::unbounded_channel();
        let durable = Durable::default();
        let lost = Metrics::new().lost_acks().kafka;
        (
            Offsets::new(rx, durable.clone(), lost.clone()),
            tx,
            durable,
            lost,
        )
    }

    /// Runs the source's side as its loop does: acks first, then callback reports.
    async fn serve(o: &mut Offsets, until: impl Fn(&OffsetTracker) -> bool) {
        while !until(o.tracker()) {
            let report = o.next().await;
            o.handle(report);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn acks_resolved_elsewhere_reach_the_owner_and_advance_commits_contiguously() {
        let (mut o, events, durable, _) = offsets();
        events.send(FromConsumer::Assigned(vec![0])).unwrap();
        let topic: Arc<str> = "t".into();
        let acks: Vec<_> = (0..4).map(|off| o.received(&topic, 0, off)).collect();
        let mut acks = acks.into_iter().rev();
        let last = acks.next().unwrap();
        let rest: Vec<_> = acks.collect();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ack::Kafka(last).resolve(Outcome::Stored);
            tokio::time::sleep(Duration::from_millis(50)).await;
            crate::event::resolve_all(rest.into_iter().map(|k| (Ack::Kafka(k), Outcome::Stored)));
        });
        let acked = o.next_ack().await;
        o.apply_acks(acked);
        assert_eq!(
            o.tracker().committable(0),
            Some(0),
            "offset 3 alone is not contiguous"
        );
        serve(&mut o, |t| t.committable(0) == Some(4)).await;
        assert_eq!(*durable.lock().unwrap(), vec![(0, 4)]);
        events.send(FromConsumer::Committed(vec![(0, 4)])).unwrap();
        serve(&mut o, |t| t.committed(0) == Some(4)).await;
        assert!(durable.lock().unwrap().is_empty(), "nothing more is due");
    }

    #[tokio::test(start_paused = true)]
    async fn a_rebalance_reported_before_a_message_comes_first_and_old_acks_change_nothing() {
        let (mut o, events, _, _) = offsets();
        let topic: Arc<str> = "t".into();
        let old = o.received(&topic, 2, 10);
        events.send(FromConsumer::Revoked(vec![2])).unwrap();
        events.send(FromConsumer::Assigned(vec![2])).unwrap();
        let new = o.received(&topic, 2, 10);
        assert_ne!(old.generation, new.generation);
        Ack::Kafka(old).resolve(Outcome::Stored);
        let acked = o.next_ack().await;
        o.apply_acks(acked);
        assert_eq!(o.tracker().committable(2), Some(10), "a stale ack");
        Ack::Kafka(new).resolve(Outcome::Duplicate);
        let acked = o.next_ack().await;
        o.apply_acks(acked);
        assert_eq!(o.tracker().committable(2), Some(11));
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_ack_is_counted_and_holds_its_partition() {
        let (mut o, _events, _, lost) = offsets();
        let topic: Arc<str> = "t".into();
        let first = o.received(&topic, 0, 0);
        let second = o.received(&topic, 0, 1);
        drop(first);
        Ack::Kafka(second).resolve(Outcome::Stored);
        let acked = o.next_ack().await;
        o.apply_acks(acked);
        assert_eq!(lost.get(), 1);
        assert_eq!(
            o.tracker().committable(0),
            Some(0),
            "nothing passes the lost offset"
        );
    }
}

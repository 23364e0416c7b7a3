//! "Kafka reachable": the consumer errors that keep this member from consuming (the
//! topic missing, the group refusing it), which the source loop notes on the
//! `SourceContext` and an assignment or a consumed message clears, and `probe`, the one
//! writer of the state, which adds librdkafka's broker states to them.
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use rdkafka::{
    consumer::Consumer,
    error::{KafkaError, RDKafkaErrorCode},
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::{IngestConsumer, SourceContext};
use crate::deps::{State, StateWriter};

/// A consumer error that keeps the member from consuming.
#[derive(Clone, Debug)]
pub(super) struct Problem {
    why: String,
    /// Whether it may be a race with the topic's creation, so it counts only once it
    /// has lasted [`TOPIC_GRACE`] (and until an assignment clears it).
    missing_topic: bool,
    first: Instant,
    last: Instant,
}

impl Problem {
    /// Whether it was still being reported at `now` (a repeat extends it).
    fn ongoing_at(&self, now: Instant) -> bool {
        now.duration_since(self.last) < PROBLEM_WINDOW
    }

    /// Why Kafka is down because of it, if it counts now.
    fn counts(&self) -> Option<&str> {
        // librdkafka reports a missing topic once; the assignment that follows its
        // creation clears it. The group's refusals repeat at every join attempt.
        let current = self.missing_topic || self.ongoing_at(Instant::now());
        let lasted = !self.missing_topic || self.first.elapsed() >= TOPIC_GRACE;
        (current && lasted).then_some(self.why.as_str())
    }
}

impl SourceContext {
    /// Records a consumer error if it keeps this member from consuming, in words an
    /// operator can act on; other errors are librdkafka's to retry.
    pub(crate) fn note_error(&self, e: &KafkaError) {
        use RDKafkaErrorCode as C;
        let code = e.rdkafka_error_code();
        let missing_topic = matches!(code, Some(C::UnknownTopicOrPartition | C::UnknownTopic));
        let hint = match code {
            _ if missing_topic => format!(
                "topic {} does not exist on the brokers (KAFKA_TOPIC)",
                self.topic
            ),
            Some(C::InconsistentGroupProtocol) => "the group's members use another partition \
                assignment protocol (KAFKA_PARTITION_ASSIGNMENT must match the group's)"
                .to_string(),
            Some(C::GroupAuthorizationFailed | C::TopicAuthorizationFailed) => {
                "not authorized for the group or the topic".to_string()
            }
            _ => return debug!(error = %e, "consumer error"),
        };
        warn!(error = %e, "{hint}");
        let now = Instant::now();
        let mut p = self.problem.lock().expect("problem lock");
        let first = p
            .as_ref()
            .filter(|p| p.missing_topic == missing_topic && p.ongoing_at(now))
            .map_or(now, |p| p.first);
        *p = Some(Problem {
            why: format!("{hint}: {e}"),
            missing_topic,
            first,
            last: now,
        });
    }

    /// Forgets a recorded consumer problem: the member consumes again.
    pub(crate) fn clear_problem(&self) {
        *self.problem.lock().expect("problem lock") = None;
    }
}

/// How long a refusal by the group keeps Kafka down without being reported again
/// (librdkafka repeats it at each join attempt).
const PROBLEM_WINDOW: Duration = Duration::from_secs(30);

/// How long the topic must be missing before Kafka counts as down: deployments often
/// create the topic next to the service, so a first start may race its creation.
const TOPIC_GRACE: Duration = Duration::from_secs(60);

/// Publishes broker reachability, once a second, from librdkafka's own view of its
/// broker connections (the statistics it emits every second): a broker connection is
/// UP (else the last connection failure librdkafka logged says why), statistics are fresh, and no consumer error that keeps this member from
/// consuming was reported in the last [`PROBLEM_WINDOW`]. It adds no request of its
/// own. The one writer of "Kafka reachable".
pub async fn probe(consumer: Arc<IngestConsumer>, state: StateWriter, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let (up, at) = *consumer.context().broker_up.lock().expect("broker_up lock");
        let fresh = at.is_some_and(|t| t.elapsed() < Duration::from_secs(5));
        let problem = (consumer.context().problem.lock().expect("problem lock"))
            .as_ref()
            .and_then(|p| p.counts().map(str::to_string));
        let failure = (consumer
            .context()
            .last_failure
            .lock()
            .expect("last_failure lock"))
        .clone();
        state.set(match (up, fresh, problem) {
            (false, _, _) => State::Down(match failure {
                Some(why) => format!("no broker connection is up; the last attempt failed: {why}"),
                None => "no broker connection is up".into(),
            }),
            (true, false, _) => State::Down("no statistics from librdkafka for 5 s".into()),
            (true, true, Some(why)) => State::Down(why),
            (true, true, None) => State::Up,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(missing_topic: bool, first_ago: u64, last_ago: u64) -> Problem {
        let now = Instant::now();
        Problem {
            why: "why".into(),
            missing_topic,
            first: now - Duration::from_secs(first_ago),
            last: now - Duration::from_secs(last_ago),
        }
    }

    #[test]
    fn a_missing_topic_counts_once_it_has_lasted_the_grace() {
        assert_eq!(problem(true, 10, 0).counts(), None);
        assert_eq!(problem(true, 61, 0).counts(), Some("why"));
        assert_eq!(
            problem(true, 120, 100).counts(),
            Some("why"),
            "reported once, it lasts until an assignment clears it"
        );
    }

    #[test]
    fn a_refusing_group_counts_at_once_while_it_is_reported() {
        assert_eq!(problem(false, 0, 0).counts(), Some("why"));
        assert_eq!(problem(false, 40, 31).counts(), None);
        assert!(problem(false, 40, 10).ongoing_at(Instant::now()));
    }
}

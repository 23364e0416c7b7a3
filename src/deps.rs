//! The state of each dependency, one owner per state: the MongoDB probe owns
//! "MongoDB reachable", the batch writer owns "MongoDB writes", the dead-letter sender
//! owns "dead letters", the Kafka probe owns "Kafka reachable", the schema registry
//! client owns "schema registry". A `StateWriter` cannot be cloned, so each state has exactly one
//! writer; health and GetStats read them through `StateReader`s and derive their
//! verdict from all of them.
use tokio::sync::watch;
use tracing::{info, warn};

use crate::sink::dlq_topic::TopicState;

/// One dependency state: up, or down with the reason an operator can act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    Up,
    Down(String),
}

impl State {
    /// True when up.
    pub fn is_up(&self) -> bool {
        matches!(self, State::Up)
    }

    /// The reason it is down, if it is.
    pub fn error(&self) -> Option<&str> {
        match self {
            State::Up => None,
            State::Down(e) => Some(e),
        }
    }
}

/// The only handle that changes one state.
#[derive(Debug)]
pub struct StateWriter {
    name: &'static str,
    tx: watch::Sender<State>,
    /// True until the first state set: a state that starts down ("not checked yet")
    /// logs its first real reason even though it stays down.
    initial: std::sync::atomic::AtomicBool,
}

/// Reads one state.
pub type StateReader = watch::Receiver<State>;

/// A new state named `name` (for the log lines its changes produce), starting at `initial`.
pub fn state(name: &'static str, initial: State) -> (StateWriter, StateReader) {
    let (tx, rx) = watch::channel(initial);
    let initial = std::sync::atomic::AtomicBool::new(true);
    (StateWriter { name, tx, initial }, rx)
}

impl StateWriter {
    /// Sets the state; logs and returns true when it changed between up and down (a
    /// new reason while down is recorded without a log line, except the first one after
    /// the initial state, so the log says why a dependency is down from the start:
    /// `/health` shows reasons only to callers with the admin token).
    pub fn set(&self, new: State) -> bool {
        let mut changed = false;
        let first = self
            .initial
            .swap(false, std::sync::atomic::Ordering::Relaxed);
        let mut log = false;
        self.tx.send_if_modified(|s| {
            if *s == new {
                return false;
            }
            changed = s.is_up() != new.is_up();
            log = changed || first;
            *s = new.clone();
            true
        });
        if log {
            match &new {
                State::Up => info!(dependency = self.name, "up"),
                State::Down(e) => warn!(dependency = self.name, error = %e, "down"),
            }
        }
        changed
    }

    /// The current state.
    pub fn get(&self) -> State {
        self.tx.borrow().clone()
    }
}

/// Every dependency state health derives from.
#[derive(Clone, Debug)]
pub struct Dependencies {
    pub mongodb_reachable: StateReader,
    pub mongodb_writes: StateReader,
    pub dead_letters: StateReader,
    /// None when Kafka is disabled.
    pub kafka: Option<StateReader>,
    /// None when no schema registry is configured.
    pub schema_registry: Option<StateReader>,
    /// Whether the dead-letter topic exists (written by `sink::dlq_topic`); None when
    /// Kafka is disabled. Not a verdict: while it is unavailable, dead letters go to
    /// the collection, so health reports it without turning NOT_SERVING.
    pub dead_letter_topic: Option<watch::Receiver<TopicState>>,
}

impl Dependencies {
    /// MongoDB as health sees it: down when writes are failing, whatever the ping says,
    /// or when it cannot be reached.
    pub fn mongodb(&self) -> State {
        let writes = self.mongodb_writes.borrow().clone();
        if !writes.is_up() {
            return writes;
        }
        self.mongodb_reachable.borrow().clone()
    }

    /// Kafka as health sees it; None when disabled.
    pub fn kafka(&self) -> Option<State> {
        self.kafka.as_ref().map(|k| k.borrow().clone())
    }

    /// The schema registry as its lookups last found it; None when not configured.
    pub fn schema_registry(&self) -> Option<State> {
        self.schema_registry.as_ref().map(|r| r.borrow().clone())
    }

    /// The dead-letter topic's state; None when Kafka is disabled.
    pub fn dead_letter_topic(&self) -> Option<TopicState> {
        self.dead_letter_topic.as_ref().map(|t| t.borrow().clone())
    }

    /// Whether refused events can be dead-lettered.
    pub fn dead_letters(&self) -> State {
        self.dead_letters.borrow().clone()
    }

    /// True when every required dependency is up.
    pub fn all_up(&self) -> bool {
        self.mongodb().is_up()
            && self.dead_letters().is_up()
            && self.kafka().is_none_or(|k| k.is_up())
            && self.schema_registry().is_none_or(|r| r.is_up())
    }

    /// States that are always up, for tests of the parts that read them.
    pub fn all_up_for_tests(kafka: bool) -> Self {
        Dependencies {
            mongodb_reachable: state("mongodb", State::Up).1,
            mongodb_writes: state("mongodb writes", State::Up).1,
            dead_letters: state("dead letters", State::Up).1,
            kafka: kafka.then(|| state("kafka", State::Up).1),
            schema_registry: None,
            dead_letter_topic: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failing_writes_win_over_a_working_ping() {
        let (reach, reach_r) = state("mongodb", State::Down("not checked yet".into()));
        let (writes, writes_r) = state("mongodb writes", State::Up);
        let deps = Dependencies {
            mongodb_reachable: reach_r,
            mongodb_writes: writes_r,
            dead_letters: state("dead letters", State::Up).1,
            kafka: None,
            schema_registry: None,
            dead_letter_topic: None,
        };
        assert!(!deps.all_up());
        assert!(reach.set(State::Up));
        assert!(deps.all_up());
        assert!(writes.set(State::Down("not authorized".into())));
        assert!(!reach.set(State::Up), "no change");
        assert_eq!(deps.mongodb(), State::Down("not authorized".into()));
        assert!(!deps.all_up());
        assert!(writes.set(State::Up));
        assert!(deps.all_up());
    }

    #[test]
    fn kafka_counts_only_when_enabled() {
        let (_r, reach) = state("mongodb", State::Up);
        let (_w, writes) = state("mongodb writes", State::Up);
        let (kafka, kafka_r) = state("kafka", State::Down("no broker".into()));
        let deps = Dependencies {
            mongodb_reachable: reach,
            mongodb_writes: writes,
            dead_letters: state("dead letters", State::Up).1,
            kafka: Some(kafka_r),
            schema_registry: None,
            dead_letter_topic: None,
        };
        assert!(!deps.all_up());
        kafka.set(State::Up);
        assert!(deps.all_up());
        assert!(!kafka.set(State::Up));
    }
}

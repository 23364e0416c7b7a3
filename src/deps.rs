//! The state of each dependency, one owner per state: the MongoDB probe owns
//! "MongoDB reachable", the batch writer owns "MongoDB writes", the dead-letter sender
//! owns "dead letters", the Kafka probe owns "Kafka reachable", the schema registry
//! client owns "schema registry". A `StateWriter` cannot be cloned, so each state has
//! exactly one writer. `Dependency` lists the dependencies once, and `Dependencies` is
//! the one table of their `StateReader`s that health, the `dependency_up` gauges and
//! GetStats read.
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

/// A dependency the service's verdict is derived from: the one list of them. Health
/// (gRPC Health and `/health`), the `dependency_up` gauges and GetStats read each one's
/// state from [`Dependencies`], so adding a dependency is a variant here and its
/// states registered where their writers are made.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, strum::IntoStaticStr, strum::VariantArray,
)]
#[strum(serialize_all = "snake_case")]
pub enum Dependency {
    /// Taking writes (the writer) and answering pings (the probe).
    Mongodb,
    /// Present only while Kafka is enabled.
    Kafka,
    /// The dead-letter destinations (the collection taking what the topic refuses).
    DeadLetters,
    /// Present only with `SCHEMA_REGISTRY_URL`.
    SchemaRegistry,
}

impl Dependency {
    /// Every dependency, in the order `/health` lists them.
    pub const ALL: &'static [Dependency] = <Dependency as strum::VariantArray>::VARIANTS;

    /// Its name: the `dependency_up` label and the `/health` key.
    pub fn name(self) -> &'static str {
        self.into()
    }

    /// What `/health` says of it while it is not configured; None leaves it out.
    pub fn when_absent(self) -> Option<&'static str> {
        match self {
            Dependency::SchemaRegistry => None,
            _ => Some("disabled"),
        }
    }
}

/// The state of every configured dependency: the one table health, metrics and stats
/// read.
#[derive(Clone, Debug)]
pub struct Dependencies {
    /// Each configured dependency and the states it is made of, in the order of
    /// [`Dependency::ALL`].
    table: Vec<(Dependency, Vec<StateReader>)>,
    /// Whether the dead-letter topic exists (written by `sink::dlq_topic`); None when
    /// Kafka is disabled. Not a verdict: while it is unavailable, dead letters go to
    /// the collection, so health reports it without turning NOT_SERVING.
    dead_letter_topic: Option<watch::Receiver<TopicState>>,
}

impl Dependencies {
    /// No dependency yet, and the dead-letter topic's state when Kafka is enabled.
    pub fn new(dead_letter_topic: Option<watch::Receiver<TopicState>>) -> Self {
        Dependencies {
            table: Vec::new(),
            dead_letter_topic,
        }
    }

    /// Adds `dependency`, made of `states`: it is down while one of them is, with the
    /// reason of the first one down (MongoDB: failing writes win over a working ping).
    pub fn with(
        mut self,
        dependency: Dependency,
        states: impl IntoIterator<Item = StateReader>,
    ) -> Self {
        self.table.retain(|(d, _)| *d != dependency);
        self.table.push((dependency, states.into_iter().collect()));
        self.table.sort_by_key(|(d, _)| *d);
        self
    }

    /// A dependency's state; None when it is not configured.
    pub fn state(&self, dependency: Dependency) -> Option<State> {
        self.states()
            .find(|(d, _)| *d == dependency)
            .map(|(_, s)| s)
    }

    /// Whether `dependency` is configured.
    pub fn has(&self, dependency: Dependency) -> bool {
        self.table.iter().any(|(d, _)| *d == dependency)
    }

    /// Every configured dependency and its state, in the order of [`Dependency::ALL`].
    pub fn states(&self) -> impl Iterator<Item = (Dependency, State)> + '_ {
        self.table.iter().map(|(dependency, states)| {
            let down = (states.iter().map(|s| s.borrow().clone())).find(|s| !s.is_up());
            (*dependency, down.unwrap_or(State::Up))
        })
    }

    /// The dead-letter topic's state; None when Kafka is disabled.
    pub fn dead_letter_topic(&self) -> Option<TopicState> {
        self.dead_letter_topic.as_ref().map(|t| t.borrow().clone())
    }

    /// True when every configured dependency is up.
    pub fn all_up(&self) -> bool {
        self.states().all(|(_, s)| s.is_up())
    }

    /// States that are always up, for tests of the parts that read them.
    pub fn all_up_for_tests(kafka: bool) -> Self {
        let up = |name| state(name, State::Up).1;
        let deps = Dependencies::new(None)
            .with(Dependency::Mongodb, [up("mongodb")])
            .with(Dependency::DeadLetters, [up("dead letters")]);
        match kafka {
            true => deps.with(Dependency::Kafka, [up("kafka")]),
            false => deps,
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
        let deps = Dependencies::new(None)
            .with(Dependency::Mongodb, [writes_r, reach_r])
            .with(
                Dependency::DeadLetters,
                [state("dead letters", State::Up).1],
            );
        assert!(!deps.all_up());
        assert!(reach.set(State::Up));
        assert!(deps.all_up());
        assert!(writes.set(State::Down("not authorized".into())));
        assert!(!reach.set(State::Up), "no change");
        assert_eq!(
            deps.state(Dependency::Mongodb),
            Some(State::Down("not authorized".into()))
        );
        assert!(!deps.all_up());
        assert!(writes.set(State::Up));
        assert!(deps.all_up());
    }

    #[test]
    fn kafka_counts_only_when_enabled() {
        let (_r, reach) = state("mongodb", State::Up);
        let (_w, writes) = state("mongodb writes", State::Up);
        let (kafka, kafka_r) = state("kafka", State::Down("no broker".into()));
        let without =
            Dependencies::new(None).with(Dependency::Mongodb, [writes.clone(), reach.clone()]);
        assert!(without.all_up());
        assert_eq!(without.state(Dependency::Kafka), None);
        let deps = without.with(Dependency::Kafka, [kafka_r]);
        assert!(!deps.all_up());
        kafka.set(State::Up);
        assert!(deps.all_up());
        assert!(!kafka.set(State::Up));
    }

    #[test]
    fn the_table_keeps_the_order_of_all_whatever_the_order_of_registration() {
        let up = || state("x", State::Up).1;
        let deps = Dependencies::new(None)
            .with(Dependency::SchemaRegistry, [up()])
            .with(Dependency::DeadLetters, [up()])
            .with(Dependency::Mongodb, [up()])
            .with(Dependency::Kafka, [up()]);
        let order: Vec<Dependency> = deps.states().map(|(d, _)| d).collect();
        assert_eq!(order, Dependency::ALL);
        let names: Vec<&str> = Dependency::ALL.iter().map(|d| d.name()).collect();
        assert_eq!(
            names,
            ["mongodb", "kafka", "dead_letters", "schema_registry"]
        );
    }
}

//! The MongoDB probe: pings every quarter second (the "MongoDB reachable" state) and
//! creates the start-up indexes, MongoDB counting as down until they exist.
use std::time::Duration;

use mongodb::{
    bson::{doc, RawDocumentBuf},
    options::IndexOptions,
    Database, IndexModel,
};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::PING_TIMEOUT;
use crate::{
    deps::{State, StateWriter},
    sink::{classify::describe, retry::backoff},
};

/// Pings MongoDB every quarter second (health reads the result, so an outage shows
/// within about a second) and creates the indexes on `ts` and `sku` once reachable.
/// Until the indexes exist MongoDB counts as down with the server's reason (a refused
/// index creation is a refused write, e.g. an unsatisfiable write concern); the
/// creation is retried with the write retries' backoff, and a new reason is logged once.
pub async fn probe(db: Database, collection: String, state: StateWriter, stop: CancellationToken) {
    let mut indexes = IndexJob::default();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let ping = tokio::time::timeout(PING_TIMEOUT, db.run_command(doc! { "ping": 1 })).await;
        let error = match ping {
            Ok(Ok(_)) => indexes.run(&db, &collection).await,
            Ok(Err(e)) => Some(describe(&e)),
            // A timeout keeps the last answered reason (a refused password, say), which
            // says more than the timeout.
            Err(_) => Some(match state.get() {
                State::Down(e) if !e.starts_with("ping timed out") => e,
                _ => format!("ping timed out after {} s", PING_TIMEOUT.as_secs()),
            }),
        };
        state.set(match error {
            None => State::Up,
            Some(e) => State::Down(e),
        });
    }
}

/// The start-up index creation: done, or the last refusal and when to try again.
#[derive(Default)]
struct IndexJob {
    done: bool,
    failures: u32,
    next_try: Option<tokio::time::Instant>,
    refused: Option<String>,
}

impl IndexJob {
    /// Creates the indexes when due; the refusal that keeps MongoDB down, if any.
    async fn run(&mut self, db: &Database, collection: &str) -> Option<String> {
        if self.done {
            return None;
        }
        if self
            .next_try
            .is_some_and(|t| tokio::time::Instant::now() < t)
        {
            return self.refused.clone();
        }
        match ensure_indexes(db, collection).await {
            Ok(()) => {
                self.done = true;
                self.refused = None;
                None
            }
            Err(e) => {
                self.failures += 1;
                let wait = backoff(self.failures);
                self.next_try = Some(tokio::time::Instant::now() + wait);
                let why = format!(
                    "MongoDB refused the start-up index creation: {}",
                    reason(&e)
                );
                if self.refused.as_deref() != Some(why.as_str()) {
                    warn!(error = %why, attempt = self.failures, "creating indexes failed; retrying with backoff");
                }
                self.refused = Some(why);
                self.refused.clone()
            }
        }
    }
}

/// The server's reason for a refused command: its code, code name and message (stable
/// across attempts, unlike the whole error, which carries the server's raw reply).
fn reason(e: &mongodb::error::Error) -> String {
    use mongodb::error::{ErrorKind, WriteFailure};
    match &*e.kind {
        ErrorKind::Write(WriteFailure::WriteConcernError(w)) => {
            format!("code {} ({}): {}", w.code, w.code_name, w.message)
        }
        ErrorKind::Write(WriteFailure::WriteError(w)) => format!("code {}: {}", w.code, w.message),
        ErrorKind::Command(c) => format!("code {} ({}): {}", c.code, c.code_name, c.message),
        _ => describe(e),
    }
}

/// IndexOptionsConflict: an index on the same keys exists under another name or with
/// other options (an operator's own `{sku: 1}`, say). MongoDB refuses a second index on
/// one key pattern, so the existing one serves the queries and is kept.
const INDEX_OPTIONS_CONFLICT: i32 = 85;
/// IndexKeySpecsConflict: an index of that name exists over other keys; it is kept too.
const INDEX_KEY_SPECS_CONFLICT: i32 = 86;

/// Creates the `ts` and `sku` indexes (idempotent). An existing index that conflicts
/// with one of them (same keys under another name, or the name over other keys) is kept
/// with a warning: the indexes serve readers, and the service's writes need neither.
pub async fn ensure_indexes(db: &Database, collection: &str) -> Result<(), mongodb::error::Error> {
    let coll = db.collection::<RawDocumentBuf>(collection);
    for field in ["ts", "sku"] {
        let name = format!("{field}_1");
        let model = IndexModel::builder()
            .keys(doc! { field: 1 })
            .options(IndexOptions::builder().name(name.clone()).build())
            .build();
        match coll.create_index(model).await {
            Ok(_) => {}
            Err(e) if is_index_conflict(&e) => warn!(
                collection,
                index = %name,
                error = %reason(&e),
                "an existing index conflicts with the start-up index; keeping the existing one"
            ),
            Err(e) => return Err(e),
        }
    }
    info!(collection, "indexes on ts and sku ensured");
    Ok(())
}

/// Whether a refusal means a conflicting index already exists.
fn is_index_conflict(e: &mongodb::error::Error) -> bool {
    matches!(&*e.kind, mongodb::error::ErrorKind::Command(c)
        if [INDEX_OPTIONS_CONFLICT, INDEX_KEY_SPECS_CONFLICT].contains(&c.code))
}

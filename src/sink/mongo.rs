//! The MongoDB writer: one unordered `insert_many` per batch, `_id` = event id. Each
//! document's answer is classified: 11000 on the `_id_` index, or on a unique index over
//! `event_id` alone (the Python service's), is a duplicate; 11000 on another unique index, and any other per-document error that is
//! not transient by its code, is a permanent refusal (dead-lettered as `write_failed`);
//! per-document errors transient by their code, and any failure of the call itself
//! (network, server selection, write concern, authorization), are retried with capped
//! backoff until every document has a final answer. The writer owns the "MongoDB
//! writes" dependency state: down after `MAX_RETRIES` failed attempts in a row, up at
//! the next success. Also the MongoDB probe (reachability, and the start-up indexes:
//! down until they exist).
//! With `WRITE_MODE=upsert` the duplicates that carry an event id are then replaced
//! (`sink::upsert`).
use std::{sync::Arc, time::Duration};

use mongodb::{
    bson::{doc, DateTime, RawDocumentBuf},
    error::{ErrorKind, IndexedWriteError, InsertManyError},
    options::ClientOptions,
    Client, Collection, Database,
};
use tracing::warn;

use crate::{
    deps::{State, StateWriter},
    event::{Ack, Pending},
    metrics::{Metrics, WriteStatus},
    sink::{
        legacy,
        retry::backoff,
        upsert::{self, WriteMode},
    },
};

pub use super::document::{to_document, DocumentFormat};

/// How long a ping may take before MongoDB counts as unreachable.
const PING_TIMEOUT: Duration = Duration::from_secs(1);

/// MongoDB's duplicate key error code.
pub const DUPLICATE_KEY: i32 = 11000;

/// Per-document error codes that are transient, so the same document is written again:
/// HostUnreachable 6, HostNotFound 7, ExceededTimeLimit 50, NetworkTimeout 89,
/// ShutdownInProgress 91, PrimarySteppedDown 189, NotWritablePrimary 10107,
/// InterruptedAtShutdown 11600, InterruptedDueToReplStateChange 11602,
/// NotPrimaryNoSecondaryOk 13435, NotPrimaryOrSecondary 13436, WriteConcernFailed 64,
/// ExceededMemoryLimit 146, SocketException 9001, LockTimeout 24.
pub const TRANSIENT_CODES: [i32; 15] = [
    6, 7, 50, 89, 91, 189, 10107, 11600, 11602, 13435, 13436, 64, 146, 9001, 24,
];

/// How one document of a batch ended.
#[derive(Clone, Debug, PartialEq)]
pub enum DocResult {
    Stored,
    Duplicate,
    /// Replaced the stored document of its id, or superseded within its batch.
    Updated,
    /// Refused for good, with the server's message.
    Failed(String),
    /// A transient refusal: the document is written again.
    Retry(String),
}

/// An insert_many result sorted into per-document outcomes, or a failure of the call.
#[derive(Debug)]
pub enum WriteResult {
    Done(Vec<DocResult>),
    Transient(String),
}

/// What one document's write error means.
pub fn classify_doc(e: &IndexedWriteError) -> DocResult {
    let text = || format!("code {}: {}", e.code, e.message);
    if e.code == DUPLICATE_KEY {
        // The server names the index and its key ("... index: sku_1 dup key: { sku: .. }");
        // the `_id` index, or a unique index over `event_id` alone (the Python service's
        // design), means this very event is already stored.
        match e.message.split("index: ").nth(1) {
            Some(rest) if !rest.starts_with("_id_") && !event_id_key(rest) => {
                let index = rest.split_whitespace().next().unwrap_or("?");
                DocResult::Failed(format!(
                    "unique index {index} refused the document ({})",
                    text()
                ))
            }
            _ => DocResult::Duplicate,
        }
    } else if TRANSIENT_CODES.contains(&e.code) {
        DocResult::Retry(text())
    } else {
        DocResult::Failed(text())
    }
}

/// Whether a duplicate key message's `dup key: { .. }` is `event_id` alone.
fn event_id_key(message: &str) -> bool {
    let Some(key) = message.split("dup key: ").nth(1) else {
        return false;
    };
    let Some(value) = key.trim().strip_prefix("{ event_id: ") else {
        return false;
    };
    let rest = match value.strip_prefix('"') {
        // A string value: skip to its closing quote (escaped quotes are `\"`).
        Some(s) => {
            let mut escaped = false;
            let end = s.char_indices().find(|&(_, c)| {
                let close = c == '"' && !escaped;
                escaped = c == '\\' && !escaped;
                close
            });
            match end {
                Some((i, _)) => &s[i + 1..],
                None => return false,
            }
        }
        None => value.trim_start_matches(|c: char| c != ',' && c != '}'),
    };
    rest.trim() == "}"
}

/// Sorts an insert_many result into per-document outcomes.
pub fn classify(result: Result<(), mongodb::error::Error>, len: usize) -> WriteResult {
    let err = match result {
        Ok(()) => return WriteResult::Done(vec![DocResult::Stored; len]),
        Err(e) => e,
    };
    if err.contains_label(mongodb::error::RETRYABLE_WRITE_ERROR) {
        return WriteResult::Transient(describe(&err));
    }
    match *err.kind {
        ErrorKind::InsertMany(InsertManyError {
            write_errors: Some(ref write_errors),
            write_concern_error: None,
            ..
        }) => {
            let mut out = vec![DocResult::Stored; len];
            for we in write_errors {
                if let Some(slot) = out.get_mut(we.index) {
                    *slot = classify_doc(we);
                }
            }
            WriteResult::Done(out)
        }
        _ => WriteResult::Transient(describe(&err)),
    }
}

/// Opens a client for the configured URL. Connecting is lazy: an unreachable server
/// shows up in the probe, not here. Errors here are configuration errors.
pub async fn client(url: &str) -> Result<Client, mongodb::error::Error> {
    let mut opts = ClientOptions::parse(url).await?;
    opts.app_name.get_or_insert_with(|| "sales-ingest".into());
    opts.server_selection_timeout
        .get_or_insert(Duration::from_secs(2));
    opts.connect_timeout.get_or_insert(Duration::from_secs(2));
    Client::with_options(opts)
}

/// Writes batches to the events collection; the one writer of "MongoDB writes".
pub struct MongoWriter {
    db: Database,
    coll: Collection<RawDocumentBuf>,
    metrics: Arc<Metrics>,
    state: StateWriter,
    max_retries: u32,
    format: DocumentFormat,
    mode: WriteMode,
    /// `LEGACY_EVENT_ID_LOOKUP`: look event ids up among the Python service's documents.
    legacy_lookup: bool,
}

impl MongoWriter {
    /// A writer for `db.collection` storing documents in `format`.
    pub fn new(
        db: &Database,
        collection: &str,
        metrics: Arc<Metrics>,
        state: StateWriter,
        max_retries: u32,
        format: DocumentFormat,
    ) -> Self {
        Self {
            db: db.clone(),
            coll: db.collection(collection),
            metrics,
            state,
            max_retries,
            format,
            mode: WriteMode::Insert,
            legacy_lookup: false,
        }
    }

    /// The same writer looking each batch's event ids up among the Python service's
    /// documents first (`LEGACY_EVENT_ID_LOOKUP`, `sink::legacy`).
    pub fn with_legacy_lookup(mut self, on: bool) -> Self {
        self.legacy_lookup = on;
        self
    }

    /// The indexes into `batch` of `open` whose event id the Python service stored,
    /// retried with backoff until the lookup answers.
    async fn stored_by_old_service(&self, batch: &[Pending], open: &[usize]) -> Vec<usize> {
        let ids: Vec<&str> = open
            .iter()
            .map(|&i| batch[i].event.event_id())
            .filter(|id| !id.is_empty())
            .collect();
        let mut failures = 0u32;
        let found = loop {
            match legacy::stored_by_old_service(&self.coll, &ids).await {
                Ok(found) => break found,
                Err(e) => {
                    failures += 1;
                    if failures >= self.max_retries.max(1) {
                        self.state.set(State::Down(format!(
                            "legacy event id lookup failing ({failures} attempts in a row): {}",
                            describe(&e)
                        )));
                    }
                    warn!(attempt = failures, error = %describe(&e), "legacy event id lookup failed; retrying");
                    tokio::time::sleep(backoff(failures)).await;
                }
            }
        };
        open.iter()
            .copied()
            .filter(|&i| found.contains(batch[i].event.event_id()))
            .collect()
    }

    /// The same writer in `mode` (`WRITE_MODE`).
    pub fn with_mode(mut self, mode: WriteMode) -> Self {
        self.mode = mode;
        self
    }

    /// Writes a batch until MongoDB gives a final answer for every document.
    #[tracing::instrument(skip_all, fields(batch = batch.len()))]
    pub async fn write(&self, batch: &[Pending]) -> Vec<DocResult> {
        let now = DateTime::now();
        let docs: Vec<RawDocumentBuf> = batch
            .iter()
            .map(|p| {
                self.format
                    .encode(&p.id, &p.event, p.ack.source().as_str(), now)
            })
            .collect();
        let upsert = self.mode == WriteMode::Upsert;
        // Which events may replace their document in upsert mode: those with an event id
        // that are not re-driven dead letters (a re-drive stores what was never stored;
        // it does not undo a correction that arrived since).
        let replaceable = |i: usize| {
            upsert
                && !batch[i].event.event_id().is_empty()
                && !matches!(batch[i].ack, Ack::Redrive(_))
        };
        let superseded = if upsert {
            upsert::superseded_by(
                (0..batch.len()).map(|i| replaceable(i).then_some(batch[i].id.as_str())),
            )
        } else {
            vec![None; batch.len()]
        };
        let mut results = vec![DocResult::Stored; docs.len()];
        // Indexes into `docs` still without a final answer (superseded ones take their
        // winner's).
        let mut open: Vec<usize> = (0..docs.len())
            .filter(|&i| superseded[i].is_none())
            .collect();
        if self.legacy_lookup {
            let old = self.stored_by_old_service(batch, &open).await;
            for &i in &old {
                results[i] = DocResult::Duplicate;
            }
            open.retain(|i| !old.contains(i));
        }
        let mut failures = 0u32;
        loop {
            if open.is_empty() {
                // Every document was already stored by the old service.
                return upsert::with_superseded(results, &superseded);
            }
            let started = std::time::Instant::now();
            let result = self
                .coll
                .insert_many(open.iter().map(|&i| &docs[i]))
                .ordered(false)
                .await
                .map(|_| ());
            let error = match classify(result, open.len()) {
                WriteResult::Done(answers) => {
                    let mut retry = Vec::new();
                    let mut why = None;
                    let mut replace = Vec::new();
                    for (&i, answer) in open.iter().zip(answers) {
                        if answer == DocResult::Duplicate && replaceable(i) {
                            replace.push(i);
                            continue;
                        }
                        if let DocResult::Retry(e) = &answer {
                            why.get_or_insert_with(|| e.clone());
                            retry.push(i);
                        }
                        results[i] = answer;
                    }
                    if !replace.is_empty() {
                        let refs: Vec<_> = replace.iter().map(|&i| &docs[i]).collect();
                        match upsert::replace(&self.db, self.coll.name(), &refs).await {
                            Ok(answers) => {
                                for (&i, answer) in replace.iter().zip(answers) {
                                    if let DocResult::Retry(e) = &answer {
                                        why.get_or_insert_with(|| e.clone());
                                        retry.push(i);
                                    }
                                    results[i] = answer;
                                }
                            }
                            Err(e) => {
                                why.get_or_insert_with(|| describe(&e));
                                retry.extend(replace);
                            }
                        }
                    }
                    let status = if why.is_some() {
                        WriteStatus::Retry
                    } else if results
                        .iter()
                        .all(|r| matches!(r, DocResult::Stored | DocResult::Updated))
                    {
                        WriteStatus::Success
                    } else {
                        WriteStatus::Partial
                    };
                    self.metrics.write_attempt(status, started.elapsed());
                    open = retry;
                    match why {
                        None => {
                            self.state.set(State::Up);
                            return upsert::with_superseded(results, &superseded);
                        }
                        Some(why) => why,
                    }
                }
                WriteResult::Transient(why) => {
                    self.metrics
                        .write_attempt(WriteStatus::Retry, started.elapsed());
                    why
                }
            };
            failures += 1;
            if failures >= self.max_retries.max(1) {
                self.state.set(State::Down(format!(
                    "writes failing ({failures} attempts in a row): {error}"
                )));
            }
            let wait = backoff(failures);
            warn!(
                attempt = failures,
                documents = open.len(),
                %error,
                retry_in_ms = wait.as_millis() as u64,
                "write failed; retrying, nothing is dropped"
            );
            tokio::time::sleep(wait).await;
        }
    }
}

/// MongoDB's `AuthenticationFailed` error code.
const AUTHENTICATION_FAILED: i32 = 18;

/// A driver error in words an operator can act on.
pub fn describe(e: &mongodb::error::Error) -> String {
    match *e.kind {
        ErrorKind::Authentication { ref message, .. } => format!(
            "MongoDB refused the credentials in MONGODB_URL (authentication failed: {message})"
        ),
        ErrorKind::Command(ref c) if c.code == AUTHENTICATION_FAILED => {
            format!("MongoDB refused the credentials in MONGODB_URL (authentication failed: {e})")
        }
        _ => e.to_string(),
    }
}

mod probe;
pub use probe::{ensure_indexes, probe};

#[cfg(test)]
mod tests;

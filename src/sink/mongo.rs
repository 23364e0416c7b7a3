//! The MongoDB writer: one unordered `insert_many` per batch, `_id` = event id. Each
//! document's answer is classified (`classify`): a duplicate, a permanent refusal
//! (dead-lettered as `write_failed`), or transient; transient answers and any failure of
//! the call itself (network, server selection, write concern, authorization) are retried
//! with capped backoff, for the documents concerned, until every document has a final
//! answer. The writer owns the "MongoDB writes" dependency state: down after
//! `MAX_RETRIES` failed attempts in a row, up at the next success. Also the MongoDB probe
//! (reachability, and the start-up indexes: down until they exist).
//! With `WRITE_MODE=upsert` the duplicates that carry an event id are then replaced
//! (`sink::upsert`).
use std::{sync::Arc, time::Duration};

use mongodb::{
    bson::{DateTime, RawDocumentBuf},
    options::ClientOptions,
    Client, Collection, Database,
};
use tracing::warn;

use crate::{
    deps::{State, StateWriter},
    event::{Ack, Pending},
    metrics::{Metrics, WriteStatus},
    sink::{
        classify::{classify, describe, DocResult, WriteResult},
        legacy,
        retry::backoff,
        upsert::{self, WriteMode},
    },
};

pub use super::document::{to_document, DocumentFormat};

/// How long a ping may take before MongoDB counts as unreachable.
const PING_TIMEOUT: Duration = Duration::from_secs(1);

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
        let replaceable = self.replaceable(batch);
        let superseded = upsert::superseded_by(
            batch
                .iter()
                .zip(&replaceable)
                .map(|(p, &r)| r.then_some(p.id.as_str())),
        );
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
        // Empty from the start when the old service already stored every document.
        while !open.is_empty() {
            let attempt = self.attempt(&docs, &replaceable, &open, &mut results).await;
            open = attempt.retry;
            let Some(error) = attempt.why else {
                self.state.set(State::Up);
                break;
            };
            failures += 1;
            self.failed(failures, open.len(), &error).await;
        }
        upsert::with_superseded(results, &superseded)
    }

    /// Which events may replace their document: in upsert mode, those with an event id
    /// that are not re-driven dead letters (a re-drive stores what was never stored; it
    /// does not undo a correction that arrived since).
    fn replaceable(&self, batch: &[Pending]) -> Vec<bool> {
        let upsert = self.mode == WriteMode::Upsert;
        batch
            .iter()
            .map(|p| upsert && !p.event.event_id().is_empty() && !matches!(p.ack, Ack::Redrive(_)))
            .collect()
    }

    /// One attempt at the `open` documents: an `insert_many`, then (upsert mode) the
    /// replacement of the duplicates that may replace theirs. Final answers go into
    /// `results`; the attempt says which documents to write again, and why.
    async fn attempt(
        &self,
        docs: &[RawDocumentBuf],
        replaceable: &[bool],
        open: &[usize],
        results: &mut [DocResult],
    ) -> Attempt {
        let started = std::time::Instant::now();
        let result = self
            .coll
            .insert_many(open.iter().map(|&i| &docs[i]))
            .ordered(false)
            .await
            .map(|_| ());
        let answers = match classify(result, open.len()) {
            WriteResult::Done(answers) => unnamed::confirm(&self.coll, docs, open, answers).await,
            WriteResult::Transient(why) => {
                self.metrics
                    .write_attempt(WriteStatus::Retry, started.elapsed());
                return Attempt {
                    retry: open.to_vec(),
                    why: Some(why),
                };
            }
        };
        let mut attempt = Attempt::default();
        let mut replace = Vec::new();
        for (&i, answer) in open.iter().zip(answers) {
            if answer == DocResult::Duplicate && replaceable[i] {
                replace.push(i);
            } else {
                attempt.answer(i, answer, results);
            }
        }
        if !replace.is_empty() {
            self.replace(docs, replace, results, &mut attempt).await;
        }
        self.metrics
            .write_attempt(attempt.status(results), started.elapsed());
        attempt
    }

    /// Replaces the stored documents of `replace` (upsert mode), into `attempt`.
    async fn replace(
        &self,
        docs: &[RawDocumentBuf],
        replace: Vec<usize>,
        results: &mut [DocResult],
        attempt: &mut Attempt,
    ) {
        let refs: Vec<_> = replace.iter().map(|&i| &docs[i]).collect();
        match upsert::replace(&self.db, self.coll.name(), &refs).await {
            Ok(answers) => {
                for (&i, answer) in replace.iter().zip(answers) {
                    attempt.answer(i, answer, results);
                }
            }
            Err(e) => {
                attempt.why.get_or_insert_with(|| describe(&e));
                attempt.retry.extend(replace);
            }
        }
    }

    /// An attempt failed (`failures` in a row, `documents` left): "MongoDB writes" goes
    /// down after `MAX_RETRIES`; waits out the backoff.
    async fn failed(&self, failures: u32, documents: usize, error: &str) {
        if failures >= self.max_retries.max(1) {
            self.state.set(State::Down(format!(
                "writes failing ({failures} attempts in a row): {error}"
            )));
        }
        let wait = backoff(failures);
        warn!(
            attempt = failures,
            documents,
            %error,
            retry_in_ms = wait.as_millis() as u64,
            "write failed; retrying, nothing is dropped"
        );
        tokio::time::sleep(wait).await;
    }
}

/// What one write attempt left: the documents to write again, and the first reason.
#[derive(Default)]
struct Attempt {
    retry: Vec<usize>,
    why: Option<String>,
}

impl Attempt {
    /// Records document `i`'s answer; a transient one is written again.
    fn answer(&mut self, i: usize, answer: DocResult, results: &mut [DocResult]) {
        if let DocResult::Retry(e) = &answer {
            self.why.get_or_insert_with(|| e.clone());
            self.retry.push(i);
        }
        results[i] = answer;
    }

    /// How the attempt ended (`mongodb_writes_total{status}`).
    fn status(&self, results: &[DocResult]) -> WriteStatus {
        if self.why.is_some() {
            WriteStatus::Retry
        } else if results
            .iter()
            .all(|r| matches!(r, DocResult::Stored | DocResult::Updated))
        {
            WriteStatus::Success
        } else {
            WriteStatus::Partial
        }
    }
}

mod probe;
mod unnamed;
pub use probe::{ensure_indexes, probe};

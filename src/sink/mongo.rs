//! The MongoDB writer: one unordered `insert_many` per batch, `_id` = event id. Each
//! document's answer is classified: a duplicate `_id` (11000 on the `_id_` index) is a
//! duplicate; 11000 on another unique index, and any other per-document error that is
//! not transient by its code, is a permanent refusal (dead-lettered as `write_failed`);
//! per-document errors transient by their code, and any failure of the call itself
//! (network, server selection, write concern, authorization), are retried with capped
//! backoff until every document has a final answer. The writer owns the "MongoDB
//! writes" dependency state: down after `MAX_RETRIES` failed attempts in a row, up at
//! the next success. Also the MongoDB probe (reachability) and the start-up indexes.
use std::{sync::Arc, time::Duration};

use mongodb::{
    bson::{doc, DateTime, RawDocumentBuf},
    error::{ErrorKind, IndexedWriteError, InsertManyError},
    options::{ClientOptions, IndexOptions},
    Client, Collection, Database, IndexModel,
};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    deps::{State, StateWriter},
    event::Pending,
    metrics::{Metrics, WriteStatus},
    sink::retry::backoff,
    validate::ValidEvent,
};

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
        // The server names the index ("... index: sku_1 dup key: ..."); only the `_id`
        // index means this very event is already stored.
        match e.message.split("index: ").nth(1) {
            Some(rest) if !rest.starts_with("_id_") => {
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

/// Sorts an insert_many result into per-document outcomes.
pub fn classify(result: Result<(), mongodb::error::Error>, len: usize) -> WriteResult {
    let err = match result {
        Ok(()) => return WriteResult::Done(vec![DocResult::Stored; len]),
        Err(e) => e,
    };
    if err.contains_label("RetryableWriteError") {
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

/// Builds the stored document: `{_id, event_id, sku, qty, price, ts, processed_at, source}`.
///
/// The BSON is written straight into one buffer of the exact size (the fields and their
/// types are fixed), instead of `RawDocumentBuf::append_ref`, whose buffer grows by
/// reallocation field after field: that was 12 % of the service's CPU in a perf profile
/// of the Kafka phase of the benchmark. A test checks the bytes equal `append_ref`'s.
pub fn to_document(id: &str, event: &ValidEvent, source: &str, now: DateTime) -> RawDocumentBuf {
    let strings = [("_id", id), ("event_id", id), ("sku", event.sku.as_str())];
    // type byte + key + NUL, and per string its i32 length + bytes + NUL.
    let string_len = |k: &str, v: &str| 1 + k.len() + 1 + 4 + v.len() + 1;
    let len = 4
        + strings.iter().map(|(k, v)| string_len(k, v)).sum::<usize>()
        + (1 + "qty".len() + 1 + 4)
        + (1 + "price".len() + 1 + 8)
        + (1 + "ts".len() + 1 + 8)
        + (1 + "processed_at".len() + 1 + 8)
        + string_len("source", source)
        + 1;
    let mut b = Vec::with_capacity(len);
    b.extend_from_slice(&(len as i32).to_le_bytes());
    let key = |b: &mut Vec<u8>, kind: u8, k: &str| {
        b.push(kind);
        b.extend_from_slice(k.as_bytes());
        b.push(0);
    };
    let string = |b: &mut Vec<u8>, k: &str, v: &str| {
        key(b, 0x02, k);
        b.extend_from_slice(&((v.len() + 1) as i32).to_le_bytes());
        b.extend_from_slice(v.as_bytes());
        b.push(0);
    };
    for (k, v) in strings {
        string(&mut b, k, v);
    }
    key(&mut b, 0x10, "qty");
    b.extend_from_slice(&event.qty.to_le_bytes());
    key(&mut b, 0x01, "price");
    b.extend_from_slice(&event.price.to_le_bytes());
    key(&mut b, 0x09, "ts");
    b.extend_from_slice(&event.ts_millis.to_le_bytes());
    key(&mut b, 0x09, "processed_at");
    b.extend_from_slice(&now.timestamp_millis().to_le_bytes());
    string(&mut b, "source", source);
    b.push(0);
    debug_assert_eq!(b.len(), len);
    RawDocumentBuf::from_bytes(b).expect("a well-formed BSON document of the computed length")
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
    coll: Collection<RawDocumentBuf>,
    metrics: Arc<Metrics>,
    state: StateWriter,
    max_retries: u32,
}

impl MongoWriter {
    /// A writer for `db.collection`.
    pub fn new(
        db: &Database,
        collection: &str,
        metrics: Arc<Metrics>,
        state: StateWriter,
        max_retries: u32,
    ) -> Self {
        Self {
            coll: db.collection(collection),
            metrics,
            state,
            max_retries,
        }
    }

    /// Writes a batch until MongoDB gives a final answer for every document.
    #[tracing::instrument(skip_all, fields(batch = batch.len()))]
    pub async fn write(&self, batch: &[Pending]) -> Vec<DocResult> {
        let now = DateTime::now();
        let docs: Vec<RawDocumentBuf> = batch
            .iter()
            .map(|p| to_document(&p.id, &p.event, p.ack.source().as_str(), now))
            .collect();
        let mut results = vec![DocResult::Stored; docs.len()];
        // Indexes into `docs` still without a final answer.
        let mut open: Vec<usize> = (0..docs.len()).collect();
        let mut failures = 0u32;
        loop {
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
                    for (&i, answer) in open.iter().zip(answers) {
                        if let DocResult::Retry(e) = &answer {
                            why.get_or_insert_with(|| e.clone());
                            retry.push(i);
                        }
                        results[i] = answer;
                    }
                    let status = if why.is_some() {
                        WriteStatus::Retry
                    } else if results.iter().all(|r| *r == DocResult::Stored) {
                        WriteStatus::Success
                    } else {
                        WriteStatus::Partial
                    };
                    self.metrics.write_attempt(status, started.elapsed());
                    open = retry;
                    match why {
                        None => {
                            self.state.set(State::Up);
                            return results;
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
                "insert_many failed; retrying, nothing is dropped"
            );
            tokio::time::sleep(wait).await;
        }
    }
}

/// Pings MongoDB every quarter second (health reads the result, so an outage shows
/// within about a second) and creates the indexes on `ts` and `sku` once reachable.
pub async fn probe(db: Database, collection: String, state: StateWriter, stop: CancellationToken) {
    let mut indexes_done = false;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let ping = tokio::time::timeout(
            Duration::from_millis(1000),
            db.run_command(doc! { "ping": 1 }),
        )
        .await;
        let error = match ping {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(describe(&e)),
            Err(_) => Some("ping timed out after 1 s".to_string()),
        };
        let up = error.is_none();
        state.set(match error {
            None => State::Up,
            Some(e) => State::Down(e),
        });
        if up && !indexes_done {
            match ensure_indexes(&db, &collection).await {
                Ok(()) => indexes_done = true,
                Err(e) => warn!(error = %describe(&e), "creating indexes failed; will retry"),
            }
        }
    }
}

/// A driver error in words an operator can act on.
pub fn describe(e: &mongodb::error::Error) -> String {
    match *e.kind {
        ErrorKind::Authentication { ref message, .. } => format!(
            "MongoDB refused the credentials in MONGODB_URL (authentication failed: {message})"
        ),
        _ if e.to_string().contains("Authentication failed") => {
            format!("MongoDB refused the credentials in MONGODB_URL (authentication failed: {e})")
        }
        _ => e.to_string(),
    }
}

/// Creates the `ts` and `sku` indexes (idempotent).
pub async fn ensure_indexes(db: &Database, collection: &str) -> Result<(), mongodb::error::Error> {
    let coll = db.collection::<RawDocumentBuf>(collection);
    let models = ["ts", "sku"].map(|field| {
        IndexModel::builder()
            .keys(doc! { field: 1 })
            .options(IndexOptions::builder().name(format!("{field}_1")).build())
            .build()
    });
    coll.create_indexes(models).await?;
    info!(collection, "indexes on ts and sku ensured");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::RawBsonRef;

    #[test]
    fn document_has_the_python_service_fields_with_dates() {
        let e = ValidEvent {
            sku: "A".into(),
            qty: 2,
            price: 3.5,
            ts: "1970-01-01T00:00:01Z".into(),
            ts_millis: 1_000,
            event_id: "x".into(),
        };
        let d = to_document("x", &e, "kafka", DateTime::from_millis(5));
        let keys: Vec<_> = d.iter().map(|r| r.unwrap().0.to_string()).collect();
        assert_eq!(
            keys,
            [
                "_id",
                "event_id",
                "sku",
                "qty",
                "price",
                "ts",
                "processed_at",
                "source"
            ]
        );
        assert_eq!(d.get_datetime("ts").unwrap().timestamp_millis(), 1_000);
        assert_eq!(d.get_i32("qty").unwrap(), 2);
    }

    /// The hand-written BSON is byte for byte what the bson crate writes, including
    /// multi-byte UTF-8, empty and long strings, and extreme numbers.
    #[test]
    fn document_bytes_equal_the_bson_crate_s() {
        let cases = [
            ("x", "A", 2, 3.5, 1_000, "kafka"),
            ("évé-∑-1", "SKU-ü", i32::MAX, f64::MAX, i64::MAX, "grpc"),
            ("", "s", i32::MIN, -0.0, i64::MIN, ""),
            (
                &"i".repeat(300) as &str,
                &"k".repeat(70000) as &str,
                0,
                1e-300,
                0,
                "kafka",
            ),
        ];
        for (id, sku, qty, price, ts_millis, source) in cases {
            let e = ValidEvent {
                sku: sku.into(),
                qty,
                price,
                ts: String::new(),
                ts_millis,
                event_id: id.into(),
            };
            let now = DateTime::from_millis(1_764_000_000_123);
            let mut want = RawDocumentBuf::new();
            want.append_ref("_id", RawBsonRef::String(id));
            want.append_ref("event_id", RawBsonRef::String(id));
            want.append_ref("sku", RawBsonRef::String(sku));
            want.append_ref("qty", RawBsonRef::Int32(qty));
            want.append_ref("price", RawBsonRef::Double(price));
            want.append_ref("ts", RawBsonRef::DateTime(DateTime::from_millis(ts_millis)));
            want.append_ref("processed_at", RawBsonRef::DateTime(now));
            want.append_ref("source", RawBsonRef::String(source));
            let got = to_document(id, &e, source, now);
            assert_eq!(got.as_bytes(), want.as_bytes(), "id {id:.20}");
            assert_eq!(got.get_str("sku").unwrap(), sku);
        }
    }

    fn write_error(code: i32, message: &str) -> IndexedWriteError {
        mongodb::bson::from_document(doc! { "index": 0, "code": code, "errmsg": message }).unwrap()
    }

    #[test]
    fn a_duplicate_id_is_a_duplicate_and_another_unique_index_a_refusal() {
        let id = "E11000 duplicate key error collection: t.x index: _id_ dup key: { _id: \"a\" }";
        assert_eq!(classify_doc(&write_error(11000, id)), DocResult::Duplicate);
        assert_eq!(
            classify_doc(&write_error(11000, "E11000 duplicate key error")),
            DocResult::Duplicate,
            "a server that does not name the index"
        );
        let other =
            "E11000 duplicate key error collection: t.x index: sku_1 dup key: { sku: \"s\" }";
        match classify_doc(&write_error(11000, other)) {
            DocResult::Failed(why) => assert!(why.contains("unique index sku_1"), "{why}"),
            got => panic!("{got:?}"),
        }
    }

    #[test]
    fn transient_codes_are_retried_and_the_rest_refused() {
        for code in TRANSIENT_CODES {
            assert!(
                matches!(classify_doc(&write_error(code, "x")), DocResult::Retry(_)),
                "{code}"
            );
        }
        for code in [121, 2, 166, 10334] {
            assert!(
                matches!(classify_doc(&write_error(code, "x")), DocResult::Failed(_)),
                "{code}"
            );
        }
    }

    #[test]
    fn success_means_all_stored() {
        match classify(Ok(()), 3) {
            WriteResult::Done(r) => assert_eq!(r, vec![DocResult::Stored; 3]),
            other => panic!("{other:?}"),
        }
    }
}

//! The MongoDB writer: one unordered `insert_many` per batch, `_id` = event id. A
//! duplicate key (11000) is a duplicate, never a failure; other per-document errors are
//! permanent and go to the dead-letter destination; anything else (network, server
//! selection, write concern) is transient and the whole batch is retried with capped
//! exponential backoff and jitter until it succeeds. Also owns the MongoDB probe that
//! health reads and the start-up index creation.
use std::{sync::Arc, time::Duration};

use mongodb::{
    bson::{doc, DateTime, RawDocumentBuf},
    error::{ErrorKind, InsertManyError},
    options::{ClientOptions, IndexOptions},
    Client, Collection, Database, IndexModel,
};
use rand::Rng;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::{pipeline::Pending, stats::Stats, validate::ValidEvent};

/// MongoDB's duplicate key error code.
pub const DUPLICATE_KEY: i32 = 11000;

/// How one document of a batch ended.
#[derive(Clone, Debug, PartialEq)]
pub enum DocResult {
    Stored,
    Duplicate,
    /// Refused for good, with the server's message.
    Failed(String),
}

/// An insert_many result sorted into per-document outcomes, or a transient failure.
#[derive(Debug)]
pub enum WriteResult {
    Done(Vec<DocResult>),
    Transient(String),
}

/// Sorts an insert_many result into per-document outcomes.
pub fn classify(result: Result<(), mongodb::error::Error>, len: usize) -> WriteResult {
    let err = match result {
        Ok(()) => return WriteResult::Done((0..len).map(|_| DocResult::Stored).collect()),
        Err(e) => e,
    };
    match *err.kind {
        ErrorKind::InsertMany(InsertManyError {
            ref write_errors,
            write_concern_error: None,
            ..
        }) => {
            let mut out: Vec<_> = (0..len).map(|_| DocResult::Stored).collect();
            for we in write_errors.iter().flatten() {
                if let Some(slot) = out.get_mut(we.index) {
                    *slot = if we.code == DUPLICATE_KEY {
                        DocResult::Duplicate
                    } else {
                        DocResult::Failed(format!("code {}: {}", we.code, we.message))
                    };
                }
            }
            WriteResult::Done(out)
        }
        _ => WriteResult::Transient(describe(&err)),
    }
}

/// Backoff before retry `attempt` (1-based): 100 ms doubling to a 5 s cap, ±50% jitter.
pub fn backoff(attempt: u32) -> Duration {
    let base = 100u64
        .saturating_mul(1 << attempt.saturating_sub(1).min(6))
        .min(5_000);
    let jitter = rand::rng().random_range(0.5..1.5);
    Duration::from_millis((base as f64 * jitter) as u64)
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

/// Writes batches to the events collection.
pub struct MongoWriter {
    coll: Collection<RawDocumentBuf>,
    stats: Arc<Stats>,
    max_retries: u32,
}

impl MongoWriter {
    /// A writer for `db.collection`.
    pub fn new(db: &Database, collection: &str, stats: Arc<Stats>, max_retries: u32) -> Self {
        Self {
            coll: db.collection(collection),
            stats,
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
        let mut attempt = 0u32;
        loop {
            let started = std::time::Instant::now();
            let result = self
                .coll
                .insert_many(&docs)
                .ordered(false)
                .await
                .map(|_| ());
            let classified = classify(result, docs.len());
            let status = match &classified {
                WriteResult::Done(r) if r.iter().all(|d| *d == DocResult::Stored) => "success",
                WriteResult::Done(_) => "partial",
                WriteResult::Transient(_) => "retry",
            };
            self.stats.mongodb_writes.with_label_values(&[status]).inc();
            self.stats
                .write_duration
                .with_label_values(&[status])
                .observe(started.elapsed().as_secs_f64());
            match classified {
                WriteResult::Done(results) => {
                    if attempt >= self.max_retries && self.stats.set_up("mongodb", true) {
                        info!("MongoDB writes succeed again");
                    }
                    return results;
                }
                WriteResult::Transient(msg) => {
                    attempt += 1;
                    if attempt >= self.max_retries && self.stats.set_up("mongodb", false) {
                        warn!(attempt, error = %msg, "MongoDB writes failing; retrying, nothing is dropped");
                    }
                    let wait = backoff(attempt);
                    warn!(attempt, error = %msg, retry_in_ms = wait.as_millis() as u64, "insert_many failed");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

/// Pings MongoDB every quarter second (health reads the result, so an outage shows
/// within about a second) and creates the indexes on `ts` and `sku` once reachable.
pub async fn probe(db: Database, collection: String, stats: Arc<Stats>, stop: CancellationToken) {
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
        if stats.set_up("mongodb", up) {
            match &error {
                None => info!("MongoDB reachable"),
                Some(e) => error!(error = %e, "MongoDB unreachable; retrying"),
            }
        }
        *stats.mongodb_error.lock().expect("error lock") = error;
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

    #[test]
    fn backoff_grows_and_is_capped() {
        for _ in 0..50 {
            let first = backoff(1);
            assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(150));
            assert!(backoff(30) <= Duration::from_millis(7_500));
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

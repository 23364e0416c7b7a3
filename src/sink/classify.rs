//! What MongoDB's answer to a write means for each document: stored, a duplicate,
//! updated, refused for good, or to be written again. 11000 on the `_id_` index, or on
//! a unique index over `event_id` alone (the Python service's), is a duplicate; 11000
//! naming no index is looked up by `_id` before it is one (`mongo::unnamed`); 11000 on
//! another unique index, and any other per-document code not known to be transient, is
//! a permanent refusal; the transient codes, a `RetryableWriteError` label and any
//! failure of the call itself are retried. The insert (`mongo`) and the replacement
//! (`upsert`) both classify their answers here; `describe` puts a driver error in words.
use mongodb::error::{ErrorKind, IndexedWriteError, InsertManyError};

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
    /// 11000 on an index the server did not name (FerretDB names none): the writer
    /// looks the `_id` up before it answers Duplicate or Failed (`mongo::unnamed`).
    DuplicateKey(String),
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
            Some(_) => DocResult::Duplicate,
            None => DocResult::DuplicateKey(text()),
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

#[cfg(test)]
mod tests;

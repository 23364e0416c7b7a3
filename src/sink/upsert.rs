//! `WRITE_MODE`: what a later event with a stored `event_id` does. `insert` (the
//! default) leaves the stored document alone and counts the event as a duplicate;
//! `upsert` replaces the document, so a producer corrects an event by sending it again
//! under the same id. This module owns the mode, the last-wins resolution of a batch and
//! the `update` command that replaces stored documents; the order of one id's writes
//! across batches in flight is the pipeline's (`pipeline::inflight`).
//!
//! The writer inserts a batch first (`insert_many`, unordered, as in `insert` mode), so
//! new ids cost what they cost there; only the documents refused with 11000 on `_id`
//! that carry an event id are then replaced, in one `update` command of
//! `{q: {_id}, u: <document>, upsert: true}` statements (MongoDB 5.0+; not the 8.0
//! `bulkWrite` command). Events without an event id (a Kafka coordinate `_id` or a fresh
//! ObjectId) are never replaced: a redelivery of one stays a duplicate.
use std::collections::HashMap;

use mongodb::{
    bson::{rawdoc, Document, RawArrayBuf, RawDocumentBuf},
    error::IndexedWriteError,
    Database,
};

use super::classify::{classify_doc, DocResult};

/// What a later event with a stored `event_id` does (`WRITE_MODE`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum WriteMode {
    /// The stored document stays; the later event is a duplicate.
    #[default]
    Insert,
    /// The later event replaces the stored document (a correction).
    Upsert,
}

/// Largest `update` command sent at once, bytes (MongoDB's limit is 16 MiB).
const MAX_COMMAND_BYTES: usize = 12 * 1024 * 1024;

/// Statements per `update` command at most (MongoDB's `maxWriteBatchSize`).
const MAX_STATEMENTS: usize = 100_000;

/// For each event of a batch in source order, given its event id (None for an event
/// without one): the position of the last event of the batch with the same id when that
/// is a later one (the event is superseded, and only the last one is written), else
/// None. Unordered writes keep no order between documents of one `_id`, so the order
/// is settled here, before writing.
pub fn superseded_by<'a>(
    ids: impl DoubleEndedIterator<Item = Option<&'a str>> + ExactSizeIterator,
) -> Vec<Option<usize>> {
    let mut out = vec![None; ids.len()];
    let mut last: HashMap<&str, usize> = HashMap::new();
    for (i, id) in ids.enumerate().rev() {
        if let Some(id) = id {
            match last.get(id) {
                Some(&winner) => out[i] = Some(winner),
                None => {
                    last.insert(id, i);
                }
            }
        }
    }
    out
}

/// The outcome of a superseded event, from the outcome of the event that superseded it:
/// updated, unless MongoDB refused the later event for good, in which case neither is
/// stored and the superseded one is refused too (dead-lettered; the producer resends).
pub fn superseded_outcome(winner: &DocResult) -> DocResult {
    match winner {
        DocResult::Failed(why) => DocResult::Failed(format!(
            "superseded by a later event of the same id that MongoDB refused: {why}"
        )),
        _ => DocResult::Updated,
    }
}

/// `results` with each superseded event given its winner's outcome
/// ([`superseded_outcome`]); `superseded[i]` is the index of the event that superseded `i`.
pub fn with_superseded(
    mut results: Vec<DocResult>,
    superseded: &[Option<usize>],
) -> Vec<DocResult> {
    for (i, winner) in superseded.iter().enumerate() {
        if let Some(w) = *winner {
            results[i] = superseded_outcome(&results[w]);
        }
    }
    results
}

/// Replaces the stored documents of `docs` (upserting any that vanished meanwhile) and
/// returns each one's answer: `Updated`, `Stored` (no document matched, so it was
/// inserted), `Retry` or `Failed` by the same rules as an insert. An error is a failure
/// of a call itself, to be retried.
pub async fn replace(
    db: &Database,
    collection: &str,
    docs: &[&RawDocumentBuf],
) -> Result<Vec<DocResult>, mongodb::error::Error> {
    let mut out = Vec::with_capacity(docs.len());
    let mut rest = docs;
    while !rest.is_empty() {
        let (command, taken) = command(collection, rest);
        let reply = db.run_raw_command(command).await?;
        out.extend(answers(&reply, taken)?);
        rest = &rest[taken..];
    }
    Ok(out)
}

/// One `update` command for the first documents of `docs` that fit in it, and how many
/// it holds (at least one).
fn command(collection: &str, docs: &[&RawDocumentBuf]) -> (RawDocumentBuf, usize) {
    let mut updates = RawArrayBuf::new();
    let mut bytes = 0;
    let mut taken = 0;
    for doc in docs.iter().take(MAX_STATEMENTS) {
        let size = doc.as_bytes().len() * 2 + 64;
        if taken > 0 && bytes + size > MAX_COMMAND_BYTES {
            break;
        }
        let id = doc.get("_id").ok().flatten().map(|v| v.to_raw_bson());
        let mut q = RawDocumentBuf::new();
        if let Some(id) = id {
            q.append("_id", id);
        }
        updates.push(rawdoc! { "q": q, "u": (*doc).clone(), "upsert": true });
        bytes += size;
        taken += 1;
    }
    let command = rawdoc! { "update": collection, "updates": updates, "ordered": false };
    (command, taken)
}

/// Sorts an `update` reply into per-statement answers.
fn answers(reply: &Document, len: usize) -> Result<Vec<DocResult>, mongodb::error::Error> {
    if let Ok(wce) = reply.get_document("writeConcernError") {
        return Err(mongodb::error::Error::custom(format!(
            "write concern error: {wce}"
        )));
    }
    let mut out = vec![DocResult::Updated; len];
    for upserted in reply.get_array("upserted").into_iter().flatten() {
        if let Some(i) = upserted.as_document().and_then(index) {
            if let Some(slot) = out.get_mut(i) {
                *slot = DocResult::Stored;
            }
        }
    }
    for we in reply.get_array("writeErrors").into_iter().flatten() {
        let Some(we) = we.as_document() else { continue };
        let Ok(we) = mongodb::bson::from_document::<IndexedWriteError>(we.clone()) else {
            continue;
        };
        if let Some(slot) = out.get_mut(we.index) {
            *slot = match classify_doc(&we) {
                // Another writer inserted the same `_id` between the match and the
                // insert of this upsert: the next attempt replaces it.
                DocResult::Duplicate => DocResult::Retry(format!(
                    "code {}: {} (a concurrent insert of the same _id)",
                    we.code, we.message
                )),
                other => other,
            };
        }
    }
    Ok(out)
}

/// A statement index in an `update` reply (an int32 or int64).
fn index(d: &Document) -> Option<usize> {
    match d.get("index")? {
        mongodb::bson::Bson::Int32(i) => usize::try_from(*i).ok(),
        mongodb::bson::Bson::Int64(i) => usize::try_from(*i).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::doc;

    fn resolve(ids: &[Option<&str>]) -> Vec<Option<usize>> {
        superseded_by(ids.iter().copied())
    }

    #[test]
    fn the_last_event_per_id_in_source_order_wins() {
        let got = resolve(&[Some("a"), Some("b"), Some("a"), Some("c"), Some("a")]);
        assert_eq!(got, vec![Some(4), None, Some(4), None, None]);
    }

    #[test]
    fn events_without_an_id_are_never_superseded() {
        let got = resolve(&[None, Some("a"), None, Some("a")]);
        assert_eq!(got, vec![None, Some(3), None, None]);
        assert_eq!(resolve(&[]), Vec::<Option<usize>>::new());
    }

    #[test]
    fn distinct_ids_are_all_written() {
        assert_eq!(resolve(&[Some("a"), Some("b")]), vec![None, None]);
    }

    #[test]
    fn a_superseded_event_is_updated_unless_its_winner_is_refused() {
        assert_eq!(superseded_outcome(&DocResult::Stored), DocResult::Updated);
        assert_eq!(superseded_outcome(&DocResult::Updated), DocResult::Updated);
        match superseded_outcome(&DocResult::Failed("sku_1".into())) {
            DocResult::Failed(why) => assert!(why.contains("superseded") && why.contains("sku_1")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_update_reply_sorts_into_updated_stored_failed_and_retry() {
        let reply = doc! {
            "n": 2, "nModified": 1, "ok": 1.0,
            "upserted": [{ "index": 1, "_id": "b" }],
            "writeErrors": [
                { "index": 2, "code": 11000, "errmsg": "E11000 duplicate key error collection: t.x index: sku_1 dup key: { sku: \"s\" }" },
                { "index": 3, "code": 11000, "errmsg": "E11000 duplicate key error collection: t.x index: _id_ dup key: { _id: \"d\" }" },
                { "index": 4, "code": 91, "errmsg": "shutting down" },
            ],
        };
        let got = answers(&reply, 5).unwrap();
        assert_eq!(got[0], DocResult::Updated);
        assert_eq!(got[1], DocResult::Stored);
        assert!(
            matches!(&got[2], DocResult::Failed(w) if w.contains("sku_1")),
            "{:?}",
            got[2]
        );
        assert!(matches!(got[3], DocResult::Retry(_)), "{:?}", got[3]);
        assert!(matches!(got[4], DocResult::Retry(_)), "{:?}", got[4]);
        assert!(answers(&doc! { "ok": 1.0, "writeConcernError": { "code": 64 } }, 1).is_err());
    }

    #[test]
    fn a_command_holds_one_statement_per_document_keyed_by_id() {
        let a = rawdoc! { "_id": "a", "qty": 1 };
        let b = rawdoc! { "_id": "b", "qty": 2 };
        let (cmd, taken) = command("raw_sales", &[&a, &b]);
        assert_eq!(taken, 2);
        let cmd: Document = cmd.try_into().unwrap();
        assert_eq!(cmd.get_str("update").unwrap(), "raw_sales");
        assert!(!cmd.get_bool("ordered").unwrap());
        let second = cmd.get_array("updates").unwrap()[1]
            .as_document()
            .unwrap()
            .clone();
        assert_eq!(
            second,
            doc! { "q": { "_id": "b" }, "u": { "_id": "b", "qty": 2 }, "upsert": true }
        );
    }
}

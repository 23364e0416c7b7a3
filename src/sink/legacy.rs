//! The cut-over's overlap window on a collection without a unique `event_id` index
//! (`LEGACY_EVENT_ID_LOOKUP`): before a batch is written, its event ids are looked up
//! among the documents the Python service wrote (their `_id` is MongoDB's ObjectId, not
//! a string as sales-ingest's are); an event found there is already stored, a
//! duplicate, and is not written again under its own `_id`.
use std::collections::HashSet;

use futures::TryStreamExt;
use mongodb::{
    bson::{doc, Document, RawDocumentBuf},
    Collection,
};

/// The event ids of `ids` that a document with a non-string `_id` already holds.
pub async fn stored_by_old_service(
    coll: &Collection<RawDocumentBuf>,
    ids: &[&str],
) -> Result<HashSet<String>, mongodb::error::Error> {
    if ids.is_empty() {
        return Ok(HashSet::new());
    }
    let filter = doc! {
        "event_id": { "$in": ids },
        "_id": { "$not": { "$type": "string" } },
    };
    let found: Vec<Document> = coll
        .clone_with_type::<Document>()
        .find(filter)
        .projection(doc! { "_id": 0, "event_id": 1 })
        .await?
        .try_collect()
        .await?;
    Ok(found
        .iter()
        .filter_map(|d| d.get_str("event_id").ok().map(str::to_string))
        .collect())
}

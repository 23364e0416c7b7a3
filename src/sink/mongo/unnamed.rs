//! Duplicate-key refusals that name no index (FerretDB's `E11000 duplicate key error
//! collection: db.coll`): the writer cannot tell the `_id` index from another unique
//! index by the message, so it looks the `_id`s up and answers from what is stored.
use mongodb::{
    bson::{doc, Bson, RawDocumentBuf},
    Collection,
};

use crate::sink::classify::{describe, DocResult};

/// `answers` (one per index in `open`) with every `DuplicateKey` resolved: Duplicate
/// when a document with that `_id` is stored, Failed (a unique index on another field
/// refused it) when none is, Retry when the lookup itself fails.
pub async fn confirm(
    coll: &Collection<RawDocumentBuf>,
    docs: &[RawDocumentBuf],
    open: &[usize],
    mut answers: Vec<DocResult>,
) -> Vec<DocResult> {
    let unnamed: Vec<(usize, Bson)> = (0..open.len())
        .filter(|&k| matches!(answers[k], DocResult::DuplicateKey(_)))
        .filter_map(|k| Some((k, id_of(&docs[open[k]])?)))
        .collect();
    if unnamed.is_empty() {
        return answers;
    }
    let ids: Vec<Bson> = unnamed.iter().map(|(_, id)| id.clone()).collect();
    let found = match stored_ids(coll, ids).await {
        Ok(found) => found,
        Err(e) => {
            for (k, _) in &unnamed {
                answers[*k] = DocResult::Retry(format!(
                    "looking up a duplicate key's _id failed: {}",
                    describe(&e)
                ));
            }
            return answers;
        }
    };
    for (k, id) in unnamed {
        if found.contains(&id) {
            answers[k] = DocResult::Duplicate;
        }
    }
    for answer in &mut answers {
        if let DocResult::DuplicateKey(text) = answer {
            *answer = DocResult::Failed(format!(
                "a unique index refused the document; no document has its _id ({text})"
            ));
        }
    }
    answers
}

/// A document's `_id`.
fn id_of(doc: &RawDocumentBuf) -> Option<Bson> {
    Bson::try_from(doc.get("_id").ok()??.to_raw_bson()).ok()
}

/// The `_id`s among `ids` that are stored.
async fn stored_ids(
    coll: &Collection<RawDocumentBuf>,
    ids: Vec<Bson>,
) -> Result<Vec<Bson>, mongodb::error::Error> {
    let mut cursor = coll
        .clone_with_type::<mongodb::bson::Document>()
        .find(doc! { "_id": { "$in": ids } })
        .projection(doc! { "_id": 1 })
        .await?;
    let mut found = Vec::new();
    while cursor.advance().await? {
        if let Some(id) = cursor.deserialize_current()?.get("_id") {
            found.push(id.clone());
        }
    }
    Ok(found)
}

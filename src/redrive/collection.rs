//! Re-driving from the dead-letter collection: dead letters matching the plan's reasons
//! and `[since, until)` on `dead_lettered_at`, oldest first, except those an earlier
//! run marked `redriven_at` (counted as skipped); re-driven ones are marked.
use mongodb::{
    bson::{doc, spec::BinarySubtype, Bson, DateTime, Document},
    Collection, Cursor,
};
use tonic::Status;

use super::{mongo_error, Letter, Plan, NO_PAYLOAD};
use crate::event::Origin;

/// The field that marks a re-driven dead letter.
pub const REDRIVEN_AT: &str = "redriven_at";

/// An open read of the collection.
pub struct Reader {
    collection: Collection<Document>,
    cursor: Cursor<Document>,
    /// Matching dead letters already re-driven by an earlier run.
    pub skipped: u64,
}

/// The query for the plan's reasons and time range.
fn filter(plan: &Plan) -> Document {
    let mut f = Document::new();
    if !plan.reasons.is_empty() {
        f.insert("reason", doc! { "$in": &plan.reasons });
    }
    let mut at = Document::new();
    if let Some(since) = plan.since {
        at.insert("$gte", DateTime::from_millis(since));
    }
    if let Some(until) = plan.until {
        at.insert("$lt", DateTime::from_millis(until));
    }
    if !at.is_empty() {
        f.insert("dead_lettered_at", at);
    }
    f
}

impl Reader {
    /// Counts the skipped dead letters and opens a cursor over the rest.
    pub async fn open(collection: Collection<Document>, plan: &Plan) -> Result<Self, Status> {
        let base = filter(plan);
        let mut done = base.clone();
        done.insert(REDRIVEN_AT, doc! { "$exists": true });
        let skipped = collection
            .count_documents(done)
            .await
            .map_err(mongo_error)?;
        let mut open = base;
        open.insert(REDRIVEN_AT, doc! { "$exists": false });
        let mut find = collection.find(open).sort(doc! { "_id": 1 });
        if let Some(limit) = plan.limit {
            find = find.limit(i64::try_from(limit).unwrap_or(i64::MAX));
        }
        let cursor = find.await.map_err(mongo_error)?;
        Ok(Self {
            collection,
            cursor,
            skipped,
        })
    }

    /// Up to `max` more dead letters; None when there are no more (or `max` is 0).
    pub async fn next_chunk(&mut self, max: usize) -> Result<Option<Vec<Letter>>, Status> {
        let mut chunk = Vec::new();
        while chunk.len() < max && self.cursor.advance().await.map_err(mongo_error)? {
            let d = self.cursor.deserialize_current().map_err(mongo_error)?;
            chunk.push(letter(&d));
        }
        Ok((!chunk.is_empty()).then_some(chunk))
    }

    /// Marks dead letters as re-driven.
    pub async fn mark(&mut self, ids: Vec<Bson>) -> Result<(), Status> {
        if ids.is_empty() {
            return Ok(());
        }
        self.collection
            .update_many(
                doc! { "_id": { "$in": ids } },
                doc! { "$set": { REDRIVEN_AT: DateTime::now() } },
            )
            .await
            .map_err(mongo_error)?;
        Ok(())
    }
}

/// A dead-letter document as a `Letter`: its payload, and its origin from `source` and
/// `source_topic`/`source_partition`/`source_offset`.
pub fn letter(d: &Document) -> Letter {
    let payload = match d.get("payload") {
        Some(Bson::Binary(b)) if b.subtype == BinarySubtype::Generic => Some(b.bytes.clone()),
        _ => None,
    };
    let number = |key: &str| match d.get(key) {
        Some(Bson::Int32(n)) => Some(i64::from(*n)),
        Some(Bson::Int64(n)) => Some(*n),
        _ => None,
    };
    let origin = match d.get_str("source") {
        Ok("grpc") => Some(Origin::Grpc),
        _ => match (
            d.get_str("source_topic"),
            number("source_partition").and_then(|p| i32::try_from(p).ok()),
            number("source_offset"),
        ) {
            (Ok(topic), Some(partition), Some(offset)) => Some(Origin::Kafka {
                topic: topic.into(),
                partition,
                offset,
            }),
            _ => None,
        },
    };
    Letter {
        problem: payload.is_none().then_some(NO_PAYLOAD),
        payload: payload.unwrap_or_default().into(),
        origin,
        doc_id: d.get("_id").cloned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::{oid::ObjectId, Binary};

    #[test]
    fn documents_become_letters_with_their_origin() {
        let bytes = Binary {
            subtype: BinarySubtype::Generic,
            bytes: vec![1, 2, 3],
        };
        let id = ObjectId::new();
        let kafka = letter(&doc! {
            "_id": id, "reason": "invalid_ts", "source": "kafka", "payload": bytes.clone(),
            "source_topic": "sales", "source_partition": 2, "source_offset": 41_i64,
        });
        assert_eq!(kafka.payload.as_ref(), [1, 2, 3]);
        assert_eq!(kafka.doc_id, Some(Bson::ObjectId(id)));
        assert!(kafka.problem.is_none());
        assert_eq!(
            kafka.origin,
            Some(Origin::Kafka {
                topic: "sales".into(),
                partition: 2,
                offset: 41
            })
        );
        let grpc = letter(&doc! { "source": "grpc", "payload": bytes });
        assert_eq!(grpc.origin, Some(Origin::Grpc));
        let broken = letter(&doc! { "source": "kafka" });
        assert_eq!((broken.origin, broken.problem), (None, Some(NO_PAYLOAD)));
    }

    #[test]
    fn the_filter_has_reasons_and_a_half_open_range() {
        let plan = Plan {
            mongodb: true,
            kafka: false,
            reasons: vec!["invalid_ts".into()],
            since: Some(1_000),
            until: Some(2_000),
            dry_run: false,
            limit: None,
        };
        let f = filter(&plan);
        assert_eq!(
            f,
            doc! {
                "reason": { "$in": ["invalid_ts"] },
                "dead_lettered_at": {
                    "$gte": DateTime::from_millis(1_000),
                    "$lt": DateTime::from_millis(2_000),
                },
            }
        );
        let every = Plan {
            reasons: vec![],
            since: None,
            until: None,
            ..plan
        };
        assert!(filter(&every).is_empty());
    }
}

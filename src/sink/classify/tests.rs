//! Unit tests of `classify`.
use mongodb::bson::doc;

use super::*;

fn write_error(code: i32, message: &str) -> IndexedWriteError {
    mongodb::bson::from_document(doc! { "index": 0, "code": code, "errmsg": message }).unwrap()
}

#[test]
fn a_duplicate_id_is_a_duplicate_and_another_unique_index_a_refusal() {
    let id = "E11000 duplicate key error collection: t.x index: _id_ dup key: { _id: \"a\" }";
    assert_eq!(classify_doc(&write_error(11000, id)), DocResult::Duplicate);
    assert_eq!(
        classify_doc(&write_error(11000, "E11000 duplicate key error")),
        DocResult::DuplicateKey("code 11000: E11000 duplicate key error".into()),
        "a server that does not name the index: the writer looks the _id up"
    );
    let other = "E11000 duplicate key error collection: t.x index: sku_1 dup key: { sku: \"s\" }";
    match classify_doc(&write_error(11000, other)) {
        DocResult::Failed(why) => assert!(why.contains("unique index sku_1"), "{why}"),
        got => panic!("{got:?}"),
    }
}

#[test]
fn a_unique_event_id_index_means_already_stored_and_a_compound_one_a_refusal() {
    let msg = |key: &str| {
        format!("E11000 duplicate key error collection: sales_db.raw_sales index: event_id_1 dup key: {key}")
    };
    for key in [
        r#"{ event_id: "ev-1" }"#,
        r#"{ event_id: "a, b: \"c\" }" }"#,
        "{ event_id: 42 }",
    ] {
        assert_eq!(
            classify_doc(&write_error(11000, &msg(key))),
            DocResult::Duplicate,
            "{key}"
        );
    }
    for key in [
        r#"{ event_id: "ev-1", sku: "s" }"#,
        r#"{ sku: "s", event_id: "e" }"#,
    ] {
        assert!(
            matches!(
                classify_doc(&write_error(11000, &msg(key))),
                DocResult::Failed(_)
            ),
            "{key}"
        );
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

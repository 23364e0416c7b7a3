//! Kafka value formats: Confluent framing without a registry, JSON in both field-name
//! styles, a bare Protobuf event that looks like JSON under `auto`, broken values
//! dead-lettered with their reason, a pinned `KAFKA_VALUE_FORMAT`. Shared set-up is
//! here; the schema registry tests are in `formats/`.
mod registry;

use std::{collections::BTreeMap, time::Duration};

use mongodb::bson::{doc, Document};
use sales_ingest::{format::confluent::frame, proto::sales::v1::SalesEvent};

use crate::helpers::*;

fn json_event(id_key: &str, id: &str, qty: &str) -> Vec<u8> {
    format!(
        r#" {{"sku": "SKU-J", "qty": {qty}, "price": 4.5, "ts": "2026-11-25T10:00:00Z", "{id_key}": "{id}"}}"#
    )
    .into_bytes()
}

/// Waits for `stored` stored and `rejected` rejected Kafka events.
async fn wait_outcomes(app: &TestApp, stored: u64, rejected: u64) {
    let stats = app.stats.clone();
    let what = format!("{stored} stored and {rejected} rejected");
    wait_until(Duration::from_secs(60), &what, || {
        let k = stats.snapshot().kafka.unwrap();
        async move { k.stored == stored && k.rejected == rejected }
    })
    .await;
}

/// One dead letter as the dead-letter topic holds it.
#[derive(Debug)]
pub struct Letter {
    pub reason: String,
    pub detail: String,
    pub payload: Vec<u8>,
}

/// Every dead letter the app's dead-letter topic holds, by source offset: exactly
/// `count`, one per offset (a second letter for one event fails here).
async fn dead_letters(app: &TestApp, count: usize) -> BTreeMap<i64, Letter> {
    let dlq = consume_all(&format!("{}.dlq", app.topic), Duration::from_secs(60)).await;
    assert_eq!(
        dlq.len(),
        count,
        "the dead-letter topic holds {count} letters"
    );
    let mut letters = BTreeMap::new();
    for (payload, h) in dlq {
        let offset: i64 = h["source_offset"].parse().expect("source_offset");
        let letter = Letter {
            reason: h["reason"].clone(),
            detail: h["detail"].clone(),
            payload,
        };
        if let Some(first) = letters.insert(offset, letter) {
            panic!("offset {offset} dead-lettered twice: {first:?}");
        }
    }
    letters
}

async fn document(app: &TestApp, id: &str) -> Document {
    app.db
        .collection::<Document>("raw_sales")
        .find_one(doc! { "_id": id })
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{id} stored"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framed_and_json_values_are_stored_and_broken_ones_dead_lettered() {
    let app = spawn_app(AppOptions::default()).await;
    create_topic(&app.topic, 1).await;
    let pb = |id: &str| encode(&valid_event(1, id));
    let mut explicit = vec![0, 0, 0, 0, 7, 2, 0]; // count 1, index 0
    explicit.extend(pb("cf-explicit"));
    let broken_json = br#"{"sku": "SKU-J", "qty": "#.to_vec();
    let second_message = frame(7, &[1], &pb("cf-second"));
    let payloads = vec![
        frame(7, &[0], &pb("cf-shorthand")),
        explicit,
        json_event("eventId", "js-camel", "2"),
        json_event("event_id", "js-snake", "\"3\""),
        broken_json.clone(),
        second_message.clone(),
        br#"{"sku": "", "qty": 1, "price": 1, "ts": "2026-11-25T10:00:00Z"}"#.to_vec(),
    ];
    produce(&app.topic, 1, &payloads).await;
    wait_outcomes(&app, 4, 3).await;

    assert_eq!(
        document(&app, "cf-shorthand").await.get_str("sku"),
        Ok("SKU-1")
    );
    document(&app, "cf-explicit").await;
    let camel = document(&app, "js-camel").await;
    assert_eq!(camel.get_str("event_id"), Ok("js-camel"));
    assert_eq!(camel.get_str("sku"), Ok("SKU-J"));
    assert_eq!(camel.get_i32("qty"), Ok(2));
    assert_eq!(camel.get_f64("price"), Ok(4.5));
    assert_eq!(camel.get_str("source"), Ok("kafka"));
    assert_eq!(document(&app, "js-snake").await.get_i32("qty"), Ok(3));

    let letters = dead_letters(&app, 3).await;
    let reasons: Vec<&str> = letters.values().map(|l| l.reason.as_str()).collect();
    assert_eq!(reasons, ["malformed", "incompatible_schema", "missing_sku"]);
    let broken = &letters[&4];
    assert!(broken.detail.starts_with("json: "), "{broken:?}");
    assert_eq!(
        broken.payload, broken_json,
        "the dead letter keeps the bytes received"
    );
    let second = &letters[&5];
    assert!(second.detail.contains("schema id 7"), "{second:?}");
    assert_eq!(second.payload, second_message);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_format_refuses_the_others() {
    let app = spawn_app(AppOptions {
        extra: vec![("kafka-value-format".into(), "protobuf".into())],
        ..AppOptions::default()
    })
    .await;
    create_topic(&app.topic, 1).await;
    let json = json_event("eventId", "pin-json", "1");
    produce(
        &app.topic,
        1,
        &[json.clone(), encode(&valid_event(4, "pin-pb"))],
    )
    .await;
    wait_outcomes(&app, 1, 1).await;
    document(&app, "pin-pb").await;
    let letters = dead_letters(&app, 1).await;
    let letter = &letters[&0];
    assert_eq!(letter.reason, "malformed");
    assert!(letter.detail.contains("expected protobuf"), "{letter:?}");
    assert_eq!(letter.payload, json);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bare_event_that_looks_like_json_is_read_as_protobuf() {
    let app = spawn_app(AppOptions::default()).await;
    create_topic(&app.topic, 1).await;
    // A 10-byte sku: the value starts `\n\n{`, blanks then a brace.
    let event = SalesEvent {
        sku: "{SKU-0001}".into(),
        ..valid_event(6, "brace-sku")
    };
    let pb = encode(&event);
    assert_eq!(&pb[..3], b"\n\n{");
    let array = br#"[{"sku": "SKU-J"}]"#.to_vec();
    produce(&app.topic, 1, &[pb, array.clone()]).await;
    wait_outcomes(&app, 1, 1).await;
    assert_eq!(
        document(&app, "brace-sku").await.get_str("sku"),
        Ok("{SKU-0001}")
    );
    let letters = dead_letters(&app, 1).await;
    let letter = &letters[&1];
    assert_eq!(letter.reason, "malformed");
    assert!(
        letter
            .detail
            .contains("a JSON array, not a SalesEvent object"),
        "{letter:?}"
    );
    assert_eq!(letter.payload, array);
    app.stop().await;
}

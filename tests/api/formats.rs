//! Kafka value formats: Confluent framing (with and without a schema registry, one
//! served by the test), JSON in both field-name styles, broken values dead-lettered
//! with their reason, a pinned `KAFKA_VALUE_FORMAT`, a registry that answers 503.
use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use mongodb::bson::{doc, Document};
use sales_ingest::format::confluent::frame;
use warp::{http::StatusCode, Filter};

use crate::{
    helpers::*,
    status_page::{attr, rendered_dom, text},
};

/// The Authorization header the test registry requires: reader / s3cret.
const AUTH: &str = "Basic cmVhZGVyOnMzY3JldA==";

/// Schema 1: a header message first, the sale second (index [1]). Schema 2: qty is a
/// string, which no SalesEvent decoder can read.
const SCHEMA_1: &str = r#"syntax = "proto3";
package shop.v2;
message Header { int64 seq = 1; }
message Sale {
  string sku = 1;
  int32 qty = 2;
  double price = 3;
  string ts = 4;
  string event_id = 5;
  string channel = 6;
}"#;
const SCHEMA_2: &str = "syntax = \"proto3\";\nmessage Sale { string sku = 1; string qty = 2; }";

/// Serves `GET /schemas/ids/{id}` for schemas 1 and 2 (404 otherwise) behind basic
/// auth, answering 503 while `down` is set. Returns its URL.
async fn registry(down: Arc<AtomicBool>) -> String {
    let schemas: Arc<HashMap<u32, &str>> = Arc::new([(1, SCHEMA_1), (2, SCHEMA_2)].into());
    let route = warp::path!("schemas" / "ids" / u32)
        .and(warp::get())
        .and(warp::header::optional::<String>("authorization"))
        .map(move |id: u32, auth: Option<String>| {
            let (status, body) = if down.load(Ordering::SeqCst) {
                (StatusCode::SERVICE_UNAVAILABLE, serde_json::json!({}))
            } else if auth.as_deref() != Some(AUTH) {
                (StatusCode::UNAUTHORIZED, serde_json::json!({}))
            } else if let Some(text) = schemas.get(&id) {
                let body = serde_json::json!({"schemaType": "PROTOBUF", "schema": text});
                (StatusCode::OK, body)
            } else {
                let body = serde_json::json!({"error_code": 40403, "message": "Schema not found"});
                (StatusCode::NOT_FOUND, body)
            };
            warp::reply::with_status(warp::reply::json(&body), status)
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(warp::serve(route).incoming(listener).run());
    url
}

fn registry_options(url: &str) -> AppOptions {
    AppOptions {
        extra: vec![
            ("schema-registry-url".into(), url.into()),
            ("schema-registry-username".into(), "reader".into()),
            ("schema-registry-password".into(), "s3cret".into()),
        ],
        ..AppOptions::default()
    }
}

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

/// The dead letters of the app's topic: reason → (detail, original payload).
async fn dead_letters(app: &TestApp, count: usize) -> HashMap<String, (String, Vec<u8>)> {
    let dlq = consume(
        &format!("{}.dlq", app.topic),
        count,
        Duration::from_secs(60),
    )
    .await;
    dlq.into_iter()
        .map(|(payload, h)| (h["reason"].clone(), (h["detail"].clone(), payload)))
        .collect()
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
    let (detail, payload) = &letters["malformed"];
    assert!(detail.starts_with("json: "), "{detail}");
    assert_eq!(
        payload, &broken_json,
        "the dead letter keeps the bytes received"
    );
    let (detail, payload) = &letters["incompatible_schema"];
    assert!(detail.contains("schema id 7"), "{detail}");
    assert_eq!(payload, &second_message);
    assert!(letters.contains_key("missing_sku"), "{letters:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_decides_which_schema_ids_are_sales_events() {
    let url = registry(Arc::new(AtomicBool::new(false))).await;
    let app = spawn_app(registry_options(&url)).await;
    create_topic(&app.topic, 1).await;
    let pb = |id: &str| encode(&valid_event(2, id));
    let payloads = vec![
        frame(1, &[1], &pb("reg-sale")),
        frame(1, &[1], &pb("reg-sale-2")),
        frame(1, &[0], &pb("reg-header")),
        frame(2, &[0], &pb("reg-string-qty")),
        frame(99, &[0], &pb("reg-unknown")),
    ];
    produce(&app.topic, 1, &payloads).await;
    wait_outcomes(&app, 2, 3).await;
    document(&app, "reg-sale").await;
    document(&app, "reg-sale-2").await;

    let letters = dead_letters(&app, 3).await;
    let (detail, payload) = &letters["unknown_schema"];
    assert!(detail.contains("schema id 99"), "{detail}");
    assert_eq!(payload, &payloads[4]);
    let mut incompatible: Vec<_> =
        consume(&format!("{}.dlq", app.topic), 3, Duration::from_secs(60))
            .await
            .into_iter()
            .filter(|(_, h)| h["reason"] == "incompatible_schema")
            .map(|(_, h)| h["detail"].clone())
            .collect();
    incompatible.sort();
    assert_eq!(incompatible.len(), 2, "{incompatible:?}");
    assert!(incompatible[0].contains("schema id 1") && incompatible[0].contains("Header"));
    assert!(incompatible[1].contains("schema id 2") && incompatible[1].contains("qty"));

    // Schema 1 was asked for once: the second event found it in the cache.
    let (_, metrics) = get(&format!("{}/metrics", app.http_url)).await;
    assert!(
        metrics.contains(r#"schema_registry_requests_total{result="found"} 2"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"schema_registry_requests_total{result="not_found"} 1"#));
    let (_, health) = get(&format!("{}/health", app.http_url)).await;
    assert!(health.contains(r#""schema_registry":"up""#), "{health}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_registry_holds_events_until_it_answers() {
    let down = Arc::new(AtomicBool::new(true));
    let url = registry(down.clone()).await;
    let app = spawn_app(registry_options(&url)).await;
    create_topic(&app.topic, 1).await;
    produce(
        &app.topic,
        1,
        &[frame(1, &[1], &encode(&valid_event(3, "held")))],
    )
    .await;

    let http = app.http_url.clone();
    wait_until(Duration::from_secs(60), "registry down in /health", || {
        let http = http.clone();
        async move {
            let (status, body) = get(&format!("{http}/health")).await;
            status == 503 && body.contains(r#""schema_registry":"down""#) && body.contains("503")
        }
    })
    .await;
    let metric_is = |value: &'static str| {
        let http = http.clone();
        move || {
            let http = http.clone();
            async move {
                let (_, metrics) = get(&format!("{http}/metrics")).await;
                metrics.contains(&format!(
                    r#"dependency_up{{dependency="schema_registry"}} {value}"#
                ))
            }
        }
    };
    wait_until(Duration::from_secs(5), "dependency_up 0", metric_is("0")).await;
    let (_, metrics) = get(&format!("{}/metrics", app.http_url)).await;
    assert!(!metrics.contains(r#"schema_registry_requests_total{result="error"} 0"#));
    let snapshot = app.stats.snapshot();
    assert!(snapshot.schema_registry_enabled && !snapshot.schema_registry_connected);
    // The status page says NOT SERVING, though MongoDB and Kafka are both up.
    let dom = rendered_dom(&format!("{}/", app.http_url)).await;
    assert_eq!(text(&dom, "serving"), "NOT SERVING");
    assert_eq!(text(&dom, "dep-schema-registry"), "down");
    assert!(attr(&dom, "serving", "title").contains("503"), "{dom}");
    let k = snapshot.kafka.unwrap();
    assert_eq!(
        (k.stored, k.rejected),
        (0, 0),
        "held: neither stored nor dead-lettered"
    );
    // gRPC events never wait for the registry: one is acked while the Kafka one waits.
    let ack = tokio::time::timeout(
        Duration::from_secs(30),
        app.ingest(vec![valid_event(4, "grpc-while-registry-down")]),
    )
    .await
    .expect("a gRPC event is acked while the registry is down");
    assert_eq!(ack.accepted, 1, "{ack:?}");
    document(&app, "grpc-while-registry-down").await;
    assert_eq!(app.stats.snapshot().kafka.unwrap().stored, 0, "still held");

    down.store(false, Ordering::SeqCst);
    wait_outcomes(&app, 1, 0).await;
    document(&app, "held").await;
    app.wait_serving().await;
    wait_until(Duration::from_secs(5), "dependency_up 1", metric_is("1")).await;
    assert!(app.stats.snapshot().schema_registry_connected);
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
    let (detail, payload) = &letters["malformed"];
    assert!(detail.contains("expected protobuf"), "{detail}");
    assert_eq!(payload, &json);
    app.stop().await;
}

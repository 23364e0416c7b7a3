//! The schema registry: one served by the test decides which schema ids are
//! SalesEvents, a 200 without a readable schema is a refusal, an answer of 503 holds
//! events until it answers, and its health is probed before any event asks.
use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use sales_ingest::format::confluent::frame;
use warp::{
    http::{Response, StatusCode},
    Filter,
};

use super::{dead_letters, document, wait_outcomes};
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

/// An HTTP answer of the test registry.
fn answer(status: StatusCode, content_type: &str, body: String) -> Response<String> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(body)
        .unwrap()
}

/// 503 while `down` is set, 401 without the right credentials, else None.
fn refusal(down: &AtomicBool, auth: Option<String>) -> Option<Response<String>> {
    let json = "application/json";
    if down.load(Ordering::SeqCst) {
        Some(answer(StatusCode::SERVICE_UNAVAILABLE, json, "{}".into()))
    } else if auth.as_deref() != Some(AUTH) {
        Some(answer(StatusCode::UNAUTHORIZED, json, "{}".into()))
    } else {
        None
    }
}

/// Serves, behind basic auth, `GET /schemas/types` and `GET /schemas/ids/{id}`:
/// schemas 1 and 2, for id 3 a 200 without the schema text, for id 4 a 200 HTML
/// page, 404 for the others; everything answers 503 while `down` is set. Returns its
/// URL.
async fn registry(down: Arc<AtomicBool>) -> String {
    let schemas: Arc<HashMap<u32, &str>> = Arc::new([(1, SCHEMA_1), (2, SCHEMA_2)].into());
    let json = "application/json";
    let types_down = down.clone();
    let ids = warp::path!("schemas" / "ids" / u32)
        .and(warp::get())
        .and(warp::header::optional::<String>("authorization"))
        .map(move |id: u32, auth: Option<String>| {
            if let Some(refused) = refusal(&down, auth) {
                return refused;
            }
            let (status, body) = match (id, schemas.get(&id)) {
                (_, Some(text)) => (
                    StatusCode::OK,
                    serde_json::json!({"schemaType": "PROTOBUF", "schema": text}),
                ),
                (3, None) => (
                    StatusCode::OK,
                    serde_json::json!({"schemaType": "PROTOBUF"}),
                ),
                (4, None) => {
                    let page = "<html><body>Registry moved</body></html>".to_string();
                    return answer(StatusCode::OK, "text/html", page);
                }
                _ => (
                    StatusCode::NOT_FOUND,
                    serde_json::json!({"error_code": 40403, "message": "Schema not found"}),
                ),
            };
            answer(status, json, body.to_string())
        });
    let types = warp::path!("schemas" / "types")
        .and(warp::get())
        .and(warp::header::optional::<String>("authorization"))
        .map(move |auth: Option<String>| {
            refusal(&types_down, auth)
                .unwrap_or_else(|| answer(StatusCode::OK, json, r#"["PROTOBUF"]"#.into()))
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(warp::serve(ids.or(types)).incoming(listener).run());
    url
}

fn registry_options(url: &str) -> AppOptions {
    registry_login(url, "s3cret")
}

fn registry_login(url: &str, password: &str) -> AppOptions {
    AppOptions {
        extra: vec![
            ("schema-registry-url".into(), url.into()),
            ("schema-registry-username".into(), "reader".into()),
            ("schema-registry-password".into(), password.into()),
        ],
        ..AppOptions::default()
    }
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
    let unknown = &letters[&4];
    assert_eq!(unknown.reason, "unknown_schema");
    assert!(unknown.detail.contains("schema id 99"), "{unknown:?}");
    assert_eq!(unknown.payload, payloads[4]);
    for (offset, id, names) in [(2, "schema id 1", "Header"), (3, "schema id 2", "qty")] {
        let letter = &letters[&offset];
        assert_eq!(letter.reason, "incompatible_schema", "{letter:?}");
        assert!(
            letter.detail.contains(id) && letter.detail.contains(names),
            "{letter:?}"
        );
    }

    // Schema 1 was asked for once: the second event found it in the cache.
    let (_, metrics) = get(&format!("{}/metrics", app.http_url)).await;
    assert!(
        metrics.contains(r#"schema_registry_requests_total{result="found"} 2"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"schema_registry_requests_total{result="not_found"} 1"#));
    let (_, health) = get_as_admin(&format!("{}/health", app.http_url)).await;
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
            let (status, body) = get_as_admin(&format!("{http}/health")).await;
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
    // The probe may see the 503 first; the event's lookups fail and are counted too.
    wait_until(Duration::from_secs(30), "failed lookups counted", || {
        let http = http.clone();
        async move {
            let (_, metrics) = get(&format!("{http}/metrics")).await;
            let errors = r#"schema_registry_requests_total{result="error"} "#;
            metrics.contains(errors) && !metrics.contains(&format!("{errors}0\n"))
        }
    })
    .await;
    let (_, health) = get_as_admin(&format!("{http}/health")).await;
    assert!(health.contains("GET /schemas/ids/1 failed"), "{health}");
    let snapshot = app.stats.snapshot();
    assert!(snapshot.schema_registry_enabled && !snapshot.schema_registry_connected);
    // The status page says NOT SERVING, though MongoDB and Kafka are both up.
    let dom = rendered_dom(&format!("{}/", app.http_url)).await;
    assert_eq!(text(&dom, "serving"), "NOT SERVING");
    assert_eq!(text(&dom, "dep-schema-registry"), "down");
    // The pill's title names what is down (the page asks /health without a token).
    assert!(
        attr(&dom, "serving", "title").contains("schema_registry down"),
        "{dom}"
    );
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
async fn a_registry_answer_without_a_schema_is_refused_not_retried() {
    let url = registry(Arc::new(AtomicBool::new(false))).await;
    let app = spawn_app(registry_options(&url)).await;
    create_topic(&app.topic, 1).await;
    let pb = |id: &str| encode(&valid_event(5, id));
    let payloads = vec![
        frame(3, &[0], &pb("no-text-1")),
        frame(3, &[0], &pb("no-text-2")),
        frame(4, &[0], &pb("html")),
        frame(1, &[1], &pb("after-them")),
    ];
    produce(&app.topic, 1, &payloads).await;
    // Not held: the event after them is stored.
    wait_outcomes(&app, 1, 3).await;
    document(&app, "after-them").await;

    let letters = dead_letters(&app, 3).await;
    assert!(
        letters.values().all(|l| l.reason == "incompatible_schema"),
        "{letters:?}"
    );
    let no_text: Vec<&str> = [0, 1].iter().map(|o| letters[o].detail.as_str()).collect();
    assert!(
        no_text.iter().all(|d| d.contains("schema id 3")),
        "{no_text:?}"
    );
    assert!(
        no_text.iter().any(|d| d.contains("missing field `schema`")),
        "{no_text:?}"
    );
    let id4 = &letters[&2].detail;
    assert!(
        id4.contains("schema id 4") && id4.contains("200") && id4.contains("<html>"),
        "{id4}"
    );

    // Each such id was asked for once, and the registry, which answered, is up.
    let (_, metrics) = get(&format!("{}/metrics", app.http_url)).await;
    for line in [
        r#"schema_registry_requests_total{result="unreadable"} 2"#,
        r#"schema_registry_requests_total{result="found"} 1"#,
        r#"schema_registry_requests_total{result="error"} 0"#,
        r#"dependency_up{dependency="schema_registry"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
    let (_, health) = get_as_admin(&format!("{}/health", app.http_url)).await;
    assert!(health.contains(r#""schema_registry":"up""#), "{health}");
    app.stop().await;
}

/// Waits until `/health` has `status` and the registry `word`, and returns the body.
async fn registry_health(app: &TestApp, status: u16, word: &str) -> String {
    let http = app.http_url.clone();
    let want = format!(r#""schema_registry":"{word}""#);
    let what = format!("/health {status} with {want}");
    wait_until(Duration::from_secs(30), &what, || {
        let (http, want) = (http.clone(), want.clone());
        async move {
            let (s, body) = get_as_admin(&format!("{http}/health")).await;
            s == status && body.contains(&want)
        }
    })
    .await;
    get_as_admin(&format!("{}/health", app.http_url)).await.1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_health_is_known_before_any_event() {
    let closed = format!("http://127.0.0.1:{}", test_support::servers::free_port());
    let app = spawn_app(registry_options(&closed)).await;
    let body = registry_health(&app, 503, "down").await;
    assert!(body.contains("GET /schemas/types failed"), "{body}");
    assert!(!app.stats.snapshot().schema_registry_connected);
    app.stop().await;

    let url = registry(Arc::new(AtomicBool::new(false))).await;
    let app = spawn_app(registry_login(&url, "wrong")).await;
    let body = registry_health(&app, 503, "down").await;
    assert!(body.contains("401"), "{body}");
    app.stop().await;

    let app = spawn_app(registry_options(&url)).await;
    app.wait_serving().await;
    registry_health(&app, 200, "up").await;
    assert!(app.stats.snapshot().schema_registry_connected);
    app.stop().await;
}

//! What the Python service offered and producers or operators may rely on, end to end
//! against the real servers: `POST /shutdown`, the ISO 8601 timestamp forms and
//! `NAIVE_TS`, the `legacy` document format, and validation limits from the
//! configuration.
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mongodb::bson::{doc, Bson, Document};
use sales_ingest::{
    proto::{ingest::v1::IngestAck, sales::v1::SalesEvent},
    Stopped,
};
use serde_json::Value;

use crate::helpers::*;

/// 2026-11-25T10:00:00Z in epoch milliseconds.
const T0: i64 = 1_795_600_800_000;

/// POSTs to `url` with an optional `authorization` value: status and JSON body.
async fn post(url: &str, authorization: Option<&str>) -> (u16, Value) {
    let mut req = reqwest::Client::new().post(url);
    if let Some(a) = authorization {
        req = req.header("authorization", a);
    }
    let resp = req.send().await.expect("http post");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("a JSON body"))
}

fn grpc_only(extra: &[(&str, &str)]) -> AppOptions {
    AppOptions {
        kafka: false,
        extra: extra
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    }
}

fn with_ts(i: usize, ts: &str) -> SalesEvent {
    SalesEvent {
        ts: ts.into(),
        ..valid_event(i, &format!("m-{i}"))
    }
}

async fn stored_doc(app: &TestApp, id: &str) -> Document {
    app.db
        .collection::<Document>("raw_sales")
        .find_one(doc! { "_id": id })
        .await
        .expect("find")
        .unwrap_or_else(|| panic!("{id} stored"))
}

/// The rejections of an ack as (index, reason, detail).
fn rejections(ack: &IngestAck) -> Vec<(u32, &str, &str)> {
    ack.rejected
        .iter()
        .map(|r| (r.index, r.reason.as_str(), r.detail.as_str()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_shutdown_needs_the_admin_token_then_drains_and_the_server_exits() {
    let mut app = spawn_app(grpc_only(&[])).await;
    let events: Vec<_> = (0..5).map(|i| valid_event(i, &format!("hs-{i}"))).collect();
    assert_eq!(app.ingest(events).await.accepted, 5);
    let url = format!("{}/shutdown", app.http_url);

    let (code, body) = post(&url, None).await;
    assert_eq!(code, 401, "{body}");
    assert_eq!(body["status"], "refused");
    assert!(
        body["message"].as_str().unwrap().contains("authorization"),
        "{body}"
    );
    let (code, body) = post(&url, Some("Bearer wrong-token")).await;
    assert_eq!(
        (code, body["message"].as_str()),
        (401, Some("invalid token"))
    );
    let (code, _) = post(&url, Some("test-admin-token")).await;
    assert_eq!(code, 401, "a token without `Bearer`");
    assert_eq!(get(&url).await.0, 405, "GET does not shut down");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !app.handle.is_finished(),
        "still running after refused calls"
    );
    assert_eq!(get(&format!("{}/health", app.http_url)).await.0, 200);

    // Work in flight: a producer keeps a stream full while the shutdown is asked for.
    let producer = pump(&app.grpc_url, "hp", 200);
    producer.wait_acked(5, Duration::from_secs(30)).await;
    let asked = Instant::now();
    let (code, body) = post(&url, Some("Bearer test-admin-token")).await;
    assert_eq!(code, 202, "{body}");
    assert_eq!(body["status"], "shutting_down");
    assert_eq!(app.stopped().await, Stopped::Clean);
    let pumped = producer.ended(Duration::from_secs(10)).await;
    assert!(
        pumped.acks_after(asked) > 0,
        "requests in flight at POST /shutdown are drained and acked"
    );
    pumped.check_drained(&app.db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_shutdown_without_a_configured_token_is_forbidden_with_a_hint() {
    let app = spawn_app(AppOptions {
        admin_token: None,
        ..grpc_only(&[])
    })
    .await;
    let url = format!("{}/shutdown", app.http_url);
    for authorization in [None, Some("Bearer anything")] {
        let (code, body) = post(&url, authorization).await;
        assert_eq!(code, 403, "{body}");
        assert_eq!(body["status"], "refused");
        assert!(
            body["hint"].as_str().unwrap().contains("ADMIN_TOKEN"),
            "{body}"
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!app.handle.is_finished(), "still running");
    app.stop().await;
}

/// Timestamps with a UTC offset, in the forms the Python service accepted, and their
/// instants.
const OFFSET_FORMS: [(&str, i64); 9] = [
    ("2026-11-25T10:00:00Z", T0),
    ("2026-11-25T10:00:00.250Z", T0 + 250),
    ("2026-11-25 10:00:00Z", T0),
    ("2026-11-25T11:00:00+01:00", T0),
    ("2026-11-25T11:00:00+0100", T0),
    ("2026-11-25T11:00:00+01", T0),
    ("2026-11-25T05:30:00-04:30", T0),
    ("2026-11-25T10:00:00.123456789123-00", T0 + 123),
    ("2026-11-25t10:00:00z", T0),
];
/// Timestamps without an offset, and their instants read as UTC.
const NAIVE_FORMS: [(&str, i64); 3] = [
    ("2026-11-25T10:00:00", T0),
    ("2026-11-25 10:00:00", T0),
    ("2026-11-25 10:00:00.5", T0 + 500),
];
/// Refused whatever NAIVE_TS says, with a word of the detail.
const REFUSED_FORMS: [(&str, &str); 5] = [
    ("2026-11-25", "date without a time"),
    ("1795600800", "epoch"),
    ("2026-11-25T10:00Z", "ISO 8601"),
    ("2026-11-25T10:00:00+1", "ISO 8601"),
    ("25/11/2026 10:00:00", "ISO 8601"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iso_8601_timestamps_are_stored_as_utc_dates_and_naive_ones_read_as_utc() {
    let app = spawn_app(grpc_only(&[])).await;
    let accepted: Vec<_> = OFFSET_FORMS.iter().chain(&NAIVE_FORMS).collect();
    let mut events: Vec<_> = accepted
        .iter()
        .enumerate()
        .map(|(i, (ts, _))| with_ts(i, ts))
        .collect();
    let first_refused = events.len();
    events.extend(
        REFUSED_FORMS
            .iter()
            .enumerate()
            .map(|(k, (ts, _))| with_ts(first_refused + k, ts)),
    );
    let ack = app.ingest(events).await;
    assert_eq!(ack.accepted as usize, accepted.len(), "{ack:?}");
    let got = rejections(&ack);
    assert_eq!(got.len(), REFUSED_FORMS.len(), "{got:?}");
    for (k, ((index, reason, detail), (ts, word))) in got.iter().zip(REFUSED_FORMS).enumerate() {
        assert_eq!(*index as usize, first_refused + k, "{ts}");
        assert_eq!(*reason, "invalid_ts", "{ts}");
        assert!(detail.contains(word), "{ts}: {detail}");
        assert!(detail.contains("2026-11-25T10:00:00Z"), "{ts}: {detail}");
    }
    for (i, (ts, millis)) in accepted.iter().enumerate() {
        let d = stored_doc(&app, &format!("m-{i}")).await;
        let stored = d.get_datetime("ts").unwrap_or_else(|e| panic!("{ts}: {e}"));
        assert_eq!(stored.timestamp_millis(), *millis, "{ts}");
        assert!(d.get_datetime("processed_at").is_ok());
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn naive_ts_reject_refuses_timestamps_without_an_offset() {
    let app = spawn_app(grpc_only(&[("naive-ts", "reject")])).await;
    let mut events: Vec<_> = OFFSET_FORMS
        .iter()
        .enumerate()
        .map(|(i, (ts, _))| with_ts(i, ts))
        .collect();
    let first_naive = events.len();
    events.extend(
        NAIVE_FORMS
            .iter()
            .enumerate()
            .map(|(k, (ts, _))| with_ts(first_naive + k, ts)),
    );
    let ack = app.ingest(events).await;
    assert_eq!(ack.accepted as usize, OFFSET_FORMS.len(), "{ack:?}");
    let got = rejections(&ack);
    let indexes: Vec<_> = got.iter().map(|r| r.0 as usize).collect();
    assert_eq!(
        indexes,
        (first_naive..first_naive + NAIVE_FORMS.len()).collect::<Vec<_>>()
    );
    for (_, reason, detail) in got {
        assert_eq!(reason, "invalid_ts");
        assert!(detail.contains("NAIVE_TS=reject requires"), "{detail}");
        assert!(detail.contains("offset"), "{detail}");
    }
    let d = stored_doc(&app, "m-5").await;
    assert_eq!(d.get_datetime("ts").unwrap().timestamp_millis(), T0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_documents_keep_the_ts_string_and_a_float_processed_at() {
    let app = spawn_app(grpc_only(&[("document-format", "legacy")])).await;
    let forms = [
        "2026-11-25 10:00:00",
        "2026-11-25T11:00:00+0100",
        "2026-11-25T10:00:00.5Z",
    ];
    let events: Vec<_> = forms
        .iter()
        .enumerate()
        .map(|(i, ts)| with_ts(i, ts))
        .collect();
    let before = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert_eq!(app.ingest(events).await.accepted, 3);
    let after = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    for (i, ts) in forms.iter().enumerate() {
        let d = stored_doc(&app, &format!("m-{i}")).await;
        assert_eq!(d.get("ts"), Some(&Bson::String(ts.to_string())), "{d}");
        let processed_at = match d.get("processed_at") {
            Some(Bson::Double(x)) => *x,
            other => panic!("processed_at is {other:?}"),
        };
        assert!(
            (before - 0.001..=after + 0.001).contains(&processed_at),
            "{before} <= {processed_at} <= {after}"
        );
        let keys: Vec<_> = d.keys().map(String::as_str).collect();
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
        assert_eq!(d.get_str("source").unwrap(), "grpc");
        assert!(matches!(d.get("qty"), Some(Bson::Int32(_))));
        assert!(matches!(d.get("price"), Some(Bson::Double(_))));
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relaxed_limits_accept_what_the_defaults_refuse() {
    let big = || SalesEvent {
        qty: 2_000_000,
        price: 2e9,
        sku: "S".repeat(80),
        ..valid_event(0, "big-1")
    };
    let default = spawn_app(grpc_only(&[])).await;
    let relaxed = spawn_app(grpc_only(&[
        ("max-qty", "5000000"),
        ("max-price", "1e10"),
        ("max-sku-chars", "100"),
    ]))
    .await;
    let ack = default
        .ingest(vec![
            SalesEvent {
                sku: "S".into(),
                ..big()
            },
            SalesEvent {
                sku: "S".into(),
                qty: 1,
                ..big()
            },
            big(),
        ])
        .await;
    let got = rejections(&ack);
    assert_eq!(
        got.iter().map(|r| (r.0, r.1)).collect::<Vec<_>>(),
        [
            (0, "invalid_qty"),
            (1, "invalid_price"),
            (2, "sku_too_long")
        ]
    );
    assert_eq!(got[0].2, "qty 2000000 is not in 1..=1000000");
    let ack = relaxed.ingest(vec![big()]).await;
    assert_eq!((ack.accepted, ack.rejected.len()), (1, 0), "{ack:?}");
    let d = stored_doc(&relaxed, "big-1").await;
    assert_eq!(d.get_i32("qty").unwrap(), 2_000_000);
    let ack = relaxed
        .ingest(vec![SalesEvent {
            qty: 5_000_001,
            ..valid_event(1, "big-2")
        }])
        .await;
    assert_eq!(ack.rejected[0].detail, "qty 5000001 is not in 1..=5000000");
    default.stop().await;
    relaxed.stop().await;
}

//! A hostile schema registry, against the server as a process: a schema nested
//! 20,000 levels deep and an answer larger than the body limit are refused with a
//! reason (the events dead-lettered as `incompatible_schema`), the process stays up,
//! and the events after them are stored.
use std::{collections::HashMap, sync::Arc, time::Duration};

use sales_ingest::format::confluent::frame;
use test_support::service::server_env;
use warp::Filter;

use crate::{
    backends::{backends, start_server},
    faults::count,
    helpers::*,
};

const SALE: &str = "syntax = \"proto3\";\nmessage Sale { string sku = 1; int32 qty = 2; \
                    double price = 3; string ts = 4; string event_id = 5; }";

/// Serves id 1 (a SalesEvent schema), id 2 (20,000 nested messages) and id 3 (a
/// 2 MiB answer); returns its URL.
async fn hostile_registry() -> String {
    let deep = "message M { ".repeat(20_000) + &"}".repeat(20_000);
    let huge = format!("message Big {{ }}{}", " ".repeat(2 * 1024 * 1024));
    let schemas: Arc<HashMap<u32, String>> =
        Arc::new([(1, SALE.to_string()), (2, deep), (3, huge)].into());
    let ids = warp::path!("schemas" / "ids" / u32).map(move |id: u32| match schemas.get(&id) {
        Some(text) => warp::reply::with_status(
            serde_json::json!({"schemaType": "PROTOBUF", "schema": text}).to_string(),
            warp::http::StatusCode::OK,
        ),
        None => warp::reply::with_status("{}".to_string(), warp::http::StatusCode::NOT_FOUND),
    });
    let types = warp::path!("schemas" / "types").map(|| r#"["PROTOBUF"]"#.to_string());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(warp::serve(ids.or(types)).incoming(listener).run());
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deeply_nested_or_huge_schema_is_refused_with_a_reason_and_the_process_stays_up() {
    let url = hostile_registry().await;
    let (topic, dbname) = (unique("hostile_schema"), unique("hostile_schema_db"));
    create_topic(&topic, 1).await;
    let env = server_env(
        backends(),
        &topic,
        &unique("hostile_schema_g"),
        &dbname,
        &[("SCHEMA_REGISTRY_URL", url)],
    );
    let mut server = start_server("hostile-schema", &env);
    server
        .wait_health(200, Duration::from_secs(60))
        .await
        .unwrap();
    let pb = |id: &str| encode(&valid_event(1, id));
    let payloads = vec![
        frame(2, &[0], &pb("deep")),
        frame(3, &[0], &pb("huge")),
        frame(1, &[0], &pb("after-them")),
    ];
    produce(&topic, 1, &payloads).await;
    let letters = consume(&format!("{topic}.dlq"), 2, Duration::from_secs(60)).await;
    let mut details: Vec<String> = letters
        .iter()
        .map(|(_, h)| {
            assert_eq!(h["reason"], "incompatible_schema", "{h:?}");
            h["detail"].clone()
        })
        .collect();
    details.sort();
    assert!(
        details[0].contains("schema id 2") && details[0].contains("nested deeper than 32"),
        "{details:?}"
    );
    assert!(
        details[1].contains("schema id 3") && details[1].contains("larger than 1048576 bytes"),
        "{details:?}"
    );
    let db = mongo_client().await.database(&dbname);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while count(&db).await < 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            server.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(server.running(), "{}", server.log_tail());
    let (status, _) = server.terminate(Duration::from_secs(30)).unwrap();
    assert!(status.success());
}

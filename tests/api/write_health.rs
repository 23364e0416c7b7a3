//! Health tells the truth about writes: a MongoDB that answers pings but refuses
//! inserts makes the service NOT_SERVING with the reason, and SERVING again once
//! inserts succeed, with nothing lost in between.
use std::time::{Duration, Instant};

use mongodb::bson::doc;
use test_support::servers::{free_port, scratch_dir};

use crate::{backends::start_secantus, helpers::*};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inserts_refused_while_ping_works_turn_health_off_until_they_succeed() {
    let port = free_port();
    let data = scratch_dir(&unique("readonly")).display().to_string();
    let _mongo = start_secantus(port, &data, &["--auth"]);
    let base = format!("mongodb://127.0.0.1:{port}/?directConnection=true");
    let dbname = unique("ro_db");
    mongodb::Client::with_uri_str(&base)
        .await
        .unwrap()
        .database("admin")
        .run_command(doc! { "createUser": "root", "pwd": "root-pw", "roles": [{ "role": "root", "db": "admin" }] })
        .await
        .expect("first user through the localhost exception");
    let root = mongodb::Client::with_uri_str(format!(
        "mongodb://root:root-pw@127.0.0.1:{port}/?directConnection=true&authSource=admin"
    ))
    .await
    .unwrap();
    root.database("admin")
        .run_command(doc! { "createUser": "reader", "pwd": "reader-pw", "roles": [{ "role": "read", "db": &dbname }] })
        .await
        .unwrap();
    let app = spawn_app(AppOptions {
        kafka: false,
        database: Some(dbname.clone()),
        extra: vec![(
            "mongodb-url".into(),
            format!(
                "mongodb://reader:reader-pw@127.0.0.1:{port}/?directConnection=true&authSource=admin"
            ),
        )],
        ..Default::default()
    })
    .await;
    app.wait_serving().await;
    // A request whose insert is refused: its ack waits, health turns off.
    let mut client = app.events().await;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let events = (0..5).map(|i| valid_event(i, &format!("ro-{i}"))).collect();
    tx.send(sales_ingest::proto::ingest::v1::IngestRequest { seq: 1, events })
        .await
        .unwrap();
    let mut acks = client
        .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let sent = Instant::now();
    let url = format!("{}/health", app.http_url);
    wait_until(Duration::from_secs(5), "NOT_SERVING", || {
        let url = url.clone();
        async move { get(&url).await.0 == 503 }
    })
    .await;
    let off_after = sent.elapsed();
    let (_, body) = get(&url).await;
    assert!(body.contains("not authorized"), "{body}");
    assert!(body.contains(r#""mongodb":"down""#), "{body}");
    // The ping keeps working: health stays off while writes fail.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(get(&url).await.0, 503);
    root.database("admin")
        .run_command(doc! { "grantRolesToUser": "reader", "roles": [{ "role": "readWrite", "db": &dbname }] })
        .await
        .unwrap();
    let granted = Instant::now();
    let ack = tokio::time::timeout(Duration::from_secs(15), futures::StreamExt::next(&mut acks))
        .await
        .expect("acked once inserts succeed")
        .unwrap()
        .unwrap();
    assert_eq!(ack.accepted, 5);
    wait_until(Duration::from_secs(5), "SERVING again", || {
        let url = url.clone();
        async move { get(&url).await.0 == 200 }
    })
    .await;
    eprintln!(
        "RELIABILITY inserts refused while ping works: NOT_SERVING {:.2} s after the first refused write; acked and SERVING {:.2} s after the grant",
        off_after.as_secs_f64(),
        granted.elapsed().as_secs_f64()
    );
    drop(tx);
    app.stop().await;
}

//! `ingestctl seek` over two group members (each owns one partition) and `ingestctl
//! redrive` with its summary, JSON and exit codes.
use std::time::Duration;

use crate::{
    dayops::*,
    helpers::*,
    ingestctl::{ingestctl, value_of},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingestctl_seek_calls_every_member_and_merges_what_each_owns() {
    let a = spawn_app(AppOptions::default()).await;
    create_topic(&a.topic, 2).await;
    let b = spawn_app(AppOptions {
        topic: Some(a.topic.clone()),
        group: Some(a.group.clone()),
        database: Some(a.db.name().to_string()),
        ..Default::default()
    })
    .await;
    wait_assigned(&a, 1).await;
    wait_assigned(&b, 1).await;
    produce(&a.topic, 2, &payloads("m", 10)).await;
    wait_committed(&a, vec![5, 5], "both partitions consumed").await;
    let token = a.admin_token.clone().unwrap();

    let run = ingestctl(&[
        "--addr",
        &a.grpc_url,
        "--addr",
        &b.grpc_url,
        "--token",
        &token,
        "seek",
        "--earliest",
        "--json",
    ])
    .await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let json = run.json();
    let moved = json["partitions"].as_array().unwrap();
    assert_eq!(moved.len(), 2, "{json}");
    for (p, m) in moved.iter().enumerate() {
        assert_eq!(m["partition"], p);
        assert_eq!(
            (m["from_offset"].as_i64(), m["to_offset"].as_i64()),
            (Some(5), Some(0))
        );
    }
    assert_ne!(moved[0]["addr"], moved[1]["addr"], "one partition each");
    assert_eq!(json["not_owned"].as_array().unwrap().len(), 0);
    let (sa, sb) = (a.stats.clone(), b.stats.clone());
    wait_until(Duration::from_secs(60), "10 replayed duplicates", || {
        let dup = |s: &sales_ingest::stats::Stats| s.snapshot().kafka.unwrap().duplicate;
        let n = dup(&sa) + dup(&sb);
        async move { n == 10 }
    })
    .await;
    wait_committed(&a, vec![5, 5], "back at the log end").await;
    assert_eq!(a.stored().await, 10);

    // A partition the topic does not have: refused before anything moves.
    let run = ingestctl(&[
        "--addr",
        &format!("{},{}", a.grpc_url, b.grpc_url),
        "--token",
        &token,
        "seek",
        "--offset=1=1",
        "--offset=4=0",
    ])
    .await;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stderr.contains("partition 4 does not exist: topic"),
        "{run:?}"
    );
    assert!(
        !run.stdout.contains("        1     5   1  http://"),
        "{run:?}"
    );
    wait_committed(&a, vec![5, 5], "nothing moved").await;
    let run = ingestctl(&["--addr", &a.grpc_url, "seek", "--earliest"]).await;
    assert_eq!(run.code, Some(3), "no token: {run:?}");
    b.stop().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingestctl_redrive_prints_counts_and_json_and_refuses_what_cannot_work() {
    let app = spawn_app(AppOptions {
        kafka: false,
        ..Default::default()
    })
    .await;
    seed_collection(&app, "sales_old").await;
    let token = app.admin_token.clone().unwrap();
    let base = ["--addr", app.grpc_url.as_str(), "--token", token.as_str()];
    let with = |more: &[&'static str]| -> Vec<String> {
        base.iter().chain(more).map(|s| s.to_string()).collect()
    };
    let call = |args: Vec<String>| async move {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        ingestctl(&refs).await
    };

    let run = call(with(&[
        "redrive",
        "--source=mongodb",
        "--dry-run",
        "--json",
    ]))
    .await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let json = run.json();
    assert_eq!(
        (
            &json["examined"],
            &json["stored"],
            &json["duplicates"],
            &json["skipped"]
        ),
        (&6.into(), &3.into(), &1.into(), &1.into()),
        "{json}"
    );
    assert_eq!(json["still_invalid"]["invalid_qty"], 1);
    assert_eq!(json["done"], true);
    assert_eq!(app.stored().await, 1, "the dry run wrote nothing");

    let run = call(with(&["redrive"])).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(value_of(&run.stdout, "stored"), "3");
    assert_eq!(value_of(&run.stdout, "still invalid"), "2");
    assert!(run.stdout.contains("STILL INVALID  COUNT\n"), "{run:?}");
    assert_eq!(app.stored().await, 4);
    let run = call(with(&["redrive", "--source=mongodb"])).await;
    assert_eq!(value_of(&run.stdout, "skipped"), "5");
    assert_eq!(value_of(&run.stdout, "stored"), "0");

    let run = call(with(&["redrive", "--source=kafka"])).await;
    assert_eq!(run.code, Some(3), "Kafka is disabled: {run:?}");
    assert!(run.stderr.contains("KAFKA_ENABLED"), "{run:?}");
    let run = call(with(&["--addr", "127.0.0.1:1", "redrive"])).await;
    assert_eq!(run.code, Some(2), "one instance only: {run:?}");
    let run = call(with(&["redrive", "--reason=bogus"])).await;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("unknown reason"), "{run:?}");
    app.stop().await;
}

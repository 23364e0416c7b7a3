//! Health tells the truth about writes: a MongoDB that answers pings but refuses
//! inserts makes the service NOT_SERVING with the reason, and SERVING again once
//! inserts succeed, with nothing lost in between.
use std::time::{Duration, Instant};

use mongodb::bson::doc;
use test_support::{
    servers::{free_port, scratch_dir},
    supervisor::Supervised,
};

use crate::{backends::start_secantus, helpers::*};

/// A secantusd-rs of its own with authentication on, a `root` user and a `reader` user
/// that may only read `dbname`: pings and reads work, inserts are refused.
pub struct ReadOnlyMongo {
    _server: Supervised,
    pub port: u16,
    pub dbname: String,
    /// A client logged in as `root`, to grant `reader` more later.
    pub root: mongodb::Client,
}

impl ReadOnlyMongo {
    pub async fn start() -> Self {
        let port = free_port();
        let data = scratch_dir(&unique("readonly")).display().to_string();
        let server = start_secantus(port, &data, &["--auth"]);
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
        Self {
            _server: server,
            port,
            dbname,
            root,
        }
    }

    /// MONGODB_URL of the `reader` user.
    pub fn reader_url(&self) -> String {
        format!(
            "mongodb://reader:reader-pw@127.0.0.1:{}/?directConnection=true&authSource=admin",
            self.port
        )
    }

    /// Lets `reader` write: inserts succeed from now on.
    pub async fn grant_writes(&self) {
        self.root
            .database("admin")
            .run_command(doc! { "grantRolesToUser": "reader", "roles": [{ "role": "readWrite", "db": &self.dbname }] })
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inserts_refused_while_ping_works_turn_health_off_until_they_succeed() {
    let mongo = ReadOnlyMongo::start().await;
    let dbname = mongo.dbname.clone();
    let app = spawn_app(AppOptions {
        kafka: false,
        database: Some(dbname.clone()),
        extra: vec![("mongodb-url".into(), mongo.reader_url())],
        ..Default::default()
    })
    .await;
    // The read-only user cannot create the indexes either: MongoDB writes count as down
    // from start-up. A request whose insert is refused: its ack waits, health stays off.
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
    wait_until(
        Duration::from_secs(15),
        "NOT_SERVING naming the refusal",
        || {
            let url = url.clone();
            async move {
                let (code, body) = get(&url).await;
                code == 503 && body.contains("not authorized")
            }
        },
    )
    .await;
    let off_after = sent.elapsed();
    let (_, body) = get(&url).await;
    assert!(body.contains("not authorized"), "{body}");
    assert!(body.contains(r#""mongodb":"down""#), "{body}");
    // The ping keeps working: health stays off while writes fail.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(get(&url).await.0, 503);
    mongo.grant_writes().await;
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

/// A write concern the deployment cannot satisfy (`w=5` on one node) makes MongoDB
/// refuse the start-up index creation while pings work: MongoDB counts as down with the
/// server's reason (health NOT_SERVING, /health 503) for as long as it refuses, and the
/// refusal is logged once, not at every retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_start_up_index_creation_keeps_mongodb_down_with_the_servers_reason() {
    use crate::backends::{backends, start_server};
    use test_support::service::server_env;
    let url = format!("{}&w=5&wtimeoutMS=500", backends().mongodb);
    let env = server_env(
        backends(),
        &unique("w5"),
        &unique("w5_g"),
        &unique("w5_db"),
        &[("KAFKA_ENABLED", "false".into()), ("MONGODB_URL", url)],
    );
    let server = start_server("w5", &env);
    server
        .wait_health(503, Duration::from_secs(30))
        .await
        .unwrap();
    let health = format!("{}/health", server.http_url);
    // For 6 s (several backed-off retries) health never says serving.
    let until = Instant::now() + Duration::from_secs(6);
    let mut body = String::new();
    while Instant::now() < until {
        let (status, b) = get(&health).await;
        assert_eq!(
            status,
            503,
            "health must not be serving: {b}\n{}",
            server.logs()
        );
        body = b;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(body.contains(r#""mongodb":"down""#), "{body}");
    assert!(body.contains("index creation"), "{body}");
    assert!(
        body.contains("UnsatisfiableWriteConcern")
            || body.contains("code 100")
            || body.contains("Not enough data-bearing nodes"),
        "the server's reason: {body}"
    );
    let logs = server.logs();
    let warned = logs.matches("creating indexes failed").count();
    assert_eq!(
        warned, 1,
        "one WARN line per state change, not per attempt:\n{logs}"
    );
}

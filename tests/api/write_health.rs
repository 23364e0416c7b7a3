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
        self.write_role("grantRolesToUser").await;
    }

    /// Lets `reader` write, then waits for the ack of the request `acks` belongs to, held
    /// by the refused inserts until now.
    pub async fn grant_writes_then_ack(
        &self,
        acks: &mut tonic::Streaming<sales_ingest::proto::ingest::v1::IngestAck>,
    ) -> sales_ingest::proto::ingest::v1::IngestAck {
        self.grant_writes().await;
        next_ack(acks, Duration::from_secs(15), "acked once inserts succeed").await
    }

    /// Takes the write role back: inserts are refused from now on, pings still work.
    pub async fn revoke_writes(&self) {
        self.write_role("revokeRolesFromUser").await;
    }

    /// Runs `command` (grant or revoke) for `reader` and `readWrite` on the database.
    async fn write_role(&self, command: &str) {
        self.root
            .database("admin")
            .run_command(
                doc! { command: "reader", "roles": [{ "role": "readWrite", "db": &self.dbname }] },
            )
            .await
            .unwrap();
    }

    /// A gRPC-only server as `reader` with `extra` flags, SERVING: `reader` may write
    /// while it starts (so the start-up indexes exist), then only read.
    pub async fn serving_then_read_only(&self, extra: &[(&str, &str)]) -> TestApp {
        self.grant_writes().await;
        let mut flags = vec![("mongodb-url".to_string(), self.reader_url())];
        flags.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let app = spawn_app(AppOptions {
            kafka: false,
            database: Some(self.dbname.clone()),
            extra: flags,
            ..Default::default()
        })
        .await;
        app.wait_serving().await;
        self.revoke_writes().await;
        app
    }
}

/// An IngestEvents stream with one request of `n` valid events (ids `<prefix>-<i>`)
/// sent, held open: its acks and the sender that keeps it open.
pub async fn one_request(
    app: &TestApp,
    prefix: &str,
    n: usize,
) -> (
    tonic::Streaming<sales_ingest::proto::ingest::v1::IngestAck>,
    tokio::sync::mpsc::Sender<sales_ingest::proto::ingest::v1::IngestRequest>,
) {
    let events = (0..n)
        .map(|i| valid_event(i, &format!("{prefix}-{i}")))
        .collect();
    let request = sales_ingest::proto::ingest::v1::IngestRequest { seq: 1, events };
    app.held_stream(vec![request]).await
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
    let (mut acks, tx) = one_request(&app, "ro", 5).await;
    let sent = Instant::now();
    let url = format!("{}/health", app.http_url);
    wait_until(
        Duration::from_secs(15),
        "NOT_SERVING naming the refusal",
        || {
            let url = url.clone();
            async move {
                let (code, body) = get_as_admin(&url).await;
                code == 503 && body.contains("not authorized")
            }
        },
    )
    .await;
    let off_after = sent.elapsed();
    let (_, body) = get_as_admin(&url).await;
    assert!(body.contains("not authorized"), "{body}");
    assert!(body.contains(r#""mongodb":"down""#), "{body}");
    // The ping keeps working: health stays off while writes fail.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(get_as_admin(&url).await.0, 503);
    let granted = Instant::now();
    let ack = mongo.grant_writes_then_ack(&mut acks).await;
    assert_eq!(ack.accepted, 5);
    wait_until(Duration::from_secs(5), "SERVING again", || {
        let url = url.clone();
        async move { get_as_admin(&url).await.0 == 200 }
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
        let (status, b) = get_as_admin(&health).await;
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

/// `MAX_RETRIES` is a threshold, not a limit: MongoDB writes count as down only after
/// that many failed attempts in a row (not at the first), and the write goes on being
/// retried past it until it succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_count_as_down_after_max_retries_failed_attempts_and_are_retried_past_it() {
    const MAX_RETRIES: u64 = 5;
    let mongo = ReadOnlyMongo::start().await;
    let app = mongo.serving_then_read_only(&[("max-retries", "5")]).await;
    let (mut acks, tx) = one_request(&app, "mr", 5).await;
    // (failed attempts so far, MongoDB up) as /metrics tells them, until it is down.
    let url = format!("{}/metrics", app.http_url);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut samples = Vec::new();
    loop {
        let (_, text) = get(&url).await;
        let retries = metric(&text, r#"mongodb_writes_total{status="retry"}"#).unwrap_or(0);
        let up = metric(&text, r#"dependency_up{dependency="mongodb"}"#).expect("the gauge");
        samples.push((retries, up));
        if up == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "never down: {samples:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        samples.iter().any(|&(r, up)| r >= 1 && up == 1),
        "refused attempts before the threshold leave MongoDB up: {samples:?}"
    );
    let &(at_down, _) = samples.last().unwrap();
    assert!(
        at_down >= MAX_RETRIES,
        "down only after {MAX_RETRIES} failed attempts: {samples:?}"
    );
    let (code, body) = get_as_admin(&format!("{}/health", app.http_url)).await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("attempts in a row"), "{body}");
    // Past the threshold the write is still retried; nothing is dropped.
    wait_until(Duration::from_secs(30), "a retry past MAX_RETRIES", || {
        let url = url.clone();
        async move {
            let (_, text) = get(&url).await;
            metric(&text, r#"mongodb_writes_total{status="retry"}"#) > Some(MAX_RETRIES)
        }
    })
    .await;
    let ack = mongo.grant_writes_then_ack(&mut acks).await;
    assert_eq!(ack.accepted, 5);
    let stored = mongo
        .root
        .database(&mongo.dbname)
        .collection::<mongodb::bson::Document>("raw_sales")
        .count_documents(doc! {})
        .await
        .unwrap();
    assert_eq!(stored, 5);
    drop(tx);
    app.stop().await;
}

//! `spawn_app()` runs the real server (built from the library) on port 0 against the
//! shared backends, with its own topic, group and database; plus typed helpers to
//! produce, consume, query MongoDB and call the RPCs.
use std::{
    future::Future,
    sync::{Arc, Once},
    time::{Duration, Instant},
};

use clap::{CommandFactory, Parser};
use mongodb::{bson::doc, Client, Database};
use prost::Message as _;
use sales_ingest::{
    proto::{
        ingest::v1::{
            ingest_admin_client::IngestAdminClient, ingest_events_client::IngestEventsClient,
            IngestAck, IngestRequest,
        },
        sales::v1::SalesEvent,
    },
    stats::Stats,
    Application, Config, Stopped,
};
use test_support::service::{default, server_env};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::backends::backends;

mod kafka;
pub mod pki;
mod pump;
pub use kafka::{
    committed, committed_at, consume, consume_all, consume_at, create_topic, create_topic_at,
    partition_count_at, produce, produce_at, produce_with, steady_producer,
    wait_committed_to_end_at, watermarks_at,
};
pub use pump::pump;

/// Options a test may change; the rest are the test defaults of
/// `test_support::service::DEFAULTS`.
#[derive(Clone, Debug)]
pub struct AppOptions {
    pub kafka: bool,
    pub admin_token: Option<String>,
    pub batch_size: u32,
    pub flush_interval: f64,
    /// Topic and group to use instead of fresh ones.
    pub topic: Option<String>,
    pub group: Option<String>,
    pub database: Option<String>,
    pub extra: Vec<(String, String)>,
}

impl Default for AppOptions {
    fn default() -> Self {
        Self {
            kafka: true,
            admin_token: Some(default("ADMIN_TOKEN").into()),
            batch_size: default("BATCH_SIZE").parse().expect("a number"),
            flush_interval: default("FLUSH_INTERVAL").parse().expect("a number"),
            topic: None,
            group: None,
            database: None,
            extra: Vec::new(),
        }
    }
}

/// A running server and what a test needs to talk to it.
pub struct TestApp {
    pub grpc_url: String,
    pub http_url: String,
    pub topic: String,
    pub group: String,
    pub db: Database,
    pub stats: Arc<Stats>,
    pub shutdown: CancellationToken,
    pub handle: JoinHandle<Stopped>,
    pub admin_token: Option<String>,
}

/// A name unique to this test run.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn init_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            sales_ingest::telemetry::init(
                &std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
                sales_ingest::config::LogFormat::Text,
            );
        }
    });
}

/// The configuration `spawn_app` would use, as CLI arguments: the environment a server
/// process gets (`server_env`), each variable as the flag that reads it, then `extra`.
pub fn app_args(o: &AppOptions, topic: &str, group: &str, database: &str) -> Vec<String> {
    let mut env = server_env(
        backends(),
        topic,
        group,
        database,
        &[
            ("KAFKA_ENABLED", o.kafka.to_string()),
            ("BATCH_SIZE", o.batch_size.to_string()),
            ("FLUSH_INTERVAL", o.flush_interval.to_string()),
            ("GRPC_ADDR", "127.0.0.1:0".into()),
            ("HTTP_ADDR", "127.0.0.1:0".into()),
            ("ADMIN_TOKEN", o.admin_token.clone().unwrap_or_default()),
        ],
    );
    if o.admin_token.is_none() {
        env.retain(|(k, _)| k != "ADMIN_TOKEN");
    }
    let command = Config::command();
    let mut args = vec!["sales-ingest".to_string()];
    for (var, value) in env {
        let flag = command
            .get_arguments()
            .find(|a| a.get_env().is_some_and(|e| e == var.as_str()))
            .and_then(|a| a.get_long())
            .unwrap_or_else(|| panic!("the server has no flag for {var}"));
        args.push(format!("--{flag}={value}"));
    }
    for (k, v) in &o.extra {
        args.push(format!("--{k}={v}"));
    }
    args
}

/// Starts the server in this test's runtime.
pub async fn spawn_app(o: AppOptions) -> TestApp {
    init_logs();
    let topic = o.topic.clone().unwrap_or_else(|| unique("sales"));
    let group = o.group.clone().unwrap_or_else(|| unique("group"));
    let database = o.database.clone().unwrap_or_else(|| unique("db"));
    let config =
        Config::try_parse_from(app_args(&o, &topic, &group, &database)).expect("test config");
    let app = Application::build(config).await.expect("build app");
    let grpc_url = format!("http://{}", app.grpc_addr());
    let http_url = format!("http://{}", app.http_addr());
    let shutdown = app.shutdown_token();
    let stats = app.stats();
    let handle = tokio::spawn(app.run_until_stopped());
    TestApp {
        grpc_url,
        http_url,
        topic,
        group,
        db: mongo_client().await.database(&database),
        stats,
        shutdown,
        handle,
        admin_token: o.admin_token,
    }
}

/// A gRPC-only server whose MONGODB_URL points at a closed port (MongoDB unreachable),
/// returned once a check has failed: `/health` names a real failure, not the start-up
/// state "not checked yet", which is down before anything was tried.
pub async fn spawn_app_with_unreachable_mongodb() -> TestApp {
    let port = test_support::servers::free_port();
    let app = spawn_app(AppOptions {
        kafka: false,
        extra: vec![(
            "mongodb-url".into(),
            format!("mongodb://127.0.0.1:{port}/?directConnection=true"),
        )],
        ..Default::default()
    })
    .await;
    let url = format!("{}/health", app.http_url);
    wait_until(Duration::from_secs(30), "a failed MongoDB check", || {
        let url = url.clone();
        async move {
            let (_, body) = get_as_admin(&url).await;
            let health: serde_json::Value = serde_json::from_str(&body).expect("JSON");
            let why = health["mongodb_error"]
                .as_str()
                .unwrap_or("not checked yet");
            why != "not checked yet"
        }
    })
    .await;
    app
}

/// A client for the test MongoDB.
pub async fn mongo_client() -> Client {
    Client::with_uri_str(&backends().mongodb)
        .await
        .expect("mongo client")
}

impl TestApp {
    pub async fn admin(&self) -> IngestAdminClient<Channel> {
        IngestAdminClient::connect(self.grpc_url.clone())
            .await
            .expect("connect admin")
    }

    pub async fn events(&self) -> IngestEventsClient<Channel> {
        IngestEventsClient::connect(self.grpc_url.clone())
            .await
            .expect("connect events")
    }

    /// Sends `events` as one request (seq 1) on a new IngestEvents stream and returns
    /// its ack.
    pub async fn ingest(&self, events: Vec<SalesEvent>) -> IngestAck {
        use tokio_stream::StreamExt;
        let request = IngestRequest { seq: 1, events };
        self.events()
            .await
            .stream(tokio_stream::iter([request]))
            .await
            .expect("stream accepted")
            .into_inner()
            .next()
            .await
            .expect("an ack")
            .expect("an ok ack")
    }

    /// Opens an IngestEvents stream with `requests` sent and keeps it open (not
    /// half-closed) while the returned sender lives: its acks and that sender.
    pub async fn held_stream(
        &self,
        requests: Vec<IngestRequest>,
    ) -> (
        tonic::Streaming<IngestAck>,
        tokio::sync::mpsc::Sender<IngestRequest>,
    ) {
        let (tx, rx) = tokio::sync::mpsc::channel(requests.len().max(1));
        for request in requests {
            tx.send(request).await.expect("queued");
        }
        let acks = self
            .events()
            .await
            .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .expect("stream accepted")
            .into_inner();
        (acks, tx)
    }

    /// Waits until `/health` answers 200 (every required dependency reachable).
    pub async fn wait_serving(&self) {
        let h = self.http_url.clone();
        wait_until(Duration::from_secs(30), "/health 200", || {
            let h = h.clone();
            async move { get(&format!("{h}/health")).await.0 == 200 }
        })
        .await;
    }

    /// Documents in the events collection.
    pub async fn stored(&self) -> u64 {
        self.db
            .collection::<mongodb::bson::Document>("raw_sales")
            .count_documents(doc! {})
            .await
            .expect("count")
    }

    /// A request with the admin token attached.
    pub fn authed<T>(&self, msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        let token = self.admin_token.as_deref().expect("app has a token");
        req.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        req
    }

    /// Stops the server gracefully and checks it drained cleanly.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        assert_eq!(self.stopped().await, Stopped::Clean);
    }

    /// How the server's run ended, once a shutdown it was asked for (or began itself)
    /// is over; panics after 30 s.
    pub async fn stopped(&mut self) -> Stopped {
        tokio::time::timeout(Duration::from_secs(30), &mut self.handle)
            .await
            .expect("server stops within 30 s")
            .expect("server task")
    }
}

/// Whether gRPC health at `url` says the whole server is SERVING; None when it does not
/// answer.
pub async fn grpc_serving(url: &str) -> Option<bool> {
    use tonic_health::pb::{
        health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
    };
    let ch = Channel::from_shared(url.to_string())
        .ok()?
        .connect()
        .await
        .ok()?;
    let status = HealthClient::new(ch)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .ok()?
        .into_inner()
        .status();
    Some(status == ServingStatus::Serving)
}

/// The next ack of `acks` within `timeout`; panics naming `what` did not happen.
pub async fn next_ack(
    acks: &mut tonic::Streaming<IngestAck>,
    timeout: Duration,
    what: &str,
) -> IngestAck {
    use tokio_stream::StreamExt;
    tokio::time::timeout(timeout, acks.next())
        .await
        .unwrap_or_else(|_| panic!("no ack within {timeout:?}: {what}"))
        .expect("an ack, not the stream's end")
        .expect("an ok ack")
}

/// Polls `check` every 100 ms until it returns true; panics with `what` after `timeout`.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Encodes an event.
pub fn encode(e: &SalesEvent) -> Vec<u8> {
    e.encode_to_vec()
}

/// A valid event with the given id.
pub fn valid_event(i: usize, id: &str) -> SalesEvent {
    SalesEvent {
        sku: format!("SKU-{}", i % 97),
        qty: (i % 10 + 1) as i32,
        price: 1.25 + (i % 50) as f64,
        ts: "2026-11-25T10:00:00Z".into(),
        event_id: id.to_string(),
    }
}

/// GET a URL: status and body.
pub async fn get(url: &str) -> (u16, String) {
    let resp = reqwest::get(url).await.expect("http get");
    let status = resp.status().as_u16();
    (status, resp.text().await.expect("body"))
}

/// The value of the first sample in the Prometheus text `text` whose line starts with
/// `series` (a name with its labels), as an integer.
pub fn metric(text: &str, series: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// (events stored, events found duplicate) from the `stopped cleanly` line a server
/// process logs at a clean exit (its last GetStats, in the text log format).
pub fn stopped_cleanly_counts(logs: &str) -> (u64, u64) {
    let line = logs
        .lines()
        .find(|l| l.contains("stopped cleanly"))
        .unwrap_or_else(|| panic!("no `stopped cleanly` line in:\n{logs}"));
    let field = |name: &str| -> u64 {
        let at = line.find(&format!("{name}: ")).expect(name) + name.len() + 2;
        let digits: String = line[at..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().expect(name)
    };
    (field("events_stored"), field("events_duplicate"))
}

/// GET a URL as an operator, with the admin token (`/health` gives the reasons of what
/// is down only to callers with it): status and body.
pub async fn get_as_admin(url: &str) -> (u16, String) {
    let resp = reqwest::Client::new()
        .get(url)
        .bearer_auth(default("ADMIN_TOKEN"))
        .send()
        .await
        .expect("http get");
    let status = resp.status().as_u16();
    (status, resp.text().await.expect("body"))
}

/// A connected gRPC channel.
pub async fn channel(url: &str) -> Channel {
    Channel::from_shared(url.to_string())
        .expect("url")
        .connect()
        .await
        .expect("connect")
}

//! The sales-ingest binary (release or debug build) as a supervised process with an
//! explicit environment: the test defaults of that environment ([`server_env`]), start
//! on fresh loopback ports, wait until serving, GetStats, /stats, /metrics, resident
//! memory, stop and exit status.
use std::{
    path::{Path, PathBuf},
    process::ExitStatus,
    sync::OnceLock,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use sales_ingest::proto::ingest::v1::{
    ingest_admin_client::IngestAdminClient, GetStatsRequest, GetStatsResponse,
};
use tonic::transport::Channel;
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};

use crate::{
    proc::{self, Memory},
    servers::{free_port, Backends},
    supervisor::{log_tail, Signal, Supervised},
};

/// The settings every test server and bench service starts with, before the caller's
/// own. The in-process servers of the integration tests get the same values as
/// command-line flags.
pub const DEFAULTS: &[(&str, &str)] = &[
    // A member that dies is replaced after the session timeout: keep rebalances short.
    ("KAFKA_SESSION_TIMEOUT_MS", "6000"),
    ("KAFKA_HEARTBEAT_INTERVAL_MS", "1000"),
    ("KAFKA_MAX_POLL_INTERVAL_MS", "7000"),
    ("BATCH_SIZE", "500"),
    ("FLUSH_INTERVAL", "0.2"),
    ("SHUTDOWN_TIMEOUT", "20"),
    ("ADMIN_TOKEN", "test-admin-token"),
    ("RUST_LOG", "info"),
];

/// The value [`DEFAULTS`] gives `key`. Panics for a key it does not set.
pub fn default(key: &str) -> &'static str {
    DEFAULTS
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("the test defaults do not set {key}"))
}

/// The environment of a server using `backends`, `topic`, `group` and `database`:
/// the servers' addresses, those names, [`DEFAULTS`], then `extra` (which wins).
pub fn server_env(
    backends: &Backends,
    topic: &str,
    group: &str,
    database: &str,
    extra: &[(&str, String)],
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        ("KAFKA_BOOTSTRAP_SERVERS", backends.kafka.as_str()),
        ("KAFKA_TOPIC", topic),
        ("KAFKA_GROUP_ID", group),
        ("MONGODB_URL", backends.mongodb.as_str()),
        ("MONGODB_DATABASE", database),
    ]
    .into_iter()
    .chain(DEFAULTS.iter().copied())
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in extra {
        env.retain(|(key, _)| key != k);
        env.push((k.to_string(), v.clone()));
    }
    env
}

/// The `sales-ingest` binary in the directory of the running executable, where cargo
/// puts both when they are built with the same profile (the bench's case).
pub fn sibling_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe
        .parent()
        .context("the running executable has no directory")?
        .join("sales-ingest");
    if !bin.is_file() {
        bail!(
            "{} not found: build it first with `cargo build --release --bin sales-ingest` \
             (scripts/bench does)",
            bin.display()
        );
    }
    Ok(bin)
}

/// A running service process.
pub struct Service {
    proc: Supervised,
    /// http://host:port of its gRPC server.
    pub grpc_url: String,
    /// http://host:port of its HTTP server (/health, /stats, /metrics).
    pub http_url: String,
    channel: OnceLock<Channel>,
}

impl Service {
    /// Starts `bin` with exactly `env` (plus GRPC_ADDR and HTTP_ADDR on fresh loopback
    /// ports, PATH and HOME) as its environment; its output is appended to `log`.
    pub fn start(bin: &Path, env: &[(String, String)], log: &Path) -> Result<Self> {
        let (gport, hport) = (free_port(), free_port());
        let mut env = env.to_vec();
        env.retain(|(k, _)| k != "GRPC_ADDR" && k != "HTTP_ADDR");
        env.push(("GRPC_ADDR".into(), format!("127.0.0.1:{gport}")));
        env.push(("HTTP_ADDR".into(), format!("127.0.0.1:{hport}")));
        let proc = Supervised::spawn("sales-ingest", &[bin.display().to_string()], &env, log)?;
        Ok(Self {
            proc,
            grpc_url: format!("http://127.0.0.1:{gport}"),
            http_url: format!("http://127.0.0.1:{hport}"),
            channel: OnceLock::new(),
        })
    }

    /// The service's pid.
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// The log file.
    pub fn log(&self) -> &Path {
        self.proc.log()
    }

    /// Everything the service logged so far.
    pub fn logs(&self) -> String {
        self.proc.logs()
    }

    /// The last 30 lines the service logged.
    pub fn log_tail(&self) -> String {
        self.proc.log_tail(30)
    }

    /// True while the service runs.
    pub fn running(&mut self) -> bool {
        self.proc.running()
    }

    /// A gRPC channel to the service, connected on first use and shared after that.
    /// Call it inside a Tokio runtime.
    pub fn channel(&self) -> Channel {
        self.channel
            .get_or_init(|| {
                Channel::from_shared(self.grpc_url.clone())
                    .expect("a valid URL")
                    .connect_lazy()
            })
            .clone()
    }

    /// Waits until the gRPC health service reports the whole server SERVING.
    pub async fn wait_serving(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut health = HealthClient::new(self.channel());
        loop {
            let req = HealthCheckRequest {
                service: String::new(),
            };
            if let Ok(resp) = health.check(req).await {
                if resp.into_inner().status == ServingStatus::Serving as i32 {
                    return Ok(());
                }
            }
            if !self.running() || Instant::now() > deadline {
                bail!(
                    "the service was not SERVING within {timeout:?}; its log ({}):\n{}",
                    self.log().display(),
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until GET /health answers `code`.
    pub async fn wait_health(&self, code: u16, timeout: Duration) -> Result<()> {
        let url = format!("{}/health", self.http_url);
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(resp) = reqwest::get(&url).await {
                if resp.status().as_u16() == code {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "/health never answered {code} within {timeout:?}; logs:\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// GetStats over gRPC.
    pub async fn stats(&self) -> Result<GetStatsResponse> {
        let mut admin = IngestAdminClient::new(self.channel());
        Ok(admin.get_stats(GetStatsRequest {}).await?.into_inner())
    }

    /// GET /stats, as JSON.
    pub async fn stats_json(&self) -> Result<serde_json::Value> {
        let body = self.get_ok("/stats").await?;
        serde_json::from_str(&body).context("/stats is not JSON")
    }

    /// GET /metrics: the Prometheus text exposition.
    pub async fn metrics(&self) -> Result<String> {
        self.get_ok("/metrics").await
    }

    /// The body of GET `path`, which must answer 200.
    async fn get_ok(&self, path: &str) -> Result<String> {
        let resp = reqwest::get(format!("{}{path}", self.http_url))
            .await
            .with_context(|| format!("GET {path}"))?;
        let status = resp.status();
        let body = resp.text().await?;
        if !status.is_success() {
            bail!("GET {path} answered {status}: {body}");
        }
        Ok(body)
    }

    /// Resident memory now and at peak.
    pub fn memory(&self) -> Result<Memory> {
        proc::memory(self.pid())
    }

    /// SIGKILL; waits for the process to be gone.
    pub fn kill(self) -> Result<()> {
        self.proc.kill().map(drop)
    }

    /// SIGTERM; the exit status and how long the exit took. Fails (after SIGKILL) if
    /// the service is still running after `timeout`.
    pub fn terminate(self, timeout: Duration) -> Result<(ExitStatus, Duration)> {
        self.proc.terminate(timeout)
    }

    /// Sends `signal` (SIGTERM, SIGINT, SIGKILL); the exit status and how long the exit
    /// took. Fails (after SIGKILL) if the service is still running after `timeout`.
    pub fn stop_with(self, signal: Signal, timeout: Duration) -> Result<(ExitStatus, Duration)> {
        self.proc.stop_with(signal, timeout)
    }

    /// Waits for the service to exit by itself (after the Shutdown RPC or `POST
    /// /shutdown`); its exit status. Fails (after SIGKILL) past `timeout`.
    pub fn wait_exit(self, timeout: Duration) -> Result<ExitStatus> {
        self.proc.wait_exit(timeout)
    }

    /// Graceful stop (SIGTERM, 40 s at most); fails unless the service exits 0.
    pub fn stop(self) -> Result<()> {
        let log = self.log().to_path_buf();
        let (status, _) = self.proc.terminate(Duration::from_secs(40))?;
        if !status.success() {
            bail!(
                "the service exited with {status} on SIGTERM; log tail:\n{}",
                log_tail(&log, 30)
            );
        }
        Ok(())
    }
}

//! The service under test as a separate process: the release binary
//! `target/release/sales-ingest`, found next to the bench's own executable, started
//! with an explicit environment on fresh loopback ports. The bench reads its figures
//! over gRPC (GetStats), its CPU and memory from /proc, and its metrics over HTTP.
use std::{
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
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
    metrics::Histogram,
    procfs::{self, Memory},
    servers::free_port,
    watched::Watched,
};

/// The release binary of the service, next to the bench's executable.
pub fn binary() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe
        .parent()
        .context("bench executable has no directory")?
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
    proc: Watched,
    http_addr: String,
    channel: Channel,
}

impl Service {
    /// Starts `bin` with `env` (GRPC_ADDR and HTTP_ADDR are added); logs to `log`.
    pub fn start(bin: &Path, env: &[(String, String)], log: &Path) -> Result<Self> {
        let (gport, hport) = (free_port()?, free_port()?);
        let mut env = env.to_vec();
        env.push(("GRPC_ADDR".into(), format!("127.0.0.1:{gport}")));
        env.push(("HTTP_ADDR".into(), format!("127.0.0.1:{hport}")));
        let proc = Watched::spawn("sales-ingest", &[bin.display().to_string()], &env, log)?;
        let channel = Channel::from_shared(format!("http://127.0.0.1:{gport}"))?.connect_lazy();
        Ok(Self {
            proc,
            http_addr: format!("127.0.0.1:{hport}"),
            channel,
        })
    }

    /// The service's pid.
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// A gRPC channel to the service.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// Waits until the gRPC health service reports the whole server SERVING.
    pub async fn wait_serving(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut health = HealthClient::new(self.channel.clone());
        loop {
            let req = HealthCheckRequest {
                service: String::new(),
            };
            if let Ok(resp) = health.check(req).await {
                if resp.into_inner().status == ServingStatus::Serving as i32 {
                    return Ok(());
                }
            }
            if !self.proc.running() || Instant::now() > deadline {
                bail!(
                    "the service was not SERVING within {timeout:?}; its log ({}):\n{}",
                    self.proc.log().display(),
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// GetStats.
    pub async fn stats(&self) -> Result<GetStatsResponse> {
        let mut admin = IngestAdminClient::new(self.channel.clone());
        Ok(admin.get_stats(GetStatsRequest {}).await?.into_inner())
    }

    /// Resident memory now and at peak.
    pub fn memory(&self) -> Result<Memory> {
        procfs::memory(self.pid())
    }

    /// GET /metrics (Prometheus text), over a plain HTTP/1.0 request.
    pub fn metrics(&self) -> Result<String> {
        let mut s = TcpStream::connect(&self.http_addr)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            s,
            "GET /metrics HTTP/1.0\r\nHost: {}\r\n\r\n",
            self.http_addr
        )?;
        let mut resp = String::new();
        s.read_to_string(&mut resp)?;
        let (head, body) = resp
            .split_once("\r\n\r\n")
            .context("malformed HTTP response from /metrics")?;
        if !head.starts_with("HTTP/1.") || !head.contains(" 200") {
            bail!("/metrics answered {}", head.lines().next().unwrap_or(""));
        }
        Ok(body.to_string())
    }

    /// GET /metrics, saved next to the service's log; the service's mean batch size and
    /// mean insert_many time (ms) from it.
    pub fn batch_figures(&self) -> Result<(Option<f64>, Option<f64>)> {
        let text = self.metrics()?;
        let path = format!("{}.metrics.txt", self.proc.log().display());
        std::fs::write(&path, &text).with_context(|| format!("write {path}"))?;
        let batches = Histogram::parse(&text, "mongodb_batch_size");
        let writes = Histogram::parse(&text, "mongodb_write_duration_seconds");
        Ok((batches.mean(), writes.mean().map(|s| s * 1000.0)))
    }

    /// The last lines of the service's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.proc.log()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Graceful stop (SIGTERM); fails unless the service exits 0.
    pub fn stop(self) -> Result<()> {
        let log = self.log_tail();
        match self.proc.stop(Duration::from_secs(40))? {
            Some(0) => Ok(()),
            code => bail!("the service exited with {code:?} on SIGTERM; log tail:\n{log}"),
        }
    }
}

/// The service environment every phase shares; `extra` entries override it and the
/// user's `--service-env` entries override both.
pub fn env(
    kafka: &str,
    mongodb_url: &str,
    tuning: &crate::Tuning,
    extra: &[(&str, String)],
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        ("KAFKA_BOOTSTRAP_SERVERS", kafka.to_string()),
        // tansu answers JoinGroup after a wait tied to the session timeout.
        ("KAFKA_SESSION_TIMEOUT_MS", "6000".into()),
        ("KAFKA_HEARTBEAT_INTERVAL_MS", "1000".into()),
        ("KAFKA_MAX_POLL_INTERVAL_MS", "7000".into()),
        ("MONGODB_URL", mongodb_url.to_string()),
        ("BATCH_SIZE", tuning.batch_size.to_string()),
        ("WRITE_CONCURRENCY", tuning.write_concurrency.to_string()),
        ("FLUSH_INTERVAL", tuning.flush_interval.to_string()),
        ("RUST_LOG", tuning.service_log.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let overrides = tuning.service_env.iter().map(|(k, v)| (k.as_str(), v));
    for (k, v) in extra.iter().map(|(k, v)| (*k, v)).chain(overrides) {
        env.retain(|(key, _)| key != k);
        env.push((k.to_string(), v.clone()));
    }
    env
}

//! The server as a separate process (the built binary), for tests that kill, restart or
//! measure it: SIGKILL, SIGTERM, exit codes, resident memory from /proc, captured logs.
#[path = "../support/proc_memory.rs"]
mod proc_memory;

use std::{
    fs::File,
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use crate::{
    backends::{backends, free_port, scratch_dir},
    helpers::get,
};

/// A running `sales-ingest` process.
pub struct ServerProcess {
    child: Child,
    pub grpc_url: String,
    pub http_url: String,
    pub log: PathBuf,
}

/// Environment for a server process: the test defaults, then `extra` (which wins).
pub fn server_env(
    topic: &str,
    group: &str,
    database: &str,
    extra: &[(&str, String)],
) -> Vec<(String, String)> {
    let b = backends();
    let mut env: Vec<(String, String)> = [
        ("KAFKA_BOOTSTRAP_SERVERS", b.kafka.clone()),
        ("KAFKA_TOPIC", topic.to_string()),
        ("KAFKA_GROUP_ID", group.to_string()),
        ("KAFKA_SESSION_TIMEOUT_MS", "6000".into()),
        ("KAFKA_HEARTBEAT_INTERVAL_MS", "1000".into()),
        ("KAFKA_MAX_POLL_INTERVAL_MS", "7000".into()),
        ("MONGODB_URL", b.mongodb.clone()),
        ("MONGODB_DATABASE", database.to_string()),
        ("BATCH_SIZE", "1000".into()),
        ("FLUSH_INTERVAL", "0.2".into()),
        ("SHUTDOWN_TIMEOUT", "20".into()),
        ("ADMIN_TOKEN", "test-admin-token".into()),
        ("RUST_LOG", "info".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for (k, v) in extra {
        env.retain(|(key, _)| key != k);
        env.push((k.to_string(), v.clone()));
    }
    env
}

impl ServerProcess {
    /// Starts the binary on fresh ports with `env`; logs go to a file.
    pub fn start(name: &str, env: &[(String, String)]) -> Self {
        let (gport, hport) = (free_port(), free_port());
        let log = scratch_dir("logs").join(format!("{name}-{gport}.log"));
        let out = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_sales-ingest"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("GRPC_ADDR", format!("127.0.0.1:{gport}"))
            .env("HTTP_ADDR", format!("127.0.0.1:{hport}"))
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log handle"))
            .stderr(out)
            .spawn()
            .expect("spawn sales-ingest");
        Self {
            child,
            grpc_url: format!("http://127.0.0.1:{gport}"),
            http_url: format!("http://127.0.0.1:{hport}"),
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status()
            .expect("kill");
        assert!(ok.success(), "kill {sig} failed");
    }

    /// SIGKILL and reap.
    pub fn kill9(mut self) {
        self.signal("-KILL");
        self.child.wait().expect("reap");
    }

    /// SIGTERM; waits up to `timeout` for the exit status.
    pub fn terminate(mut self, timeout: Duration) -> (ExitStatus, Duration) {
        let started = Instant::now();
        self.signal("-TERM");
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return (status, started.elapsed());
            }
            assert!(
                started.elapsed() < timeout,
                "server did not exit within {timeout:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// True while the process runs.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// (current, peak) resident memory in KiB, from /proc.
    pub fn memory_kib(&self) -> (u64, u64) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        proc_memory::rss_and_peak_kib(&status)
    }

    /// The captured logs so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until /health answers with `code`.
    pub async fn wait_health(&self, code: u16, timeout: Duration) {
        let url = format!("{}/health", self.http_url);
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(resp) = reqwest::get(&url).await {
                if resp.status().as_u16() == code {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "/health never answered {code} within {timeout:?}; logs:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// /stats as JSON.
    pub async fn stats(&self) -> serde_json::Value {
        let (_, body) = get(&format!("{}/stats", self.http_url)).await;
        serde_json::from_str(&body).expect("stats json")
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if self.running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

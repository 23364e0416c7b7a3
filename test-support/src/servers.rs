//! The local servers of docs/testing.md: where they are installed (scripts/install-deps puts
//! them there), starting them under a [`Supervised`] watchdog on loopback ports (Apache
//! Kafka through [`crate::kafka`]), free ports, and scratch directories removed once this
//! process is gone.
use std::{
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::{
    kafka::{KafkaCluster, KafkaOptions},
    supervisor::Supervised,
};

/// How long secantusd-rs may take to listen (it opens its storage first).
const SECANTUS_START: Duration = Duration::from_secs(60);

/// Where a Kafka-protocol broker and a MongoDB-protocol server listen.
#[derive(Clone, Debug)]
pub struct Backends {
    /// bootstrap.servers of the Kafka broker(s).
    pub kafka: String,
    /// mongodb:// URL.
    pub mongodb: String,
    /// Where they come from, for messages: "env", "testcontainers" or "local".
    pub kind: &'static str,
}

/// `secantusd-rs` on PATH or in ~/.cargo/bin (`cargo install secantus-mdb`), if installed.
pub fn secantus_path() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("secantusd-rs"))
                .collect()
        })
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(PathBuf::from(home).join(".cargo/bin/secantusd-rs"));
    }
    candidates.into_iter().find(|p| p.is_file())
}

/// A loopback port free at the time of the call. Panics if no port can be bound.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free loopback port")
        .port()
}

/// Waits until something accepts connections on loopback `port`.
pub fn wait_for_port(port: u16, what: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("{what} did not listen on port {port} within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// A scratch directory under the system temp dir, `sales-ingest-<pid>-<name>`. All but
/// the `logs` one are removed once this process is gone (a database's data directory
/// holds 130 MiB or more; runs must not fill the disk).
pub fn scratch_dir(name: &str) -> PathBuf {
    static CLEANUP: std::sync::Once = std::sync::Once::new();
    let pid = std::process::id();
    let tmp = std::env::temp_dir();
    CLEANUP.call_once(|| {
        // Like the watchdogs: a detached shell waits for this process to end, then for
        // the watchdogs to have stopped the servers, then removes the data.
        let script = format!(
            "(while kill -0 {pid} 2>/dev/null; do sleep 1; done; sleep 3; \
             find '{}' -maxdepth 1 -name 'sales-ingest-{pid}-*' ! -name '*-logs' \
             -exec rm -rf {{}} +) </dev/null >/dev/null 2>&1 &",
            tmp.display().to_string().replace('\'', r"'\''"),
        );
        Command::new("bash")
            .args(["-c", &script])
            .status()
            .expect("start the scratch cleanup shell");
    });
    let dir = tmp.join(format!("sales-ingest-{pid}-{name}"));
    std::fs::create_dir_all(&dir).expect("create a scratch dir");
    dir
}

/// Starts secantusd-rs on `port` with its data in `data_dir` (reopened intact on a
/// restart) and `args` added to its command line; logs to `logs/secantus-<port>.log`.
pub fn start_secantus(
    port: u16,
    data_dir: &Path,
    args: &[&str],
    logs: &Path,
) -> Result<Supervised> {
    let secantus =
        secantus_path().context("secantusd-rs not found (scripts/install-deps installs it)")?;
    let mut argv = vec![
        secantus.display().to_string(),
        "--host".into(),
        "127.0.0.1".into(),
        "--port".into(),
        port.to_string(),
        "--storage-path".into(),
        data_dir.display().to_string(),
    ];
    argv.extend(args.iter().map(|a| a.to_string()));
    let log = logs.join(format!("secantus-{port}.log"));
    let child = Supervised::spawn("secantusd-rs", &argv, &[], &log)?;
    wait_for_port(port, "secantusd-rs", SECANTUS_START)?;
    Ok(child)
}

/// An Apache Kafka broker (one KRaft node) and a secantusd-rs server started together on
/// free loopback ports.
pub struct LocalServers {
    /// Where they listen (kind "local").
    pub backends: Backends,
    /// The broker; its start-up time is `kafka.startup`.
    pub kafka: KafkaCluster,
    secantus: Supervised,
}

impl LocalServers {
    /// Starts both; the broker keeps its data under `data_dir/kafka` and is made with
    /// `kafka` options, secantusd-rs keeps its data in `data_dir/mongo` and gets
    /// `secantus_args`; logs go to `logs`.
    pub fn start(
        logs: &Path,
        data_dir: &Path,
        kafka: &KafkaOptions,
        secantus_args: &[&str],
    ) -> Result<Self> {
        let kafka = KafkaCluster::start(kafka, &data_dir.join("kafka"), logs)?;
        let mport = free_port();
        let mongo_dir = data_dir.join("mongo");
        std::fs::create_dir_all(&mongo_dir)?;
        let secantus = start_secantus(mport, &mongo_dir, secantus_args, logs)?;
        Ok(Self {
            backends: Backends {
                kafka: kafka.bootstrap(),
                mongodb: format!("mongodb://127.0.0.1:{mport}/?directConnection=true"),
                kind: "local",
            },
            kafka,
            secantus,
        })
    }

    /// The broker's pid.
    pub fn kafka_pid(&self) -> u32 {
        self.kafka.nodes[0].pid().expect("the local broker runs")
    }

    /// The MongoDB server's pid.
    pub fn mongodb_pid(&self) -> u32 {
        self.secantus.pid()
    }

    /// Stops both (SIGTERM), waiting for each to exit.
    pub fn stop(self) -> Result<()> {
        let LocalServers {
            mut kafka,
            secantus,
            ..
        } = self;
        kafka.stop(Duration::from_secs(30))?;
        secantus.terminate(Duration::from_secs(30))?;
        Ok(())
    }
}

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

/// How long FerretDB may take to listen.
const FERRETDB_START: Duration = Duration::from_secs(30);

/// Which MongoDB-protocol server the local servers run: secantusd-rs (the default) or
/// FerretDB 1.x over SQLite, chosen by `INGEST_TEST_MONGODB_SERVER` (`secantusd-rs`
/// or `ferretdb`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MongoServer {
    Secantus,
    FerretDb,
}

impl MongoServer {
    /// The server `INGEST_TEST_MONGODB_SERVER` names. Panics on another value.
    pub fn from_env() -> Self {
        match std::env::var("INGEST_TEST_MONGODB_SERVER").as_deref() {
            Err(_) | Ok("") | Ok("secantusd-rs") => MongoServer::Secantus,
            Ok("ferretdb") => MongoServer::FerretDb,
            Ok(other) => {
                panic!("INGEST_TEST_MONGODB_SERVER={other}: expected secantusd-rs or ferretdb")
            }
        }
    }

    /// The server's program, if installed.
    pub fn path(self) -> Option<PathBuf> {
        match self {
            MongoServer::Secantus => secantus_path(),
            MongoServer::FerretDb => ferretdb_path(),
        }
    }

    /// Starts it on `port` with its data in `data_dir` (reopened intact on a restart).
    /// `secantus_args` are given to secantusd-rs only.
    pub fn start(
        self,
        port: u16,
        data_dir: &Path,
        secantus_args: &[&str],
        logs: &Path,
    ) -> Result<Supervised> {
        match self {
            MongoServer::Secantus => start_secantus(port, data_dir, secantus_args, logs),
            MongoServer::FerretDb => start_ferretdb(port, data_dir, logs),
        }
    }
}

/// `ferretdb`: `SALES_INGEST_FERRETDB`, else `.cache/bin/ferretdb` in the repository
/// (where scripts/install-deps puts it), else on PATH; if installed.
pub fn ferretdb_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SALES_INGEST_FERRETDB") {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache/bin/ferretdb");
    let on_path = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("ferretdb"))
            .find(|p| p.is_file())
    });
    Some(repo).filter(|p| p.is_file()).or(on_path)
}

/// Starts FerretDB (`test-support/ferretdb`: the SQLite backend, no telemetry, no debug
/// HTTP server) on `port` with its databases in `data_dir`; logs to
/// `logs/ferretdb-<port>.log`.
pub fn start_ferretdb(port: u16, data_dir: &Path, logs: &Path) -> Result<Supervised> {
    let ferretdb =
        ferretdb_path().context("ferretdb not found (scripts/install-deps installs it)")?;
    std::fs::create_dir_all(data_dir)?;
    let argv = vec![
        ferretdb.display().to_string(),
        format!("--sqlite-url=file:{}/", data_dir.display()),
        format!("--listen-addr=127.0.0.1:{port}"),
    ];
    let log = logs.join(format!("ferretdb-{port}.log"));
    let child = Supervised::spawn("ferretdb", &argv, &[], &log)?;
    wait_for_port(port, "ferretdb", FERRETDB_START)?;
    Ok(child)
}

/// An Apache Kafka broker (one KRaft node) and a MongoDB-protocol server (secantusd-rs,
/// or FerretDB with [`LocalServers::start_with`]) started together on free loopback ports.
pub struct LocalServers {
    /// Where they listen (kind "local").
    pub backends: Backends,
    /// The broker; its start-up time is `kafka.startup`.
    pub kafka: KafkaCluster,
    secantus: Option<Supervised>,
    mongo: MongoServer,
    mongo_port: u16,
    mongo_dir: PathBuf,
    secantus_args: Vec<String>,
    logs: PathBuf,
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
        Self::start_with(logs, data_dir, kafka, MongoServer::Secantus, secantus_args)
    }

    /// [`LocalServers::start`] with `mongo` as the MongoDB-protocol server.
    pub fn start_with(
        logs: &Path,
        data_dir: &Path,
        kafka: &KafkaOptions,
        mongo: MongoServer,
        secantus_args: &[&str],
    ) -> Result<Self> {
        let kafka = KafkaCluster::start(kafka, &data_dir.join("kafka"), logs)?;
        let mport = free_port();
        let mongo_dir = data_dir.join("mongo");
        std::fs::create_dir_all(&mongo_dir)?;
        let secantus = Some(mongo.start(mport, &mongo_dir, secantus_args, logs)?);
        Ok(Self {
            backends: Backends {
                kafka: kafka.bootstrap(),
                mongodb: format!("mongodb://127.0.0.1:{mport}/?directConnection=true"),
                kind: "local",
            },
            kafka,
            secantus,
            mongo,
            mongo_port: mport,
            mongo_dir,
            secantus_args: secantus_args.iter().map(|a| a.to_string()).collect(),
            logs: logs.to_path_buf(),
        })
    }

    /// Stops the MongoDB server (SIGTERM), waits `down`, and starts it again on the same
    /// port and data (its pid changes).
    pub fn restart_mongodb(&mut self, down: Duration) -> Result<()> {
        if let Some(s) = self.secantus.take() {
            s.terminate(Duration::from_secs(30))?;
        }
        std::thread::sleep(down);
        let args: Vec<&str> = self.secantus_args.iter().map(String::as_str).collect();
        let s = self
            .mongo
            .start(self.mongo_port, &self.mongo_dir, &args, &self.logs)?;
        self.secantus = Some(s);
        Ok(())
    }

    /// The broker's pid.
    pub fn kafka_pid(&self) -> u32 {
        self.kafka.nodes[0].pid().expect("the local broker runs")
    }

    /// The MongoDB server's pid.
    pub fn mongodb_pid(&self) -> u32 {
        self.secantus.as_ref().map_or(0, Supervised::pid)
    }

    /// Stops both (SIGTERM), waiting for each to exit.
    pub fn stop(self) -> Result<()> {
        let LocalServers {
            mut kafka,
            secantus,
            ..
        } = self;
        kafka.stop(Duration::from_secs(30))?;
        if let Some(s) = secantus {
            s.terminate(Duration::from_secs(30))?;
        }
        Ok(())
    }
}

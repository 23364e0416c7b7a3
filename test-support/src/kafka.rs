//! Apache Kafka from the jars `scripts/install-deps` caches (`test-support/kafka/pom.xml`):
//! KRaft nodes, broker and controller in one JVM each, on free loopback ports, alone or
//! as a cluster sharing one controller quorum; each node formatted once and restartable
//! (or SIGKILLable) on its own data directory.
use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::{
    servers::free_port,
    supervisor::{Signal, Supervised},
};

/// The POM that pins the broker's version and its jars.
const POM: &str = include_str!("../kafka/pom.xml");
/// How long a node may take from start to "Kafka Server started" (a JVM on a busy
/// 2-core machine).
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// The Kafka version of the POM (`<kafka.version>`).
pub fn version() -> &'static str {
    POM.split("<kafka.version>")
        .nth(1)
        .and_then(|s| s.split('<').next())
        .expect("test-support/kafka/pom.xml names <kafka.version>")
}

/// The directory of the broker's jars: `SALES_INGEST_KAFKA_LIBS`, else
/// `$XDG_CACHE_HOME` (or `~/.cache`)`/sales-ingest/kafka-<version>/lib`, where
/// scripts/install-deps copies them; `None` until the Kafka jar is there.
pub fn libs() -> Option<PathBuf> {
    let dir = match std::env::var_os("SALES_INGEST_KAFKA_LIBS") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
            cache.join(format!("sales-ingest/kafka-{}/lib", version()))
        }
    };
    let jar = dir.join(format!("kafka_2.13-{}.jar", version()));
    jar.is_file().then_some(dir)
}

/// The log4j2 configuration the nodes log with (INFO to stderr, without per-request
/// chatter).
pub fn log4j_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("kafka/log4j2.properties")
}

/// A listener beside PLAINTEXT and CONTROLLER, on a port of its own on every node.
#[derive(Clone, Debug)]
pub struct Listener {
    /// Its name, e.g. `SECURE`.
    pub name: String,
    /// Its security protocol: `SSL`, `SASL_PLAINTEXT`, `SASL_SSL`.
    pub protocol: String,
}

/// How a cluster is made.
#[derive(Clone, Debug)]
pub struct KafkaOptions {
    /// Nodes, each broker and controller (1 or 3).
    pub nodes: usize,
    /// The JVM's maximum heap, in MiB.
    pub heap_mib: u32,
    /// Extra JVM flags.
    pub jvm_flags: Vec<String>,
    /// Broker properties added to (and overriding) the harness's own.
    pub properties: Vec<(String, String)>,
    /// Listeners beside PLAINTEXT (which stays the inter-broker listener).
    pub listeners: Vec<Listener>,
    /// Extra arguments of `StorageTool format`, e.g. `--add-scram` entries.
    pub format_args: Vec<String>,
}

impl Default for KafkaOptions {
    fn default() -> Self {
        Self {
            nodes: 1,
            heap_mib: 512,
            jvm_flags: vec!["-XX:+UseSerialGC".into()],
            properties: Vec::new(),
            listeners: Vec::new(),
            format_args: Vec::new(),
        }
    }
}

/// One node: its ports, its files and, while it runs, its process.
pub struct KafkaNode {
    /// `node.id`.
    pub id: u32,
    /// The PLAINTEXT listener's port.
    pub port: u16,
    /// The extra listeners' ports, in [`KafkaOptions::listeners`] order.
    pub listener_ports: Vec<u16>,
    dir: PathBuf,
    log: PathBuf,
    argv: Vec<String>,
    process: Option<Supervised>,
}

impl KafkaNode {
    /// host:port of its PLAINTEXT listener.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The JVM's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Supervised::pid)
    }

    /// True while the JVM runs.
    pub fn running(&mut self) -> bool {
        self.process.as_mut().is_some_and(Supervised::running)
    }

    /// Its log file (every start appends to it).
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Its data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Starts the JVM on the node's formatted data directory; returns once the node
    /// logs that it started. Fails if it already runs.
    pub fn start(&mut self) -> Result<()> {
        self.spawn()?;
        self.wait_started()
    }

    fn spawn(&mut self) -> Result<()> {
        if self.running() {
            bail!("kafka node {} already runs", self.id);
        }
        let name = format!("kafka-{}", self.id);
        self.process = Some(Supervised::spawn(&name, &self.argv, &[], &self.log)?);
        Ok(())
    }

    fn wait_started(&mut self) -> Result<()> {
        let starts_before = started_lines(&self.log).saturating_sub(1);
        let deadline = Instant::now() + START_TIMEOUT;
        while started_lines(&self.log) <= starts_before {
            if !self.running() {
                bail!(
                    "kafka node {} exited at start-up; its log ends:\n{}",
                    self.id,
                    crate::supervisor::log_tail(&self.log, 30)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "kafka node {} did not start within {START_TIMEOUT:?}",
                    self.id
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// SIGKILLs the JVM (a crash: nothing flushed, no controlled shutdown) and reaps it.
    pub fn kill(&mut self) -> Result<()> {
        match self.process.take() {
            Some(p) => p.kill().map(drop),
            None => bail!("kafka node {} does not run", self.id),
        }
    }

    /// Stops the JVM with SIGTERM (a controlled shutdown), waiting up to `timeout`.
    pub fn stop(&mut self, timeout: Duration) -> Result<()> {
        match self.process.take() {
            Some(p) => p.terminate(timeout).map(drop),
            None => Ok(()),
        }
    }

    /// Sends `signal` to the JVM while it runs.
    pub fn signal(&self, signal: Signal) {
        if let Some(p) = &self.process {
            p.signal(signal);
        }
    }
}

/// How many times a node's log says it started.
fn started_lines(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .matches("Kafka Server started")
        .count()
}

/// A formatted KRaft cluster of one or more nodes.
pub struct KafkaCluster {
    /// The nodes, in `node.id` order (ids from 1).
    pub nodes: Vec<KafkaNode>,
    /// How long formatting and the first start of every node took.
    pub startup: Duration,
}

impl KafkaCluster {
    /// Formats `options.nodes` nodes under `dir` (one cluster id, one controller quorum
    /// of every node), starts them all and waits until each has started. Each node logs
    /// to `logs/kafka-<port>.log`.
    pub fn start(options: &KafkaOptions, dir: &Path, logs: &Path) -> Result<Self> {
        let began = Instant::now();
        let libs = libs().with_context(|| {
            format!(
                "Apache Kafka {} jars not found (scripts/install-deps copies them from Maven \
                 Central with test-support/kafka/pom.xml, or set SALES_INGEST_KAFKA_LIBS)",
                version()
            )
        })?;
        let ports: Vec<(u16, u16, Vec<u16>)> = (0..options.nodes)
            .map(|_| {
                let extra = options.listeners.iter().map(|_| free_port()).collect();
                (free_port(), free_port(), extra)
            })
            .collect();
        let voters = ports
            .iter()
            .enumerate()
            .map(|(i, (_, c, _))| format!("{}@127.0.0.1:{c}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let cluster_id = cluster_id();
        let mut nodes = Vec::new();
        for (i, (port, cport, extra)) in ports.into_iter().enumerate() {
            let id = i as u32 + 1;
            let node_dir = dir.join(format!("node-{id}"));
            std::fs::create_dir_all(&node_dir)?;
            let config = node_dir.join("server.properties");
            let props = properties(options, id, &node_dir, port, cport, &extra, &voters);
            std::fs::write(&config, props)?;
            format(&libs, &config, &cluster_id, &options.format_args)?;
            let log = logs.join(format!("kafka-{port}.log"));
            let argv = jvm_argv(&libs, options, &config);
            nodes.push(KafkaNode {
                id,
                port,
                listener_ports: extra,
                dir: node_dir,
                log,
                argv,
                process: None,
            });
        }
        for node in &mut nodes {
            node.spawn()?;
        }
        for node in &mut nodes {
            node.wait_started()?;
        }
        Ok(Self {
            nodes,
            startup: began.elapsed(),
        })
    }

    /// `bootstrap.servers` for the PLAINTEXT listeners of every node.
    pub fn bootstrap(&self) -> String {
        let all: Vec<String> = self.nodes.iter().map(KafkaNode::address).collect();
        all.join(",")
    }

    /// The node with `node.id` `id`.
    pub fn node(&mut self, id: u32) -> &mut KafkaNode {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no kafka node {id}"))
    }

    /// Stops every node that runs (SIGTERM, then SIGKILL after `timeout`).
    pub fn stop(&mut self, timeout: Duration) -> Result<()> {
        for node in &mut self.nodes {
            node.stop(timeout)?;
        }
        Ok(())
    }
}

/// A fresh cluster id: 16 random bytes in URL-safe base64 without padding, the form
/// `kafka-storage random-uuid` prints.
fn cluster_id() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .expect("read /dev/urandom");
    let bits: u128 = u128::from_be_bytes(bytes);
    // 22 characters of 6 bits cover 132 bits: the 128 of the id, then 4 zero bits.
    (0..22)
        .map(|i| {
            let shift = 128i32 - 6 * (i + 1);
            let v = if shift >= 0 {
                (bits >> shift) & 0x3f
            } else {
                (bits << -shift) & 0x3f
            };
            ALPHABET[v as usize] as char
        })
        .collect()
}

fn properties(
    options: &KafkaOptions,
    id: u32,
    dir: &Path,
    port: u16,
    cport: u16,
    extra: &[u16],
    voters: &str,
) -> String {
    let n = options.nodes;
    let replicas = n.min(3).to_string();
    let isr = if n >= 3 { "2" } else { "1" }.to_string();
    let mut listeners = format!("PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}");
    let mut advertised = format!("PLAINTEXT://127.0.0.1:{port}");
    let mut protocols = "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT".to_string();
    for (l, p) in options.listeners.iter().zip(extra) {
        let _ = write!(listeners, ",{}://127.0.0.1:{p}", l.name);
        let _ = write!(advertised, ",{}://127.0.0.1:{p}", l.name);
        let _ = write!(protocols, ",{}:{}", l.name, l.protocol);
    }
    let base: Vec<(&str, String)> = vec![
        ("process.roles", "broker,controller".into()),
        ("node.id", id.to_string()),
        ("controller.quorum.voters", voters.into()),
        ("listeners", listeners),
        ("advertised.listeners", advertised),
        ("controller.listener.names", "CONTROLLER".into()),
        ("inter.broker.listener.name", "PLAINTEXT".into()),
        ("listener.security.protocol.map", protocols),
        ("log.dirs", dir.join("data").display().to_string()),
        // The defaults assume a production cluster: a one-node (or three-node) test
        // cluster needs its internal topics' replication within its size, no wait
        // before the first rebalance and fewer internal partitions to create.
        ("group.initial.rebalance.delay.ms", "0".into()),
        ("offsets.topic.replication.factor", replicas.clone()),
        ("offsets.topic.num.partitions", "10".into()),
        ("transaction.state.log.replication.factor", replicas.clone()),
        ("transaction.state.log.min.isr", isr.clone()),
        ("transaction.state.log.num.partitions", "5".into()),
        ("share.coordinator.state.topic.replication.factor", replicas),
        ("share.coordinator.state.topic.min.isr", isr),
        // Consumer-protocol (KIP-848) groups time out like the tests' classic ones.
        ("group.consumer.min.session.timeout.ms", "6000".into()),
        ("group.consumer.session.timeout.ms", "6000".into()),
        ("group.consumer.min.heartbeat.interval.ms", "1000".into()),
        ("group.consumer.heartbeat.interval.ms", "1000".into()),
        // Retention is enforced within a second, not five minutes.
        ("log.retention.check.interval.ms", "1000".into()),
    ];
    let mut text = String::new();
    for (k, v) in &base {
        if !options.properties.iter().any(|(ok, _)| ok == k) {
            let _ = writeln!(text, "{k}={v}");
        }
    }
    for (k, v) in &options.properties {
        let _ = writeln!(text, "{k}={v}");
    }
    text
}

fn jvm_argv(libs: &Path, options: &KafkaOptions, config: &Path) -> Vec<String> {
    let mut argv = vec![
        "java".to_string(),
        format!("-Xmx{}m", options.heap_mib),
        format!("-Xms{}m", options.heap_mib.min(128)),
    ];
    argv.extend(options.jvm_flags.iter().cloned());
    argv.extend([
        format!("-Dlog4j2.configurationFile={}", log4j_config().display()),
        "-cp".into(),
        format!("{}/*", libs.display()),
        "kafka.Kafka".into(),
        config.display().to_string(),
    ]);
    argv
}

/// `kafka.tools.StorageTool format` of one node's log directories.
fn format(libs: &Path, config: &Path, cluster_id: &str, extra: &[String]) -> Result<()> {
    let out = Command::new("java")
        .arg(format!(
            "-Dlog4j2.configurationFile={}",
            log4j_config().display()
        ))
        .arg("-cp")
        .arg(format!("{}/*", libs.display()))
        .args(["kafka.tools.StorageTool", "format", "-t", cluster_id, "-c"])
        .arg(config)
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .context("run java (OpenJDK 17; scripts/install-deps installs it)")?;
    if !out.status.success() {
        bail!(
            "kafka-storage format of {} failed: {}{}",
            config.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_ids_have_the_random_uuid_form() {
        let id = cluster_id();
        assert_eq!(id.len(), 22);
        assert!(id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_ne!(id, cluster_id());
    }

    #[test]
    fn the_version_comes_from_the_pom() {
        assert!(version().starts_with("4."), "{}", version());
    }
}

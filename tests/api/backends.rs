//! Real Kafka-protocol and MongoDB-protocol servers for the tests, resolved once per
//! test process in this order:
//! 1. `INGEST_TEST_KAFKA` / `INGEST_TEST_MONGODB` from the environment;
//! 2. testcontainers (Redpanda, `mongo:7`) when a Docker engine answers;
//! 3. the local tansu and secantusd-rs servers of BACKENDS.md (`scripts/install-deps`
//!    installs them), started on free loopback ports and stopped when the tests end;
//! 4. otherwise the tests fail, saying what to install. They never pass by skipping.
#[path = "../support/local_servers.rs"]
mod local_servers;

use local_servers::{secantus_path, tansu_path};
use std::{
    net::{TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Mutex, OnceLock},
    time::{Duration, Instant},
};

/// Where the servers are.
#[derive(Clone, Debug)]
pub struct Backends {
    /// host:port of the Kafka-protocol broker.
    pub kafka: String,
    /// mongodb:// URL.
    pub mongodb: String,
    /// Which kind: "env", "testcontainers" or "local".
    pub kind: &'static str,
}

static BACKENDS: OnceLock<Backends> = OnceLock::new();
static CHILDREN: Mutex<Vec<Watched>> = Mutex::new(Vec::new());

/// A server under a watchdog shell. Dropping it stops the server (SIGTERM) and reaps
/// the watchdog.
pub struct Watched {
    watchdog: Child,
    pid_file: PathBuf,
}

impl Watched {
    /// Sends `signal` (e.g. "-KILL") to the server and waits for the watchdog to end.
    pub fn stop(mut self, signal: &str) {
        self.signal(signal);
        let _ = self.watchdog.wait();
    }

    fn signal(&self, signal: &str) {
        if let Ok(pid) = std::fs::read_to_string(&self.pid_file) {
            let _ = Command::new("kill").args([signal, pid.trim()]).status();
        }
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        if matches!(self.watchdog.try_wait(), Ok(None)) {
            self.signal("-TERM");
            let _ = self.watchdog.wait();
        }
    }
}

/// The shared backends, started on first use.
pub fn backends() -> &'static Backends {
    BACKENDS.get_or_init(|| {
        let b = resolve();
        eprintln!(
            "test backends ({}): kafka={} mongodb={}",
            b.kind, b.kafka, b.mongodb
        );
        b
    })
}

fn resolve() -> Backends {
    if let (Ok(kafka), Ok(mongodb)) = (
        std::env::var("INGEST_TEST_KAFKA"),
        std::env::var("INGEST_TEST_MONGODB"),
    ) {
        return Backends {
            kafka,
            mongodb,
            kind: "env",
        };
    }
    if docker_engine_answers() {
        return containers();
    }
    let tansu = tansu_path();
    let secantus = secantus_path();
    match (tansu, secantus) {
        (Some(tansu), Some(secantus)) => local(tansu, secantus),
        (tansu, secantus) => panic!(
            "no Kafka/MongoDB servers for the integration tests: set INGEST_TEST_KAFKA and \
             INGEST_TEST_MONGODB, or run a Docker engine, or run scripts/install-deps to install \
             the local servers (tansu found: {}, secantusd-rs found: {})",
            tansu.is_some(),
            secantus.is_some()
        ),
    }
}

/// A free loopback port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

fn wait_for_port(port: u16, what: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on port {port} within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn docker_engine_answers() -> bool {
    if std::env::var_os("DOCKER_HOST").is_some() {
        return true;
    }
    std::os::unix::net::UnixStream::connect("/var/run/docker.sock").is_ok()
}

/// Runs `argv` under a watchdog shell that kills it once this test process is gone, so
/// no server outlives the test run; the server's pid goes to `<log>.pid`.
pub fn spawn_watched(argv: &[String], log: &str) -> Watched {
    let quoted: Vec<String> = argv.iter().map(|a| shell_quote(a)).collect();
    let pid_file = PathBuf::from(format!("{log}.pid"));
    let script = format!(
        "{} >>{} 2>&1 & s=$!; echo $s >{}; \
         while kill -0 {} 2>/dev/null && kill -0 $s 2>/dev/null; do sleep 0.2; done; \
         kill $s 2>/dev/null; wait $s 2>/dev/null",
        quoted.join(" "),
        shell_quote(log),
        shell_quote(&pid_file.display().to_string()),
        std::process::id(),
    );
    let _ = std::fs::remove_file(&pid_file);
    let watchdog = Command::new("bash")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn watchdog shell");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !pid_file.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    Watched { watchdog, pid_file }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A scratch directory under the system temp dir, `sales-ingest-test-<pid>-<name>`.
/// All but the `logs` one are removed once this test process is gone (a database's
/// data directory holds 130 MiB or more; runs must not fill the disk).
pub fn scratch_dir(name: &str) -> PathBuf {
    static CLEANUP: std::sync::Once = std::sync::Once::new();
    let pid = std::process::id();
    let tmp = std::env::temp_dir();
    CLEANUP.call_once(|| {
        // Like the servers' watchdogs: a detached shell waits for this process to end,
        // then for the watchdogs to have stopped the servers, then removes the data.
        let script = format!(
            "(while kill -0 {pid} 2>/dev/null; do sleep 1; done; sleep 3; \
             find {} -maxdepth 1 -name 'sales-ingest-test-{pid}-*' ! -name '*-logs' \
             -exec rm -rf {{}} +) </dev/null >/dev/null 2>&1 &",
            shell_quote(&tmp.display().to_string()),
        );
        Command::new("bash")
            .args(["-c", &script])
            .status()
            .expect("start the scratch cleanup shell");
    });
    let dir = tmp.join(format!("sales-ingest-test-{pid}-{name}"));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// Starts a tansu broker on `port` (in-memory storage).
pub fn start_tansu(port: u16) -> Watched {
    start_tansu_advertising(port, port)
}

/// Starts a tansu broker listening on `port` that tells clients to reach it at
/// `advertised` (a proxy in front of it).
pub fn start_tansu_advertising(port: u16, advertised: u16) -> Watched {
    let tansu = tansu_path().expect("tansu installed (scripts/install-deps)");
    let url = format!("tcp://127.0.0.1:{port}");
    let log = scratch_dir("logs").join(format!("tansu-{port}.log"));
    let child = spawn_watched(
        &[
            tansu.display().to_string(),
            "broker".into(),
            "--listener-url".into(),
            url.clone(),
            "--advertised-listener-url".into(),
            format!("tcp://127.0.0.1:{advertised}"),
            "--storage-engine".into(),
            "memory://tansu/".into(),
        ],
        &log.display().to_string(),
    );
    wait_for_port(port, "tansu", Duration::from_secs(30));
    child
}

/// Starts secantusd-rs on `port` with data in `dir` (reopened intact on restart).
pub fn start_secantus(port: u16, dir: &str, extra: &[&str]) -> Watched {
    let secantus = secantus_path().expect("secantusd-rs installed (scripts/install-deps)");
    let log = scratch_dir("logs").join(format!("secantus-{port}.log"));
    let mut argv = vec![
        secantus.display().to_string(),
        "--host".into(),
        "127.0.0.1".into(),
        "--port".into(),
        port.to_string(),
        "--storage-path".into(),
        dir.to_string(),
        "--cache-size".into(),
        "512M".into(),
    ];
    argv.extend(extra.iter().map(|s| s.to_string()));
    let child = spawn_watched(&argv, &log.display().to_string());
    wait_for_port(port, "secantusd-rs", Duration::from_secs(60));
    child
}

fn local(_tansu: PathBuf, _secantus: PathBuf) -> Backends {
    let (kport, mport) = (free_port(), free_port());
    let data = scratch_dir("mongo-data");
    let k = start_tansu(kport);
    let m = start_secantus(mport, &data.display().to_string(), &[]);
    CHILDREN.lock().unwrap().extend([k, m]);
    Backends {
        kafka: format!("127.0.0.1:{kport}"),
        mongodb: format!("mongodb://127.0.0.1:{mport}/?directConnection=true"),
        kind: "local",
    }
}

fn containers() -> Backends {
    use testcontainers::{
        core::{IntoContainerPort, WaitFor},
        runners::SyncRunner,
        GenericImage, ImageExt,
    };
    let kport = free_port();
    let redpanda = GenericImage::new("docker.redpanda.com/redpandadata/redpanda", "v24.2.7")
        .with_wait_for(WaitFor::message_on_stderr("Successfully started Redpanda"))
        .with_mapped_port(kport, 9092.tcp())
        .with_cmd([
            "redpanda".to_string(),
            "start".into(),
            "--mode=dev-container".into(),
            "--smp=1".into(),
            "--kafka-addr=0.0.0.0:9092".into(),
            format!("--advertise-kafka-addr=127.0.0.1:{kport}"),
        ])
        .start()
        .expect("start Redpanda container");
    let mongo = GenericImage::new("mongo", "7")
        .with_wait_for(WaitFor::message_on_stdout("Waiting for connections"))
        .with_exposed_port(27017.tcp())
        .start()
        .expect("start mongo:7 container");
    let mport = mongo.get_host_port_ipv4(27017).expect("mongo port");
    // Remove the containers when this test process exits.
    let ids = format!("{} {}", redpanda.id(), mongo.id());
    let script = format!(
        "while kill -0 {} 2>/dev/null; do sleep 1; done; docker rm -f {ids} >/dev/null 2>&1",
        std::process::id()
    );
    let _ = Command::new("bash").args(["-c", &script]).spawn();
    std::mem::forget(redpanda);
    std::mem::forget(mongo);
    Backends {
        kafka: format!("127.0.0.1:{kport}"),
        mongodb: format!("mongodb://127.0.0.1:{mport}/?directConnection=true"),
        kind: "testcontainers",
    }
}

//! Real Kafka-protocol and MongoDB-protocol servers for the tests, resolved once per
//! test process in this order:
//! 1. `INGEST_TEST_KAFKA` / `INGEST_TEST_MONGODB` from the environment;
//! 2. testcontainers (Redpanda, `mongo:7`) when a Docker engine answers;
//! 3. the local Apache Kafka broker (one KRaft node) and secantusd-rs of docs/testing.md
//!    (`scripts/install-deps` installs them), started once on free loopback ports and
//!    stopped when the tests end; with `INGEST_TEST_MONGODB_SERVER=ferretdb`, FerretDB
//!    instead of secantusd-rs, for the tests' own servers too ([`start_secantus`]);
//! 4. otherwise the tests fail, saying what to install. They never pass by skipping.
//!
//! Also the tests' own local servers (for tests that stop or restart one) and the
//! server as a separate process, with their logs in the `logs` scratch directory.
//! Starting, watching and stopping them is `test_support`'s.
use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

use test_support::{
    kafka::{self, KafkaCluster, KafkaOptions},
    servers::{self, scratch_dir, Backends, LocalServers, MongoServer},
    service::Service,
    supervisor::Supervised,
};

/// secantusd-rs's cache in the tests: several servers may run at once.
const SECANTUS_ARGS: [&str; 2] = ["--cache-size", "512M"];

static BACKENDS: OnceLock<Backends> = OnceLock::new();
/// The shared local servers, kept for the life of the test process; their watchdogs
/// stop them once it is gone.
static LOCAL: OnceLock<LocalServers> = OnceLock::new();

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
    let mongo = MongoServer::from_env();
    match (kafka::libs(), mongo.path()) {
        (Some(_), Some(_)) => local(mongo),
        (kafka, server) => panic!(
            "no Kafka/MongoDB servers for the integration tests: set INGEST_TEST_KAFKA and \
             INGEST_TEST_MONGODB, or run a Docker engine, or run scripts/install-deps to install \
             the local servers (Apache Kafka {} jars found: {}, {mongo:?} found: {})",
            kafka::version(),
            kafka.is_some(),
            server.is_some()
        ),
    }
}

fn docker_engine_answers() -> bool {
    if std::env::var_os("DOCKER_HOST").is_some() {
        return true;
    }
    std::os::unix::net::UnixStream::connect("/var/run/docker.sock").is_ok()
}

/// Where the tests' servers and server processes log.
pub fn logs_dir() -> PathBuf {
    scratch_dir("logs")
}

/// Starts a Kafka cluster of the test's own (formatted in a fresh scratch directory):
/// for tests that kill, restart or reconfigure a broker.
pub fn start_kafka(options: &KafkaOptions) -> KafkaCluster {
    let dir = scratch_dir(&crate::helpers::unique("kafka"));
    let cluster = KafkaCluster::start(options, &dir, &logs_dir()).expect("start Apache Kafka");
    eprintln!(
        "test kafka: {} node(s) at {} started in {:.1}s",
        cluster.nodes.len(),
        cluster.bootstrap(),
        cluster.startup.as_secs_f64()
    );
    cluster
}

/// Starts the tests' MongoDB-protocol server (secantusd-rs, or FerretDB under
/// `INGEST_TEST_MONGODB_SERVER=ferretdb`) on `port` with data in `dir` (reopened intact
/// on restart); `extra` arguments go to secantusd-rs only.
pub fn start_secantus(port: u16, dir: &str, extra: &[&str]) -> Supervised {
    let args: Vec<&str> = SECANTUS_ARGS.iter().chain(extra).copied().collect();
    let mongo = MongoServer::from_env();
    mongo
        .start(port, Path::new(dir), &args, &logs_dir())
        .unwrap_or_else(|e| panic!("start {mongo:?}: {e:#}"))
}

/// Starts the debug build of the server as its own process with exactly `env` (from
/// `test_support::service::server_env`); `name` names its log.
pub fn start_server(name: &str, env: &[(String, String)]) -> Service {
    let log = logs_dir().join(format!("{}.log", crate::helpers::unique(name)));
    Service::start(Path::new(env!("CARGO_BIN_EXE_sales-ingest")), env, &log)
        .expect("start sales-ingest")
}

/// A gRPC-only server process (`KAFKA_ENABLED=false`) on a database of its own, with
/// the test defaults and `extra`, once `/health` answers 200: the service and its
/// database's name. `name` names its log and the database.
pub async fn serving_grpc_server(name: &str, extra: &[(&str, String)]) -> (Service, String) {
    let dbname = crate::helpers::unique(&format!("{name}_db"));
    let mut vars = vec![("KAFKA_ENABLED", "false".to_string())];
    vars.extend(extra.iter().cloned());
    let env = test_support::service::server_env(backends(), "unused", "unused", &dbname, &vars);
    let server = start_server(name, &env);
    server
        .wait_health(200, std::time::Duration::from_secs(30))
        .await
        .unwrap();
    (server, dbname)
}

fn local(mongo: MongoServer) -> Backends {
    let data = scratch_dir("servers");
    let options = KafkaOptions::default();
    let started = LocalServers::start_with(&logs_dir(), &data, &options, mongo, &SECANTUS_ARGS)
        .unwrap_or_else(|e| panic!("start the local Apache Kafka and {mongo:?}: {e:#}"));
    eprintln!(
        "test kafka: the shared broker (Apache Kafka {}) started in {:.1}s",
        kafka::version(),
        started.kafka.startup.as_secs_f64()
    );
    LOCAL.get_or_init(|| started).backends.clone()
}

fn containers() -> Backends {
    use testcontainers::{
        core::{IntoContainerPort, WaitFor},
        runners::SyncRunner,
        GenericImage, ImageExt,
    };
    let kport = servers::free_port();
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

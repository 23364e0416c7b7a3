//! The peers users pick instead of sales-ingest, as processes the bench starts, kills
//! and restarts: Kafka Connect (standalone) with MongoDB's sink connector, Benthos 4
//! (`kafka_franz` → `mongodb`), and sales-ingest itself on the same JSON topic. Each
//! one's exact configuration lives here (`bench/README.md` explains it); the jars and
//! the Benthos binary come from `bench/install`.
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use test_support::{servers::free_port, service::Service, supervisor::Supervised};

use crate::{Ctx, Settings};

/// A peer that reads the JSON topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rival {
    SalesIngest,
    Connect,
    Benthos,
}

impl Rival {
    /// The name `--peers` takes, used in database, group and log names.
    pub fn key(self) -> &'static str {
        match self {
            Rival::SalesIngest => "sales-ingest",
            Rival::Connect => "connect",
            Rival::Benthos => "benthos",
        }
    }

    /// The rival `--peers` names `key` (sales-ingest is not chosen: it always runs).
    pub fn from_key(key: &str) -> Option<Rival> {
        [Rival::SalesIngest, Rival::Connect, Rival::Benthos]
            .into_iter()
            .find(|r| r.key() == key)
    }

    pub fn name(self) -> &'static str {
        match self {
            Rival::SalesIngest => "sales-ingest (JSON values)",
            Rival::Connect => "Kafka Connect 4.1.1 + MongoDB sink connector",
            Rival::Benthos => "Redpanda Connect (Benthos 4.27)",
        }
    }

    /// Where it writes: `<database>.raw_sales`.
    pub fn database(self, run: &str) -> String {
        format!("bench_{}_{run}", self.key().replace('-', "_"))
    }

    /// Its dead-letter topic, if it has one.
    pub fn dead_letter_topic(self, topic: &str) -> Option<String> {
        match self {
            Rival::SalesIngest => Some(format!("{topic}.dlq")),
            Rival::Connect => Some(format!("{topic}.connect-dlq")),
            Rival::Benthos => None,
        }
    }
}

/// What one start of a rival is given.
pub struct Job<'a> {
    pub topic: &'a str,
    /// Names the database, the consumer group and the files (`<rival>-<run>`).
    pub run: &'a str,
    /// BATCH_SIZE and its equivalents; [`Settings::Defaults`] gives each its defaults
    /// where it has any (the low-load phase).
    pub settings: Settings,
}

/// A running rival.
pub enum Running {
    Service(Service),
    Child(Supervised),
}

impl Running {
    pub fn pid(&self) -> u32 {
        match self {
            Running::Service(s) => s.pid(),
            Running::Child(c) => c.pid(),
        }
    }

    pub fn running(&mut self) -> bool {
        match self {
            Running::Service(s) => s.running(),
            Running::Child(c) => c.running(),
        }
    }

    pub fn log_tail(&self) -> String {
        match self {
            Running::Service(s) => s.log_tail(),
            Running::Child(c) => c.log_tail(20),
        }
    }

    /// SIGKILL, waiting for the process to be gone.
    pub fn kill(self) -> Result<()> {
        match self {
            Running::Service(s) => s.kill(),
            Running::Child(c) => c.kill().map(drop),
        }
    }

    /// SIGTERM (SIGKILL after 30 s).
    pub fn stop(self) -> Result<()> {
        let timeout = std::time::Duration::from_secs(30);
        match self {
            Running::Service(s) => s.terminate(timeout).map(drop),
            Running::Child(c) => c.terminate(timeout).map(drop),
        }
    }
}

/// Starts `rival` on `job`; a restart with the same job resumes the same consumer
/// group (and, for Connect, the same offsets file).
pub fn start(ctx: &Ctx, rival: Rival, job: &Job) -> Result<Running> {
    let dir = ctx.logs.join(format!("{}-{}", rival.key(), job.run));
    std::fs::create_dir_all(&dir)?;
    let log = ctx
        .logs
        .join(format!("peer-{}-{}.log", rival.key(), job.run));
    let database = rival.database(job.run);
    let group = format!("{}-{}-{}", job.topic, rival.key(), job.run);
    match rival {
        Rival::SalesIngest => {
            let extra = [("KAFKA_VALUE_FORMAT", "json".to_string())];
            let mut env = ctx.service_env(job.topic, &database, job.settings, &extra);
            env.retain(|(k, _)| k != "KAFKA_GROUP_ID");
            env.push(("KAFKA_GROUP_ID".into(), group));
            Ok(Running::Service(Service::start(&ctx.bin, &env, &log)?))
        }
        Rival::Connect => {
            let argv = connect_argv(ctx, job, &dir, &database)?;
            Ok(Running::Child(Supervised::spawn(
                "connect",
                &argv,
                &[],
                &log,
            )?))
        }
        Rival::Benthos => {
            let config = dir.join("benthos.yaml");
            std::fs::write(&config, benthos_config(ctx, job, &group, &database))?;
            let argv = vec![
                ctx.tools.benthos.display().to_string(),
                "-c".into(),
                config.display().to_string(),
            ];
            Ok(Running::Child(Supervised::spawn(
                "benthos",
                &argv,
                &[],
                &log,
            )?))
        }
    }
}

/// Where `bench/install` put the peers' programs.
#[derive(Clone, Debug)]
pub struct Tools {
    /// `<dir>/lib` (the Connect runtime) and `<dir>/plugins` (the sink connector).
    pub connect_dir: PathBuf,
    pub benthos: PathBuf,
}

/// The batch size a rival runs with: the bench's, or at the defaults the service's
/// default BATCH_SIZE (100), so the low-load comparison has the same batches.
fn batch_size(ctx: &Ctx, settings: Settings) -> u64 {
    match settings {
        Settings::Bench => ctx.tuning.batch_size,
        Settings::Defaults => 100,
    }
}

/// `java … ConnectStandalone worker.properties sink.properties`, with the heap and GC
/// flags `connect-standalone.sh` gives it.
fn connect_argv(ctx: &Ctx, job: &Job, dir: &Path, database: &str) -> Result<Vec<String>> {
    let lib = ctx.tools.connect_dir.join("lib");
    let plugins = ctx.tools.connect_dir.join("plugins");
    anyhow::ensure!(
        lib.is_dir() && plugins.is_dir(),
        "Kafka Connect is not installed in {} (bench/install does it)",
        ctx.tools.connect_dir.display()
    );
    let worker = format!(
        "bootstrap.servers={kafka}\n\
         key.converter=org.apache.kafka.connect.storage.StringConverter\n\
         value.converter=org.apache.kafka.connect.json.JsonConverter\n\
         value.converter.schemas.enable=false\n\
         offset.storage.file.filename={dir}/offsets\n\
         plugin.path={plugins}\n\
         listeners=http://127.0.0.1:{port}\n",
        kafka = ctx.backends.kafka,
        dir = dir.display(),
        plugins = plugins.display(),
        port = free_port(),
    );
    let batch = batch_size(ctx, job.settings);
    let sink = format!(
        "name=mongo-sink-{run}\n\
         connector.class=com.mongodb.kafka.connect.MongoSinkConnector\n\
         topics={topic}\n\
         tasks.max={tasks}\n\
         connection.uri={uri}\n\
         database={database}\n\
         collection=raw_sales\n\
         transforms=key\n\
         transforms.key.type=org.apache.kafka.connect.transforms.ValueToKey\n\
         transforms.key.fields=event_id\n\
         post.processor.chain=com.mongodb.kafka.connect.sink.processor.field.renaming.RenameByMapping,com.mongodb.kafka.connect.sink.processor.DocumentIdAdder\n\
         field.renamer.mapping=[{{\"oldName\":\"value.event_id\",\"newName\":\"_id\"}}]\n\
         document.id.strategy=com.mongodb.kafka.connect.sink.processor.id.strategy.ProvidedInValueStrategy\n\
         writemodel.strategy=com.mongodb.kafka.connect.sink.writemodel.strategy.InsertOneDefaultStrategy\n\
         bulk.write.ordered=false\n\
         max.batch.size={batch}\n\
         consumer.override.max.poll.records={batch}\n\
         errors.tolerance=all\n\
         mongo.errors.tolerance=all\n\
         errors.log.enable=true\n\
         errors.deadletterqueue.topic.name={topic}.connect-dlq\n\
         errors.deadletterqueue.topic.replication.factor=1\n\
         errors.deadletterqueue.context.headers.enable=true\n",
        run = job.run,
        topic = job.topic,
        tasks = ctx.tuning.partitions,
        uri = ctx.backends.mongodb,
    );
    let (w, s) = (dir.join("worker.properties"), dir.join("sink.properties"));
    std::fs::write(&w, worker)?;
    std::fs::write(&s, sink)?;
    let log4j = Path::new(env!("CARGO_MANIFEST_DIR")).join("connect/log4j2.properties");
    let java = which_java().context("java not found (scripts/install-deps installs it)")?;
    Ok([
        java.as_str(),
        "-Xms256M",
        "-Xmx2G",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-XX:InitiatingHeapOccupancyPercent=35",
        "-XX:+ExplicitGCInvokesConcurrent",
        "-Djava.awt.headless=true",
        &format!("-Dlog4j2.configurationFile={}", log4j.display()),
        "-cp",
        &format!("{}/*", lib.display()),
        "org.apache.kafka.connect.cli.ConnectStandalone",
        &w.display().to_string(),
        &s.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect())
}

/// `java` on PATH.
fn which_java() -> Option<String> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join("java"))
        .find(|p| p.is_file())
        .map(|p| p.display().to_string())
}

/// The Benthos stream: a `kafka_franz` consumer group, batches of the service's size
/// (or 200 ms), `insert-one` with `w: 1` and `_id` = `event_id`, 4 batches in flight
/// (the service's WRITE_CONCURRENCY).
fn benthos_config(ctx: &Ctx, job: &Job, group: &str, database: &str) -> String {
    let batch = batch_size(ctx, job.settings);
    let period = match job.settings {
        Settings::Bench => format!("{}ms", (ctx.tuning.flush_interval * 1000.0) as u64),
        Settings::Defaults => "200ms".into(),
    };
    format!(
        r#"http:
  enabled: false
logger:
  level: INFO
metrics:
  none: {{}}
input:
  kafka_franz:
    seed_brokers: ["{kafka}"]
    topics: ["{topic}"]
    consumer_group: "{group}"
    start_from_oldest: true
    checkpoint_limit: {checkpoint}
    batching:
      count: {batch}
      period: {period}
output:
  mongodb:
    url: "{uri}"
    database: "{database}"
    collection: raw_sales
    operation: insert-one
    write_concern:
      w: "1"
    document_map: |
      root = this
      root._id = this.event_id
      root.event_id = deleted()
    max_in_flight: {in_flight}
"#,
        kafka = ctx.backends.kafka,
        topic = job.topic,
        uri = ctx.backends.mongodb,
        checkpoint = batch * u64::from(ctx.tuning.write_concurrency) * 2,
        in_flight = ctx.tuning.write_concurrency,
    )
}

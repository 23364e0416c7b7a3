//! `bench`: the service's benchmark in one command,
//! `cargo run --release -p bench -- [--events N] [--json PATH]`.
//!
//! In one run, against an Apache Kafka broker and a secantusd-rs server it starts on free
//! loopback ports (and stops at the end), it measures:
//! 1. the database ceiling: pre-built documents written as the service writes them
//!    ([`ceiling`]), and the bench's own CPU per document;
//! 2. Kafka → MongoDB with the release service as a separate process ([`kafka_phase`]);
//! 3. gRPC → MongoDB over `IngestEvents/Stream` ([`grpc_phase`]), then the same with
//!    `WRITE_MODE=upsert` and 5 % and then 50 % of the events corrections
//!    ([`upsert_phase`]);
//! 4. the service's CPU per event and resident memory (idle and peak) in each;
//! 5. produce → stored latency at half phase 2's rate ([`latency`]);
//! 6. one synchronous gRPC producer and 7. 64 small ones ([`producers_phase`]), and
//! 8. a Kafka trickle ([`latency`] at 200 events/s), each with the service's default
//!    BATCH_SIZE and FLUSH_INTERVAL;
//! 9. Python peers doing phase 2's job on phase 2's topic ([`peers`]);
//! 10. sales-ingest, Kafka Connect's MongoDB sink and Benthos on one JSON topic
//!     ([`rivals_phase`], configured in [`rival`]) and 11. the same faults for each
//!     ([`faults`]).
//!
//! It prints the figures as Markdown tables with the performance targets and writes
//! them as JSON (default `target/bench/bench.json`). Every figure is measured in this
//! run. The servers and the service run as processes under `test_support`'s
//! watchdog, with `test_support::service::server_env` as the service's environment
//! and the bench's settings (`--batch-size` and the rest) over it, except in the
//! phases that measure the defaults ([`Settings::Defaults`]).
mod ceiling;
mod cpu;
mod events;
mod faults;
mod grpc_phase;
mod kafka;
mod kafka_phase;
mod latency;
mod metrics;
mod peers;
mod phases;
mod producers_phase;
mod report;
mod rival;
mod rivals_phase;
mod rivals_report;
mod upsert_phase;

use std::{path::PathBuf, process::ExitCode};

use anyhow::{Context, Result};
use clap::Parser;

use test_support::{
    kafka::KafkaOptions,
    servers::{scratch_dir, Backends, LocalServers},
    service::{server_env, sibling_binary},
};

use crate::{cpu::Pids, report::Report};

/// The same allocator as the service's binary, so that the bench's own CPU per
/// document (the unavoidable driver cost the service is held to) is not inflated by a
/// slower malloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The benchmark: ceiling, Kafka → MongoDB, gRPC → MongoDB, cost, latency.
#[derive(Parser, Debug)]
pub struct Args {
    /// Events (documents) in phases 1, 2 and 3.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: u64,
    /// Where to write the figures as JSON [default: target/bench/bench.json].
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// BATCH_SIZE: documents per insert_many and events per gRPC request.
    #[arg(long, default_value_t = 1000)]
    pub batch_size: u64,
    /// WRITE_CONCURRENCY: batches in flight, in the ceiling and in the service.
    #[arg(long, default_value_t = 4)]
    pub write_concurrency: u32,
    /// FLUSH_INTERVAL given to the service, seconds.
    #[arg(long, default_value_t = 0.2)]
    pub flush_interval: f64,
    /// Partitions of the Kafka topics.
    #[arg(long, default_value_t = 6)]
    pub partitions: i32,
    /// Concurrent IngestEvents streams in phase 3.
    #[arg(long, default_value_t = 4)]
    pub streams: u32,
    /// Unacknowledged requests allowed per stream in phase 3.
    #[arg(long, default_value_t = 8)]
    pub window: usize,
    /// Seconds of paced production in the latency phase.
    #[arg(long, default_value_t = 20.0)]
    pub latency_seconds: f64,
    /// Requests (of one event each) the synchronous producer sends in phase 6.
    #[arg(long, default_value_t = 2000)]
    pub sync_requests: u64,
    /// Concurrent one-event producers (streams) in phase 7.
    #[arg(long, default_value_t = 64)]
    pub small_producers: usize,
    /// Seconds phase 7 runs and phase 8 produces.
    #[arg(long, default_value_t = 20.0)]
    pub small_seconds: f64,
    /// Events per second of the Kafka trickle (phase 8).
    #[arg(long, default_value_t = 200.0)]
    pub trickle_rate: f64,
    /// Events each Python peer consumes from phase 2's topic (at most --events): the
    /// peers are much slower than the service.
    #[arg(long, default_value_t = 200_000)]
    pub peer_events: u64,
    /// RUST_LOG given to the service (e.g. `info,sales_ingest::source::kafka=debug` to
    /// look into a phase; logs are in target/bench/logs).
    #[arg(long, default_value = "info")]
    pub service_log: String,
    /// Extra KEY=VALUE environment for every service process, applied last (e.g.
    /// QUEUE_CAPACITY=100000 to look into a phase); printed with the results.
    #[arg(long = "service-env", value_parser = parse_key_value)]
    pub service_env: Vec<(String, String)>,
    /// Run only phase 3 and the upsert phases, and print how they compare.
    #[arg(long)]
    pub upsert_only: bool,
    /// The peers to run, comma-separated: connect, benthos (phases 10 and 11, with
    /// sales-ingest on the same JSON topic), aiokafka, quix (phase 9).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "connect,benthos,aiokafka,quix"
    )]
    pub peers: Vec<String>,
    /// Run only the ceiling, phase 2 and the peers' phases (9, 10, 11).
    #[arg(long)]
    pub peers_only: bool,
    /// Events on the JSON topic of phase 10 (each rival consumes all of it).
    #[arg(long, default_value_t = 100_000)]
    pub rival_events: u64,
    /// Valid events of each fault run in phase 11 (0 skips the faults).
    #[arg(long, default_value_t = 30_000)]
    pub fault_events: u64,
    /// Kafka Connect's cache (`lib/`, `plugins/`), as `bench/install` prints it.
    #[arg(long, env = "BENCH_CONNECT_DIR", default_value_os_t = default_connect_dir())]
    pub connect_dir: PathBuf,
    /// The Benthos binary `bench/install` built.
    #[arg(long, env = "BENCH_BENTHOS", default_value_os_t = default_benthos())]
    pub benthos: PathBuf,
}

/// `bench/install`'s default for the Connect cache.
fn default_connect_dir() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_default();
    cache.join(format!(
        "sales-ingest/connect-{}",
        test_support::kafka::version()
    ))
}

/// `bench/install`'s default for the Benthos binary.
fn default_benthos() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../.cache/bench/benthos"
    ))
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("`{s}` is not KEY=VALUE")),
    }
}

/// The settings shared by the bench and the service.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Tuning {
    pub batch_size: u64,
    pub write_concurrency: u32,
    pub flush_interval: f64,
    pub partitions: i32,
    pub streams: u32,
    pub window: usize,
    pub service_log: String,
    pub service_env: Vec<(String, String)>,
}

/// Which batch settings a service process starts with.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Settings {
    /// The bench's `--batch-size`, `--write-concurrency` and `--flush-interval`.
    Bench,
    /// The service's own defaults: BATCH_SIZE, WRITE_CONCURRENCY and FLUSH_INTERVAL are
    /// left unset (a `--service-env` entry still wins).
    Defaults,
}

/// The variables [`Settings::Defaults`] leaves unset.
const BATCH_KEYS: [&str; 3] = ["BATCH_SIZE", "WRITE_CONCURRENCY", "FLUSH_INTERVAL"];

/// What every phase needs.
pub struct Ctx {
    /// The local Apache Kafka broker and secantusd-rs.
    pub backends: Backends,
    pub tuning: Tuning,
    /// The service's release binary.
    pub bin: PathBuf,
    /// Where the servers' and services' logs go.
    pub logs: PathBuf,
    pub pids: Pids,
    /// The peers' programs.
    pub tools: rival::Tools,
}

impl Ctx {
    /// The environment of a service process consuming `topic` (in its own group) into
    /// `database`: the harness's `server_env`, then the bench's settings (BATCH_SIZE,
    /// WRITE_CONCURRENCY, FLUSH_INTERVAL; with [`Settings::Defaults`] these three are
    /// removed instead), RUST_LOG, then `extra`, then the user's `--service-env` entries.
    pub fn service_env(
        &self,
        topic: &str,
        database: &str,
        settings: Settings,
        extra: &[(&str, String)],
    ) -> Vec<(String, String)> {
        let t = &self.tuning;
        let mut over = vec![("RUST_LOG", t.service_log.clone())];
        if settings == Settings::Bench {
            over.extend([
                ("BATCH_SIZE", t.batch_size.to_string()),
                ("WRITE_CONCURRENCY", t.write_concurrency.to_string()),
                ("FLUSH_INTERVAL", t.flush_interval.to_string()),
            ]);
        }
        over.extend(extra.iter().cloned());
        let group = format!("{topic}-group");
        let mut env = server_env(&self.backends, topic, &group, database, &over);
        if settings == Settings::Defaults {
            env.retain(|(k, _)| !BATCH_KEYS.contains(&k.as_str()));
        }
        for (k, v) in &t.service_env {
            env.retain(|(key, _)| key != k);
            env.push((k.clone(), v.clone()));
        }
        env
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<()> {
    let bin = sibling_binary()?;
    let target_dir = bin
        .parent()
        .and_then(|d| d.parent())
        .context("no target directory")?
        .to_path_buf();
    let logs = target_dir.join("bench").join("logs");
    // Logs are appended to: start each run with an empty directory.
    let _ = std::fs::remove_dir_all(&logs);
    std::fs::create_dir_all(&logs)?;
    let json = args
        .json
        .clone()
        .unwrap_or_else(|| target_dir.join("bench").join("bench.json"));
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let tuning = Tuning {
        batch_size: args.batch_size,
        write_concurrency: args.write_concurrency,
        flush_interval: args.flush_interval,
        partitions: args.partitions,
        streams: args.streams,
        window: args.window,
        service_log: args.service_log.clone(),
        service_env: args.service_env.clone(),
    };

    let data_dir = scratch_dir("bench-data");
    // The broker as it is run in production: G1 and the full JIT, a 1 GiB heap.
    let kafka = KafkaOptions {
        heap_mib: 1024,
        jvm_flags: Vec::new(),
        ..KafkaOptions::default()
    };
    let mut servers = LocalServers::start(&logs, &data_dir, &kafka, &[])?;
    eprintln!(
        "bench: Apache Kafka {} on {} (started in {:.1}s), secantusd-rs on {}; logs in {}",
        test_support::kafka::version(),
        servers.backends.kafka,
        servers.kafka.startup.as_secs_f64(),
        servers.backends.mongodb,
        logs.display()
    );
    let ctx = Ctx {
        backends: servers.backends.clone(),
        tuning,
        bin,
        logs,
        pids: Pids {
            service: None,
            mongodb: servers.mongodb_pid(),
            kafka: servers.kafka_pid(),
        },
        tools: rival::Tools {
            connect_dir: args.connect_dir.clone(),
            benthos: args.benthos.clone(),
        },
    };
    let mut outcome = phases::run(&ctx, &args).await;
    if let Ok(measured) = &mut outcome {
        // Last: fault (a) restarts the MongoDB server, whose pid the phases use.
        if args.fault_events > 0 {
            for r in &mut measured.rivals {
                if let Some(rival) = rival::Rival::from_key(&r.key) {
                    r.faults = faults::run(&ctx, &mut servers, rival, args.fault_events).await;
                }
            }
        }
    }
    let stopped = servers.stop().and_then(|()| {
        std::fs::remove_dir_all(&data_dir).with_context(|| format!("remove {}", data_dir.display()))
    });
    let measured = outcome?;
    stopped?;
    if args.upsert_only {
        for upsert in &measured.phases[1..] {
            println!("{}", upsert_phase::compare(&measured.phases[0], upsert));
        }
        return Ok(());
    }

    let mut report = Report::new(measured.phases, args.flush_interval);
    report.peers = measured.peers;
    report.rivals = measured.rivals;
    report.date = chrono::Utc::now().format("%Y-%m-%d").to_string();
    report.machine = machine();
    report.load_average_at_start = load
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    report.pre_produce_seconds = measured.pre_produce_seconds;
    report.settings = serde_json::json!({
        "events": args.events,
        "batch_size": args.batch_size,
        "write_concurrency": args.write_concurrency,
        "flush_interval_s": args.flush_interval,
        "partitions": args.partitions,
        "grpc_streams": args.streams,
        "grpc_window": args.window,
        "latency_seconds": args.latency_seconds,
        "sync_requests": args.sync_requests,
        "small_producers": args.small_producers,
        "small_seconds": args.small_seconds,
        "trickle_rate": args.trickle_rate,
        "peer_events": args.peer_events.min(args.events),
        "peers": args.peers,
        "rival_events": args.rival_events,
        "fault_events": args.fault_events,
        "service_log": args.service_log,
        "service_env": args.service_env,
    });
    println!(
        "\nsales-ingest bench, {} on {} (load average at start {}); {} events, BATCH_SIZE={}, \
         WRITE_CONCURRENCY={}, FLUSH_INTERVAL={} s (phases 6-8: the service's defaults){}\n",
        report.date,
        report.machine,
        report.load_average_at_start,
        args.events,
        args.batch_size,
        args.write_concurrency,
        args.flush_interval,
        if args.service_env.is_empty() {
            String::new()
        } else {
            format!("; extra service environment {:?}", args.service_env)
        }
    );
    println!("{}", report.render());
    if let Some(dir) = json.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&json, serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("write {}", json.display()))?;
    println!("JSON: {}", json.display());
    Ok(())
}

/// "Debian GNU/Linux 12 (bookworm), 2 cores".
fn machine() -> String {
    let os = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| "unknown OS".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{os}, {cores} cores")
}

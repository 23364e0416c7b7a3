//! `bench`: the benchmark of issue 5 in one command,
//! `cargo run --release -p bench -- [--events N] [--json PATH]`.
//!
//! In one run, against a tansu broker and a secantusd-rs server it starts on free
//! loopback ports (and stops at the end), it measures:
//! 1. the database ceiling: pre-built documents written as the service writes them
//!    ([`ceiling`]), and the bench's own CPU per document;
//! 2. Kafka → MongoDB with the release service as a separate process ([`kafka_phase`]);
//! 3. gRPC → MongoDB over `IngestEvents/Stream` ([`grpc_phase`]);
//! 4. the service's CPU per event and resident memory (idle and peak) in each;
//! 5. produce → stored latency at half phase 2's rate ([`latency`]).
//!
//! It prints the figures as Markdown tables with the issue-5 targets and writes them
//! as JSON (default `target/bench/bench.json`). Every figure is measured in this run.
mod ceiling;
mod events;
mod grpc_phase;
mod kafka;
mod kafka_phase;
mod latency;
mod metrics;
mod procfs;
mod report;
mod servers;
mod service;
mod watched;

use std::{path::PathBuf, process::ExitCode};

use anyhow::{Context, Result};
use clap::Parser;

use crate::{procfs::Pids, report::Report, servers::Servers};

/// The benchmark of issue 5: ceiling, Kafka → MongoDB, gRPC → MongoDB, cost, latency.
#[derive(Parser, Debug)]
struct Args {
    /// Events (documents) in phases 1, 2 and 3.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Where to write the figures as JSON [default: target/bench/bench.json].
    #[arg(long)]
    json: Option<PathBuf>,
    /// BATCH_SIZE: documents per insert_many and events per gRPC request.
    #[arg(long, default_value_t = 1000)]
    batch_size: u64,
    /// WRITE_CONCURRENCY: batches in flight, in the ceiling and in the service.
    #[arg(long, default_value_t = 4)]
    write_concurrency: u32,
    /// FLUSH_INTERVAL given to the service, seconds.
    #[arg(long, default_value_t = 0.2)]
    flush_interval: f64,
    /// Partitions of the Kafka topics.
    #[arg(long, default_value_t = 6)]
    partitions: i32,
    /// Concurrent IngestEvents streams in phase 3.
    #[arg(long, default_value_t = 4)]
    streams: u32,
    /// Unacknowledged requests allowed per stream in phase 3.
    #[arg(long, default_value_t = 8)]
    window: usize,
    /// Seconds of paced production in the latency phase.
    #[arg(long, default_value_t = 20.0)]
    latency_seconds: f64,
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
}

/// What every phase needs.
pub struct Ctx {
    pub kafka: String,
    pub mongodb_url: String,
    pub tuning: Tuning,
    /// The service's release binary.
    pub bin: PathBuf,
    /// Where the servers' and services' logs go.
    pub logs: PathBuf,
    pub pids: Pids,
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
    let bin = service::binary()?;
    let target_dir = bin
        .parent()
        .and_then(|d| d.parent())
        .context("no target directory")?
        .to_path_buf();
    let logs = target_dir.join("bench").join("logs");
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
    };

    let servers = Servers::start(&logs)?;
    eprintln!(
        "bench: tansu on {}, secantusd-rs on {}; logs in {}",
        servers.kafka,
        servers.mongodb_url,
        logs.display()
    );
    let ctx = Ctx {
        kafka: servers.kafka.clone(),
        mongodb_url: servers.mongodb_url.clone(),
        tuning,
        bin,
        logs,
        pids: Pids {
            service: None,
            mongodb: servers.mongodb_pid(),
            kafka: servers.kafka_pid(),
        },
    };
    let outcome = phases(&ctx, &args).await;
    let stopped = servers.stop();
    let (phases, pre_produce_seconds) = outcome?;
    stopped?;

    let mut report = Report::new(phases, args.flush_interval);
    report.date = chrono::Utc::now().format("%Y-%m-%d").to_string();
    report.machine = machine();
    report.load_average_at_start = load
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    report.pre_produce_seconds = pre_produce_seconds;
    report.settings = serde_json::json!({
        "events": args.events,
        "batch_size": args.batch_size,
        "write_concurrency": args.write_concurrency,
        "flush_interval_s": args.flush_interval,
        "partitions": args.partitions,
        "grpc_streams": args.streams,
        "grpc_window": args.window,
        "latency_seconds": args.latency_seconds,
    });
    println!(
        "\nsales-ingest bench, {} on {} (load average at start {}); {} events, BATCH_SIZE={}, \
         WRITE_CONCURRENCY={}, FLUSH_INTERVAL={} s\n",
        report.date,
        report.machine,
        report.load_average_at_start,
        args.events,
        args.batch_size,
        args.write_concurrency,
        args.flush_interval
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

/// Phases 1, 2, 3 and 5 in order (4 is measured inside 2, 3 and 5).
async fn phases(ctx: &Ctx, args: &Args) -> Result<(Vec<report::PhaseResult>, f64)> {
    let n = args.events;
    eprintln!("bench: phase 1, database ceiling ({n} documents)");
    let ceiling =
        ceiling::run(&ctx.mongodb_url, "bench_ceiling", n, &ctx.tuning, &ctx.pids).await?;
    eprintln!("bench: ceiling {:.0} docs/s", ceiling.events_per_second);
    eprintln!("bench: phase 2, Kafka -> MongoDB");
    let (kafka, pre_produce) = kafka_phase::run(ctx, n).await?;
    eprintln!(
        "bench: Kafka -> MongoDB {:.0} events/s",
        kafka.events_per_second
    );
    eprintln!("bench: phase 3, gRPC -> MongoDB");
    let grpc = grpc_phase::run(ctx, n).await?;
    eprintln!(
        "bench: gRPC -> MongoDB {:.0} events/s",
        grpc.events_per_second
    );
    let rate = kafka.events_per_second / 2.0;
    eprintln!(
        "bench: phase 5, latency at {rate:.0} events/s for {} s",
        args.latency_seconds
    );
    let latency = latency::run(ctx, rate, args.latency_seconds).await?;
    Ok((vec![ceiling, kafka, grpc, latency], pre_produce))
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

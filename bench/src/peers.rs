//! Phase 9, the peers: phase 2's job (the same pre-produced topic into the same
//! MongoDB server) done by Python programs a team could run instead of sales-ingest,
//! the scripts under `bench/peers/` (pinned in `bench/peers/requirements.txt`, installed
//! by `scripts/install-deps`). Each runs as a process in its own consumer group into
//! its own database and stops after `--peer-events` events. Timed from the poll (every
//! 100 ms) that finds the peer's "first message" line in its log (a peer may buffer
//! for seconds before its first write, so a first stored document would start the
//! clock late) to the poll whose document count sees all of them; CPU from /proc of
//! the peer's pid inside that window, peak RSS its VmHWM. The documents are then counted exactly: a peer's figures are reported
//! only when it stored every event once. A peer that fails is reported with its error.
use std::{
    fmt::Write as _,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use mongodb::bson::{doc, RawDocumentBuf};
use serde::Serialize;
use test_support::{proc, supervisor::Supervised};

use crate::{
    cpu::{Cpu, Pids},
    kafka_phase::mib,
    report::{Kind, PhaseResult},
    Ctx,
};

/// The line a peer prints when it has its first message (`bench/peers/common.py`).
const FIRST_MESSAGE: &str = "peer: first message";
/// How often the peer's progress is polled.
const POLL: Duration = Duration::from_millis(100);
/// A peer with no progress for this long (start-up and group join included) has failed.
const STALL: Duration = Duration::from_secs(180);

/// A peer program.
struct Peer {
    /// Names the script (`bench/peers/<key>_peer.py`), database, group and log.
    key: &'static str,
    name: &'static str,
}

const PEERS: [Peer; 2] = [
    Peer {
        key: "aiokafka",
        name: "Python service design: aiokafka + motor + pydantic",
    },
    Peer {
        key: "quix",
        name: "Quix Streams + MongoDBSink",
    },
];

/// What one peer did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PeerResult {
    pub peer: String,
    /// Events the peer was given (all stored, checked).
    pub events: u64,
    pub seconds: f64,
    pub events_per_second: Option<f64>,
    /// Events stored inside the timed window.
    pub timed_events: u64,
    /// The peer's CPU seconds per million events.
    pub cpu_s_per_million: Option<f64>,
    pub peak_rss_mib: Option<f64>,
    /// CPU seconds by process inside the window (`service` is the peer).
    pub cpu: Cpu,
    /// Why the peer has no figures.
    pub error: Option<String>,
}

/// Runs every peer on `topic`, `events` each; a peer's failure is its result.
pub async fn run_all(
    ctx: &Ctx,
    topic: &str,
    events: u64,
    keys: &[String],
) -> Result<Vec<PeerResult>> {
    let mut out = Vec::new();
    for peer in PEERS.iter().filter(|p| keys.iter().any(|k| k == p.key)) {
        eprintln!("bench: peer {}", peer.name);
        let result = match run_one(ctx, peer, topic, events).await {
            Ok(r) => r,
            Err(e) => PeerResult {
                peer: peer.name.into(),
                events,
                error: Some(format!("{e:#}")),
                ..Default::default()
            },
        };
        match (&result.error, result.events_per_second) {
            (Some(e), _) => eprintln!("bench: peer {} failed: {e}", peer.key),
            (None, Some(r)) => eprintln!("bench: peer {} {r:.0} events/s", peer.key),
            _ => {}
        }
        out.push(result);
        // Every peer starts on an empty database, whatever the last one left.
        let client = sales_ingest::sink::mongo::client(&ctx.backends.mongodb).await?;
        client.database(&database(peer)).drop().await?;
    }
    Ok(out)
}

fn database(peer: &Peer) -> String {
    format!("bench_peer_{}", peer.key)
}

async fn run_one(ctx: &Ctx, peer: &Peer, topic: &str, n: u64) -> Result<PeerResult> {
    let script: PathBuf = [env!("CARGO_MANIFEST_DIR"), "peers"]
        .iter()
        .collect::<PathBuf>()
        .join(format!("{}_peer.py", peer.key));
    let database = database(peer);
    // The project's Python environment (scripts/install-deps makes it), never the system's.
    let python = std::env::var_os("SALES_INGEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| [env!("CARGO_MANIFEST_DIR"), "..", ".venv"].iter().collect())
        .join("bin/python3");
    let argv: Vec<String> = [
        &python.display().to_string(),
        &script.display().to_string(),
        "--brokers",
        &ctx.backends.kafka,
        "--topic",
        topic,
        "--group",
        &format!("{topic}-peer-{}", peer.key),
        "--mongodb",
        &ctx.backends.mongodb,
        "--database",
        &database,
        "--count",
        &n.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let log = ctx.logs.join(format!("peer-{}.log", peer.key));
    let env = [("PYTHONUNBUFFERED".to_string(), "1".to_string())];
    let mut child = Supervised::spawn(peer.key, &argv, &env, &log)?;
    let pids = Pids {
        service: Some(child.pid()),
        ..ctx.pids
    };
    let client = sales_ingest::sink::mongo::client(&ctx.backends.mongodb).await?;
    let coll = client
        .database(&database)
        .collection::<RawDocumentBuf>("raw_sales");

    let mut first: Option<(Instant, Cpu)> = None;
    let (mut last, mut last_change) = (0, Instant::now());
    let (end, end_cpu) = loop {
        tokio::time::sleep(POLL).await;
        if !child.running() {
            bail!("{} exited; log tail:\n{}", peer.key, child.log_tail(20));
        }
        if first.is_none() && std::fs::read_to_string(&log)?.contains(FIRST_MESSAGE) {
            first = Some((Instant::now(), Cpu::now(&pids)?));
        }
        let stored = coll.estimated_document_count().await?;
        if stored >= n && first.is_some() {
            break (Instant::now(), Cpu::now(&pids)?);
        }
        if stored != last {
            (last, last_change) = (stored, Instant::now());
        } else if last_change.elapsed() > STALL {
            bail!(
                "{} stalled at {stored} of {n} documents; log tail:\n{}",
                peer.key,
                child.log_tail(20)
            );
        }
    };
    let memory = proc::memory(child.pid())?;
    // The peer stops at n: a second later the exact count must be n.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stored = coll.count_documents(doc! {}).await?;
    child.terminate(Duration::from_secs(20))?;
    if stored != n {
        bail!("{} stored {stored} documents of {n}", peer.key);
    }
    let (start, start_cpu) = first.expect("set before the end");
    let seconds = (end - start).as_secs_f64();
    let timed_events = n;
    let cpu = end_cpu.since(&start_cpu);
    Ok(PeerResult {
        peer: peer.name.into(),
        events: n,
        seconds,
        events_per_second: Some(timed_events as f64 / seconds),
        timed_events,
        cpu_s_per_million: Some(cpu.service / timed_events.max(1) as f64 * 1e6),
        peak_rss_mib: Some(mib(memory.hwm_kib)),
        cpu,
        error: None,
    })
}

/// The peers table beside phase 2's figures, as Markdown, appended to `s`.
pub fn render(s: &mut String, phases: &[PhaseResult], peers: &[PeerResult]) {
    if peers.is_empty() {
        return;
    }
    let opt = |v: Option<f64>, digits: usize| match v {
        Some(v) => format!("{v:.digits$}"),
        None => "–".into(),
    };
    s.push_str(
        "\nKafka → MongoDB, the same topic and server (phase 2 and the peers of phase 9):\n\n",
    );
    s.push_str("| Consumer | Events | Events/s | CPU s / 1M events | Peak RSS MiB | MongoDB server CPU s / 1M |\n");
    s.push_str("|---|---:|---:|---:|---:|---:|\n");
    if let Some(k) = phases.iter().find(|p| p.kind == Kind::Kafka) {
        let _ = writeln!(
            s,
            "| sales-ingest (phase 2) | {} | {:.0} | {} | {} | {:.2} |",
            k.events,
            k.events_per_second,
            opt(k.service_cpu_s_per_million, 2),
            opt(k.peak_rss_mib, 1),
            k.cpu.mongodb_server / k.timed_events.max(1) as f64 * 1e6,
        );
    }
    for p in peers {
        match &p.error {
            None => {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {:.2} |",
                    p.peer,
                    p.events,
                    opt(p.events_per_second, 0),
                    opt(p.cpu_s_per_million, 2),
                    opt(p.peak_rss_mib, 1),
                    p.cpu.mongodb_server / p.timed_events.max(1) as f64 * 1e6,
                );
            }
            Some(e) => {
                let first = e.lines().next().unwrap_or_default();
                let _ = writeln!(
                    s,
                    "| {} | {} | failed: {first} | – | – | – |",
                    p.peer, p.events
                );
            }
        }
    }
}

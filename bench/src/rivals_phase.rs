//! Phase 10: sales-ingest beside Kafka Connect's MongoDB sink and Benthos ([`Rival`]),
//! all on the same proto3 JSON topic, the same MongoDB server and the same documents.
//! Each rival in turn: throughput on a pre-produced topic (timed from the first stored
//! document to the last, polled every 100 ms; CPU of its whole process inside that
//! window, peak RSS its VmHWM, start-up = spawn to first stored document), then a
//! low-load trickle at each one's defaults. Latency there is count-matched: the k-th
//! document to appear (polled every 5 ms) is matched with the k-th event sent, the
//! only method that needs nothing from the peer's documents. The faults are in
//! [`crate::faults`].
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use mongodb::bson::{doc, Document};
use serde::Serialize;
use test_support::proc;

use crate::{
    cpu::{Cpu, Pids},
    events, kafka,
    kafka_phase::mib,
    metrics::percentile,
    rival::{self, Job, Rival},
    Ctx, Settings,
};

/// How often throughput progress is polled.
const POLL: Duration = Duration::from_millis(100);
/// A rival with no progress for this long (start-up included) has failed.
const STALL: Duration = Duration::from_secs(120);

/// What one rival did in phase 10 (the faults are added by [`crate::faults`]).
#[derive(Clone, Debug, Default, Serialize)]
pub struct RivalResult {
    pub key: String,
    pub peer: String,
    pub events: u64,
    pub seconds: f64,
    pub events_per_second: Option<f64>,
    pub cpu_s_per_million: Option<f64>,
    pub peak_rss_mib: Option<f64>,
    /// Spawn → first stored document, seconds.
    pub startup_s: Option<f64>,
    /// CPU seconds by process in the throughput window (`service` is the rival).
    pub cpu: Cpu,
    pub trickle_p50_ms: Option<f64>,
    pub trickle_p99_ms: Option<f64>,
    pub faults: Vec<crate::faults::FaultResult>,
    pub error: Option<String>,
}

/// Creates the service's `ts_1` and `sku_1` indexes (sales-ingest creates them itself)
/// so that the database does the same work per document for every rival.
pub async fn ensure_indexes(ctx: &Ctx, database: &str) -> Result<()> {
    let client = sales_ingest::sink::mongo::client(&ctx.backends.mongodb).await?;
    let coll = client
        .database(database)
        .collection::<Document>("raw_sales");
    for key in ["ts", "sku"] {
        let model = mongodb::IndexModel::builder()
            .keys(doc! { key: 1 })
            .options(
                mongodb::options::IndexOptions::builder()
                    .name(format!("{key}_1"))
                    .build(),
            )
            .build();
        coll.create_index(model).await?;
    }
    Ok(())
}

/// Documents in `database.raw_sales` (the fast estimate, for polling).
pub async fn stored(ctx: &Ctx, database: &str) -> Result<u64> {
    let client = sales_ingest::sink::mongo::client(&ctx.backends.mongodb).await?;
    Ok(client
        .database(database)
        .collection::<Document>("raw_sales")
        .estimated_document_count()
        .await?)
}

/// Drops a rival's database.
pub async fn drop_database(ctx: &Ctx, database: &str) -> Result<()> {
    let client = sales_ingest::sink::mongo::client(&ctx.backends.mongodb).await?;
    Ok(client.database(database).drop().await?)
}

/// Runs throughput and trickle for every rival on a topic of `n` JSON events; a
/// rival's failure is its result.
pub async fn run_all(ctx: &Ctx, rivals: &[Rival], n: u64, trickle: (f64, f64)) -> Vec<RivalResult> {
    let topic = format!("bench-json-{}", std::process::id());
    let mut out = Vec::new();
    let produced = produce_json(ctx, &topic, n).await;
    for &r in rivals {
        eprintln!("bench: phase 10, {} on {topic}", r.name());
        let mut result = match &produced {
            Ok(_) => throughput(ctx, r, &topic, n).await,
            Err(e) => Err(anyhow::anyhow!("pre-produce the JSON topic: {e:#}")),
        }
        .unwrap_or_else(|e| RivalResult {
            error: Some(format!("{e:#}")),
            ..Default::default()
        });
        (result.key, result.peer, result.events) = (r.key().into(), r.name().into(), n);
        match trickle_latency(ctx, r, trickle.0, trickle.1).await {
            Ok(sorted) => {
                result.trickle_p50_ms = Some(percentile(&sorted, 0.5));
                result.trickle_p99_ms = Some(percentile(&sorted, 0.99));
            }
            Err(e) => eprintln!("bench: {} trickle failed: {e:#}", r.key()),
        }
        eprintln!(
            "bench: {} {:?} events/s, trickle p99 {:?} ms{}",
            r.key(),
            result.events_per_second.map(|v| v.round()),
            result.trickle_p99_ms,
            result
                .error
                .as_deref()
                .map(|e| format!(", error {e}"))
                .unwrap_or_default(),
        );
        out.push(result);
    }
    out
}

/// Creates `topic` and fills it with `n` JSON events; the seconds it took.
async fn produce_json(ctx: &Ctx, topic: &str, n: u64) -> Result<f64> {
    kafka::create_topic(&ctx.backends.kafka, topic, ctx.tuning.partitions).await?;
    let (brokers, t) = (ctx.backends.kafka.clone(), topic.to_string());
    tokio::task::spawn_blocking(move || kafka::pre_produce_json(&brokers, &t, "j", n, false))
        .await?
}

async fn throughput(ctx: &Ctx, r: Rival, topic: &str, n: u64) -> Result<RivalResult> {
    let job = Job {
        topic,
        run: "rate",
        settings: Settings::Bench,
    };
    let database = r.database(job.run);
    if r != Rival::SalesIngest {
        ensure_indexes(ctx, &database).await?;
    }
    let spawned = Instant::now();
    let mut child = rival::start(ctx, r, &job)?;
    let pids = Pids {
        service: Some(child.pid()),
        ..ctx.pids
    };
    let mut first: Option<(Instant, Cpu, u64)> = None;
    let (mut last, mut last_change) = (0, Instant::now());
    let (end, end_cpu) = loop {
        tokio::time::sleep(POLL).await;
        if !child.running() {
            bail!("{} exited; log tail:\n{}", r.key(), child.log_tail());
        }
        let count = stored(ctx, &database).await?;
        if first.is_none() && count > 0 {
            first = Some((Instant::now(), Cpu::now(&pids)?, count));
        }
        if count >= n {
            break (Instant::now(), Cpu::now(&pids)?);
        }
        if count != last {
            (last, last_change) = (count, Instant::now());
        } else if last_change.elapsed() > STALL {
            bail!(
                "{} stalled at {count} of {n}; log tail:\n{}",
                r.key(),
                child.log_tail()
            );
        }
    };
    let memory = proc::memory(child.pid())?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let exact = count_exact(ctx, &database).await?;
    child.stop()?;
    drop_database(ctx, &database).await?;
    if exact != n {
        bail!("{} stored {exact} documents of {n}", r.key());
    }
    let (start, start_cpu, at_start) = first.expect("set before the end");
    let seconds = (end - start).as_secs_f64();
    let timed = n - at_start;
    let cpu = end_cpu.since(&start_cpu);
    Ok(RivalResult {
        seconds,
        events_per_second: Some(timed as f64 / seconds),
        cpu_s_per_million: Some(cpu.service / timed.max(1) as f64 * 1e6),
        peak_rss_mib: Some(mib(memory.hwm_kib)),
        startup_s: Some((start - spawned).as_secs_f64()),
        cpu,
        ..Default::default()
    })
}

/// The exact number of documents in `database.raw_sales`.
pub async fn count_exact(ctx: &Ctx, database: &str) -> Result<u64> {
    let client = sales_ingest::sink::mongo::client(&ctx.backends.mongodb).await?;
    Ok(client
        .database(database)
        .collection::<Document>("raw_sales")
        .count_documents(doc! {})
        .await?)
}

/// Produce → stored at `rate` for `seconds` with the rival at its defaults; sorted ms.
async fn trickle_latency(ctx: &Ctx, r: Rival, rate: f64, seconds: f64) -> Result<Vec<f64>> {
    let topic = format!("bench-trickle-{}-{}", r.key(), std::process::id());
    kafka::create_topic(&ctx.backends.kafka, &topic, ctx.tuning.partitions).await?;
    let job = Job {
        topic: &topic,
        run: "trickle",
        settings: Settings::Defaults,
    };
    let database = r.database(job.run);
    if r != Rival::SalesIngest {
        ensure_indexes(ctx, &database).await?;
    }
    let child = rival::start(ctx, r, &job)?;
    // A warm-up event per partition's worth proves the group has joined and written.
    let warm = ctx.tuning.partitions.max(1) as u64 * 2;
    let (brokers, t) = (ctx.backends.kafka.clone(), topic.clone());
    tokio::task::spawn_blocking(move || kafka::pre_produce_json(&brokers, &t, "w", warm, false))
        .await??;
    wait_count(ctx, &database, warm, Duration::from_secs(180)).await?;
    let count = (rate * seconds).round().max(1.0) as u64;
    let (brokers, t) = (ctx.backends.kafka.clone(), topic.clone());
    let sender = tokio::task::spawn_blocking(move || paced_json(&brokers, &t, count, rate));
    let mut seen = Vec::with_capacity(count as usize);
    let deadline = Instant::now() + Duration::from_secs_f64(seconds + 60.0);
    while (seen.len() as u64) < count && Instant::now() < deadline {
        let now = Instant::now();
        let c = stored(ctx, &database).await?.saturating_sub(warm);
        while (seen.len() as u64) < c.min(count) {
            seen.push(now);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let sent = sender.await??;
    child.stop()?;
    drop_database(ctx, &database).await?;
    if (seen.len() as u64) < count {
        bail!(
            "{} stored {} of {count} trickle events",
            r.key(),
            seen.len()
        );
    }
    let mut ms: Vec<f64> = seen
        .iter()
        .zip(&sent)
        .map(|(s, t)| s.saturating_duration_since(*t).as_secs_f64() * 1000.0)
        .collect();
    ms.sort_by(f64::total_cmp);
    Ok(ms)
}

/// Polls until `database.raw_sales` holds `n` documents.
pub async fn wait_count(ctx: &Ctx, database: &str, n: u64, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while stored(ctx, database).await? < n {
        if Instant::now() > deadline {
            bail!("{database}: fewer than {n} documents within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Sends `count` JSON events at `rate`; each one's send instant.
fn paced_json(brokers: &str, topic: &str, count: u64, rate: f64) -> Result<Vec<Instant>> {
    let p = kafka::producer(brokers, 5)?;
    let mut sent = Vec::with_capacity(count as usize);
    let start = Instant::now();
    for i in 0..count {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        let now = Instant::now();
        if due > now + Duration::from_millis(1) {
            std::thread::sleep(due - now);
        }
        let e = events::event("t", i);
        sent.push(Instant::now());
        kafka::send_raw(&p, topic, &e.event_id, &kafka::json(&e))?;
    }
    kafka::finish(&p, count)?;
    Ok(sent)
}

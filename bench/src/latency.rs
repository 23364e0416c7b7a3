//! Produce → stored latency at a fixed rate ([`Paced`]): phase 5 (half phase 2's rate,
//! the bench's settings) and phase 8, the Kafka trickle (200 events/s, the service's
//! default BATCH_SIZE and FLUSH_INTERVAL). A fresh Kafka-consuming service on a fresh
//! topic; once it is SERVING its idle memory is read, one warm-up event proves the
//! partitions are assigned, then events are produced at the rate for a set time. Each event's produce
//! time is recorded (and sent as its `ts`); its latency is the stored document's
//! `processed_at` (BSON date, ms) minus that time. `processed_at` is stamped when the
//! batch's `insert_many` is issued, so the write itself is added from the service's
//! `mongodb_write_duration_seconds` histogram as a bound. The service's own share
//! (received from Kafka → durable) comes from its `event_processing_duration_seconds`;
//! the rest is the producer, the broker and the consumer's fetching.
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use futures::TryStreamExt;
use mongodb::bson::{doc, Document};

use test_support::service::Service;

use crate::{
    cpu::{Cpu, Pids},
    events, kafka,
    kafka_phase::{check_and_drop, mib, start_consumer},
    metrics::{batch_figures, percentile, Histogram},
    report::{Kind, Latency, PhaseResult},
    Ctx, Settings,
};

/// One paced phase.
pub struct Paced<'a> {
    /// The phase's name in the report.
    pub label: &'a str,
    pub kind: Kind,
    /// Names the topic (`bench-<key>-<pid>`), the database (`bench_<key>`) and the log
    /// (`service-<key>.log`).
    pub key: &'a str,
    /// Events produced per second, and for how long.
    pub rate: f64,
    pub seconds: f64,
    pub settings: Settings,
}

/// Runs a paced phase.
pub async fn run(ctx: &Ctx, spec: &Paced<'_>) -> Result<PhaseResult> {
    let (rate, seconds) = (spec.rate, spec.seconds);
    let topic = format!("bench-{}-{}", spec.key, std::process::id());
    kafka::create_topic(&ctx.backends.kafka, &topic, ctx.tuning.partitions).await?;
    let database = &format!("bench_{}", spec.key);
    let log = format!("service-{}.log", spec.key);
    let svc = start_consumer(ctx, &topic, database, spec.settings, &log).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = svc.memory()?;

    let (brokers, t) = (ctx.backends.kafka.clone(), topic.clone());
    tokio::task::spawn_blocking(move || {
        let p = kafka::producer(&brokers, 5)?;
        kafka::send(&p, &t, &events::event("w", 0))?;
        kafka::finish(&p, 1)
    })
    .await??;
    wait_stored(&svc, 1, Duration::from_secs(90)).await?;

    let count = (rate * seconds).round().max(1.0) as u64;
    let pids = Pids {
        service: Some(svc.pid()),
        ..ctx.pids
    };
    let cpu0 = Cpu::now(&pids)?;
    let started = Instant::now();
    let (brokers, t) = (ctx.backends.kafka.clone(), topic.clone());
    let sent_us =
        tokio::task::spawn_blocking(move || produce_paced(&brokers, &t, count, rate)).await??;
    wait_stored(&svc, count + 1, Duration::from_secs(120)).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = Cpu::now(&pids)?.since(&cpu0);
    let memory = svc.memory()?;
    let writes = Histogram::parse(&svc.metrics().await?, "mongodb_write_duration_seconds");
    let (mean_batch_size, mean_write_ms) = batch_figures(&svc).await?;
    let inside = Histogram::parse(&svc.metrics().await?, "event_processing_duration_seconds");

    let mut latencies = read_latencies(ctx, database, &sent_us).await?;
    latencies.sort_by(f64::total_cmp);
    svc.stop()?;
    check_and_drop(ctx, database, count + 1).await?;
    Ok(PhaseResult {
        phase: spec.label.into(),
        kind: spec.kind,
        events: count,
        seconds: elapsed,
        events_per_second: count as f64 / elapsed,
        timed_events: count,
        cpu,
        peak_rss_mib: Some(mib(memory.hwm_kib)),
        idle_rss_mib: Some(mib(idle.rss_kib)),
        mean_batch_size,
        mean_write_ms,
        latency: Some(Latency {
            target_rate: rate,
            p50_ms: percentile(&latencies, 0.5),
            p99_ms: percentile(&latencies, 0.99),
            max_ms: percentile(&latencies, 1.0),
            write_p99_bound_ms: writes.quantile_bound(0.99).map(|s| s * 1000.0),
            write_mean_ms: writes.mean().map(|s| s * 1000.0),
            service_p50_bound_ms: inside.quantile_bound(0.5).map(|s| s * 1000.0),
            service_p99_bound_ms: inside.quantile_bound(0.99).map(|s| s * 1000.0),
        }),
        ..Default::default()
    })
}

/// Produces `count` events at `rate` per second; each one's send time (Unix µs) is
/// recorded just before it is handed to the producer and sent as its `ts`.
fn produce_paced(brokers: &str, topic: &str, count: u64, rate: f64) -> Result<Vec<i64>> {
    let p = kafka::producer(brokers, 5)?;
    let mut sent = Vec::with_capacity(count as usize);
    let start = Instant::now();
    for i in 0..count {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        let now = Instant::now();
        if due > now + Duration::from_millis(1) {
            std::thread::sleep(due - now);
        }
        let us = SystemTime::now().duration_since(UNIX_EPOCH)?.as_micros() as i64;
        kafka::send(&p, topic, &events::event_at("l", i, us / 1000))?;
        sent.push(us);
    }
    kafka::finish(&p, count)?;
    Ok(sent)
}

/// Polls GetStats every 50 ms until `n` Kafka events are stored.
async fn wait_stored(svc: &Service, n: u64, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let k = svc.stats().await?.kafka.unwrap_or_default();
        if k.stored >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{} of {n} events stored within {timeout:?}; service log tail:\n{}",
                k.stored,
                svc.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// processed_at − produce time, in ms, for every produced event.
async fn read_latencies(ctx: &Ctx, database: &str, sent_us: &[i64]) -> Result<Vec<f64>> {
    let client = sales_ingest::sink::mongo::client(&ctx.backends.mongodb).await?;
    let coll = client
        .database(database)
        .collection::<Document>("raw_sales");
    let mut cursor = coll
        .find(doc! {})
        .projection(doc! { "_id": 1, "processed_at": 1 })
        .await?;
    let mut out = Vec::with_capacity(sent_us.len());
    while let Some(d) = cursor.try_next().await? {
        let id = d.get_str("_id")?;
        let Some(n) = events::parse_id("l", id) else {
            continue;
        };
        let sent = *sent_us.get(n as usize).context("unknown event id")?;
        let stored_ms = d.get_datetime("processed_at")?.timestamp_millis();
        out.push(stored_ms as f64 - sent as f64 / 1000.0);
    }
    if out.len() != sent_us.len() {
        bail!("{} of {} latency events found", out.len(), sent_us.len());
    }
    Ok(out)
}

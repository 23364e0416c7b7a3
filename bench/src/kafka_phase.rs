//! Phase 2, Kafka → MongoDB: the run's events are pre-produced to a fresh topic, then a
//! fresh service process consumes them. Timed from the first poll (every 50 ms, over
//! GetStats) that sees a stored document to the poll that sees all of them stored, so
//! the consumer-group join is not counted; the rate counts only the events stored
//! inside that window.
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use mongodb::bson::{doc, RawDocumentBuf};

use test_support::service::Service;

use crate::{
    cpu::{Cpu, Pids},
    kafka,
    metrics::batch_figures,
    report::{Kind, PhaseResult},
    Ctx, Settings,
};

/// How often progress is polled.
const POLL: Duration = Duration::from_millis(50);
/// A phase with no progress for this long has failed.
const STALL: Duration = Duration::from_secs(120);

/// Starts a service consuming `topic` into `database` (its own group) and waits until
/// it is SERVING, with `settings`; phases 2, 5 and 8 use it.
pub async fn start_consumer(
    ctx: &Ctx,
    topic: &str,
    database: &str,
    settings: Settings,
    log: &str,
) -> Result<Service> {
    let env = ctx.service_env(topic, database, settings, &[]);
    let mut svc = Service::start(&ctx.bin, &env, &ctx.logs.join(log))?;
    svc.wait_serving(Duration::from_secs(60)).await?;
    Ok(svc)
}

/// Runs phase 2; also returns the topic (the peers consume it too) and the seconds
/// pre-producing took.
pub async fn run(ctx: &Ctx, n: u64) -> Result<(PhaseResult, String, f64)> {
    let topic = format!("bench-kafka-{}", std::process::id());
    kafka::create_topic(&ctx.backends.kafka, &topic, ctx.tuning.partitions).await?;
    let (brokers, t) = (ctx.backends.kafka.clone(), topic.clone());
    let produce_seconds =
        tokio::task::spawn_blocking(move || kafka::pre_produce(&brokers, &t, "k", n)).await??;
    eprintln!(
        "bench: pre-produced {n} events to {topic} ({} partitions) in {produce_seconds:.1} s",
        ctx.tuning.partitions
    );

    let database = "bench_kafka";
    let svc = start_consumer(ctx, &topic, database, Settings::Bench, "service-kafka.log").await?;
    let pids = Pids {
        service: Some(svc.pid()),
        ..ctx.pids
    };

    let mut first: Option<(Instant, Cpu, u64)> = None;
    let (mut last_done, mut last_change) = (0, Instant::now());
    let mut tick = tokio::time::interval(POLL);
    let (end, end_cpu) = loop {
        tick.tick().await;
        let k = svc.stats().await?.kafka.unwrap_or_default();
        let done = k.stored + k.duplicate + k.rejected + k.failed;
        if first.is_none() && done > 0 {
            first = Some((Instant::now(), Cpu::now(&pids)?, done));
        }
        if done >= n {
            if k.stored != n {
                bail!("Kafka phase: {k:?} of {n} distinct valid events");
            }
            break (Instant::now(), Cpu::now(&pids)?);
        }
        if done != last_done {
            (last_done, last_change) = (done, Instant::now());
        } else if last_change.elapsed() > STALL {
            bail!(
                "Kafka phase stalled at {done} of {n}; service log tail:\n{}",
                svc.log_tail()
            );
        }
    };
    let (start, start_cpu, done_at_start) = first.expect("set before the end");
    let memory = svc.memory()?;
    let (mean_batch_size, mean_write_ms) = batch_figures(&svc).await?;
    svc.stop()?;
    check_and_drop(ctx, database, n).await?;

    let seconds = (end - start).as_secs_f64();
    let timed_events = n - done_at_start;
    Ok((
        PhaseResult {
            phase: "2 Kafka -> MongoDB".into(),
            kind: Kind::Kafka,
            events: n,
            seconds,
            events_per_second: timed_events as f64 / seconds,
            timed_events,
            cpu: end_cpu.since(&start_cpu),
            peak_rss_mib: Some(mib(memory.hwm_kib)),
            mean_batch_size,
            mean_write_ms,
            ..Default::default()
        },
        topic,
        produce_seconds,
    ))
}

/// Checks that `database.raw_sales` holds exactly `n` documents, then drops it so
/// every phase writes to an empty collection.
pub async fn check_and_drop(ctx: &Ctx, database: &str, n: u64) -> Result<()> {
    let client = sales_ingest::sink::mongo::client(&ctx.backends.mongodb).await?;
    let db = client.database(database);
    let stored = db
        .collection::<RawDocumentBuf>("raw_sales")
        .count_documents(doc! {})
        .await?;
    if stored != n {
        bail!("{database}.raw_sales holds {stored} documents, {n} expected");
    }
    db.drop().await?;
    Ok(())
}

/// KiB to MiB.
pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

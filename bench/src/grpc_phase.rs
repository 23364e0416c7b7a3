//! Phase 3, gRPC → MongoDB: a fresh gRPC-only service (KAFKA_ENABLED=false) takes the
//! run's events over `IngestEvents/Stream`, in requests of BATCH_SIZE events spread
//! round-robin over a few concurrent streams, each with a bounded window of unacked
//! requests. The requests are built before the clock starts; timed from the first send
//! to the last ack (an ack means the request's events are durable). Idle memory is
//! read after start-up, SERVING, before the first request. [`run_load`] is the same run
//! with another write mode and events of its own (the upsert phase).
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use sales_ingest::proto::{
    ingest::v1::{ingest_events_client::IngestEventsClient, IngestRequest},
    sales::v1::SalesEvent,
};
use tokio::{
    sync::{mpsc, Semaphore},
    task::JoinSet,
};
use tonic::transport::Channel;

use test_support::service::Service;

use crate::{
    cpu::{Cpu, Pids},
    events,
    kafka_phase::{check_and_drop, mib},
    metrics::batch_figures,
    report::{Kind, PhaseResult},
    Ctx, Settings,
};

/// One run over IngestEvents/Stream: phase 3, or phase 3 with another write mode and
/// events of its own (the upsert phase).
pub struct Load<'a> {
    pub label: &'static str,
    pub kind: Kind,
    /// Names the service's topic, group and log.
    pub name: &'static str,
    pub database: &'static str,
    /// Environment beyond KAFKA_ENABLED=false.
    pub extra: &'a [(&'a str, String)],
    /// The event at each position of the run.
    pub event: &'a dyn Fn(u64) -> SalesEvent,
    /// Documents the run leaves in the database.
    pub documents: u64,
}

/// What [`run_load`] measured, with the acks' counts.
pub struct Outcome {
    pub result: PhaseResult,
    pub stored: u64,
    pub updated: u64,
}

/// Runs phase 3.
pub async fn run(ctx: &Ctx, n: u64) -> Result<PhaseResult> {
    let load = Load {
        label: "3 gRPC -> MongoDB",
        kind: Kind::Grpc,
        name: "grpc",
        database: "bench_grpc",
        extra: &[],
        event: &|j| events::event("g", j),
        documents: n,
    };
    let out = run_load(ctx, n, &load).await?;
    if out.stored != n || out.updated != 0 {
        bail!(
            "gRPC phase: {} of {n} events accepted, {} updated",
            out.stored,
            out.updated
        );
    }
    Ok(out.result)
}

/// Sends `n` events of `load` and measures it; every ack must come in order with
/// nothing refused or duplicate, and stored + updated must account for every event.
pub async fn run_load(ctx: &Ctx, n: u64, load: &Load<'_>) -> Result<Outcome> {
    let mut extra = vec![("KAFKA_ENABLED", "false".to_string())];
    extra.extend(load.extra.iter().cloned());
    let env = ctx.service_env(
        &format!("bench-{}", load.name),
        load.database,
        Settings::Bench,
        &extra,
    );
    let log = ctx.logs.join(format!("service-{}.log", load.name));
    let mut svc = Service::start(&ctx.bin, &env, &log)?;
    svc.wait_serving(Duration::from_secs(60)).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = svc.memory()?;

    let streams = ctx.tuning.streams as usize;
    let mut plans: Vec<Vec<IngestRequest>> = vec![Vec::new(); streams];
    let batch = ctx.tuning.batch_size;
    for (i, start) in (0..n).step_by(batch as usize).enumerate() {
        let events = (start..(start + batch).min(n)).map(load.event).collect();
        plans[i % streams].push(IngestRequest {
            seq: i as u64 + 1,
            events,
        });
    }

    let pids = Pids {
        service: Some(svc.pid()),
        ..ctx.pids
    };
    let cpu0 = Cpu::now(&pids)?;
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for plan in plans.into_iter().filter(|p| !p.is_empty()) {
        tasks.spawn(one_stream(svc.channel(), plan, ctx.tuning.window));
    }
    let (mut stored, mut updated) = (0, 0);
    while let Some(joined) = tasks.join_next().await {
        let (s, u) = joined.context("stream task")??;
        stored += s;
        updated += u;
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = Cpu::now(&pids)?.since(&cpu0);
    let memory = svc.memory()?;
    let (mean_batch_size, mean_write_ms) = batch_figures(&svc).await?;
    if stored + updated != n {
        bail!(
            "{}: {stored} stored + {updated} updated of {n} events",
            load.label
        );
    }
    svc.stop()?;
    check_and_drop(ctx, load.database, load.documents).await?;
    Ok(Outcome {
        result: PhaseResult {
            phase: load.label.into(),
            kind: load.kind,
            events: n,
            seconds,
            events_per_second: n as f64 / seconds,
            timed_events: n,
            cpu,
            peak_rss_mib: Some(mib(memory.hwm_kib)),
            idle_rss_mib: Some(mib(idle.rss_kib)),
            mean_batch_size,
            mean_write_ms,
            ..Default::default()
        },
        stored,
        updated,
    })
}

/// Sends `plan` on one stream with at most `window` requests unacked; checks the acks
/// come in order with nothing refused or duplicate; returns (stored, updated).
async fn one_stream(
    channel: Channel,
    plan: Vec<IngestRequest>,
    window: usize,
) -> Result<(u64, u64)> {
    let expected: Vec<u64> = plan.iter().map(|r| r.seq).collect();
    let (tx, mut rx) = mpsc::channel::<IngestRequest>(window);
    let permits = Arc::new(Semaphore::new(window));
    let sender = {
        let permits = permits.clone();
        tokio::spawn(async move {
            for request in plan {
                permits.acquire().await?.forget();
                if tx.send(request).await.is_err() {
                    break;
                }
            }
            anyhow::Ok(())
        })
    };
    let outbound = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let mut client = IngestEventsClient::new(channel);
    let mut acks = client.stream(outbound).await?.into_inner();
    let (mut accepted, mut updated) = (0u64, 0u64);
    for seq in &expected {
        let ack = acks
            .message()
            .await?
            .context("the server ended a stream before every ack")?;
        if ack.seq != *seq {
            bail!("ack for seq {} where {seq} was expected", ack.seq);
        }
        if ack.duplicates > 0 || !ack.rejected.is_empty() {
            bail!(
                "seq {seq}: {} duplicates, {:?} rejected",
                ack.duplicates,
                ack.rejected
            );
        }
        accepted += u64::from(ack.accepted);
        updated += u64::from(ack.updated);
        permits.add_permits(1);
    }
    sender.await??;
    Ok((accepted, updated))
}

//! Phase 3, gRPC → MongoDB: a fresh gRPC-only service (KAFKA_ENABLED=false) takes the
//! run's events over `IngestEvents/Stream`, in requests of BATCH_SIZE events spread
//! round-robin over a few concurrent streams, each with a bounded window of unacked
//! requests. The requests are built before the clock starts; timed from the first send
//! to the last ack (an ack means the request's events are durable). Idle memory is
//! read after start-up, SERVING, before the first request.
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use sales_ingest::proto::ingest::v1::{ingest_events_client::IngestEventsClient, IngestRequest};
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

/// Runs phase 3.
pub async fn run(ctx: &Ctx, n: u64) -> Result<PhaseResult> {
    let database = "bench_grpc";
    let env = ctx.service_env(
        "bench-grpc",
        database,
        Settings::Bench,
        &[("KAFKA_ENABLED", "false".into())],
    );
    let mut svc = Service::start(&ctx.bin, &env, &ctx.logs.join("service-grpc.log"))?;
    svc.wait_serving(Duration::from_secs(60)).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = svc.memory()?;

    let streams = ctx.tuning.streams as usize;
    let mut plans: Vec<Vec<IngestRequest>> = vec![Vec::new(); streams];
    let batch = ctx.tuning.batch_size;
    for (i, start) in (0..n).step_by(batch as usize).enumerate() {
        let events = (start..(start + batch).min(n))
            .map(|j| events::event("g", j))
            .collect();
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
    let mut accepted = 0;
    while let Some(joined) = tasks.join_next().await {
        accepted += joined.context("stream task")??;
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = Cpu::now(&pids)?.since(&cpu0);
    let memory = svc.memory()?;
    let (mean_batch_size, mean_write_ms) = batch_figures(&svc).await?;
    if accepted != n {
        bail!("gRPC phase: {accepted} of {n} events accepted");
    }
    svc.stop()?;
    check_and_drop(ctx, database, n).await?;
    Ok(PhaseResult {
        phase: "3 gRPC -> MongoDB".into(),
        kind: Kind::Grpc,
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
    })
}

/// Sends `plan` on one stream with at most `window` requests unacked; checks that the
/// acks come in order and returns the events accepted.
async fn one_stream(channel: Channel, plan: Vec<IngestRequest>, window: usize) -> Result<u64> {
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
    let mut accepted = 0u64;
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
        permits.add_permits(1);
    }
    sender.await??;
    Ok(accepted)
}

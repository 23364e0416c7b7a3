//! The upsert phase: phase 3 (gRPC → MongoDB) run against a service with
//! `WRITE_MODE=upsert`, where every other event is a correction of an id sent earlier
//! (far enough back that its original is usually acked already), so half the events
//! replace a stored document. It reports events/s and the service's write time per
//! event (mean write call time over mean batch size, from the service's own
//! histograms), to be read against the insert phase's.
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

/// The event at position `s` of the run: even positions are new ids; odd ones correct
/// the id sent `lag` new ids earlier (a new id of their own while there is none that
/// far back), with another qty.
fn event_at(s: u64, lag: u64) -> sales_ingest::proto::sales::v1::SalesEvent {
    let new = s / 2;
    if s.is_multiple_of(2) {
        events::event("u", new)
    } else if new >= lag {
        let mut e = events::event("u", new - lag);
        e.qty += 1;
        e
    } else {
        events::event("u-extra", new)
    }
}

/// Runs the upsert phase over `n` events.
pub async fn run(ctx: &Ctx, n: u64) -> Result<PhaseResult> {
    let database = "bench_upsert";
    let env = ctx.service_env(
        "bench-upsert",
        database,
        Settings::Bench,
        &[
            ("KAFKA_ENABLED", "false".into()),
            ("WRITE_MODE", "upsert".into()),
        ],
    );
    let mut svc = Service::start(&ctx.bin, &env, &ctx.logs.join("service-upsert.log"))?;
    svc.wait_serving(Duration::from_secs(60)).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = svc.memory()?;

    let streams = ctx.tuning.streams as usize;
    let batch = ctx.tuning.batch_size;
    // Beyond every request that can be in flight at once.
    let lag = (ctx.tuning.streams as u64 * ctx.tuning.window as u64 + 1) * batch;
    let mut plans: Vec<Vec<IngestRequest>> = vec![Vec::new(); streams];
    for (i, start) in (0..n).step_by(batch as usize).enumerate() {
        let events = (start..(start + batch).min(n))
            .map(|s| event_at(s, lag))
            .collect();
        plans[i % streams].push(IngestRequest {
            seq: i as u64 + 1,
            events,
        });
    }
    let new_ids = n.div_ceil(2) + (n / 2).min(lag);

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
    let (mut accepted, mut updated) = (0, 0);
    while let Some(joined) = tasks.join_next().await {
        let (a, u) = joined.context("stream task")??;
        accepted += a;
        updated += u;
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = Cpu::now(&pids)?.since(&cpu0);
    let memory = svc.memory()?;
    let (mean_batch_size, mean_write_ms) = batch_figures(&svc).await?;
    if accepted + updated != n {
        bail!("upsert phase: {accepted} stored + {updated} updated of {n} events");
    }
    eprintln!("bench: upsert phase: {accepted} stored, {updated} updated");
    svc.stop()?;
    check_and_drop(ctx, database, new_ids).await?;
    Ok(PhaseResult {
        phase: "3u gRPC -> MongoDB, WRITE_MODE=upsert, half corrections".into(),
        kind: Kind::Upsert,
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

/// The service's write time per event, ms: mean write call over mean batch size.
pub fn write_ms_per_event(p: &PhaseResult) -> Option<f64> {
    Some(p.mean_write_ms? / p.mean_batch_size?)
}

/// The upsert phase against the insert (gRPC) phase: events/s and write time per event.
pub fn compare(insert: &PhaseResult, upsert: &PhaseResult) -> String {
    let per = |p: &PhaseResult| write_ms_per_event(p).map(|ms| ms * 1000.0);
    let (i, u) = (per(insert), per(upsert));
    format!(
        "\nUpsert phase: {:.0} events/s ({:.2} × the insert phase's {:.0}); service write time \
         per event {} µs vs {} µs inserting ({} ×).\n",
        upsert.events_per_second,
        upsert.events_per_second / insert.events_per_second,
        insert.events_per_second,
        u.map_or("–".into(), |v| format!("{v:.1}")),
        i.map_or("–".into(), |v| format!("{v:.1}")),
        u.zip(i)
            .map_or("–".into(), |(u, i)| format!("{:.2}", u / i)),
    )
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
    let mut acks = IngestEventsClient::new(channel)
        .stream(outbound)
        .await?
        .into_inner();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_other_event_corrects_an_id_sent_lag_ids_earlier() {
        assert_eq!(event_at(0, 3).event_id, "u-0");
        assert_eq!(event_at(1, 3).event_id, "u-extra-0");
        assert_eq!(event_at(6, 3).event_id, "u-3");
        let correction = event_at(7, 3);
        assert_eq!(correction.event_id, "u-0");
        assert_ne!(correction.qty, event_at(0, 3).qty);
    }
}

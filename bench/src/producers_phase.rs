//! Phases 6 and 7, small gRPC producers against the service's default BATCH_SIZE and
//! FLUSH_INTERVAL: a fresh gRPC-only service; each producer is one
//! `IngestEvents/Stream` stream on its own connection, as a fleet of producer processes
//! has (one connection holds at most GRPC_MAX_STREAMS_PER_CONNECTION streams), with a
//! window of one request of one event, so it sends
//! the next request only once the previous one is acknowledged (durable). Phase 6 is
//! one such producer for a set number of requests, phase 7 many at once for a set time.
//! Each request's ack latency (send → ack received) is recorded; the events/s count
//! every acknowledged event over the whole run, first send to last ack.
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use sales_ingest::proto::ingest::v1::{ingest_events_client::IngestEventsClient, IngestRequest};
use tokio::{sync::mpsc, task::JoinSet};
use tonic::transport::Channel;

use test_support::service::Service;

use crate::{
    cpu::{Cpu, Pids},
    events,
    kafka_phase::{check_and_drop, mib},
    metrics::{batch_figures, percentile},
    report::{AckLatency, Kind, PhaseResult},
    Ctx, Settings,
};

/// How much each producer sends.
#[derive(Clone, Copy, Debug)]
pub enum Until {
    /// This many requests.
    Requests(u64),
    /// Until this much time has passed since the phase started.
    Elapsed(Duration),
}

/// One producers phase.
pub struct Load {
    pub label: &'static str,
    pub kind: Kind,
    /// Names the database (`bench_<key>`) and the log (`service-<key>.log`).
    pub key: &'static str,
    pub producers: usize,
    pub until: Until,
}

impl Load {
    /// Phase 6: one synchronous producer sending `requests` requests.
    pub fn sync(requests: u64) -> Self {
        Self {
            label: "6 sync producer (defaults)",
            kind: Kind::SyncProducer,
            key: "sync",
            producers: 1,
            until: Until::Requests(requests),
        }
    }

    /// Phase 7: `producers` synchronous producers for `seconds`.
    pub fn small(producers: usize, seconds: f64) -> Self {
        Self {
            label: "7 small producers (defaults)",
            kind: Kind::SmallProducers,
            key: "small",
            producers: producers.max(1),
            until: Until::Elapsed(Duration::from_secs_f64(seconds)),
        }
    }
}

/// Runs a producers phase.
pub async fn run(ctx: &Ctx, load: &Load) -> Result<PhaseResult> {
    let database = &format!("bench_{}", load.key);
    let env = ctx.service_env(
        &format!("bench-{}", load.key),
        database,
        Settings::Defaults,
        &[("KAFKA_ENABLED", "false".into())],
    );
    let log = ctx.logs.join(format!("service-{}.log", load.key));
    let mut svc = Service::start(&ctx.bin, &env, &log)?;
    svc.wait_serving(Duration::from_secs(60)).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = svc.memory()?;

    let pids = Pids {
        service: Some(svc.pid()),
        ..ctx.pids
    };
    let cpu0 = Cpu::now(&pids)?;
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for p in 0..load.producers {
        let deadline = match load.until {
            Until::Elapsed(d) => Some(started + d),
            Until::Requests(_) => None,
        };
        let requests = match load.until {
            Until::Requests(n) => n,
            Until::Elapsed(_) => u64::MAX,
        };
        let channel = Channel::from_shared(svc.grpc_url.clone())
            .context("the service's gRPC URL")?
            .connect_lazy();
        tasks.spawn(producer(channel, p, requests, deadline));
    }
    let mut latencies_ms = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        latencies_ms.extend(joined.context("producer task")??);
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = Cpu::now(&pids)?.since(&cpu0);
    let memory = svc.memory()?;
    let (mean_batch_size, mean_write_ms) = batch_figures(&svc).await?;
    svc.stop()?;
    let n = latencies_ms.len() as u64;
    check_and_drop(ctx, database, n).await?;
    latencies_ms.sort_by(f64::total_cmp);
    Ok(PhaseResult {
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
        ack: Some(AckLatency {
            producers: load.producers,
            p50_ms: percentile(&latencies_ms, 0.5),
            p99_ms: percentile(&latencies_ms, 0.99),
            max_ms: percentile(&latencies_ms, 1.0),
        }),
        ..Default::default()
    })
}

/// Producer `p`: one stream, one request of one event at a time, until `requests` are
/// acknowledged or `deadline` has passed; returns each request's ack latency, ms.
async fn producer(
    channel: Channel,
    p: usize,
    requests: u64,
    deadline: Option<Instant>,
) -> Result<Vec<f64>> {
    let prefix = format!("p{p}");
    let (tx, mut rx) = mpsc::channel::<IngestRequest>(1);
    let outbound = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let mut client = IngestEventsClient::new(channel);
    let mut acks = client.stream(outbound).await?.into_inner();
    let mut latencies = Vec::new();
    for i in 0..requests {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let request = IngestRequest {
            seq: i + 1,
            events: vec![events::event(&prefix, i)],
        };
        let sent = Instant::now();
        tx.send(request).await.context("the stream closed")?;
        let ack = acks
            .message()
            .await?
            .context("the server ended a stream before every ack")?;
        latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
        if ack.seq != i + 1 || ack.accepted != 1 {
            bail!("producer {p}: ack {ack:?} for seq {}", i + 1);
        }
    }
    drop(tx);
    if let Some(extra) = acks.message().await? {
        bail!("producer {p}: an ack after the last request: {extra:?}");
    }
    Ok(latencies)
}

//! The order of the run's phases and what each is given: the ceiling first (the
//! ratios use it), the service phases, the peers, and the ceiling again last.
use anyhow::Result;

use crate::{
    ceiling::{self, Order},
    grpc_phase, kafka_phase, latency, peers, producers_phase,
    report::{Kind, PhaseResult},
    rival::Rival,
    rivals_phase, upsert_phase, Args, Ctx, Settings,
};

/// What [`run`] measured.
pub struct Measured {
    pub phases: Vec<PhaseResult>,
    pub peers: Vec<peers::PeerResult>,
    pub rivals: Vec<rivals_phase::RivalResult>,
    pub pre_produce_seconds: f64,
}

/// Phases 1, 1c, 2, 3, 3u, 3v, 5, 6, 7, 8 and 9 in order (4 is measured inside the service
/// phases), then phase 1 again: the ratios use the first ceiling, the repeat shows how
/// much it drifted.
pub async fn run(ctx: &Ctx, args: &Args) -> Result<Measured> {
    let n = args.events;
    if args.upsert_only {
        let grpc = grpc_phase::run(ctx, n).await?;
        let upsert = upsert_phase::run(ctx, n, upsert_phase::TYPICAL).await?;
        let stress = upsert_phase::run(ctx, n, upsert_phase::STRESS).await?;
        return Ok(Measured {
            phases: vec![grpc, upsert, stress],
            peers: Vec::new(),
            rivals: Vec::new(),
            pre_produce_seconds: 0.0,
        });
    }
    eprintln!("bench: phase 1, database ceiling ({n} documents)");
    let ceiling = ceiling::run(
        ctx,
        "bench_ceiling",
        n,
        Order::Sequential,
        "1 database ceiling",
    )
    .await?;
    eprintln!("bench: ceiling {:.0} docs/s", ceiling.events_per_second);
    eprintln!("bench: phase 1c, the ceiling's documents in the Kafka phase's key order");
    let partitions = ctx.tuning.partitions.max(1) as u32;
    let key_order = ceiling::run(
        ctx,
        "bench_ceiling_key_order",
        n,
        Order::KafkaKeys { partitions },
        "1c ceiling, Kafka key order",
    )
    .await?;
    eprintln!(
        "bench: ceiling in Kafka key order {:.0} docs/s",
        key_order.events_per_second
    );
    eprintln!("bench: phase 2, Kafka -> MongoDB");
    let (kafka, kafka_topic, pre_produce) = kafka_phase::run(ctx, n).await?;
    eprintln!(
        "bench: Kafka -> MongoDB {:.0} events/s",
        kafka.events_per_second
    );
    let mut phases = vec![ceiling, key_order];
    if !args.peers_only {
        phases.extend(service_phases(ctx, args, kafka.events_per_second).await?);
    }
    phases.insert(2, kafka);
    let peer_events = args.peer_events.min(n);
    let python: Vec<String> = args
        .peers
        .iter()
        .filter(|k| Rival::from_key(k).is_none())
        .cloned()
        .collect();
    eprintln!(
        "bench: phase 9, Python peers {python:?}, {peer_events} events each from {kafka_topic}"
    );
    let peers = peers::run_all(ctx, &kafka_topic, peer_events, &python).await?;
    let mut rivals: Vec<Rival> = args
        .peers
        .iter()
        .filter_map(|k| Rival::from_key(k))
        .filter(|r| *r != Rival::SalesIngest)
        .collect();
    if !rivals.is_empty() {
        rivals.insert(0, Rival::SalesIngest);
    }
    let trickle = (args.trickle_rate, args.small_seconds);
    let rivals = rivals_phase::run_all(ctx, &rivals, args.rival_events, trickle).await;
    eprintln!("bench: the database ceiling again, to show drift over the run");
    let again = ceiling::run(
        ctx,
        "bench_ceiling_again",
        n,
        Order::Sequential,
        "1b ceiling again, last",
    )
    .await?;
    eprintln!("bench: ceiling again {:.0} docs/s", again.events_per_second);
    phases.push(again);
    Ok(Measured {
        phases,
        peers,
        rivals,
        pre_produce_seconds: pre_produce,
    })
}

/// Phases 3 to 8, the service's own; `kafka_rate` is phase 2's events/s.
async fn service_phases(ctx: &Ctx, args: &Args, kafka_rate: f64) -> Result<Vec<PhaseResult>> {
    let n = args.events;
    eprintln!("bench: phase 3, gRPC -> MongoDB");
    let grpc = grpc_phase::run(ctx, n).await?;
    eprintln!(
        "bench: gRPC -> MongoDB {:.0} events/s",
        grpc.events_per_second
    );
    eprintln!("bench: phases 3u and 3v, gRPC -> MongoDB with WRITE_MODE=upsert");
    let upsert = upsert_phase::run(ctx, n, upsert_phase::TYPICAL).await?;
    let stress = upsert_phase::run(ctx, n, upsert_phase::STRESS).await?;
    let rate = kafka_rate / 2.0;
    eprintln!(
        "bench: phase 5, latency at {rate:.0} events/s for {} s",
        args.latency_seconds
    );
    let latency = latency::run(
        ctx,
        &latency::Paced {
            label: "5 latency (Kafka, half rate)",
            kind: Kind::Latency,
            key: "latency",
            rate,
            seconds: args.latency_seconds,
            settings: Settings::Bench,
        },
    )
    .await?;
    eprintln!(
        "bench: phase 6, one synchronous producer, {} requests, service defaults",
        args.sync_requests
    );
    let sync = producers_phase::run(ctx, &producers_phase::Load::sync(args.sync_requests)).await?;
    eprintln!(
        "bench: phase 7, {} small producers for {} s, service defaults",
        args.small_producers, args.small_seconds
    );
    let small = producers_phase::run(
        ctx,
        &producers_phase::Load::small(args.small_producers, args.small_seconds),
    )
    .await?;
    eprintln!(
        "bench: phase 8, Kafka trickle at {} events/s for {} s, service defaults",
        args.trickle_rate, args.small_seconds
    );
    let trickle = latency::run(
        ctx,
        &latency::Paced {
            label: "8 Kafka trickle (defaults)",
            kind: Kind::Trickle,
            key: "trickle",
            rate: args.trickle_rate,
            seconds: args.small_seconds,
            settings: Settings::Defaults,
        },
    )
    .await?;
    Ok(vec![grpc, upsert, stress, latency, sync, small, trickle])
}

//! The figures of one run: each phase's measurements, the ratios derived from them,
//! the performance targets checked against them, printed as Markdown tables and written
//! as JSON.
use std::fmt::Write as _;

use serde::Serialize;

use crate::{cpu::Cpu, peers::PeerResult};

/// Which kind of phase.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    #[default]
    Ceiling,
    /// The ceiling's documents in the Kafka phase's key order (a diagnostic).
    CeilingKeyOrder,
    Kafka,
    Grpc,
    /// Phase 3 with `WRITE_MODE=upsert`, one event in 20 a correction.
    Upsert,
    /// Phase 3 with `WRITE_MODE=upsert`, every other event a correction.
    UpsertStress,
    Latency,
    /// One gRPC producer, one event per request, window 1, service defaults.
    SyncProducer,
    /// Many such producers at once.
    SmallProducers,
    /// Kafka at a low rate, service defaults.
    Trickle,
}

/// What one phase measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PhaseResult {
    pub phase: String,
    pub kind: Kind,
    /// Events (documents) in the phase.
    pub events: u64,
    /// Length of the timed window.
    pub seconds: f64,
    /// Events completed inside the timed window per second.
    pub events_per_second: f64,
    /// Events completed inside the timed window (denominator of the CPU figures).
    pub timed_events: u64,
    /// CPU seconds each process used inside the timed window.
    pub cpu: Cpu,
    pub peak_rss_mib: Option<f64>,
    pub idle_rss_mib: Option<f64>,
    pub latency: Option<Latency>,
    /// Send → ack of the gRPC producer phases.
    pub ack: Option<AckLatency>,
    /// Documents per insert_many and ms per insert_many, on average (the service's
    /// from its /metrics; the ceiling's measured by the bench).
    pub mean_batch_size: Option<f64>,
    pub mean_write_ms: Option<f64>,
    /// events_per_second / the ceiling's.
    pub ratio_to_ceiling: Option<f64>,
    /// Kafka phase: events_per_second / phase 1c's (the same documents written in the
    /// key order the Kafka phase delivers them).
    pub ratio_to_key_order_ceiling: Option<f64>,
    /// The service's CPU seconds per million events.
    pub service_cpu_s_per_million: Option<f64>,
    /// The service's CPU per event / the bench's CPU per document in phase 1.
    pub cpu_ratio_to_bench: Option<f64>,
}

/// Produce → stored latency of phase 5.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Latency {
    /// Events per second produced (half phase 2's rate).
    pub target_rate: f64,
    /// Produce → `processed_at` (the batch's write issued), ms.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// insert_many duration p99 (bucket upper bound) and mean, ms, from /metrics.
    pub write_p99_bound_ms: Option<f64>,
    pub write_mean_ms: Option<f64>,
    /// Inside the service, received → durable (bucket upper bounds), ms, from /metrics.
    pub service_p50_bound_ms: Option<f64>,
    pub service_p99_bound_ms: Option<f64>,
}

/// Send → ack latency of one-event requests (phases 6 and 7), over every request.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AckLatency {
    /// Concurrent producers (streams), each with one request in flight.
    pub producers: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl PhaseResult {
    /// A database-only phase (1, 1c, 1b): the bench writes, no service.
    pub fn is_ceiling(&self) -> bool {
        matches!(self.kind, Kind::Ceiling | Kind::CeilingKeyOrder)
    }
}

impl Latency {
    /// p99 to the write's start plus the write's p99: a bound on produce → stored p99.
    pub fn stored_p99_bound_ms(&self) -> f64 {
        self.p99_ms + self.write_p99_bound_ms.unwrap_or(0.0)
    }
}

/// One performance target.
#[derive(Clone, Debug, Serialize)]
pub struct Target {
    pub target: String,
    pub value: f64,
    pub limit: f64,
    /// true: value ≤ limit is met; false: value ≥ limit is met.
    pub at_most: bool,
    pub met: bool,
}

/// The whole run.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub date: String,
    pub machine: String,
    pub load_average_at_start: String,
    pub settings: serde_json::Value,
    pub pre_produce_seconds: f64,
    /// The bench's own CPU seconds per document written in phase 1.
    pub bench_cpu_s_per_doc: f64,
    pub phases: Vec<PhaseResult>,
    /// Phase 9: the Python peers on phase 2's topic.
    pub peers: Vec<PeerResult>,
    /// Phases 10 and 11: the JSON rivals, their faults.
    pub rivals: Vec<crate::rivals_phase::RivalResult>,
    pub targets: Vec<Target>,
}

impl Report {
    /// Derives the ratios from `phases[0]` (the ceiling) and checks the targets.
    pub fn new(mut phases: Vec<PhaseResult>, flush_interval_s: f64) -> Self {
        let ceiling = phases[0].events_per_second;
        let bench_per_doc = phases[0].cpu.bench / phases[0].timed_events.max(1) as f64;
        let key_order = phases
            .iter()
            .find(|p| p.kind == Kind::CeilingKeyOrder)
            .map(|p| p.events_per_second);
        for p in phases.iter_mut() {
            if p.kind == Kind::Kafka {
                p.ratio_to_key_order_ceiling = key_order.map(|k| p.events_per_second / k);
            }
            if p.is_ceiling() {
                let per_doc = p.cpu.bench / p.timed_events.max(1) as f64;
                p.cpu_ratio_to_bench = Some(per_doc / bench_per_doc);
            } else {
                let per_event = p.cpu.service / p.timed_events.max(1) as f64;
                p.service_cpu_s_per_million = Some(per_event * 1e6);
                p.cpu_ratio_to_bench = Some(per_event / bench_per_doc);
            }
            if !matches!(p.kind, Kind::Latency | Kind::Trickle | Kind::SyncProducer) {
                p.ratio_to_ceiling = Some(p.events_per_second / ceiling);
            }
        }
        let mut targets = Vec::new();
        let mut add = |target: String, value: Option<f64>, limit: f64, at_most: bool| {
            if let Some(value) = value {
                let met = if at_most {
                    value <= limit
                } else {
                    value >= limit
                };
                targets.push(Target {
                    target,
                    value,
                    limit,
                    at_most,
                    met,
                });
            }
        };
        for p in phases.iter().filter(|p| !p.is_ceiling()) {
            let name = &p.phase;
            let saturation = match p.kind {
                Kind::Kafka => Some(0.8),
                Kind::Grpc => Some(0.85),
                _ => None,
            };
            if let Some(limit) = saturation {
                add(
                    format!("{name}: events/s ≥ {limit} × ceiling"),
                    p.ratio_to_ceiling,
                    limit,
                    false,
                );
                add(
                    format!("{name}: service CPU per event ≤ 3 × bench CPU per doc"),
                    p.cpu_ratio_to_bench,
                    3.0,
                    true,
                );
            }
            if matches!(p.kind, Kind::Kafka | Kind::Grpc | Kind::SmallProducers) {
                add(
                    format!("{name}: peak RSS ≤ 150 MiB"),
                    p.peak_rss_mib,
                    150.0,
                    true,
                );
            }
            add(
                format!("{name}: idle RSS ≤ 30 MiB"),
                p.idle_rss_mib,
                30.0,
                true,
            );
            let ack_p99 = p.ack.as_ref().map(|a| a.p99_ms);
            let stored_p99 = p.latency.as_ref().map(Latency::stored_p99_bound_ms);
            match p.kind {
                Kind::Latency => add(
                    format!(
                        "{name}: p99 produce→stored (p99 to write start + write p99) ≤ FLUSH_INTERVAL + 100 ms"
                    ),
                    stored_p99,
                    flush_interval_s * 1000.0 + 100.0,
                    true,
                ),
                Kind::SyncProducer => {
                    add(format!("{name}: ack p99 ≤ 10 ms"), ack_p99, 10.0, true)
                }
                Kind::SmallProducers => {
                    add(
                        format!("{name}: events/s ≥ 15,000"),
                        Some(p.events_per_second),
                        15_000.0,
                        false,
                    );
                    add(format!("{name}: ack p99 ≤ 25 ms"), ack_p99, 25.0, true);
                }
                Kind::Trickle => add(
                    format!(
                        "{name}: p99 produce→stored (p99 to write start + write p99) ≤ 100 ms, default FLUSH_INTERVAL"
                    ),
                    stored_p99,
                    100.0,
                    true,
                ),
                _ => {}
            }
        }
        let of = |k| phases.iter().find(|p| p.kind == k);
        if let (Some(i), Some(u)) = (of(Kind::Grpc), of(Kind::Upsert)) {
            let per = crate::upsert_phase::write_ms_per_event;
            let ratio = per(u).zip(per(i)).map(|(u, i)| u / i);
            add(
                format!("{}: write time per event ≤ 1.5 × phase 3's", u.phase),
                ratio,
                1.5,
                true,
            );
        }
        Self {
            date: String::new(),
            machine: String::new(),
            load_average_at_start: String::new(),
            settings: serde_json::Value::Null,
            pre_produce_seconds: 0.0,
            bench_cpu_s_per_doc: bench_per_doc,
            phases,
            peers: Vec::new(),
            rivals: Vec::new(),
            targets,
        }
    }

    /// The results table, the CPU-by-process table and the targets, as Markdown.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let opt = |v: Option<f64>, digits: usize| match v {
            Some(v) => format!("{v:.digits$}"),
            None => "–".into(),
        };
        s.push_str("| Phase | Events | Seconds | Events/s | × ceiling | Service CPU s / 1M events | CPU × bench per doc | Peak RSS MiB | Idle RSS MiB | Latency p50 / p99 ms |\n");
        s.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for p in &self.phases {
            let cpu = if p.is_ceiling() {
                let per_doc = p.cpu.bench / p.timed_events.max(1) as f64;
                format!("{:.2} (bench)", per_doc * 1e6)
            } else {
                opt(p.service_cpu_s_per_million, 2)
            };
            let latency = match (&p.latency, &p.ack) {
                (Some(l), _) => format!("{:.0} / {:.0}", l.p50_ms, l.p99_ms),
                (None, Some(a)) => format!("{:.1} / {:.1} (ack)", a.p50_ms, a.p99_ms),
                (None, None) => "–".into(),
            };
            let _ = writeln!(
                s,
                "| {} | {} | {:.2} | {:.0} | {} | {} | {} | {} | {} | {} |",
                p.phase,
                p.events,
                p.seconds,
                p.events_per_second,
                opt(p.ratio_to_ceiling, 2),
                cpu,
                opt(p.cpu_ratio_to_bench, 2),
                opt(p.peak_rss_mib, 1),
                opt(p.idle_rss_mib, 1),
                latency,
            );
        }
        for p in self
            .phases
            .iter()
            .filter(|p| p.ratio_to_key_order_ceiling.is_some())
        {
            let _ = writeln!(
                s,
                "\n{}: {:.2} × phase 1c, the same documents written straight to the database in \
                 the key order the Kafka phase delivers them.",
                p.phase,
                p.ratio_to_key_order_ceiling.unwrap_or_default(),
            );
        }
        s.push_str("\nCPU seconds by process inside each timed window (2 cores = 200%):\n\n");
        s.push_str("| Phase | Wall s | Service | MongoDB server | Kafka broker | Bench | Sum, % of 1 core | Docs per insert_many | ms per insert_many |\n");
        s.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for p in &self.phases {
            let c = &p.cpu;
            let sum = c.service + c.mongodb_server + c.kafka_broker + c.bench;
            let _ = writeln!(
                s,
                "| {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0}% | {} | {} |",
                p.phase,
                p.seconds,
                c.service,
                c.mongodb_server,
                c.kafka_broker,
                c.bench,
                100.0 * sum / p.seconds,
                opt(p.mean_batch_size, 0),
                opt(p.mean_write_ms, 1),
            );
        }
        let of = |k| self.phases.iter().find(|p| p.kind == k);
        for u in [Kind::Upsert, Kind::UpsertStress] {
            if let (Some(i), Some(u)) = (of(Kind::Grpc), of(u)) {
                s.push_str(&crate::upsert_phase::compare(i, u));
            }
        }
        for (p, l) in self
            .phases
            .iter()
            .filter_map(|p| p.latency.as_ref().map(|l| (p, l)))
        {
            let _ = writeln!(
                s,
                "\n{}: {:.0} events/s produced; produce → processed_at p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; \
                 insert_many mean {} ms, p99 ≤ {} ms; inside the service (received → durable) \
                 p50 ≤ {} ms, p99 ≤ {} ms, the rest is producer, broker and consumer fetch.",
                p.phase,
                l.target_rate,
                l.p50_ms,
                l.p99_ms,
                l.max_ms,
                opt(l.write_mean_ms, 1),
                opt(l.write_p99_bound_ms, 0),
                opt(l.service_p50_bound_ms, 0),
                opt(l.service_p99_bound_ms, 0),
            );
        }
        for (p, a) in self
            .phases
            .iter()
            .filter_map(|p| p.ack.as_ref().map(|a| (p, a)))
        {
            let _ = writeln!(
                s,
                "\n{}: {} producers, one event per request, one request in flight each; \
                 send → ack p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; {:.0} events/s.",
                p.phase, a.producers, a.p50_ms, a.p99_ms, a.max_ms, p.events_per_second,
            );
        }
        crate::peers::render(&mut s, &self.phases, &self.peers);
        crate::rivals_report::render(&mut s, &self.phases, &self.peers, &self.rivals);
        s.push_str("\nTargets:\n\n");
        for t in &self.targets {
            let _ = writeln!(
                s,
                "- [{}] {}: {:.2} ({} {})",
                if t.met { "met" } else { "NOT met" },
                t.target,
                t.value,
                if t.at_most { "limit" } else { "needs" },
                t.limit
            );
        }
        s
    }
}

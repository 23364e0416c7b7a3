//! The side-by-side tables of phases 9 to 11 as Markdown: every consumer's throughput,
//! cost, start-up and low-load latency, the faults, and sales-ingest's targets against
//! the peers (throughput ≥ every peer's, CPU per event ≤ 1/3 of the cheapest, peak RSS
//! ≤ 1/4 of the smallest, low-load p99 ≤ the best, every fault 0 lost and 0 extra with
//! recovery by itself).
use std::fmt::Write as _;

use crate::{
    peers::PeerResult,
    report::{Kind, PhaseResult},
    rivals_phase::RivalResult,
};

/// One consumer's figures, whatever phase measured them.
struct Row {
    name: String,
    topic: &'static str,
    events: u64,
    rate: Option<f64>,
    cpu: Option<f64>,
    rss: Option<f64>,
    startup: Option<f64>,
    p50: Option<f64>,
    p99: Option<f64>,
    db_cpu: Option<f64>,
    error: Option<String>,
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("–".into(), |v| format!("{v:.digits$}"))
}

fn rows(phases: &[PhaseResult], peers: &[PeerResult], rivals: &[RivalResult]) -> Vec<Row> {
    let mut out = Vec::new();
    if let Some(k) = phases.iter().find(|p| p.kind == Kind::Kafka) {
        out.push(Row {
            name: "sales-ingest (phase 2)".into(),
            topic: "Protobuf",
            events: k.events,
            rate: Some(k.events_per_second),
            cpu: k.service_cpu_s_per_million,
            rss: k.peak_rss_mib,
            startup: None,
            p50: None,
            p99: None,
            db_cpu: Some(k.cpu.mongodb_server / k.timed_events.max(1) as f64 * 1e6),
            error: None,
        });
    }
    for r in rivals {
        out.push(Row {
            name: r.peer.clone(),
            topic: "JSON",
            events: r.events,
            rate: r.events_per_second,
            cpu: r.cpu_s_per_million,
            rss: r.peak_rss_mib,
            startup: r.startup_s,
            p50: r.trickle_p50_ms,
            p99: r.trickle_p99_ms,
            db_cpu: r
                .events_per_second
                .map(|_| r.cpu.mongodb_server / r.events.max(1) as f64 * 1e6),
            error: r.error.clone(),
        });
    }
    for p in peers {
        out.push(Row {
            name: p.peer.clone(),
            topic: "Protobuf",
            events: p.events,
            rate: p.events_per_second,
            cpu: p.cpu_s_per_million,
            rss: p.peak_rss_mib,
            startup: None,
            p50: None,
            p99: None,
            db_cpu: p
                .events_per_second
                .map(|_| p.cpu.mongodb_server / p.timed_events.max(1) as f64 * 1e6),
            error: p.error.clone(),
        });
    }
    out
}

/// Appends the tables to `s` (nothing when no JSON rival ran).
pub fn render(
    s: &mut String,
    phases: &[PhaseResult],
    peers: &[PeerResult],
    rivals: &[RivalResult],
) {
    if rivals.is_empty() {
        return;
    }
    let ceiling = phases.first().map_or(f64::NAN, |p| p.events_per_second);
    let rows = rows(phases, peers, rivals);
    s.push_str("\nSide by side (phases 2, 9, 10; trickle at each one's defaults):\n\n");
    s.push_str("| Consumer | Topic | Events | Events/s | × ceiling | CPU s / 1M events | Peak RSS MiB | Start-up s | Trickle p50 / p99 ms | MongoDB server CPU s / 1M |\n");
    s.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in &rows {
        if let Some(e) = &r.error {
            let first = e.lines().next().unwrap_or_default();
            let _ = writeln!(
                s,
                "| {} | {} | {} | failed: {first} | | | | | | |",
                r.name, r.topic, r.events
            );
            continue;
        }
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} / {} | {} |",
            r.name,
            r.topic,
            r.events,
            opt(r.rate, 0),
            opt(r.rate.map(|v| v / ceiling), 2),
            opt(r.cpu, 2),
            opt(r.rss, 1),
            opt(r.startup, 1),
            opt(r.p50, 0),
            opt(r.p99, 0),
            opt(r.db_cpu, 1),
        );
    }
    render_faults(s, rivals);
    render_targets(s, &rows, rivals);
}

fn render_faults(s: &mut String, rivals: &[RivalResult]) {
    if rivals.iter().all(|r| r.faults.is_empty()) {
        return;
    }
    s.push_str("\nFaults (phase 11; valid events lost, documents beyond the valid ones, dead-letter messages, recovered by itself):\n\n");
    s.push_str(
        "| Consumer | Fault | Lost | Extra documents | Dead letters | Recovered by itself |\n",
    );
    s.push_str("|---|---|---:|---:|---:|---|\n");
    for r in rivals {
        for f in &r.faults {
            let recovered = match (&f.error, f.recovered, f.seconds_to_complete) {
                (Some(e), _, _) => format!("bench error: {}", e.lines().next().unwrap_or_default()),
                (None, true, Some(t)) => format!("yes ({t:.0} s after the fault)"),
                (None, _, _) => "no".into(),
            };
            let dlq = f.dead_letters.map_or("–".into(), |d| d.to_string());
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {dlq} | {recovered} |",
                r.peer,
                f.fault.label(),
                f.lost,
                f.extra_documents
            );
        }
    }
}

fn render_targets(s: &mut String, rows: &[Row], rivals: &[RivalResult]) {
    let Some(ours) = rows
        .iter()
        .find(|r| r.topic == "JSON" && r.name.starts_with("sales-ingest"))
    else {
        return;
    };
    let others: Vec<&Row> = rows
        .iter()
        .filter(|r| !r.name.starts_with("sales-ingest") && r.error.is_none())
        .collect();
    let best = |f: fn(&Row) -> Option<f64>, max: bool| {
        others
            .iter()
            .filter_map(|r| f(r))
            .reduce(|a, b| if (a > b) == max { a } else { b })
    };
    s.push_str("\nsales-ingest (JSON topic) against the peers:\n\n| Target | Ratio | Met |\n|---|---:|---|\n");
    let mut line = |what: &str, ratio: Option<f64>, limit: f64, at_most: bool| {
        let met = ratio.map(|v| if at_most { v <= limit } else { v >= limit });
        let _ = writeln!(
            s,
            "| {what} | {} | {} |",
            opt(ratio, 2),
            match met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "–",
            }
        );
    };
    let ratio = |o: Option<f64>, b: Option<f64>| o.zip(b).map(|(o, b)| o / b);
    line(
        "events/s ÷ the fastest peer's ≥ 1",
        ratio(ours.rate, best(|r| r.rate, true)),
        1.0,
        false,
    );
    line(
        "CPU per event ÷ the cheapest peer's ≤ 1/3",
        ratio(ours.cpu, best(|r| r.cpu, false)),
        1.0 / 3.0,
        true,
    );
    line(
        "peak RSS ÷ the smallest peer's ≤ 1/4",
        ratio(ours.rss, best(|r| r.rss, false)),
        0.25,
        true,
    );
    line(
        "trickle p99 ÷ the best peer's ≤ 1",
        ratio(ours.p99, best(|r| r.p99, false)),
        1.0,
        true,
    );
    if let Some(r) = rivals.iter().find(|r| r.key == "sales-ingest") {
        if !r.faults.is_empty() {
            let clean = r
                .faults
                .iter()
                .all(|f| f.error.is_none() && f.lost == 0 && f.extra_documents == 0 && f.recovered);
            let _ = writeln!(
                s,
                "| every fault: 0 lost, 0 extra, recovered by itself | – | {} |",
                if clean { "yes" } else { "**no**" }
            );
        }
    }
}

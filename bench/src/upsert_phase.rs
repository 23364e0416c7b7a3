//! The upsert phases: phase 3 (gRPC → MongoDB) run against a service with
//! `WRITE_MODE=upsert`, where one event in `every` is a correction of an id sent earlier
//! (far enough back that its original is usually acked already), so that share of the
//! events replaces a stored document. Two mixes run: a typical one (one correction in
//! 20 events), which the 1.5 × target is checked on, and a stress one (every other event
//! a correction), reported beside it. Each reports events/s and the service's write time
//! per event (mean write call time over mean batch size, from the service's own
//! histograms), to be read against the insert phase's.
use anyhow::Result;

use crate::{
    events,
    grpc_phase::{run_load, Load},
    report::{Kind, PhaseResult},
    Ctx,
};

/// A share of corrections in the upsert phase's events.
#[derive(Clone, Copy, Debug)]
pub struct Mix {
    /// One event in `every` is a correction.
    pub every: u64,
    pub label: &'static str,
    pub kind: Kind,
    pub name: &'static str,
}

/// One correction in 20 events: the mix the write-cost target is checked on.
pub const TYPICAL: Mix = Mix {
    every: 20,
    label: "3u gRPC -> MongoDB, WRITE_MODE=upsert, 5% corrections",
    kind: Kind::Upsert,
    name: "upsert",
};

/// Every other event a correction.
pub const STRESS: Mix = Mix {
    every: 2,
    label: "3v gRPC -> MongoDB, WRITE_MODE=upsert, 50% corrections",
    kind: Kind::UpsertStress,
    name: "upsert-stress",
};

/// The event at position `s` of the run: the last of every `every` positions corrects
/// the id sent `lag` new ids before it (a new id of its own while there is none that
/// far back), with another qty; the others are new ids.
fn event_at(s: u64, lag: u64, every: u64) -> sales_ingest::proto::sales::v1::SalesEvent {
    let new_before = s - s / every;
    if !(s + 1).is_multiple_of(every) {
        events::event("u", new_before)
    } else if new_before > lag {
        let mut e = events::event("u", new_before - 1 - lag);
        e.qty += 1;
        e
    } else {
        events::event("u-extra", s / every)
    }
}

/// Documents a run of `n` events leaves: the new ids and the corrections that had no
/// id that far back.
fn documents(n: u64, lag: u64, every: u64) -> u64 {
    let corrections = n / every;
    n - corrections + corrections.min(lag / (every - 1))
}

/// Runs an upsert phase over `n` events.
pub async fn run(ctx: &Ctx, n: u64, mix: Mix) -> Result<PhaseResult> {
    // Beyond every request that can be in flight at once.
    let t = &ctx.tuning;
    let lag = (t.streams as u64 * t.window as u64 + 1) * t.batch_size;
    let every = mix.every.max(2);
    let load = Load {
        label: mix.label,
        kind: mix.kind,
        name: mix.name,
        database: "bench_upsert",
        extra: &[("WRITE_MODE", "upsert".into())],
        event: &|s| event_at(s, lag, every),
        documents: documents(n, lag, every),
    };
    let out = run_load(ctx, n, &load).await?;
    eprintln!(
        "bench: {}: {} stored, {} updated",
        mix.name, out.stored, out.updated
    );
    Ok(out.result)
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
        "\n{}: {:.0} events/s ({:.2} × the insert phase's {:.0}); service write time \
         per event {} µs vs {} µs inserting ({} ×).\n",
        upsert.phase,
        upsert.events_per_second,
        upsert.events_per_second / insert.events_per_second,
        insert.events_per_second,
        u.map_or("–".into(), |v| format!("{v:.1}")),
        i.map_or("–".into(), |v| format!("{v:.1}")),
        u.zip(i)
            .map_or("–".into(), |(u, i)| format!("{:.2}", u / i)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_other_event_corrects_an_id_sent_lag_ids_earlier() {
        assert_eq!(event_at(0, 3, 2).event_id, "u-0");
        assert_eq!(event_at(1, 3, 2).event_id, "u-extra-0");
        assert_eq!(event_at(6, 3, 2).event_id, "u-3");
        let correction = event_at(7, 3, 2);
        assert_eq!(correction.event_id, "u-0");
        assert_ne!(correction.qty, event_at(0, 3, 2).qty);
    }

    #[test]
    fn the_last_of_every_n_events_is_a_correction() {
        let ids: Vec<String> = (0..12).map(|s| event_at(s, 2, 4).event_id).collect();
        assert_eq!(
            ids,
            ["u-0", "u-1", "u-2", "u-0", "u-3", "u-4", "u-5", "u-3", "u-6", "u-7", "u-8", "u-6"]
        );
    }

    #[test]
    fn the_documents_left_are_the_distinct_ids_sent() {
        for (n, lag, every) in [(1000, 30, 2), (1000, 30, 20), (7, 100, 2), (99, 5, 3)] {
            let distinct: std::collections::HashSet<String> =
                (0..n).map(|s| event_at(s, lag, every).event_id).collect();
            assert_eq!(
                documents(n, lag, every),
                distinct.len() as u64,
                "{n} {lag} {every}"
            );
        }
    }
}

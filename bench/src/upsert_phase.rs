//! The upsert phase: phase 3 (gRPC → MongoDB) run against a service with
//! `WRITE_MODE=upsert`, where every other event is a correction of an id sent earlier
//! (far enough back that its original is usually acked already), so half the events
//! replace a stored document. It reports events/s and the service's write time per
//! event (mean write call time over mean batch size, from the service's own
//! histograms), to be read against the insert phase's.
use anyhow::Result;

use crate::{
    events,
    grpc_phase::{run_load, Load},
    report::{Kind, PhaseResult},
    Ctx,
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
    // Beyond every request that can be in flight at once.
    let t = &ctx.tuning;
    let lag = (t.streams as u64 * t.window as u64 + 1) * t.batch_size;
    let load = Load {
        label: "3u gRPC -> MongoDB, WRITE_MODE=upsert, half corrections",
        kind: Kind::Upsert,
        name: "upsert",
        database: "bench_upsert",
        extra: &[("WRITE_MODE", "upsert".into())],
        event: &|s| event_at(s, lag),
        documents: n.div_ceil(2) + (n / 2).min(lag),
    };
    let out = run_load(ctx, n, &load).await?;
    eprintln!(
        "bench: upsert phase: {} stored, {} updated",
        out.stored, out.updated
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

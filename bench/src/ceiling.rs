//! Phase 1, the database ceiling: the run's documents, built beforehand with the
//! service's own `to_document`, written by the same driver and client settings as the
//! service (`sink::mongo::client`), with the same `insert_many(...).ordered(false)`,
//! batch size and number of batches in flight, into a collection with the service's
//! indexes. No service involved: this is what MongoDB takes from this machine.
use std::time::Instant;

use anyhow::{bail, Result};
use futures::{stream, StreamExt};
use mongodb::bson::{doc, DateTime, RawDocumentBuf};
use sales_ingest::{sink::mongo, validate::validate};

use crate::{
    events,
    procfs::Cpu,
    report::{Kind, PhaseResult},
    Ctx,
};

/// Runs phase 1 against database `db_name`, dropped afterwards.
pub async fn run(ctx: &Ctx, db_name: &str, n: u64, label: &str) -> Result<PhaseResult> {
    let (tuning, pids) = (&ctx.tuning, &ctx.pids);
    let client = mongo::client(&ctx.mongodb_url).await?;
    let db = client.database(db_name);
    db.run_command(doc! { "ping": 1 }).await?;
    mongo::ensure_indexes(&db, "raw_sales").await?;
    let coll = db.collection::<RawDocumentBuf>("raw_sales");

    let now = DateTime::now();
    let mut batches: Vec<Vec<RawDocumentBuf>> = Vec::new();
    for i in 0..n {
        if i % tuning.batch_size == 0 {
            batches.push(Vec::with_capacity(tuning.batch_size as usize));
        }
        let valid = validate(events::event("c", i))
            .map_err(|r| anyhow::anyhow!("generated event {i} is invalid: {r:?}"))?;
        let d = mongo::to_document(&valid.event_id, &valid, "kafka", now);
        batches.last_mut().expect("a batch").push(d);
    }

    let cpu0 = Cpu::now(pids)?;
    let started = Instant::now();
    let results: Vec<_> = stream::iter(batches)
        .map(|batch| {
            let coll = coll.clone();
            async move {
                let t = Instant::now();
                let r = coll.insert_many(&batch).ordered(false).await.map(|_| ());
                r.map(|()| (batch.len(), t.elapsed().as_secs_f64()))
            }
        })
        .buffer_unordered(tuning.write_concurrency as usize)
        .collect()
        .await;
    let seconds = started.elapsed().as_secs_f64();
    let cpu = Cpu::now(pids)?.since(&cpu0);

    let writes = results
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("ceiling insert_many failed: {e}"))?;
    let mean_batch_size = writes.iter().map(|w| w.0).sum::<usize>() as f64 / writes.len() as f64;
    let mean_write_ms = 1000.0 * writes.iter().map(|w| w.1).sum::<f64>() / writes.len() as f64;
    let stored = coll.count_documents(doc! {}).await?;
    if stored != n {
        bail!("ceiling: {stored} documents stored, {n} written");
    }
    db.drop().await?;
    Ok(PhaseResult {
        phase: label.into(),
        kind: Kind::Ceiling,
        events: n,
        seconds,
        events_per_second: n as f64 / seconds,
        timed_events: n,
        cpu,
        mean_batch_size: Some(mean_batch_size),
        mean_write_ms: Some(mean_write_ms),
        ..Default::default()
    })
}

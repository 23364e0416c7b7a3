//! Phase 1, the database ceiling: the run's documents, built beforehand with the
//! service's own `to_document`, written by the same driver and client settings as the
//! service (`sink::mongo::client`), with the same `insert_many(...).ordered(false)`,
//! batch size and number of batches in flight, into a collection with the service's
//! indexes. No service involved: this is what MongoDB takes from this machine.
//!
//! [`Order::Sequential`] writes the ids in ascending order, batch after batch: the most
//! MongoDB takes (phase 1, the ceiling the targets are measured against).
//! [`Order::KafkaKeys`] writes the same documents in the key order the Kafka phase
//! delivers them (phase 1c, a diagnostic): each id goes to the partition librdkafka's
//! default partitioner picks for it (CRC-32 of the key modulo the partition count), and
//! the partitions are read in turn, one batch from each. The storage engine pays for
//! keys that land all over its B-tree instead of at its right edge; 1c shows how much.
use std::time::Instant;

use anyhow::{bail, Result};
use futures::{stream, StreamExt};
use mongodb::bson::{doc, DateTime, RawDocumentBuf};
use sales_ingest::{sink::mongo, validate::validate};

use crate::{
    cpu::Cpu,
    events,
    report::{Kind, PhaseResult},
    Ctx,
};

/// The order in which the documents are written.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Order {
    /// Ids ascending.
    Sequential,
    /// As consumed from a topic of this many partitions keyed by the id.
    KafkaKeys { partitions: u32 },
}

/// CRC-32 (IEEE), as librdkafka's `consistent_random` partitioner hashes keys.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

/// The event numbers `0..n` in `order`, cut into runs of `batch` per partition.
fn numbers(order: Order, n: u64, batch: u64) -> Vec<u64> {
    let Order::KafkaKeys { partitions } = order else {
        return (0..n).collect();
    };
    let mut parts: Vec<Vec<u64>> = vec![Vec::new(); partitions.max(1) as usize];
    for i in 0..n {
        let p = crc32(events::id("c", i).as_bytes()) % partitions.max(1);
        parts[p as usize].push(i);
    }
    let mut chunks: Vec<_> = parts
        .iter()
        .map(|p| p.chunks(batch.max(1) as usize))
        .collect();
    let mut out = Vec::with_capacity(n as usize);
    while out.len() < n as usize {
        for c in chunks.iter_mut() {
            if let Some(run) = c.next() {
                out.extend_from_slice(run);
            }
        }
    }
    out
}

/// Runs a ceiling phase against database `db_name`, dropped afterwards.
pub async fn run(
    ctx: &Ctx,
    db_name: &str,
    n: u64,
    order: Order,
    label: &str,
) -> Result<PhaseResult> {
    let (tuning, pids) = (&ctx.tuning, &ctx.pids);
    let client = mongo::client(&ctx.backends.mongodb).await?;
    let db = client.database(db_name);
    db.run_command(doc! { "ping": 1 }).await?;
    mongo::ensure_indexes(&db, "raw_sales").await?;
    let coll = db.collection::<RawDocumentBuf>("raw_sales");

    let now = DateTime::now();
    let mut batches: Vec<Vec<RawDocumentBuf>> = Vec::new();
    for (k, i) in numbers(order, n, tuning.batch_size).into_iter().enumerate() {
        if (k as u64).is_multiple_of(tuning.batch_size) {
            batches.push(Vec::with_capacity(tuning.batch_size as usize));
        }
        let valid = validate(events::event("c", i))
            .map_err(|r| anyhow::anyhow!("generated event {i} is invalid: {r:?}"))?;
        let d = mongo::to_document(valid.event_id(), &valid, "kafka", now);
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
        kind: match order {
            Order::Sequential => Kind::Ceiling,
            Order::KafkaKeys { .. } => Kind::CeilingKeyOrder,
        },
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_is_the_ieee_one() {
        // The standard check value of CRC-32/ISO-HDLC.
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn key_order_is_a_permutation_in_partition_runs() {
        let n = 10_000;
        let seq = numbers(Order::Sequential, n, 100);
        assert_eq!(seq, (0..n).collect::<Vec<_>>());
        let keyed = numbers(Order::KafkaKeys { partitions: 6 }, n, 100);
        let mut sorted = keyed.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, seq);
        assert_ne!(keyed, seq);
        // The first run is all from one partition, ascending.
        let p = |i: u64| crc32(events::id("c", i).as_bytes()) % 6;
        assert!(keyed[..100].iter().all(|&i| p(i) == p(keyed[0])));
        assert!(keyed[..100].windows(2).all(|w| w[0] < w[1]));
    }
}

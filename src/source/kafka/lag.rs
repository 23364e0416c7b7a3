//! The source's lag figures: committed offset, high watermark and lag per assigned
//! partition, and the time lag of the newest consumed message, published to the stats
//! and the metrics; while fetching is paused the high watermarks are read from the
//! broker, since librdkafka's statistics keep the last fetch's.
use std::{sync::atomic::Ordering, time::Duration};

use rdkafka::consumer::Consumer;
use tracing::debug;

use super::{KafkaSource, NO_TIMESTAMP};
use crate::proto::ingest::v1::PartitionLag;

impl KafkaSource {
    /// While fetching is paused, reads the assigned partitions' high watermarks from
    /// the broker on a blocking thread (one read at a time, 1 s per partition at most),
    /// so the lag figures follow what arrives meanwhile.
    pub(super) fn refresh_watermarks(&self) {
        let ctx = self.ctx();
        if !ctx.fetch_paused.load(Ordering::SeqCst) || ctx.refreshing.swap(true, Ordering::SeqCst) {
            return;
        }
        let parts = self.offsets.tracker().assigned();
        let consumer = self.consumer.clone();
        tokio::task::spawn_blocking(move || {
            let ctx = consumer.context();
            for p in parts {
                match consumer.fetch_watermarks(&ctx.topic, p, Duration::from_secs(1)) {
                    Ok((_, hi)) => {
                        let mut w = ctx.watermarks.lock().expect("watermarks lock");
                        let e = w.entry(p).or_insert((-1, -1));
                        e.0 = e.0.max(hi);
                    }
                    Err(e) => {
                        debug!(error = %e, partition = p, "reading the high watermark failed")
                    }
                }
            }
            ctx.refreshing.store(false, Ordering::SeqCst);
        });
    }

    /// Publishes committed offset, high watermark and lag per assigned partition. The
    /// time lag is the newest consumed message's age when it was consumed; while
    /// messages wait and none was consumed since the last publication (paused, held by
    /// backpressure, stalled) it is that message's age now, so it grows with the clock;
    /// with nothing waiting it is 0.
    pub(super) fn publish_lag(&self) {
        let parts: Vec<PartitionLag> = {
            let t = self.offsets.tracker();
            let w = self.ctx().watermarks.lock().expect("watermarks lock");
            t.assigned()
                .into_iter()
                .map(|p| {
                    let (hi, seen_committed) = w.get(&p).copied().unwrap_or((-1, -1));
                    let committed = t.committed(p).unwrap_or(seen_committed);
                    let lag = if hi >= 0 {
                        (hi - committed.max(0)).max(0)
                    } else {
                        0
                    };
                    PartitionLag {
                        partition: p,
                        committed_offset: committed,
                        high_watermark: hi,
                        lag,
                    }
                })
                .collect()
        };
        let waiting: i64 = parts.iter().map(|p| p.lag).sum();
        let consumed = self.consumed_since_publish.swap(false, Ordering::Relaxed);
        let newest = self.newest_ms.load(Ordering::Relaxed);
        if waiting == 0 {
            self.stats.metrics().kafka_lag_ms(0);
        } else if !consumed && newest != NO_TIMESTAMP {
            let now_ms = chrono::Utc::now().timestamp_millis();
            self.stats.metrics().kafka_lag_ms(now_ms - newest);
        }
        self.stats.set_partitions(parts);
    }
}

//! Ack latencies (send time to ack time, one sample per request) and their
//! nearest-rank percentiles.
use std::time::Duration;

use serde::Serialize;

/// Collected samples.
#[derive(Clone, Debug, Default)]
pub struct Latencies {
    samples: Vec<Duration>,
}

/// Percentiles in milliseconds (absent without samples).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    pub samples: usize,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl Latencies {
    /// Adds one sample.
    pub fn record(&mut self, d: Duration) {
        self.samples.push(d);
    }

    /// Adds another collection's samples.
    pub fn merge(&mut self, other: Latencies) {
        self.samples.extend(other.samples);
    }

    /// The samples in ascending order.
    fn sorted(&self) -> Vec<Duration> {
        let mut sorted = self.samples.clone();
        sorted.sort_unstable();
        sorted
    }

    /// p50, p99 and the maximum.
    pub fn summary(&self) -> LatencySummary {
        let sorted = self.sorted();
        LatencySummary {
            samples: sorted.len(),
            p50_ms: nearest_rank(&sorted, 50.0).map(millis),
            p99_ms: nearest_rank(&sorted, 99.0).map(millis),
            max_ms: sorted.last().copied().map(millis),
        }
    }
}

/// The nearest-rank `p`th percentile (0 < p ≤ 100) of `sorted`: the smallest sample
/// with at least `p` percent of the samples at or below it.
fn nearest_rank(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn percentile(l: &Latencies, p: f64) -> Option<Duration> {
        nearest_rank(&l.sorted(), p)
    }

    fn of(values: impl IntoIterator<Item = u64>) -> Latencies {
        let mut l = Latencies::default();
        for v in values {
            l.record(ms(v));
        }
        l
    }

    #[test]
    fn nearest_rank_percentiles_of_1_to_100() {
        // Recorded out of order on purpose.
        let l = of((1..=100).rev());
        assert_eq!(percentile(&l, 50.0), Some(ms(50)));
        assert_eq!(percentile(&l, 99.0), Some(ms(99)));
        assert_eq!(percentile(&l, 100.0), Some(ms(100)));
        assert_eq!(percentile(&l, 0.1), Some(ms(1)));
    }

    #[test]
    fn small_sample_sets() {
        let l = of([7]);
        assert_eq!(percentile(&l, 50.0), Some(ms(7)));
        assert_eq!(percentile(&l, 99.0), Some(ms(7)));
        let l = of([10, 30, 20]);
        assert_eq!(percentile(&l, 50.0), Some(ms(20)));
        assert_eq!(percentile(&l, 99.0), Some(ms(30)));
        assert_eq!(percentile(&Latencies::default(), 50.0), None);
    }

    #[test]
    fn summary_in_milliseconds_and_merge() {
        let mut a = of([1, 2]);
        a.merge(of([3, 4]));
        let s = a.summary();
        assert_eq!(s.samples, 4);
        assert_eq!(s.p50_ms, Some(2.0));
        assert_eq!(s.p99_ms, Some(4.0));
        assert_eq!(s.max_ms, Some(4.0));
        assert_eq!(Latencies::default().summary(), LatencySummary::default());
    }
}

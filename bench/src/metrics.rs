//! Figures read from the service's Prometheus text (`/metrics`, parsed by the
//! `prometheus-parse` crate), and percentiles of measured samples.
use anyhow::{Context, Result};
use prometheus_parse::{Scrape, Value};
use test_support::service::Service;

/// A Prometheus histogram summed over its label sets.
#[derive(Debug, Default, PartialEq)]
pub struct Histogram {
    /// (upper bound, cumulative count), ascending; +Inf last.
    pub buckets: Vec<(f64, u64)>,
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    /// Histogram `name` from Prometheus text.
    pub fn parse(text: &str, name: &str) -> Self {
        let lines = text.lines().map(|l| Ok(l.to_string()));
        let scrape = Scrape::parse(lines).expect("reading lines from a string cannot fail");
        Self::from_scrape(&scrape, name)
    }

    /// Histogram `name` from a parsed exposition.
    pub fn from_scrape(scrape: &Scrape, name: &str) -> Self {
        let mut h = Histogram::default();
        let (sum, count) = (format!("{name}_sum"), format!("{name}_count"));
        for sample in &scrape.samples {
            match &sample.value {
                Value::Histogram(buckets) if sample.metric == name => {
                    for b in buckets {
                        let n = b.count as u64;
                        match h.buckets.iter_mut().find(|(le, _)| *le == b.less_than) {
                            Some((_, c)) => *c += n,
                            None => h.buckets.push((b.less_than, n)),
                        }
                    }
                }
                Value::Untyped(v) | Value::Counter(v) | Value::Gauge(v) => {
                    if sample.metric == sum {
                        h.sum += v;
                    } else if sample.metric == count {
                        h.count += *v as u64;
                    }
                }
                _ => {}
            }
        }
        h.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        h
    }

    /// The smallest bucket bound at or above quantile `q`: an upper bound of it.
    pub fn quantile_bound(&self, q: f64) -> Option<f64> {
        let total = self.buckets.last()?.1;
        let want = (q * total as f64).ceil() as u64;
        self.buckets
            .iter()
            .find(|(_, c)| *c >= want.max(1))
            .map(|(le, _)| *le)
    }

    /// The mean observation.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum / self.count as f64)
    }
}

/// GET /metrics of `svc`, saved next to its log; its mean batch size and mean
/// insert_many time (ms) from it.
pub async fn batch_figures(svc: &Service) -> Result<(Option<f64>, Option<f64>)> {
    let text = svc.metrics().await?;
    let path = format!("{}.metrics.txt", svc.log().display());
    std::fs::write(&path, &text).with_context(|| format!("write {path}"))?;
    let batches = Histogram::parse(&text, "mongodb_batch_size");
    let writes = Histogram::parse(&text, "mongodb_write_duration_seconds");
    Ok((batches.mean(), writes.mean().map(|s| s * 1000.0)))
}

/// Nearest-rank percentile `q` (0..=1) of ascending `sorted`.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# HELP w insert_many latency
# TYPE w histogram
w_bucket{status=\"success\",le=\"0.001\"} 1
w_bucket{status=\"success\",le=\"0.002\"} 90
w_bucket{status=\"success\",le=\"0.004\"} 100
w_bucket{status=\"success\",le=\"+Inf\"} 100
w_sum{status=\"success\"} 0.2
w_count{status=\"success\"} 100
w_bucket{status=\"partial\",le=\"0.001\"} 0
w_bucket{status=\"partial\",le=\"0.002\"} 0
w_bucket{status=\"partial\",le=\"0.004\"} 0
w_bucket{status=\"partial\",le=\"+Inf\"} 0
w_sum{status=\"partial\"} 0
w_count{status=\"partial\"} 0
wx_count 7
";

    #[test]
    fn histograms_are_summed_over_labels_and_bounded() {
        let h = Histogram::parse(TEXT, "w");
        assert_eq!(h.count, 100);
        assert_eq!(h.buckets.len(), 4);
        assert_eq!(h.quantile_bound(0.5), Some(0.002));
        assert_eq!(h.quantile_bound(0.99), Some(0.004));
        assert!((h.mean().unwrap() - 0.002).abs() < 1e-12);
        assert_eq!(Histogram::parse("", "w").quantile_bound(0.5), None);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        assert_eq!(percentile(&[3.0], 0.5), 3.0);
        assert!(percentile(&[], 0.5).is_nan());
    }
}

//! Reading a histogram out of the service's Prometheus text (`/metrics`) and
//! percentiles of measured samples.

/// A Prometheus histogram summed over its label sets.
#[derive(Debug, Default, PartialEq)]
pub struct Histogram {
    /// (upper bound, cumulative count), ascending; +Inf last.
    pub buckets: Vec<(f64, u64)>,
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    /// Parses histogram `name` from Prometheus text.
    pub fn parse(text: &str, name: &str) -> Self {
        let mut h = Histogram::default();
        let bucket = format!("{name}_bucket{{");
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            if series.starts_with(&bucket) {
                let le = series
                    .split("le=\"")
                    .nth(1)
                    .and_then(|r| r.split('"').next())
                    .map(|v| v.replace("+Inf", "inf").parse::<f64>());
                if let (Some(Ok(le)), Ok(v)) = (le, value.parse::<u64>()) {
                    match h.buckets.iter_mut().find(|(b, _)| *b == le) {
                        Some((_, c)) => *c += v,
                        None => h.buckets.push((le, v)),
                    }
                }
            } else if series == format!("{name}_sum")
                || series.starts_with(&format!("{name}_sum{{"))
            {
                h.sum += value.parse::<f64>().unwrap_or(0.0);
            } else if series == format!("{name}_count")
                || series.starts_with(&format!("{name}_count{{"))
            {
                h.count += value.parse::<u64>().unwrap_or(0);
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

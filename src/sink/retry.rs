//! Retry pacing for the sinks: capped exponential backoff with jitter.
use std::time::Duration;

use rand::Rng;

/// Backoff before retry `attempt` (1-based): 100 ms doubling to a 5 s cap, ±50% jitter.
pub fn backoff(attempt: u32) -> Duration {
    let base = 100u64
        .saturating_mul(1 << attempt.saturating_sub(1).min(6))
        .min(5_000);
    let jitter = rand::rng().random_range(0.5..1.5);
    Duration::from_millis((base as f64 * jitter) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        for _ in 0..50 {
            let first = backoff(1);
            assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(150));
            assert!(backoff(30) <= Duration::from_millis(7_500));
            assert!(backoff(30) >= Duration::from_millis(2_500));
        }
    }
}

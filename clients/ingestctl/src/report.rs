//! The summaries `stream` and `produce` print: as aligned text, or as JSON for scripts.
use std::collections::BTreeMap;

use serde::Serialize;

use crate::{error::CtlError, latency::LatencySummary, table::key_values};

/// What a `stream` run did and what the server answered.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct StreamSummary {
    pub run_id: String,
    pub streams: u32,
    pub requests: u64,
    pub events_sent: u64,
    /// Events generated invalid on purpose.
    pub events_invalid_generated: u64,
    pub acked_events: u64,
    pub accepted: u64,
    pub duplicates: u64,
    /// Events that replaced a stored document (WRITE_MODE=upsert).
    pub updated: u64,
    pub rejected: u64,
    pub rejected_by_reason: BTreeMap<String, u64>,
    pub elapsed_seconds: f64,
    pub events_per_second: f64,
    /// Per request: send time to ack time.
    pub ack_latency: LatencySummary,
}

/// What a `produce` run did.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ProduceSummary {
    pub run_id: String,
    pub topic: String,
    pub messages: u64,
    pub delivered: u64,
    pub failed: u64,
    /// Messages generated invalid on purpose (delivered like the rest).
    pub invalid_generated: u64,
    pub first_error: Option<String>,
    pub elapsed_seconds: f64,
    pub messages_per_second: f64,
}

/// Events per second, 0 for an instant run.
pub fn rate(n: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        n as f64 / seconds
    } else {
        0.0
    }
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.1} ms"))
}

impl StreamSummary {
    /// The summary as text.
    pub fn render(&self) -> String {
        let mut pairs = vec![
            ("run id", self.run_id.clone()),
            ("streams", self.streams.to_string()),
            ("requests", self.requests.to_string()),
            ("events sent", self.events_sent.to_string()),
            (
                "invalid generated",
                self.events_invalid_generated.to_string(),
            ),
            ("acked events", self.acked_events.to_string()),
            ("accepted", self.accepted.to_string()),
            ("duplicates", self.duplicates.to_string()),
            ("updated", self.updated.to_string()),
            ("rejected", self.rejected.to_string()),
        ];
        let reasons: Vec<(String, String)> = self
            .rejected_by_reason
            .iter()
            .map(|(r, n)| (format!("  {r}"), n.to_string()))
            .collect();
        pairs.extend(reasons.iter().map(|(r, n)| (r.as_str(), n.clone())));
        pairs.extend([
            ("elapsed", format!("{:.2} s", self.elapsed_seconds)),
            ("events/s", format!("{:.0}", self.events_per_second)),
            ("ack latency p50", ms(self.ack_latency.p50_ms)),
            ("ack latency p99", ms(self.ack_latency.p99_ms)),
            ("ack latency max", ms(self.ack_latency.max_ms)),
        ]);
        key_values(&pairs)
    }
}

impl ProduceSummary {
    /// The summary as text.
    pub fn render(&self) -> String {
        let mut pairs = vec![
            ("run id", self.run_id.clone()),
            ("topic", self.topic.clone()),
            ("messages", self.messages.to_string()),
            ("delivered", self.delivered.to_string()),
            ("failed", self.failed.to_string()),
            ("invalid generated", self.invalid_generated.to_string()),
            ("elapsed", format!("{:.2} s", self.elapsed_seconds)),
            ("messages/s", format!("{:.0}", self.messages_per_second)),
        ];
        if let Some(e) = &self.first_error {
            pairs.push(("first error", e.clone()));
        }
        key_values(&pairs)
    }

    /// An error when any message was not delivered.
    pub fn check(&self) -> Result<(), CtlError> {
        if self.failed == 0 {
            return Ok(());
        }
        Err(CtlError::Kafka(format!(
            "{} of {} messages were not delivered to {}: {}",
            self.failed,
            self.messages,
            self.topic,
            self.first_error.as_deref().unwrap_or("unknown error")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_summary_lists_reasons_under_rejected() {
        let s = StreamSummary {
            requests: 10,
            accepted: 1900,
            rejected: 100,
            rejected_by_reason: [("invalid_qty".to_string(), 100)].into_iter().collect(),
            ack_latency: LatencySummary {
                samples: 10,
                p50_ms: Some(12.345),
                p99_ms: Some(40.0),
                max_ms: Some(41.0),
            },
            ..Default::default()
        };
        let text = s.render();
        assert!(text.contains("accepted           1900\n"), "{text}");
        assert!(
            text.contains("rejected           100\n  invalid_qty      100\n"),
            "{text}"
        );
        assert!(text.contains("ack latency p50    12.3 ms\n"), "{text}");
    }

    #[test]
    fn produce_check_fails_on_undelivered_messages() {
        let mut s = ProduceSummary {
            topic: "t".into(),
            messages: 5,
            delivered: 5,
            ..Default::default()
        };
        assert!(s.check().is_ok());
        s.delivered = 3;
        s.failed = 2;
        s.first_error = Some("Message timed out".into());
        let e = s.check().unwrap_err().to_string();
        assert_eq!(
            e,
            "kafka: 2 of 5 messages were not delivered to t: Message timed out"
        );
    }

    #[test]
    fn rate_of_an_instant_run_is_zero() {
        assert_eq!(rate(10, 0.0), 0.0);
        assert_eq!(rate(10, 2.0), 5.0);
    }
}

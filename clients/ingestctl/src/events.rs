//! Generated `SalesEvent`s: event `i` of a run is a pure function of the run id, the
//! invalid share, the start time and `i`, so a run can be replayed exactly. Invalid
//! events are spread evenly (event `i` is invalid when the running count
//! `⌊(i+1)·share⌋` steps up), so `count` events hold exactly `⌊count·share⌋` invalid
//! ones, and each is broken in one of four ways the server rejects.
use std::{fmt, str::FromStr};

use chrono::{DateTime, SecondsFormat, Utc};
use sales_ingest::proto::sales::v1::SalesEvent;

/// Parts per million in 100 %.
const MILLION: u64 = 1_000_000;

/// The share of invalid events, parsed from a percentage ("1", "1.5", "0.25").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InvalidShare {
    per_million: u64,
}

impl InvalidShare {
    /// Invalid events among the first `count`.
    pub fn invalid_among(self, count: u64) -> u64 {
        ((count as u128 * self.per_million as u128) / MILLION as u128) as u64
    }

    /// Whether event `i` is one of the invalid ones.
    pub fn is_invalid(self, i: u64) -> bool {
        self.invalid_among(i + 1) > self.invalid_among(i)
    }
}

impl FromStr for InvalidShare {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let percent: f64 = s
            .trim()
            .trim_end_matches('%')
            .parse()
            .map_err(|_| format!("{s:?} is not a percentage"))?;
        if !(0.0..=100.0).contains(&percent) {
            return Err(format!("{s:?} is not between 0 and 100"));
        }
        Ok(Self {
            per_million: (percent * 10_000.0).round() as u64,
        })
    }
}

impl fmt::Display for InvalidShare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", self.per_million as f64 / 10_000.0)
    }
}

/// How an invalid event is broken, and the reason code the server answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flaw {
    ZeroQty,
    EmptySku,
    BadTs,
    NegativePrice,
}

impl Flaw {
    const ALL: [Flaw; 4] = [
        Flaw::ZeroQty,
        Flaw::EmptySku,
        Flaw::BadTs,
        Flaw::NegativePrice,
    ];

    /// The server's reason code for this flaw.
    #[cfg(test)]
    pub fn reason(self) -> &'static str {
        match self {
            Flaw::ZeroQty => "invalid_qty",
            Flaw::EmptySku => "missing_sku",
            Flaw::BadTs => "invalid_ts",
            Flaw::NegativePrice => "invalid_price",
        }
    }

    fn apply(self, e: &mut SalesEvent) {
        match self {
            Flaw::ZeroQty => e.qty = 0,
            Flaw::EmptySku => e.sku.clear(),
            Flaw::BadTs => e.ts = "25/11/2026 10:00".into(),
            Flaw::NegativePrice => e.price = -1.0,
        }
    }
}

/// Makes the events of one run.
#[derive(Clone, Debug)]
pub struct Generator {
    run_id: String,
    invalid: InvalidShare,
    start: DateTime<Utc>,
}

/// A run id unique enough for one machine: `ctl-<UTC time>-<pid>`.
pub fn default_run_id() -> String {
    format!(
        "ctl-{}-{}",
        Utc::now().format("%Y%m%dT%H%M%S%.3f"),
        std::process::id()
    )
}

impl Generator {
    /// A generator whose timestamps count milliseconds up from `start`.
    pub fn new(run_id: String, invalid: InvalidShare, start: DateTime<Utc>) -> Self {
        Self {
            run_id,
            invalid,
            start,
        }
    }

    /// The prefix of this run's event ids.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Invalid events among the first `count`.
    pub fn invalid_among(&self, count: u64) -> u64 {
        self.invalid.invalid_among(count)
    }

    /// The flaw of event `i`, if it is one of the invalid ones.
    pub fn flaw(&self, i: u64) -> Option<Flaw> {
        self.invalid
            .is_invalid(i)
            .then(|| Flaw::ALL[(self.invalid.invalid_among(i) % 4) as usize])
    }

    /// Event `i` of the run.
    pub fn event(&self, i: u64) -> SalesEvent {
        let ts = self.start + chrono::Duration::milliseconds((i % 86_400_000) as i64);
        let mut e = SalesEvent {
            sku: format!("SKU-{:05}", i % 10_000),
            qty: (i % 10 + 1) as i32,
            price: (99 + (i * 37) % 100_000) as f64 / 100.0,
            ts: ts.to_rfc3339_opts(SecondsFormat::Millis, true),
            event_id: format!("{}-{i}", self.run_id),
        };
        if let Some(flaw) = self.flaw(i) {
            flaw.apply(&mut e);
        }
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sales_ingest::validate::validate;

    fn share(s: &str) -> InvalidShare {
        s.parse().unwrap()
    }

    fn generator(invalid: &str) -> Generator {
        let start = DateTime::parse_from_rfc3339("2026-11-25T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        Generator::new("run".into(), share(invalid), start)
    }

    #[test]
    fn percentages_parse_to_exact_counts() {
        assert_eq!(share("5").invalid_among(2000), 100);
        assert_eq!(share("1.5").invalid_among(1000), 15);
        assert_eq!(share("1.5%").invalid_among(1000), 15);
        assert_eq!(share("0").invalid_among(1_000_000), 0);
        assert_eq!(share("100").invalid_among(7), 7);
        assert_eq!(share("0.25").invalid_among(400), 1);
        assert_eq!(share("1.5").to_string(), "1.5%");
        for bad in ["-1", "101", "x", "NaN"] {
            assert!(bad.parse::<InvalidShare>().is_err(), "{bad}");
        }
    }

    #[test]
    fn invalid_events_are_spread_evenly_and_counted_exactly() {
        let g = generator("5");
        let flagged: Vec<u64> = (0..2000).filter(|&i| g.flaw(i).is_some()).collect();
        assert_eq!(flagged.len(), 100);
        assert_eq!(flagged[..3], [19, 39, 59]);
        let in_first_half = flagged.iter().filter(|&&i| i < 1000).count();
        assert_eq!(in_first_half, 50);
    }

    #[test]
    fn valid_events_pass_the_servers_validator() {
        let g = generator("0");
        for i in [0, 1, 9_999, 86_400_001, u32::MAX as u64] {
            let e = g.event(i);
            assert_eq!(e.event_id, format!("run-{i}"));
            validate(e).unwrap_or_else(|r| panic!("event {i} rejected: {r:?}"));
        }
    }

    #[test]
    fn invalid_events_get_the_reason_of_their_flaw_in_rotation() {
        let g = generator("50");
        let mut reasons = Vec::new();
        for i in 0..8 {
            let e = g.event(i);
            match (g.flaw(i), validate(e)) {
                (None, Ok(_)) => {}
                (Some(flaw), Err(r)) => {
                    assert_eq!(r.reason.code(), flaw.reason(), "event {i}");
                    reasons.push(flaw.reason());
                }
                (flaw, result) => panic!("event {i}: flaw {flaw:?} but {result:?}"),
            }
        }
        assert_eq!(
            reasons,
            ["invalid_qty", "missing_sku", "invalid_ts", "invalid_price"]
        );
    }

    #[test]
    fn events_are_a_function_of_the_index() {
        let g = generator("10");
        assert_eq!(g.event(42), g.event(42));
        assert_ne!(g.event(42).event_id, g.event(43).event_id);
    }
}

//! A checked RedriveRequest: which dead-letter stores to read, which reason codes and
//! which time range to take, whether to write, and how many dead letters to examine.
use strum::VariantArray;
use tonic::Status;

use crate::{
    event::WRITE_FAILED,
    proto::ingest::v1::{DeadLetterSource, RedriveRequest},
    source::seek::parse_rfc3339,
    validate::Reason,
};

/// What a re-drive does.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Read the dead-letter collection.
    pub mongodb: bool,
    /// Read the dead-letter topic.
    pub kafka: bool,
    /// Reason codes to take; empty: every reason.
    pub reasons: Vec<String>,
    /// Dead-lettered at or after, epoch milliseconds.
    pub since: Option<i64>,
    /// Dead-lettered before, epoch milliseconds.
    pub until: Option<i64>,
    pub dry_run: bool,
    /// At most this many dead letters examined.
    pub limit: Option<u64>,
}

impl Plan {
    /// Whether a dead letter with this reason and time is in the plan's range.
    pub fn takes(&self, reason: &str, at_ms: Option<i64>) -> bool {
        let reason_ok = self.reasons.is_empty() || self.reasons.iter().any(|r| r == reason);
        let since_ok = self.since.is_none_or(|s| at_ms.is_some_and(|t| t >= s));
        let until_ok = self.until.is_none_or(|u| at_ms.is_some_and(|t| t < u));
        reason_ok && since_ok && until_ok
    }
}

/// Every reason code a dead letter can carry.
pub fn reason_codes() -> Vec<&'static str> {
    let mut codes: Vec<&'static str> = Reason::VARIANTS.iter().map(|r| r.code()).collect();
    codes.push(WRITE_FAILED);
    codes
}

/// Checks a request; `kafka` says whether the dead-letter topic exists (Kafka enabled).
pub fn plan(req: RedriveRequest, kafka: bool) -> Result<Plan, Status> {
    let (mongodb, wants_kafka) = match DeadLetterSource::try_from(req.source) {
        Ok(DeadLetterSource::Mongodb) => (true, false),
        Ok(DeadLetterSource::Kafka) => (false, true),
        Ok(DeadLetterSource::All) => (true, true),
        _ => {
            return Err(Status::invalid_argument(
                "source must be DEAD_LETTER_SOURCE_MONGODB, DEAD_LETTER_SOURCE_KAFKA or \
                 DEAD_LETTER_SOURCE_ALL",
            ))
        }
    };
    if wants_kafka && !mongodb && !kafka {
        return Err(Status::failed_precondition(
            "Kafka is disabled (KAFKA_ENABLED=false): there is no dead-letter topic to re-drive",
        ));
    }
    let known = reason_codes();
    let mut reasons = req.reasons;
    if let Some(bad) = reasons.iter().find(|r| !known.contains(&r.as_str())) {
        return Err(Status::invalid_argument(format!(
            "unknown reason {bad:?}; reason codes are {}",
            known.join(", ")
        )));
    }
    reasons.sort();
    reasons.dedup();
    let time = |value: &str, field| match value.trim() {
        "" => Ok(None),
        v => parse_rfc3339(v, field).map(Some),
    };
    let (since, until) = (time(&req.since, "since")?, time(&req.until, "until")?);
    if let (Some(s), Some(u)) = (since, until) {
        if s >= u {
            return Err(Status::invalid_argument(format!(
                "since ({}) is not before until ({})",
                req.since, req.until
            )));
        }
    }
    Ok(Plan {
        mongodb,
        kafka: wants_kafka && kafka,
        reasons,
        since,
        until,
        dry_run: req.dry_run,
        limit: (req.limit > 0).then_some(req.limit),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn req(source: DeadLetterSource) -> RedriveRequest {
        RedriveRequest {
            source: source as i32,
            ..Default::default()
        }
    }

    #[test]
    fn sources_follow_the_request_and_whether_kafka_is_enabled() {
        let all = plan(req(DeadLetterSource::All), true).unwrap();
        assert!(all.mongodb && all.kafka);
        let no_kafka = plan(req(DeadLetterSource::All), false).unwrap();
        assert!(no_kafka.mongodb && !no_kafka.kafka);
        let err = plan(req(DeadLetterSource::Kafka), false).unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition);
        let err = plan(req(DeadLetterSource::Unspecified), true).unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
    }

    #[test]
    fn reasons_and_times_are_checked() {
        let ok = plan(
            RedriveRequest {
                reasons: vec![
                    "invalid_ts".into(),
                    "write_failed".into(),
                    "invalid_ts".into(),
                ],
                since: "2026-11-25T10:00:00Z".into(),
                until: "2026-11-25T11:00:00Z".into(),
                limit: 7,
                ..req(DeadLetterSource::Mongodb)
            },
            true,
        )
        .unwrap();
        assert_eq!(ok.reasons, vec!["invalid_ts", "write_failed"]);
        assert_eq!(ok.limit, Some(7));
        assert_eq!(ok.until.unwrap() - ok.since.unwrap(), 3_600_000);
        for bad in [
            RedriveRequest {
                reasons: vec!["nope".into()],
                ..req(DeadLetterSource::All)
            },
            RedriveRequest {
                since: "soon".into(),
                ..req(DeadLetterSource::All)
            },
            RedriveRequest {
                since: "2026-11-25T11:00:00Z".into(),
                until: "2026-11-25T10:00:00Z".into(),
                ..req(DeadLetterSource::All)
            },
        ] {
            let err = plan(bad, true).unwrap_err();
            assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
        }
    }

    #[test]
    fn takes_filters_by_reason_and_half_open_range() {
        let p = Plan {
            mongodb: true,
            kafka: false,
            reasons: vec!["invalid_ts".into()],
            since: Some(100),
            until: Some(200),
            dry_run: false,
            limit: None,
        };
        assert!(p.takes("invalid_ts", Some(100)));
        assert!(!p.takes("invalid_ts", Some(200)), "until is excluded");
        assert!(!p.takes("invalid_qty", Some(150)));
        assert!(!p.takes("invalid_ts", None), "no time: outside any range");
        let every = Plan {
            reasons: vec![],
            since: None,
            until: None,
            ..p
        };
        assert!(every.takes("malformed", None));
    }
}

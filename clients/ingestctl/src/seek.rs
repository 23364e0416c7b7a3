//! `ingestctl seek`: SeekConsumer on every instance given with `--addr`. Each instance
//! moves the partitions it owns and names those it does not; the merged answer is each
//! moved partition with the instance that moved it, and the requested partitions no
//! instance owns (an error: some group member was left out).
use std::{collections::BTreeSet, time::Duration};

use sales_ingest::proto::ingest::v1::{
    ingest_admin_client::IngestAdminClient, seek_consumer_request::Target, PartitionOffsets,
    SeekConsumerRequest, SeekPosition,
};
use serde::Serialize;

use crate::{
    admin::authed,
    cli::SeekArgs,
    connect::connect,
    error::CtlError,
    table::{Align, Table},
};

/// One moved partition.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Moved {
    pub partition: i32,
    pub from_offset: i64,
    pub to_offset: i64,
    /// The instance that owns the partition and moved it.
    pub addr: String,
}

/// The merged answers.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SeekReport {
    pub partitions: Vec<Moved>,
    /// Requested partitions no instance owns.
    pub not_owned: Vec<i32>,
}

/// How long one instance may take: it first waits (at most 30 s) for the events in
/// flight on its partitions to become durable.
const SEEK_TIMEOUT: Duration = Duration::from_secs(60);

/// The request the options describe.
pub fn request(args: &SeekArgs) -> SeekConsumerRequest {
    let target = if args.earliest {
        Target::Position(SeekPosition::Earliest as i32)
    } else if args.latest {
        Target::Position(SeekPosition::Latest as i32)
    } else if let Some(ts) = &args.timestamp {
        Target::Timestamp(ts.clone())
    } else if let Some(ms) = args.timestamp_ms {
        Target::TimestampMs(ms)
    } else {
        Target::Offsets(PartitionOffsets {
            offsets: args.offsets.iter().copied().collect(),
        })
    };
    SeekConsumerRequest {
        target: Some(target),
        partitions: args.partitions.clone(),
    }
}

/// Calls every instance in turn. An instance's failure ends the run; what the earlier
/// ones moved is returned with it.
pub async fn run(
    addrs: &[String],
    token: Option<&str>,
    args: &SeekArgs,
) -> (SeekReport, Result<(), CtlError>) {
    let req = request(args);
    let mut answers = Vec::new();
    for addr in addrs {
        let answer = async {
            let mut client = IngestAdminClient::new(connect(addr).await?);
            let mut call = authed(req.clone(), token)?;
            call.set_timeout(SEEK_TIMEOUT);
            client
                .seek_consumer(call)
                .await
                .map(|r| r.into_inner())
                .map_err(|s| CtlError::from_status("SeekConsumer", s, token.is_some()))
        }
        .await;
        match answer {
            Ok(a) => answers.push((addr.clone(), a)),
            Err(e) => return (merge(answers), Err(e)),
        }
    }
    let report = merge(answers);
    let outcome = if report.not_owned.is_empty() {
        Ok(())
    } else {
        Err(CtlError::NotOwned(report.not_owned.clone()))
    };
    (report, outcome)
}

/// Merges the instances' answers: a partition one instance does not own is owned by
/// another when that one moved it.
pub fn merge(
    answers: Vec<(
        String,
        sales_ingest::proto::ingest::v1::SeekConsumerResponse,
    )>,
) -> SeekReport {
    let mut report = SeekReport::default();
    let mut not_owned = BTreeSet::new();
    for (addr, a) in answers {
        not_owned.extend(a.not_owned);
        report
            .partitions
            .extend(a.partitions.into_iter().map(|p| Moved {
                partition: p.partition,
                from_offset: p.from_offset,
                to_offset: p.to_offset,
                addr: addr.clone(),
            }));
    }
    report.partitions.sort_by_key(|m| m.partition);
    report.not_owned = not_owned
        .into_iter()
        .filter(|p| !report.partitions.iter().any(|m| m.partition == *p))
        .collect();
    report
}

/// The report as a table.
pub fn render(report: &SeekReport) -> String {
    if report.partitions.is_empty() {
        return "no partition moved\n".to_string();
    }
    let num = Align::Right;
    let mut t = Table::new(&[
        ("PARTITION", num),
        ("FROM", num),
        ("TO", num),
        ("INSTANCE", Align::Left),
    ]);
    for m in &report.partitions {
        let from = if m.from_offset < 0 {
            "-".to_string()
        } else {
            m.from_offset.to_string()
        };
        t.row(vec![
            m.partition.to_string(),
            from,
            m.to_offset.to_string(),
            m.addr.clone(),
        ]);
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sales_ingest::proto::ingest::v1::{PartitionSeek, SeekConsumerResponse};

    fn answer(moved: &[(i32, i64, i64)], not_owned: &[i32]) -> SeekConsumerResponse {
        SeekConsumerResponse {
            partitions: moved
                .iter()
                .map(|&(partition, from_offset, to_offset)| PartitionSeek {
                    partition,
                    from_offset,
                    to_offset,
                })
                .collect(),
            not_owned: not_owned.to_vec(),
        }
    }

    #[test]
    fn a_partition_one_instance_lacks_is_owned_by_another() {
        let report = merge(vec![
            ("a".into(), answer(&[(1, 20, 5)], &[0, 9])),
            ("b".into(), answer(&[(0, 15, 3)], &[1, 9])),
        ]);
        let moved: Vec<_> = report
            .partitions
            .iter()
            .map(|m| (m.partition, m.addr.as_str()))
            .collect();
        assert_eq!(moved, vec![(0, "b"), (1, "a")]);
        assert_eq!(report.not_owned, vec![9]);
        let text = render(&report);
        assert!(
            text.starts_with("PARTITION  FROM  TO  INSTANCE\n        0    15   3  b\n"),
            "{text}"
        );
    }

    #[test]
    fn the_request_follows_the_options() {
        use crate::cli::{Cli, Command};
        use clap::Parser;
        let parse = |args: &[&str]| {
            let Command::Seek(s) = Cli::try_parse_from(args).unwrap().command else {
                panic!("seek expected")
            };
            request(&s)
        };
        let r = parse(&["ingestctl", "seek", "--latest", "--partition=1"]);
        assert_eq!(
            r.target,
            Some(Target::Position(SeekPosition::Latest as i32))
        );
        assert_eq!(r.partitions, vec![1]);
        let r = parse(&["ingestctl", "seek", "--offset=3=9"]);
        let Some(Target::Offsets(o)) = r.target else {
            panic!("offsets expected")
        };
        assert_eq!(o.offsets.get(&3), Some(&9));
    }
}

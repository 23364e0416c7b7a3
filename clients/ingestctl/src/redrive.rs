//! `ingestctl redrive`: RedriveDeadLetters with a progress counter on stderr and the
//! final counts as a summary (or JSON): examined, stored, duplicates, skipped, and the
//! dead letters still refused by reason code.
use sales_ingest::proto::ingest::v1::{
    ingest_admin_client::IngestAdminClient, DeadLetterSource, RedriveProgress, RedriveRequest,
};
use tonic::transport::Channel;

use crate::{
    admin::authed,
    cli::{DeadLetterStore, RedriveArgs},
    error::CtlError,
    progress,
    table::{key_values, Align, Table},
};

/// The request the options describe.
pub fn request(args: &RedriveArgs) -> RedriveRequest {
    let source = match args.source {
        DeadLetterStore::Mongodb => DeadLetterSource::Mongodb,
        DeadLetterStore::Kafka => DeadLetterSource::Kafka,
        DeadLetterStore::All => DeadLetterSource::All,
    };
    RedriveRequest {
        source: source as i32,
        reasons: args.reasons.clone(),
        since: args.since.clone().unwrap_or_default(),
        until: args.until.clone().unwrap_or_default(),
        dry_run: args.dry_run,
        limit: args.limit,
    }
}

/// Runs the re-drive to its end. Returns the last progress seen, and the error when
/// the stream ended early.
pub async fn run(
    channel: Channel,
    token: Option<&str>,
    args: &RedriveArgs,
) -> (RedriveProgress, Result<(), CtlError>) {
    let mut last = RedriveProgress::default();
    let given = token.is_some();
    let fail = |s| CtlError::from_status("RedriveDeadLetters", s, given);
    let mut req = match authed(request(args), token) {
        Ok(r) => r,
        Err(e) => return (last, Err(e)),
    };
    // A re-drive runs as long as there are dead letters: no deadline.
    req.metadata_mut().remove("grpc-timeout");
    let mut stream = match IngestAdminClient::new(channel)
        .redrive_dead_letters(req)
        .await
    {
        Ok(r) => r.into_inner(),
        Err(s) => return (last, Err(fail(s))),
    };
    let what = if args.dry_run {
        "re-drive (dry run)"
    } else {
        "re-drive"
    };
    let bar = progress::counter((args.limit > 0).then_some(args.limit), what);
    let outcome = loop {
        match stream.message().await {
            Ok(Some(p)) => {
                bar.set_position(p.examined);
                bar.set_message(format!(
                    "{what}: {} stored, {} duplicates,",
                    p.stored, p.duplicates
                ));
                last = p;
            }
            Ok(None) if last.done => break Ok(()),
            Ok(None) => {
                break Err(CtlError::Protocol(
                    "the re-drive stream ended without its final message".into(),
                ))
            }
            Err(s) => break Err(fail(s)),
        }
    };
    bar.finish_and_clear();
    (last, outcome)
}

/// The counts as text; `dry_run` says the stored count is what would be stored.
pub fn render(p: &RedriveProgress, dry_run: bool) -> String {
    let invalid: u64 = p.still_invalid.values().sum();
    let stored = if dry_run { "would store" } else { "stored" };
    let mut out = key_values(&[
        ("examined", p.examined.to_string()),
        (stored, p.stored.to_string()),
        ("duplicates", p.duplicates.to_string()),
        ("updated", p.updated.to_string()),
        ("still invalid", invalid.to_string()),
        ("skipped", p.skipped.to_string()),
    ]);
    if !p.still_invalid.is_empty() {
        let mut t = Table::new(&[("STILL INVALID", Align::Left), ("COUNT", Align::Right)]);
        for (reason, n) in &p.still_invalid {
            t.row(vec![reason.clone(), n.to_string()]);
        }
        out.push('\n');
        out.push_str(&t.render());
    }
    if !p.done {
        out.push_str("\nthe re-drive did not finish; these are the counts so far\n");
    } else if dry_run {
        out.push_str("\ndry run: nothing was written or marked\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_has_every_count_and_the_reasons() {
        let p = RedriveProgress {
            examined: 10,
            stored: 6,
            duplicates: 1,
            still_invalid: [("invalid_qty".to_string(), 2), ("malformed".into(), 1)]
                .into_iter()
                .collect(),
            skipped: 4,
            done: true,
            updated: 0,
        };
        let text = render(&p, false);
        for expected in [
            "examined       10\n",
            "stored         6\n",
            "duplicates     1\n",
            "updated        0\n",
            "still invalid  3\n",
            "skipped        4\n",
            "STILL INVALID  COUNT\ninvalid_qty        2\nmalformed          1\n",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
        assert!(render(&p, true).contains("would store    6\n"));
        assert!(render(&p, true).contains("dry run"));
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["still_invalid"]["invalid_qty"], 2);
        assert_eq!(json["done"], true);
    }
}

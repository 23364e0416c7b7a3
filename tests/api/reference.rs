//! Reference text that restates the code: the reason codes `Rejection.reason` lists in
//! `proto/ingest/v1/ingest.proto` are exactly the validator's (`validate::Reason`) and
//! `write_failed`, so a new reason cannot be left out of the proto's comment.
use std::collections::BTreeSet;

use sales_ingest::validate::Reason;
use strum::VariantArray;

use crate::tools::repo_path;

/// The snake_case codes of the comment above `string reason` in `message Rejection`.
fn proto_reason_codes() -> BTreeSet<String> {
    let proto = std::fs::read_to_string(repo_path("proto/ingest/v1/ingest.proto")).unwrap();
    let message = proto
        .split("message Rejection {")
        .nth(1)
        .expect("ingest.proto has message Rejection");
    let before = message
        .split("string reason = ")
        .next()
        .expect("Rejection has a reason field");
    let comment: String = before
        .lines()
        .map(str::trim)
        .skip_while(|l| !l.starts_with("// Reason code:"))
        .take_while(|l| l.starts_with("//"))
        .map(|l| l.trim_start_matches("//"))
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        !comment.is_empty(),
        "Rejection.reason has no `// Reason code:` comment"
    );
    comment
        .split(|c: char| !(c.is_ascii_lowercase() || c == '_'))
        .filter(|w| w.contains('_') || ["malformed"].contains(w))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_protos_reason_list_is_the_validators_and_write_failed() {
    let listed = proto_reason_codes();
    let mut codes: BTreeSet<String> = Reason::VARIANTS
        .iter()
        .map(|r| r.code().to_string())
        .collect();
    codes.insert(sales_ingest::event::WRITE_FAILED.to_string());
    let missing: Vec<_> = codes.difference(&listed).collect();
    let unknown: Vec<_> = listed.difference(&codes).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "Rejection.reason's comment in ingest.proto: missing {missing:?}, not a reason code {unknown:?}"
    );
}

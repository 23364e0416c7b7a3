//! Progress bars on stderr, hidden when stderr is not a terminal (scripts, CI, tests)
//! so only the summary reaches the output.
use std::io::IsTerminal as _;

use indicatif::{ProgressBar, ProgressState, ProgressStyle};

const TEMPLATE: &str =
    "{msg} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} ({rate}, eta {eta})";

/// A bar counting to `len`, labelled `what`.
pub fn bar(len: u64, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let style = ProgressStyle::with_template(TEMPLATE)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .with_key("rate", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = write!(w, "{:.0}/s", s.per_sec());
        });
    ProgressBar::new(len)
        .with_style(style)
        .with_message(what.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_template_parses() {
        assert!(indicatif::ProgressStyle::with_template(super::TEMPLATE).is_ok());
    }
}

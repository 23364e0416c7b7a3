//! Progress bars on stderr, hidden when stderr is not a terminal (scripts, CI, tests)
//! so only the summary reaches the output.
use std::io::IsTerminal as _;

use indicatif::{ProgressBar, ProgressState, ProgressStyle};

const TEMPLATE: &str =
    "{msg} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} ({rate}, eta {eta})";
const SPINNER: &str = "{spinner} {msg} [{elapsed_precise}] {human_pos} ({rate})";

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

/// A bar counting to `len`, or a spinner counting up when the end is unknown (None).
pub fn counter(len: Option<u64>, what: &str) -> ProgressBar {
    let Some(len) = len else {
        if !std::io::stderr().is_terminal() {
            return ProgressBar::hidden();
        }
        let style = ProgressStyle::with_template(SPINNER)
            .unwrap_or_else(|_| ProgressStyle::default_spinner())
            .with_key("rate", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.0}/s", s.per_sec());
            });
        let spinner = ProgressBar::new_spinner()
            .with_style(style)
            .with_message(what.to_string());
        spinner.enable_steady_tick(std::time::Duration::from_millis(200));
        return spinner;
    };
    bar(len, what)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_templates_parse() {
        assert!(indicatif::ProgressStyle::with_template(super::TEMPLATE).is_ok());
        assert!(indicatif::ProgressStyle::with_template(super::SPINNER).is_ok());
    }
}

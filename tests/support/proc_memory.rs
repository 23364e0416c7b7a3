//! Resident memory of a process, from the text of `/proc/<pid>/status`. Shared by the
//! integration tests (`tests/api/process.rs`) and the benchmark (`bench/src/procfs.rs`),
//! which include this file as a module.

/// (VmRSS, VmHWM) in KiB, current and peak resident memory; 0 for a missing field.
pub fn rss_and_peak_kib(status: &str) -> (u64, u64) {
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

//! Resident memory (now and at peak) and CPU time of processes, read from /proc with
//! the `procfs` crate.
use anyhow::{Context, Result};
use procfs::process::Process;

/// Resident memory of a process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Memory {
    /// VmRSS: resident now, KiB.
    pub rss_kib: u64,
    /// VmHWM: peak resident since start, KiB.
    pub hwm_kib: u64,
}

fn process(pid: u32) -> Result<Process> {
    Process::new(pid as i32).with_context(|| format!("no process {pid} in /proc"))
}

/// VmRSS and VmHWM of `pid`.
pub fn memory(pid: u32) -> Result<Memory> {
    let status = process(pid)?
        .status()
        .with_context(|| format!("read /proc/{pid}/status"))?;
    Ok(Memory {
        rss_kib: status.vmrss.unwrap_or(0),
        hwm_kib: status.vmhwm.unwrap_or(0),
    })
}

/// User + system CPU seconds of every thread of `pid`.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = process(pid)?
        .stat()
        .with_context(|| format!("read /proc/{pid}/stat"))?;
    Ok((stat.utime + stat.stime) as f64 / procfs::ticks_per_second() as f64)
}

/// User + system CPU seconds of this process, every thread.
pub fn self_cpu_seconds() -> Result<f64> {
    cpu_seconds(std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_memory_is_read_in_kib_and_the_peak_bounds_it() {
        let m = memory(std::process::id()).unwrap();
        assert!(m.rss_kib > 100, "{m:?}");
        assert!(m.hwm_kib >= m.rss_kib, "{m:?}");
        assert!(memory(u32::MAX / 2).is_err());
    }

    #[test]
    fn own_cpu_time_is_readable_and_grows() {
        let before = self_cpu_seconds().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut x = 0u64;
        while self_cpu_seconds().unwrap() <= before {
            assert!(
                std::time::Instant::now() < deadline,
                "CPU time stays {before}"
            );
            for i in 0..1_000_000u64 {
                x = x.wrapping_mul(31).wrapping_add(i);
            }
        }
        assert!(x != 1);
    }
}

//! CPU time and resident memory of processes, read from /proc (other processes) and
//! getrusage (the bench itself).
#[path = "../../tests/support/proc_memory.rs"]
mod proc_memory;

use anyhow::{bail, Context, Result};
use serde::Serialize;

/// Clock ticks per second, the unit of utime/stime in /proc/<pid>/stat.
pub fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime of every thread of `pid`, in seconds.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("read /proc/{pid}/stat"))?;
    Ok(parse_stat_ticks(&stat)? as f64 / clock_ticks())
}

/// utime + stime in ticks from the text of /proc/<pid>/stat (fields 14 and 15; the
/// command name in parentheses may contain spaces, so count after the last ')').
pub fn parse_stat_ticks(stat: &str) -> Result<u64> {
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed /proc stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')' come field 3 (state) onwards: utime is field 14, stime field 15.
    let (Some(u), Some(s)) = (fields.get(11), fields.get(12)) else {
        bail!("short /proc stat");
    };
    Ok(u.parse::<u64>()? + s.parse::<u64>()?)
}

/// Resident memory of a process.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Memory {
    /// VmRSS: resident now.
    pub rss_kib: u64,
    /// VmHWM: peak resident since start.
    pub hwm_kib: u64,
}

/// VmRSS and VmHWM of `pid`.
pub fn memory(pid: u32) -> Result<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))?;
    Ok(parse_memory(&status))
}

/// VmRSS and VmHWM (KiB) from the text of /proc/<pid>/status.
pub fn parse_memory(status: &str) -> Memory {
    let (rss_kib, hwm_kib) = proc_memory::rss_and_peak_kib(status);
    Memory { rss_kib, hwm_kib }
}

/// The bench's own user + system CPU seconds (all threads), from getrusage.
pub fn self_cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we pass.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// The processes whose CPU the bench accounts for in every phase.
#[derive(Clone, Copy, Debug)]
pub struct Pids {
    pub service: Option<u32>,
    pub mongodb: u32,
    pub kafka: u32,
}

/// CPU seconds of each process (a snapshot, or the difference of two).
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Cpu {
    pub service: f64,
    pub mongodb_server: f64,
    pub kafka_broker: f64,
    pub bench: f64,
}

impl Cpu {
    /// A snapshot of every process's CPU seconds so far.
    pub fn now(pids: &Pids) -> Result<Self> {
        Ok(Self {
            service: match pids.service {
                Some(pid) => cpu_seconds(pid)?,
                None => 0.0,
            },
            mongodb_server: cpu_seconds(pids.mongodb)?,
            kafka_broker: cpu_seconds(pids.kafka)?,
            bench: self_cpu_seconds(),
        })
    }

    /// What each process used between `earlier` and `self`.
    pub fn since(&self, earlier: &Cpu) -> Cpu {
        Cpu {
            service: self.service - earlier.service,
            mongodb_server: self.mongodb_server - earlier.mongodb_server,
            kafka_broker: self.kafka_broker - earlier.kafka_broker,
            bench: self.bench - earlier.bench,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_ticks_are_utime_plus_stime_even_with_spaces_in_the_name() {
        let stat = "1234 (tokio runtime) S 1 1234 1234 0 -1 4194560 500 0 0 0 250 75 0 0 20 0 5 0";
        assert_eq!(parse_stat_ticks(stat).unwrap(), 325);
        assert!(parse_stat_ticks("garbage").is_err());
    }

    #[test]
    fn memory_fields_are_read_in_kib() {
        let status = "Name:\tx\nVmHWM:\t   51200 kB\nVmRSS:\t   30720 kB\n";
        let m = parse_memory(status);
        assert_eq!((m.rss_kib, m.hwm_kib), (30720, 51200));
    }

    #[test]
    fn own_cpu_time_is_readable_and_grows() {
        let before = self_cpu_seconds();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        assert!(self_cpu_seconds() >= before);
        assert!(cpu_seconds(std::process::id()).unwrap() >= 0.0);
    }
}

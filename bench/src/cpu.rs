//! The CPU time each process of a phase uses: the service, the MongoDB server, the
//! Kafka broker and the bench itself, read from /proc by `test_support::proc`.
use anyhow::Result;
use serde::Serialize;
use test_support::proc::{cpu_seconds, self_cpu_seconds};

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
            bench: self_cpu_seconds()?,
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
    fn differences_are_per_process() {
        let a = Cpu {
            service: 1.0,
            mongodb_server: 2.0,
            kafka_broker: 3.0,
            bench: 4.0,
        };
        let b = Cpu {
            service: 1.5,
            mongodb_server: 4.0,
            kafka_broker: 3.25,
            bench: 5.0,
        };
        let d = b.since(&a);
        assert_eq!(
            (d.service, d.mongodb_server, d.kafka_broker, d.bench),
            (0.5, 2.0, 0.25, 1.0)
        );
    }

    #[test]
    fn a_snapshot_reads_every_process() {
        let me = std::process::id();
        let pids = Pids {
            service: None,
            mongodb: me,
            kafka: me,
        };
        let cpu = Cpu::now(&pids).unwrap();
        assert_eq!(cpu.service, 0.0);
        assert!(cpu.mongodb_server >= 0.0 && cpu.bench >= 0.0);
    }
}

//! The command line: global `--addr` and `--token`, one subcommand per task.
use clap::{Args, Parser, Subcommand};

use crate::{events::InvalidShare, produce::ProducePlan, stream::StreamPlan};

/// Operate and load-test a sales-ingest server.
#[derive(Debug, Parser)]
#[command(name = "ingestctl", version, about)]
pub struct Cli {
    /// gRPC address of sales-ingest (URL or host:port).
    #[arg(
        long,
        global = true,
        env = "INGEST_ADDR",
        default_value = "http://127.0.0.1:50051"
    )]
    pub addr: String,
    /// Bearer token for pause, resume and shutdown.
    #[arg(long, global = true, env = "ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// gRPC health of the server and its services; exit 0 when all are SERVING.
    Health(HealthArgs),
    /// IngestAdmin/GetStats as a table (or JSON).
    Stats(StatsArgs),
    /// Pause Kafka consumption (needs --token).
    Pause,
    /// Resume Kafka consumption (needs --token).
    Resume,
    /// Graceful shutdown of the server (needs --token).
    Shutdown,
    /// Load generator over IngestEvents/Stream.
    Stream(StreamArgs),
    /// Produce encoded SalesEvents to Kafka.
    Produce(ProduceArgs),
}

/// `health` options.
#[derive(Debug, Args)]
pub struct HealthArgs {
    /// Check only this service ("" is the whole server); default: all three.
    #[arg(long)]
    pub service: Option<String>,
}

/// `stats` options.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Options shared by the generators.
#[derive(Debug, Args)]
pub struct GenArgs {
    /// Number of events to send.
    #[arg(long)]
    pub count: u64,
    /// Percent of deliberately invalid events (e.g. 1 or 1.5).
    #[arg(long, default_value = "0")]
    pub invalid: InvalidShare,
    /// Prefix of the generated event ids (default: ctl-<time>-<pid>); reuse one to
    /// replay the same ids.
    #[arg(long)]
    pub run_id: Option<String>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `stream` options.
#[derive(Debug, Args)]
pub struct StreamArgs {
    #[command(flatten)]
    pub gen: GenArgs,
    /// Events per second over all streams; 0 = unlimited.
    #[arg(long, default_value_t = 0.0, value_parser = non_negative)]
    pub rate: f64,
    /// Events per request.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch: u64,
    /// Concurrent streams.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub streams: u32,
    /// Requests in flight (sent, not yet acked) per stream.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub window: u32,
    /// Bearer token for servers started with PRODUCER_TOKEN.
    #[arg(long, env = "PRODUCER_TOKEN", hide_env_values = true)]
    pub producer_token: Option<String>,
}

/// `produce` options.
#[derive(Debug, Args)]
pub struct ProduceArgs {
    #[command(flatten)]
    pub gen: GenArgs,
    /// Kafka bootstrap servers.
    #[arg(
        long,
        env = "KAFKA_BOOTSTRAP_SERVERS",
        default_value = "localhost:9092"
    )]
    pub brokers: String,
    /// Topic to produce to.
    #[arg(long, env = "KAFKA_TOPIC", default_value = "sales_txn")]
    pub topic: String,
    /// Seconds a message may wait for delivery before it counts as failed.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: u64,
}

fn non_negative(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("{s:?} is not a number ≥ 0")),
    }
}

impl GenArgs {
    /// The event generator these options describe.
    pub fn generator(&self) -> crate::events::Generator {
        let run_id = self
            .run_id
            .clone()
            .unwrap_or_else(crate::events::default_run_id);
        crate::events::Generator::new(run_id, self.invalid, chrono::Utc::now())
    }
}

impl StreamArgs {
    /// What `stream` will do.
    pub fn plan(&self) -> StreamPlan {
        StreamPlan {
            count: self.gen.count,
            batch: self.batch,
            rate: self.rate,
            streams: self.streams,
            window: self.window as usize,
            generator: self.gen.generator(),
            producer_token: self.producer_token.clone(),
        }
    }
}

impl ProduceArgs {
    /// What `produce` will do.
    pub fn plan(&self) -> ProducePlan {
        ProducePlan {
            count: self.gen.count,
            brokers: self.brokers.clone(),
            topic: self.topic.clone(),
            timeout_secs: self.timeout,
            generator: self.gen.generator(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn stream_defaults_and_parsing() {
        let cli = Cli::try_parse_from([
            "ingestctl",
            "--addr=h:1",
            "stream",
            "--count=10",
            "--invalid=1.5",
        ])
        .unwrap();
        let Command::Stream(s) = cli.command else {
            panic!("stream expected")
        };
        assert_eq!((s.batch, s.streams, s.rate), (500, 1, 0.0));
        assert_eq!(s.gen.invalid, "1.5".parse().unwrap());
        assert!(Cli::try_parse_from(["ingestctl", "stream", "--count=1", "--rate=-1"]).is_err());
        assert!(Cli::try_parse_from(["ingestctl", "stream", "--count=1", "--batch=0"]).is_err());
    }
}

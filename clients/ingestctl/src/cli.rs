//! The command line: global `--addr` (several for `seek`) and `--token`, one
//! subcommand per task.
use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};

use crate::{
    events::InvalidShare,
    produce::{ProducePlan, ValueFormat},
    stream::StreamPlan,
};

/// Operate and load-test a sales-ingest server.
#[derive(Debug, Parser)]
#[command(name = "ingestctl", version, about)]
pub struct Cli {
    /// gRPC address of sales-ingest (URL or host:port). `seek` takes several (repeat
    /// the option, or separate them with commas): every member of the consumer group.
    #[arg(
        long,
        global = true,
        env = "INGEST_ADDR",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:50051",
        value_parser = crate::connect::address
    )]
    pub addr: Vec<String>,
    /// Bearer token for pause, resume, shutdown, seek and redrive.
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
    /// Move the Kafka consumer to a position: replay or skip (needs --token).
    Seek(SeekArgs),
    /// Re-validate dead letters and store those valid now (needs --token).
    Redrive(RedriveArgs),
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

/// `seek` options: exactly one target.
#[derive(Debug, Args)]
#[command(group(
    ArgGroup::new("target")
        .required(true)
        .args(["earliest", "latest", "timestamp", "timestamp_ms", "offsets"])
))]
pub struct SeekArgs {
    /// To the start of each partition's log (replay everything kept).
    #[arg(long)]
    pub earliest: bool,
    /// To the end of each partition's log (skip what is not consumed yet).
    #[arg(long)]
    pub latest: bool,
    /// To the first event at or after this RFC 3339 time, e.g. 2026-11-25T10:00:00Z.
    #[arg(long, value_parser = rfc3339)]
    pub timestamp: Option<String>,
    /// To the first event at or after this time in epoch milliseconds.
    #[arg(long, value_parser = clap::value_parser!(i64).range(0..))]
    pub timestamp_ms: Option<i64>,
    /// To explicit offsets: PARTITION=OFFSET, repeated for several partitions.
    #[arg(long = "offset", value_name = "PARTITION=OFFSET", value_parser = partition_offset)]
    pub offsets: Vec<(i32, i64)>,
    /// Only this partition (repeat for several); default: every assigned partition.
    #[arg(long = "partition", value_name = "PARTITION", value_parser = clap::value_parser!(i32).range(0..))]
    pub partitions: Vec<i32>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Where `redrive` reads dead letters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DeadLetterStore {
    /// The dead-letter collection (MONGODB_DLQ_COLLECTION).
    Mongodb,
    /// The dead-letter topic (KAFKA_DLQ_TOPIC).
    Kafka,
    /// Both.
    All,
}

/// `redrive` options.
#[derive(Debug, Args)]
pub struct RedriveArgs {
    /// Where to read dead letters.
    #[arg(long, value_enum, default_value_t = DeadLetterStore::All)]
    pub source: DeadLetterStore,
    /// Only dead letters with this reason code (repeat for several); default: all.
    #[arg(long = "reason", value_name = "CODE")]
    pub reasons: Vec<String>,
    /// Only dead letters from this RFC 3339 time on.
    #[arg(long, value_parser = rfc3339)]
    pub since: Option<String>,
    /// Only dead letters from before this RFC 3339 time.
    #[arg(long, value_parser = rfc3339)]
    pub until: Option<String>,
    /// Validate and count; write and mark nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Examine at most this many dead letters (0: no limit).
    #[arg(long, default_value_t = 0)]
    pub limit: u64,
    /// Print the final counts as JSON.
    #[arg(long)]
    pub json: bool,
}

fn rfc3339(s: &str) -> Result<String, String> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|_| s.to_string())
        .map_err(|e| format!("{s:?} is not an RFC 3339 time such as 2026-11-25T10:00:00Z: {e}"))
}

fn partition_offset(s: &str) -> Result<(i32, i64), String> {
    let bad = || format!("{s:?} is not PARTITION=OFFSET, e.g. 0=1500");
    let (p, o) = s.split_once('=').ok_or_else(bad)?;
    let p: i32 = p.trim().parse().map_err(|_| bad())?;
    let o: i64 = o.trim().parse().map_err(|_| bad())?;
    if p < 0 || o < 0 {
        return Err(format!("{s:?}: partition and offset are ≥ 0"));
    }
    Ok((p, o))
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
    /// Value format: protobuf (a bare SalesEvent), confluent (Schema Registry framing
    /// around one) or json (the proto3 JSON mapping).
    #[arg(long, value_enum, default_value_t = ValueFormat::Protobuf)]
    pub format: ValueFormat,
    /// Schema id written into Confluent framing.
    #[arg(long, default_value_t = 1)]
    pub schema_id: u32,
    /// Send this exact value `--count` times instead of generated events (to try the
    /// server's refusals by hand, e.g. `--raw-value 'not an event'`).
    #[arg(long)]
    pub raw_value: Option<String>,
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
            format: self.format,
            schema_id: self.schema_id,
            raw_value: self.raw_value.clone(),
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
    fn a_malformed_addr_is_a_usage_error_naming_addr() {
        for addr in ["not a url", "h:1,ftp://h:2"] {
            let err = Cli::try_parse_from(["ingestctl", "--addr", addr, "stats"]).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{addr}");
            assert!(err.to_string().contains("--addr"), "{addr}: {err}");
        }
        let ok = Cli::try_parse_from(["ingestctl", "--addr", "h:1,https://h:2", "stats"]).unwrap();
        assert_eq!(ok.addr, ["h:1", "https://h:2"]);
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

    #[test]
    fn seek_takes_exactly_one_target_and_several_addresses() {
        let cli = Cli::try_parse_from([
            "ingestctl",
            "--addr=a:1",
            "--addr=b:2,c:3",
            "seek",
            "--offset=0=15",
            "--offset",
            "2=7",
            "--partition=2",
        ])
        .unwrap();
        assert_eq!(cli.addr, vec!["a:1", "b:2", "c:3"]);
        let Command::Seek(s) = cli.command else {
            panic!("seek expected")
        };
        assert_eq!(s.offsets, vec![(0, 15), (2, 7)]);
        assert_eq!(s.partitions, vec![2]);
        for bad in [
            vec!["ingestctl", "seek"],
            vec!["ingestctl", "seek", "--earliest", "--latest"],
            vec!["ingestctl", "seek", "--timestamp=noon"],
            vec!["ingestctl", "seek", "--offset=0:15"],
            vec!["ingestctl", "seek", "--offset=-1=15"],
        ] {
            assert!(Cli::try_parse_from(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn redrive_defaults_and_parsing() {
        let cli = Cli::try_parse_from(["ingestctl", "redrive"]).unwrap();
        let Command::Redrive(r) = cli.command else {
            panic!("redrive expected")
        };
        assert_eq!(
            (r.source, r.limit, r.dry_run),
            (DeadLetterStore::All, 0, false)
        );
        assert_eq!(cli.addr, vec!["http://127.0.0.1:50051"]);
        let cli = Cli::try_parse_from([
            "ingestctl",
            "redrive",
            "--source=mongodb",
            "--reason=invalid_ts",
            "--reason=invalid_qty",
            "--since=2026-11-25T10:00:00Z",
            "--dry-run",
        ])
        .unwrap();
        let Command::Redrive(r) = cli.command else {
            panic!("redrive expected")
        };
        assert_eq!(r.reasons, vec!["invalid_ts", "invalid_qty"]);
        assert!(r.dry_run && r.source == DeadLetterStore::Mongodb);
        assert!(Cli::try_parse_from(["ingestctl", "redrive", "--since=later"]).is_err());
        assert!(Cli::try_parse_from(["ingestctl", "redrive", "--source=s3"]).is_err());
    }
}

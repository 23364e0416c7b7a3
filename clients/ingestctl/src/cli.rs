//! The command line: global `--addr` and `--token`, one subcommand per task.
use clap::{Args, Parser, Subcommand};

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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_is_consistent() {
        Cli::command().debug_assert();
    }
}

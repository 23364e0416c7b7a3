//! The `sales-ingest` binary: parse configuration (exit 2 naming a bad variable), set
//! up logging, build and run the application until SIGTERM, SIGINT, the Shutdown RPC or
//! `POST /shutdown`. `sales-ingest healthcheck [ADDR]` probes a running server instead.
//! Secrets given as files (`ADMIN_TOKEN_FILE`, …: `config::files`) are read first.
use std::{ffi::OsString, process::ExitCode};

use clap::{Parser, Subcommand};
use sales_ingest::{telemetry, Application, Config, Stopped};

/// mimalloc instead of glibc malloc: the hot path allocates and frees many small
/// buffers (decoded strings, BSON documents, the driver's command buffers), which glibc
/// serves markedly slower.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "sales-ingest",
    version,
    about,
    args_conflicts_with_subcommands = true,
    after_help = "Secrets may be given as files instead: ADMIN_TOKEN_FILE, PRODUCER_TOKEN_FILE, \
MONGODB_URL_FILE, KAFKA_SASL_PASSWORD_FILE, KAFKA_PROPERTIES_FILE, SCHEMA_REGISTRY_URL_FILE, \
SCHEMA_REGISTRY_PASSWORD_FILE name a file holding the value."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    config: Config,
}

#[derive(Subcommand)]
enum Command {
    /// Asks a running server's gRPC Health service; exits 0 when SERVING, 1 otherwise.
    Healthcheck {
        /// host:port or URL of the gRPC listener.
        #[arg(default_value = "127.0.0.1:50051")]
        addr: String,
    },
}

fn main() -> ExitCode {
    secrets_from_files();
    let cli = Cli::try_parse().unwrap_or_else(|e| {
        if !e.use_stderr() {
            e.exit() // --help, --version
        }
        eprint!("{}", sales_ingest::config::masked_parse_error(&e));
        std::process::exit(e.exit_code())
    });
    if let Some(Command::Healthcheck { addr }) = cli.command {
        return runtime().block_on(async {
            match sales_ingest::healthcheck::check(&addr, "").await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("unhealthy: {e}");
                    ExitCode::FAILURE
                }
            }
        });
    }
    let config = cli.config;
    let rt = runtime();
    // The exporter comes first: the subscriber is built with its layer.
    let traces = match rt.block_on(async { telemetry::init_traces() }) {
        Ok(traces) => traces,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    telemetry::install(&config.rust_log, config.log_format, &traces);
    tracing::info!(config = ?config, "effective configuration");
    let code = rt.block_on(run(config));
    // The exporter flushes through the runtime's tasks, so the runtime is still up.
    traces.shutdown();
    code
}

/// Sets each secret given as a file (`X_FILE`) as its variable, before the
/// configuration is parsed and before any thread starts; exits 2 naming `X_FILE` when
/// both forms are given or the file cannot be read.
fn secrets_from_files() {
    let args: Vec<OsString> = std::env::args_os().collect();
    match sales_ingest::config::files::from_files(|k| std::env::var_os(k), &args) {
        Ok(values) => {
            for (var, value) in values {
                std::env::set_var(var, value);
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

async fn run(config: Config) -> ExitCode {
    let app = match Application::build(config).await {
        Ok(app) => app,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(e.exit_code());
        }
    };
    let token = app.shutdown_token();
    tokio::spawn(async move {
        wait_for_signal().await;
        token.cancel();
    });
    match app.run_until_stopped().await {
        Stopped::Clean => ExitCode::SUCCESS,
        Stopped::TimedOut => ExitCode::FAILURE,
        Stopped::Failed(why) => {
            eprintln!("error: {why}");
            ExitCode::FAILURE
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}

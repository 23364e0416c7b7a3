//! The `sales-ingest` binary: parse configuration (exit 2 naming a bad variable), set
//! up logging, build and run the application until SIGTERM, SIGINT or the Shutdown RPC.
//! `sales-ingest healthcheck [ADDR]` probes a running server instead.
use std::process::ExitCode;

use clap::Parser;
use sales_ingest::{telemetry, Application, BuildError, Config, Stopped};

/// mimalloc instead of glibc malloc: the hot path allocates and frees many small
/// buffers (decoded strings, BSON documents, the driver's command buffers); glibc spent
/// about a third of the service's CPU in malloc/free/consolidation (perf, issue 5).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("healthcheck") {
        let addr = args
            .get(2)
            .cloned()
            .unwrap_or_else(|| "127.0.0.1:50051".into());
        return runtime().block_on(async {
            match sales_ingest::probe::check(&addr, "").await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("unhealthy: {e}");
                    ExitCode::FAILURE
                }
            }
        });
    }
    let config = match Config::try_parse_from(args.drain(..)) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    telemetry::init(&config.rust_log, config.log_format);
    tracing::info!(config = ?config, "effective configuration");
    runtime().block_on(run(config))
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
        Err(e @ BuildError::Config { .. }) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let token = app.shutdown_token();
    tokio::spawn(async move {
        wait_for_signal().await;
        token.cancel();
    });
    match app.run_until_stopped().await {
        Ok(Stopped::Clean) => ExitCode::SUCCESS,
        Ok(Stopped::TimedOut) => ExitCode::FAILURE,
        Err(e) => {
            tracing::error!(error = %e, "server failed");
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

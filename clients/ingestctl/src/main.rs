//! `ingestctl`: the command-line client of sales-ingest. It talks to a running server
//! with the server library's own generated gRPC clients (no second codegen):
//!
//! - `health`, `stats`: the gRPC Health protocol and `IngestAdmin/GetStats`;
//! - `pause`, `resume`, `shutdown`: the token-protected admin RPCs (`admin`);
//! - `seek`, `redrive`: SeekConsumer over every group member given, and
//!   RedriveDeadLetters with a progress counter (`seek`, `redrive`);
//! - `stream`: a load generator over `IngestEvents/Stream` (`stream`, `events`,
//!   `latency`, `report`);
//! - `produce`: a Kafka producer of encoded `SalesEvent`s (`produce`).
//!
//! `cli` declares the arguments, `connect` opens the channel, `error` maps failures to
//! messages and exit codes, `table` and `progress` format output. Only `main` uses
//! anyhow.
mod admin;
mod cli;
mod connect;
mod error;
mod events;
mod health;
mod latency;
mod produce;
mod progress;
mod redrive;
mod report;
mod seek;
mod stats;
mod stream;
mod table;

use std::process::ExitCode;

use clap::Parser;

use crate::{
    cli::{Cli, Command},
    error::CtlError,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            let code = e
                .downcast_ref::<CtlError>()
                .map_or(error::EXIT_FAILURE, CtlError::exit_code);
            ExitCode::from(code)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let token = cli.token.as_deref();
    if let Command::Seek(args) = &cli.command {
        let (report, outcome) = seek::run(&cli.addr, token, args).await;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{}", seek::render(&report));
        }
        outcome?;
        return Ok(ExitCode::SUCCESS);
    }
    let addr = one_addr(&cli.addr)?;
    match cli.command {
        Command::Seek(_) => unreachable!("handled above"),
        Command::Redrive(args) => {
            let channel = connect::connect(&addr).await?;
            let (last, outcome) = redrive::run(channel, token, &args).await;
            // Counts are printed when there are any, also for a re-drive cut short.
            let counted = outcome.is_ok() || last.examined > 0 || last.skipped > 0;
            if counted && args.json {
                println!("{}", serde_json::to_string_pretty(&last)?);
            } else if counted {
                print!("{}", redrive::render(&last, args.dry_run));
            }
            outcome?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Health(args) => {
            let channel = connect::connect(&addr).await?;
            let serving = health::run(channel, args.service).await?;
            Ok(if serving {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Stats(args) => {
            let channel = connect::connect(&addr).await?;
            let view = stats::fetch(channel).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&view)?);
            } else {
                print!("{}", stats::render(&addr, &view));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Pause => admin_call(&addr, token, admin::Action::Pause).await,
        Command::Resume => admin_call(&addr, token, admin::Action::Resume).await,
        Command::Shutdown => admin_call(&addr, token, admin::Action::Shutdown).await,
        Command::Stream(args) => {
            let channel = connect::connect(&addr).await?;
            let json = args.gen.json;
            let summary = stream::run(channel, args.plan()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                print!("{}", summary.render());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Produce(args) => {
            let json = args.gen.json;
            let summary = produce::run(args.plan()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                print!("{}", summary.render());
            }
            summary.check()?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The one address every command but `seek` talks to.
fn one_addr(addrs: &[String]) -> Result<String, CtlError> {
    match addrs {
        [one] => Ok(one.clone()),
        _ => Err(CtlError::Usage(format!(
            "--addr is given {} times; only seek talks to several instances",
            addrs.len()
        ))),
    }
}

async fn admin_call(
    addr: &str,
    token: Option<&str>,
    action: admin::Action,
) -> anyhow::Result<ExitCode> {
    let channel = connect::connect(addr).await?;
    println!("{}", admin::run(channel, token, action).await?);
    Ok(ExitCode::SUCCESS)
}

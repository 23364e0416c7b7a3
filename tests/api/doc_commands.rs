//! The operators' clients against the live server: every `grpcurl` and
//! `grpc-health-probe` command line in the `sh` code blocks of README.md and
//! docs/operations.md, extracted from the docs (so a doc that drifts fails), run
//! verbatim with bash (with the variables its block sets and `ADMIN_TOKEN`), with only
//! `localhost:50051` replaced by the test server's port, against a server with the admin
//! token set: in plaintext, over TLS and over mTLS (`-plaintext` replaced by the CA and
//! client certificate flags). grpcurl and grpc-health-probe are the pinned builds
//! scripts/install-deps puts in `.cache/bin`.
use std::{path::Path, process::Command, time::Duration};

use crate::{helpers::pki::PkiFiles, helpers::*, tools::*};

/// One command line of the docs and the variable assignments before it in its block.
#[derive(Clone, Debug)]
struct DocCommand {
    source: &'static str,
    prelude: Vec<String>,
    line: String,
}

/// The logical lines of each `sh` block of `text`: continuations joined, a heredoc kept
/// with its body.
fn sh_blocks(text: &str) -> Vec<Vec<String>> {
    let mut blocks = Vec::new();
    let mut lines = text.lines();
    while let Some(l) = lines.next() {
        if l.trim() != "```sh" {
            continue;
        }
        let mut block: Vec<String> = Vec::new();
        let mut pending = String::new();
        for l in lines.by_ref() {
            if l.trim() == "```" {
                break;
            }
            if let Some(open) = block.last_mut().filter(|b| !heredoc_closed(b)) {
                open.push('\n');
                open.push_str(l);
                continue;
            }
            if let Some(cont) = l.strip_suffix('\\') {
                pending.push_str(cont);
                continue;
            }
            pending.push_str(l);
            block.push(std::mem::take(&mut pending));
        }
        blocks.push(block);
    }
    blocks
}

/// The delimiter of a `<<'X'` heredoc on `line`.
fn heredoc_end(line: &str) -> Option<String> {
    let rest = line.split("<<").nth(1)?;
    Some(rest.trim().trim_matches('\'').trim_matches('"').to_string())
}

/// Whether a heredoc command has its closing delimiter line.
fn heredoc_closed(cmd: &str) -> bool {
    let first = cmd.lines().next().unwrap_or_default();
    match heredoc_end(first) {
        Some(end) => cmd.lines().skip(1).any(|l| l.trim() == end),
        None => true,
    }
}

/// Every grpcurl and grpc-health-probe command of the operators' docs.
fn doc_commands() -> Vec<DocCommand> {
    let mut out = Vec::new();
    for source in ["README.md", "docs/operations.md"] {
        let text = std::fs::read_to_string(repo_path(source)).unwrap();
        for block in sh_blocks(&text) {
            let mut prelude = Vec::new();
            for line in block {
                let line = line.split("   #").next().unwrap().trim_end().to_string();
                let word = line.split_whitespace().next().unwrap_or_default();
                if word.contains('=') && word.chars().next().is_some_and(|c| c.is_ascii_uppercase())
                {
                    prelude.push(line);
                } else if word == "grpcurl" || word == "grpc-health-probe" {
                    out.push(DocCommand {
                        source,
                        prelude: prelude.clone(),
                        line,
                    });
                }
            }
        }
    }
    out
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Plaintext,
    Tls,
    Mtls,
}

/// The command as run in `mode`: the server's port, and for TLS the CA (and client
/// certificate) flags instead of `-plaintext`. None when the line is not for `mode`
/// (a TLS line in plaintext; a client-certificate line without mTLS, a TLS line without
/// one under mTLS).
fn adapt(cmd: &str, mode: Mode, port: u16) -> Option<String> {
    let cmd = cmd.replace("localhost:50051", &format!("localhost:{port}"));
    let probe = cmd.starts_with("grpc-health-probe");
    let tls_line = if probe {
        cmd.contains(" -tls")
    } else {
        !cmd.contains("-plaintext")
    };
    let client_line = cmd.contains("client.pem");
    match (mode, tls_line) {
        (Mode::Plaintext, true) => None,
        (Mode::Plaintext, false) => Some(cmd),
        // A TLS line is for the servers it fits: with a client certificate for mTLS,
        // without one for TLS (an mTLS server refuses it).
        (Mode::Tls, true) => (!client_line).then_some(cmd),
        (Mode::Mtls, true) => client_line.then_some(cmd),
        (_, false) => {
            let client = mode == Mode::Mtls;
            Some(if probe {
                let extra = if client {
                    " -tls-client-cert=client.pem -tls-client-key=client.key"
                } else {
                    ""
                };
                format!("{cmd} -tls -tls-ca-cert=ca.pem{extra}")
            } else {
                let flags = if client {
                    "-cacert ca.pem -cert client.pem -key client.key"
                } else {
                    "-cacert ca.pem"
                };
                cmd.replacen("-plaintext", flags, 1)
            })
        }
    }
}

/// Runs `script` with bash in `dir` with the pinned clients first on PATH.
fn bash(script: &str, dir: &Path, token: &str) -> std::process::Output {
    let bin = repo_path(".cache/bin");
    for tool in ["grpcurl", "grpc-health-probe"] {
        assert!(
            bin.join(tool).exists(),
            "{tool} is not in .cache/bin: run scripts/install-deps (it builds the pinned version with go install)"
        );
    }
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    run_with_deadline(
        Command::new("bash")
            .args(["-euo", "pipefail", "-c", script])
            .current_dir(dir)
            .env("PATH", path)
            .env("ADMIN_TOKEN", token),
        Duration::from_secs(30),
        "apt-get install bash",
    )
}

/// A topic whose partitions 0, 1 and 2 exist and reach the offsets the docs seek to.
async fn doc_topic() -> String {
    let topic = unique("docs");
    create_topic(&topic, 3).await;
    let events = |n: usize, p: &str| -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| encode(&valid_event(i, &format!("{topic}-{p}-{i}"))))
            .collect()
    };
    produce(&topic, 2, &events(2960, "a")).await;
    produce(&topic, 1, &events(20, "b")).await;
    topic
}

async fn run_doc_commands(mode: Mode, pki: &PkiFiles, dir: &Path) {
    let extra = match mode {
        Mode::Plaintext => Vec::new(),
        Mode::Tls => pki.server_settings(false),
        Mode::Mtls => pki.server_settings(true),
    };
    let app = spawn_app(AppOptions {
        topic: Some(doc_topic().await),
        extra,
        ..Default::default()
    })
    .await;
    let stats = app.stats.clone();
    wait_until(
        Duration::from_secs(60),
        "the three partitions consumed",
        || {
            let s = stats.snapshot();
            async move { s.partitions.len() == 3 && s.events_stored >= 2980 }
        },
    )
    .await;
    let port: u16 = app.grpc_url.rsplit(':').next().unwrap().parse().unwrap();
    let token = app.admin_token.clone().expect("an admin token");
    let mut commands: Vec<(DocCommand, String)> = doc_commands()
        .into_iter()
        .filter_map(|c| adapt(&c.line, mode, port).map(|run| (c, run)))
        .collect();
    // Shutdown ends the server: it runs last.
    commands.sort_by_key(|(c, _)| c.line.contains("/Shutdown"));
    assert!(
        commands.len() >= 15,
        "{mode:?}: only {} commands",
        commands.len()
    );
    for (doc, run) in &commands {
        let script = doc
            .prelude
            .iter()
            .map(|p| adapt(p, mode, port).unwrap_or_else(|| p.clone()))
            .chain([run.clone()])
            .collect::<Vec<_>>()
            .join("\n");
        if doc.line.contains("Health/Check") || doc.line.starts_with("grpc-health-probe") {
            // A health line asks for SERVING: wait until the server says so itself (on a
            // loaded machine a dependency can drop out for a moment).
            let url = format!("{}/health", app.http_url);
            wait_until(
                Duration::from_secs(30),
                "SERVING before a health line",
                || {
                    let url = url.clone();
                    async move { get(&url).await.0 == 200 }
                },
            )
            .await;
        }
        let out = bash(&script, dir, &token);
        assert!(
            out.status.success(),
            "{mode:?}: {} line failed:\n{}\nran:\n{script}\n{}",
            doc.source,
            doc.line,
            describe(&out)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        if doc.line.ends_with(" list") {
            for service in [
                "ingest.v1.IngestAdmin",
                "ingest.v1.IngestEvents",
                "grpc.health.v1.Health",
            ] {
                assert!(
                    stdout.contains(service),
                    "{mode:?}: list lacks {service}: {stdout}"
                );
            }
        }
        if doc.line.contains("Health/Check") {
            assert!(stdout.contains("\"SERVING\""), "{mode:?}: {stdout}");
        }
    }
    assert!(
        commands
            .iter()
            .any(|(c, _)| c.line.starts_with("grpc-health-probe")),
        "{mode:?}: no grpc-health-probe line ran"
    );
    // The docs' Shutdown line stopped the server cleanly.
    let stopped = tokio::time::timeout(Duration::from_secs(30), app.handle)
        .await
        .expect("the Shutdown line stops the server")
        .expect("server task");
    assert_eq!(stopped, sales_ingest::Stopped::Clean);
}

#[test]
fn the_docs_have_the_command_lines_this_test_runs() {
    let commands = doc_commands();
    let lines: Vec<&str> = commands.iter().map(|c| c.line.as_str()).collect();
    for rpc in [
        "IngestEvents/Stream",
        "IngestAdmin/GetStats",
        "IngestAdmin/PauseConsumer",
        "IngestAdmin/ResumeConsumer",
        "IngestAdmin/Shutdown",
        "IngestAdmin/RedriveDeadLetters",
        "Health/Check",
        " $A",
        "grpc-health-probe",
    ] {
        assert!(
            lines.iter().any(|l| l.contains(rpc)),
            "no doc line with {rpc}: {lines:#?}"
        );
    }
    let stream = commands
        .iter()
        .find(|c| c.line.contains("IngestEvents/Stream"))
        .unwrap();
    assert!(
        stream.line.ends_with("JSON"),
        "the heredoc is kept: {}",
        stream.line
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_grpcurl_and_health_probe_line_of_the_docs_works_in_plaintext_tls_and_mtls() {
    let dir = test_support::servers::scratch_dir(&unique("doc-pki"));
    let pki = PkiFiles::write(&dir);
    for mode in [Mode::Plaintext, Mode::Tls, Mode::Mtls] {
        run_doc_commands(mode, &pki, &dir).await;
    }
}

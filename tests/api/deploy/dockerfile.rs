//! The Dockerfile: a build and a runtime stage, every workspace member copied, the
//! runtime stage adding only the CA bundle and the binary and running it as non-root;
//! the build context; the binary's libraries and its `healthcheck` subcommand.
use std::process::Command;

use crate::{helpers::*, tools::*};

#[test]
fn dockerfile_builds_in_stages_and_runs_only_the_binary_as_non_root() {
    let text = std::fs::read_to_string(repo_path("Dockerfile")).unwrap();
    // Logical lines (backslash continuations joined), comments dropped.
    let joined = text.replace("\\\n", " ");
    let lines: Vec<&str> = joined
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let arg = |name: &str| {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(&format!("ARG {name}=")))
            .unwrap_or_else(|| panic!("ARG {name}"))
            .to_string()
    };
    // Build on the official Rust image, at least the crate's rust-version.
    let rust = arg("RUST_VERSION");
    let cargo = std::fs::read_to_string(repo_path("Cargo.toml")).unwrap();
    let msrv = cargo
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .unwrap()
        .trim_matches('"');
    let v = |s: &str| -> Vec<u32> { s.split('.').map(|p| p.parse().unwrap()).collect() };
    assert!(
        v(&rust) >= v(msrv),
        "RUST_VERSION {rust} < rust-version {msrv}"
    );
    assert_eq!(arg("DEBIAN_RELEASE"), "bookworm");
    let stages: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].starts_with("FROM "))
        .collect();
    assert_eq!(stages.len(), 2, "a build and a runtime stage");
    assert_eq!(
        lines[stages[0]],
        "FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build"
    );
    assert!(lines[stages[1]].starts_with("FROM debian:${DEBIAN_RELEASE}-slim"));
    let build = &lines[stages[0]..stages[1]];
    let install = build
        .iter()
        .find(|l| l.contains("apt-get install"))
        .unwrap();
    for pkg in ["cmake", "libcurl4-openssl-dev", "g++"] {
        assert!(install.contains(pkg), "build stage lacks {pkg}");
    }
    assert!(build
        .iter()
        .any(|l| l.contains("cargo build --release --locked --bin sales-ingest")));
    // Cargo loads every workspace member: each must be copied and not docker-ignored.
    let manifest = std::fs::read_to_string(repo_path("Cargo.toml")).unwrap();
    let members_line = manifest
        .lines()
        .find(|l| l.trim_start().starts_with("members"))
        .expect("workspace members");
    let ignore = std::fs::read_to_string(repo_path(".dockerignore")).unwrap();
    for member in members_line
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|m| *m != ".")
    {
        assert!(
            build
                .iter()
                .any(|l| l.starts_with("COPY") && l.contains(member)),
            "the build stage does not copy workspace member {member}"
        );
        assert!(
            !ignore
                .lines()
                .any(|l| l.trim().trim_end_matches('/') == member
                    || member.starts_with(&format!("{}/", l.trim().trim_end_matches('/')))),
            ".dockerignore drops workspace member {member}"
        );
    }

    // The runtime stage adds exactly the CA bundle and the binary, and runs nothing.
    let runtime = &lines[stages[1]..];
    let copies: Vec<&&str> = runtime.iter().filter(|l| l.starts_with("COPY")).collect();
    assert_eq!(
        copies,
        [
            &"COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt",
            &"COPY --from=build /out/sales-ingest /usr/local/bin/sales-ingest"
        ]
    );
    assert!(
        !runtime
            .iter()
            .any(|l| l.starts_with("RUN") || l.starts_with("ADD")),
        "the runtime stage adds nothing else"
    );
    let user = runtime
        .iter()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("USER");
    let uid = user.split(':').next().unwrap();
    assert!(uid != "0" && uid != "root", "runs as root: {user}");
    assert!(runtime.contains(&"EXPOSE 50051 8001"));
    let hc = runtime
        .iter()
        .find(|l| l.starts_with("HEALTHCHECK"))
        .expect("HEALTHCHECK");
    assert!(
        hc.ends_with(r#"CMD ["sales-ingest", "healthcheck", "127.0.0.1:50051"]"#),
        "{hc}"
    );
    assert!(runtime.contains(&r#"ENTRYPOINT ["sales-ingest"]"#));

    // The build context keeps what the build copies and drops the rest.
    let ignore = std::fs::read_to_string(repo_path(".dockerignore")).unwrap();
    let ignored: Vec<&str> = ignore
        .lines()
        .map(|l| l.trim().trim_end_matches('/'))
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for needed in ["Cargo.toml", "Cargo.lock", "build.rs", "proto", "src"] {
        assert!(repo_path(needed).exists(), "{needed}");
        assert!(!ignored.contains(&needed), ".dockerignore drops {needed}");
    }
    for dropped in ["target", ".git", ".cache"] {
        assert!(ignored.contains(&dropped), ".dockerignore keeps {dropped}");
    }
}

#[test]
fn the_binary_needs_no_library_that_bookworm_slim_lacks() {
    // What debian:bookworm-slim ships of the libraries a Rust binary may link
    // (libc6, libgcc-s1, zlib1g); anything else would need a package in the image.
    let slim = [
        "libc.so.6",
        "libm.so.6",
        "libgcc_s.so.1",
        "libz.so.1",
        "ld-linux-x86-64.so.2",
        "libpthread.so.0",
        "libdl.so.2",
        "librt.so.1",
    ];
    let out = run(
        Command::new("readelf").args(["-d", env!("CARGO_BIN_EXE_sales-ingest")]),
        "readelf comes with the Debian package binutils",
    );
    assert!(out.status.success(), "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let needed: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| l.split('[').nth(1)?.split(']').next())
        .collect();
    assert!(needed.contains(&"libc.so.6"), "{text}");
    for lib in &needed {
        assert!(
            slim.contains(lib),
            "the binary needs {lib}, which bookworm-slim lacks"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_container_healthcheck_command_exits_0_when_serving_and_1_otherwise() {
    let app = spawn_app(AppOptions {
        kafka: false,
        ..Default::default()
    })
    .await;
    app.wait_serving().await;
    let addr = app.grpc_url.trim_start_matches("http://").to_string();
    let healthcheck = |addr: String| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sales-ingest"));
        cmd.args(["healthcheck", &addr]);
        run_async(cmd, "cargo build")
    };
    let out = healthcheck(addr).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let closed = format!("127.0.0.1:{}", test_support::servers::free_port());
    let out = healthcheck(closed).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    app.stop().await;

    // A server that answers, NOT_SERVING (MongoDB unreachable): exit 1 as well.
    let down = spawn_app_with_unreachable_mongodb().await;
    let addr = down.grpc_url.trim_start_matches("http://").to_string();
    let out = healthcheck(addr).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("NOT_SERVING") || stderr.contains("NotServing"),
        "{}",
        describe(&out)
    );
    down.shutdown.cancel();
    down.handle.await.unwrap();
}

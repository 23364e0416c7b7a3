//! External programs the ops tests run (python3 with grpcio, promtool, chromium): where
//! the repository is, and running a program with a failure that names what to install
//! when it is missing. A missing tool fails the test; it never skips it.
use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

/// The repository root.
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A path inside the repository.
pub fn repo_path(rel: &str) -> PathBuf {
    repo().join(rel)
}

/// Runs `cmd` to completion; panics naming `install` if the program is not there.
pub fn run(cmd: &mut Command, install: &str) -> Output {
    cmd.stdin(Stdio::null());
    match cmd.output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "{:?} is not installed: {install} (scripts/install-deps installs it)",
            cmd.get_program()
        ),
        Err(e) => panic!("cannot run {:?}: {e}", cmd.get_program()),
    }
}

/// Runs `cmd` on a blocking thread, so the server under test keeps running meanwhile.
pub async fn run_async(mut cmd: Command, install: &'static str) -> Output {
    tokio::task::spawn_blocking(move || run(&mut cmd, install))
        .await
        .expect("command thread")
}

/// stdout and stderr of a finished command, for assertion messages.
pub fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Checks that python3 can import the client's packages; panics saying how to
/// install them otherwise.
pub fn require_python_grpc() {
    let out = run(
        Command::new("python3").args([
            "-c",
            "import grpc, grpc_tools.protoc, grpc_health.v1.health_pb2",
        ]),
        "apt-get install python3",
    );
    assert!(
        out.status.success(),
        "python3 lacks grpcio / grpcio-tools / grpcio-health-checking: run \
         `python3 -m pip install -r clients/python/requirements.txt` (scripts/install-deps does)\n{}",
        describe(&out)
    );
}

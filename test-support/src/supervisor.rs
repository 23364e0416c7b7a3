//! A child process under a watchdog shell, so that nothing a test or the bench starts
//! outlives it: the shell starts the program, writes its pid to a file and kills it as
//! soon as the parent process is gone. The parent signals the program by that pid
//! (SIGTERM, SIGKILL) and reaps the shell, whose exit status is the program's. The
//! program's stdout and stderr are appended to a log file.
use std::{
    fs::File,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

/// How long dropping a running [`Supervised`] waits after SIGTERM before SIGKILL.
const DROP_GRACE: Duration = Duration::from_secs(10);
/// How long [`Supervised::spawn`] waits for the watchdog to report the program's pid.
const PID_TIMEOUT: Duration = Duration::from_secs(10);

/// A signal the parent sends to a supervised program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM: stop gracefully.
    Term,
    /// SIGINT: stop gracefully, as Ctrl-C in a terminal.
    Int,
    /// SIGKILL: stop now.
    Kill,
}

impl Signal {
    fn number(self) -> libc::c_int {
        match self {
            Signal::Term => libc::SIGTERM,
            Signal::Int => libc::SIGINT,
            Signal::Kill => libc::SIGKILL,
        }
    }
}

/// A running program and its watchdog shell. Dropping it while the program runs sends
/// SIGTERM, then SIGKILL after a grace period, and reaps the shell.
pub struct Supervised {
    name: String,
    watchdog: Child,
    pid: u32,
    log: PathBuf,
}

impl Supervised {
    /// Starts `argv` with exactly `env` plus PATH and HOME as its environment, its
    /// stdout and stderr appended to `log`; returns once the program's pid is known.
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
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        }
        let out = File::options()
            .create(true)
            .append(true)
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
        let deadline = Instant::now() + PID_TIMEOUT;
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

    /// The name given at start, for messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The program's pid (the one /proc is read for).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Everything logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `lines` lines logged.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log, lines)
    }

    /// True while the program runs.
    pub fn running(&mut self) -> bool {
        matches!(self.watchdog.try_wait(), Ok(None))
    }

    /// Sends `signal` to the program.
    pub fn signal(&self, signal: Signal) {
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is that of a
        // program this process started and has not reaped.
        unsafe {
            libc::kill(self.pid as libc::pid_t, signal.number());
        }
    }

    /// SIGKILL; waits for the program to be gone.
    pub fn kill(mut self) -> Result<ExitStatus> {
        self.signal(Signal::Kill);
        self.watchdog
            .wait()
            .with_context(|| format!("reap {}", self.name))
    }

    /// SIGTERM; waits up to `timeout` for the program to exit and returns its exit
    /// status and how long it took. Past `timeout` it is killed and this fails.
    pub fn terminate(self, timeout: Duration) -> Result<(ExitStatus, Duration)> {
        self.stop_with(Signal::Term, timeout)
    }

    /// Sends `signal`, then waits as [`Supervised::terminate`] does.
    pub fn stop_with(self, signal: Signal, timeout: Duration) -> Result<(ExitStatus, Duration)> {
        let started = Instant::now();
        self.signal(signal);
        self.exit(timeout, &format!("{signal:?}"))
            .map(|status| (status, started.elapsed()))
    }

    /// Waits up to `timeout` for the program to exit by itself and returns its exit
    /// status. Past `timeout` it is killed and this fails.
    pub fn wait_exit(self, timeout: Duration) -> Result<ExitStatus> {
        self.exit(timeout, "the wait began")
    }

    fn exit(mut self, timeout: Duration, since: &str) -> Result<ExitStatus> {
        match self.wait_timeout(timeout)? {
            Some(status) => Ok(status),
            None => {
                self.signal(Signal::Kill);
                self.watchdog.wait()?;
                bail!(
                    "{} did not exit within {timeout:?} of {since} and was killed; log tail:\n{}",
                    self.name,
                    self.log_tail(30)
                )
            }
        }
    }

    /// The watchdog's exit status once the program has exited, or None after `timeout`.
    fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.watchdog.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() > deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        if self.running() {
            self.signal(Signal::Term);
            if !matches!(self.wait_timeout(DROP_GRACE), Ok(Some(_))) {
                self.signal(Signal::Kill);
                let _ = self.watchdog.wait();
            }
        }
    }
}

/// The last `lines` lines of the file at `log` (empty if it cannot be read).
pub fn log_tail(log: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `s` quoted for bash.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(name: &str) -> PathBuf {
        let dir = crate::servers::scratch_dir("supervisor-tests");
        dir.join(format!("{name}.log"))
    }

    #[test]
    fn exit_status_and_output_are_the_programs() {
        let log = log("exit");
        let argv = [
            "bash".to_string(),
            "-c".into(),
            "echo \"$GREETING\"; exit 3".into(),
        ];
        let env = [("GREETING".to_string(), "it's here".to_string())];
        let mut p = Supervised::spawn("exit", &argv, &env, &log).unwrap();
        let status = p.wait_timeout(Duration::from_secs(10)).unwrap().unwrap();
        assert_eq!(status.code(), Some(3));
        assert_eq!(p.logs().trim(), "it's here");
    }

    #[test]
    fn sigterm_stops_the_program_and_sigkill_shows_in_the_status() {
        let argv = ["sleep".to_string(), "60".into()];
        let p = Supervised::spawn("term", &argv, &[], &log("term")).unwrap();
        let (status, took) = p.terminate(Duration::from_secs(10)).unwrap();
        assert_eq!(status.code(), Some(128 + libc::SIGTERM));
        assert!(took < Duration::from_secs(5), "{took:?}");

        let mut p = Supervised::spawn("kill", &argv, &[], &log("kill")).unwrap();
        assert!(p.running());
        let pid = p.pid();
        let status = p.kill().unwrap();
        assert_eq!(status.code(), Some(128 + libc::SIGKILL));
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
    }
}

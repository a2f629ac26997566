//! A child process that cannot outlive its test.
//!
//! [`Process`] owns a running binary whose stdout and stderr go to a log file in the test's
//! temporary folder. Dropping it kills and reaps the child, so a failing assertion or a panic
//! leaves nothing running; when the drop happens during a panic it also prints the end of the
//! log, which is usually what explains the failure.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;

/// How many log lines a failure report shows.
pub const TAIL_LINES: usize = 40;

/// A running child process, killed and reaped on drop.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Process {
    /// Starts `cmd` with stdin closed and stdout and stderr appended to `log`.
    pub fn spawn(name: &str, cmd: Command, log: &Path) -> anyhow::Result<Self> {
        Self::spawn_with(name, cmd, log, false)
    }

    /// [`Process::spawn`], but stdout is a pipe that nobody reads (it fills up after 64 KiB,
    /// as a stuck log shipper's would); stderr still goes to `log`.
    pub fn spawn_stdout_unread(name: &str, cmd: Command, log: &Path) -> anyhow::Result<Self> {
        Self::spawn_with(name, cmd, log, true)
    }

    fn spawn_with(
        name: &str,
        mut cmd: Command,
        log: &Path,
        stdout_unread: bool,
    ) -> anyhow::Result<Self> {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let err = out.try_clone().context("duplicating the log file handle")?;
        let stdout = if stdout_unread {
            // The read end stays in `Child::stdout`, open and unread, until the child is dropped.
            Stdio::piped()
        } else {
            Stdio::from(out)
        };
        cmd.stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::from(err));
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name}: {cmd:?}"))?;
        Ok(Self {
            name: name.to_string(),
            child: Some(child),
            log: log.to_path_buf(),
        })
    }

    /// The OS process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The name given at spawn, used in messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The log file with the child's stdout and stderr.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The whole log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last [`TAIL_LINES`] lines of the log, headed by the process name.
    pub fn tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let start = lines.len().saturating_sub(TAIL_LINES);
        format!(
            "--- last {} lines of {} ({}) ---\n{}\n--- end of {} ---",
            lines.len() - start,
            self.name,
            self.log.display(),
            lines[start..].join("\n"),
            self.name
        )
    }

    /// `Some(status)` once the child has exited, without blocking.
    pub fn try_status(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        match self.child.as_mut() {
            Some(child) => child.try_wait().context("polling the child"),
            None => Ok(None),
        }
    }

    /// Fails with the log tail if the child has exited; used while waiting for readiness.
    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.try_status()? {
            anyhow::bail!("{} exited early with {status}\n{}", self.name, self.tail());
        }
        Ok(())
    }

    /// Waits (polling, bounded by `timeout`) for the child to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_status()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                anyhow::bail!(
                    "{} still running after {timeout:?}\n{}",
                    self.name,
                    self.tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Asks the child to stop with SIGTERM, waits up to `grace`, then kills it.
    pub fn stop(&mut self, grace: Duration) {
        if let Some(pid) = self.pid() {
            if matches!(self.try_status(), Ok(None)) {
                // std has no way to send SIGTERM; kill(1) is in every base system.
                let _ = Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
                let _ = self.wait_exit(grace);
            }
        }
        self.kill();
    }

    /// Kills (SIGKILL) and reaps the child; a no-op once it is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let was_running = matches!(self.try_status(), Ok(None));
        self.kill();
        if std::thread::panicking() && was_running {
            eprintln!("{}", self.tail());
        } else if std::thread::panicking() {
            eprintln!("({} had already exited)\n{}", self.name, self.tail());
        }
    }
}

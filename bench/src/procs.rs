//! Processes the harness starts and what it reads about them.
//!
//! Every child is held by a [`ChildGuard`] whose `Drop` stops it, so a failed or interrupted run
//! leaves nothing behind. Resource figures come straight from procfs: CPU time from
//! `/proc/PID/stat` (utime + stime, which include the time of every thread of the process, also
//! threads that have exited) and resident memory from `VmRSS` in `/proc/PID/status`.

use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// A started child process; dropping the guard stops it (and, for nginx, its workers).
pub struct ChildGuard {
    name: String,
    child: Child,
    /// Send SIGTERM and wait this long before SIGKILL (nginx needs it so its workers exit too).
    graceful: Option<Duration>,
    /// Extra processes to SIGKILL after the child is gone (nginx workers), found at start.
    extra_pids: Vec<u32>,
}

impl ChildGuard {
    /// Spawns `cmd` with stdin closed and stdout/stderr appended to `log` (or discarded).
    /// Under `--pinned` the command runs through `taskset` on the servers' CPU ([`crate::pin`]).
    pub fn spawn(name: &str, cmd: Command, log: Option<&Path>) -> Result<Self> {
        let mut cmd = crate::pin::wrap(cmd);
        cmd.stdin(Stdio::null());
        match log {
            Some(path) => {
                let out =
                    File::create(path).with_context(|| format!("creating {}", path.display()))?;
                let err = out.try_clone()?;
                cmd.stdout(out).stderr(err);
            }
            None => {
                cmd.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name} ({cmd:?})"))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            graceful: None,
            extra_pids: Vec::new(),
        })
    }

    /// Stops the process with SIGTERM first and SIGKILL after `grace`.
    pub fn with_graceful_stop(mut self, grace: Duration) -> Self {
        self.graceful = Some(grace);
        self
    }

    /// Records processes (e.g. nginx workers) that must be killed with this child.
    pub fn track_extra(&mut self, pids: &[u32]) {
        self.extra_pids.extend_from_slice(pids);
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails with the child's exit status when it has already exited.
    pub fn check_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited early with {status}", self.name);
        }
        Ok(())
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            if let Some(grace) = self.graceful {
                signal(self.child.id(), "TERM");
                let deadline = Instant::now() + grace;
                while Instant::now() < deadline {
                    if let Ok(Some(_)) = self.child.try_wait() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        for pid in &self.extra_pids {
            if Path::new(&format!("/proc/{pid}")).exists() {
                signal(*pid, "KILL");
            }
        }
    }
}

/// Sends a signal with `kill(1)`; the workspace forbids `unsafe`, so no direct `kill(2)`.
fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// `count` distinct free loopback addresses: bind port 0, note the port, release it for the
/// child to bind.
pub fn free_addrs(count: usize) -> Result<Vec<SocketAddr>> {
    // Hold every listener until all are chosen so that no two ports are equal.
    let listeners = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0"))
        .collect::<Result<Vec<_>>>()?;
    listeners.iter().map(|l| Ok(l.local_addr()?)).collect()
}

/// Waits until a TCP connect to `addr` succeeds, checking `child` is alive, for at most `limit`.
pub fn wait_for_tcp(addr: SocketAddr, child: &mut ChildGuard, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        child.check_running()?;
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{} did not listen on {addr} within {limit:?}", child.name);
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Clock ticks per second of the utime/stime fields (`getconf CLK_TCK`, 100 on Linux).
pub fn clock_ticks() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&t: &u64| t > 0)
        .unwrap_or(100)
}

/// Fields of `/proc/PID/stat` after the `(comm)` field, which may itself hold spaces.
fn stat_fields(pid: u32) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed /proc/PID/stat")?;
    Ok(rest.split_whitespace().map(str::to_owned).collect())
}

/// utime + stime of `pid` in clock ticks (fields 14 and 15 of `/proc/PID/stat`).
pub fn cpu_ticks(pid: u32) -> Result<u64> {
    cpu_split(pid).map(|t| t.user + t.system)
}

/// CPU time of a process in clock ticks, user and system apart.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ticks {
    /// utime: in the process's own code and libraries.
    pub user: u64,
    /// stime: in the kernel on its behalf (system calls, and the loopback TCP work and
    /// wake-ups done in them).
    pub system: u64,
}

/// utime and stime of `pid` in clock ticks.
pub fn cpu_split(pid: u32) -> Result<Ticks> {
    let f = stat_fields(pid)?;
    // After the comm field, index 0 is field 3 (state); utime is field 14, stime field 15.
    let user: u64 = f.get(11).context("no utime")?.parse()?;
    let system: u64 = f.get(12).context("no stime")?.parse()?;
    Ok(Ticks { user, system })
}

/// Resident set size of `pid` in KiB (`VmRSS` in `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let line = text
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS")?;
    let kib = line.split_whitespace().nth(1).context("malformed VmRSS")?;
    Ok(kib.parse()?)
}

/// Proportional set size of `pid` in KiB (`Pss` in `/proc/PID/smaps_rollup`): shared pages
/// count in part, so nginx's master and worker, which share most of their memory after the
/// fork, are not counted twice as a sum of their VmRSS would.
pub fn pss_kib(pid: u32) -> Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .with_context(|| format!("reading /proc/{pid}/smaps_rollup"))?;
    let line = text
        .lines()
        .find(|l| l.starts_with("Pss:"))
        .context("no Pss")?;
    let kib = line.split_whitespace().nth(1).context("malformed Pss")?;
    Ok(kib.parse()?)
}

/// Number of threads of `pid` (`Threads` in `/proc/PID/status`).
pub fn threads(pid: u32) -> Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = text
        .lines()
        .find(|l| l.starts_with("Threads:"))
        .context("no Threads")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("malformed Threads")?
        .parse()?)
}

/// Direct children of `pid` (nginx workers of a master), from the `ppid` field of every process.
pub fn children_of(pid: u32) -> Result<Vec<u32>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
        let Ok(entry) = entry else { continue };
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        // A process may exit between read_dir and the read; skip it.
        let Ok(fields) = stat_fields(child) else {
            continue;
        };
        if fields.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(pid) {
            out.push(child);
        }
    }
    Ok(out)
}

/// One sidecar as the harness measures it: the processes that make it up (nginx: master and
/// workers; trustmesh: the one proxy process).
#[derive(Clone, Debug)]
pub struct Sidecar {
    /// Every process of this sidecar.
    pub pids: Vec<u32>,
}

impl Sidecar {
    /// Summed utime + stime of all processes, in clock ticks.
    pub fn cpu_ticks(&self) -> Result<u64> {
        self.pids.iter().map(|&p| cpu_ticks(p)).sum()
    }

    /// Summed utime and stime of all processes, apart, in clock ticks.
    pub fn cpu_split(&self) -> Result<Ticks> {
        self.pids.iter().try_fold(Ticks::default(), |sum, &p| {
            let t = cpu_split(p)?;
            Ok(Ticks {
                user: sum.user + t.user,
                system: sum.system + t.system,
            })
        })
    }

    /// Summed VmRSS of all processes, in KiB.
    pub fn rss_kib(&self) -> Result<u64> {
        self.pids.iter().map(|&p| rss_kib(p)).sum()
    }

    /// Summed PSS of all processes, in KiB.
    pub fn pss_kib(&self) -> Result<u64> {
        self.pids.iter().map(|&p| pss_kib(p)).sum()
    }

    /// Summed thread count of all processes.
    pub fn threads(&self) -> Result<u64> {
        self.pids.iter().map(|&p| threads(p)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cpu_rss_and_threads_of_this_process() {
        let me = Sidecar {
            pids: vec![std::process::id()],
        };
        // Burn a little CPU so that utime moves past zero on a 10 ms tick.
        let start = Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(50) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        assert!(x != 1);
        assert!(me.cpu_ticks().unwrap() > 0);
        assert!(me.rss_kib().unwrap() > 100);
        assert!(me.pss_kib().unwrap() > 0);
        assert!(me.threads().unwrap() >= 1);
    }

    #[test]
    fn guard_kills_its_child_on_drop() {
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let guard = ChildGuard::spawn("sleep", cmd, None).unwrap();
        let pid = guard.pid();
        assert!(Path::new(&format!("/proc/{pid}")).exists());
        drop(guard);
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
    }

    #[test]
    fn finds_children_by_parent_pid() {
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let guard = ChildGuard::spawn("sleep", cmd, None).unwrap();
        let kids = children_of(std::process::id()).unwrap();
        assert!(kids.contains(&guard.pid()));
    }

    #[test]
    fn free_addrs_are_distinct_loopback_ports() {
        let addrs = free_addrs(5).unwrap();
        let mut ports: Vec<u16> = addrs.iter().map(|a| a.port()).collect();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 5);
        assert!(addrs.iter().all(|a| a.ip().is_loopback()));
    }
}

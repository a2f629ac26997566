//! `--pinned`: the servers (backend, both sidecars of each pair, nginx masters and workers,
//! the control plane) on one CPU, the load generator (this process) on the other.
//!
//! Affinity is set with `taskset(1)` (util-linux), as the workspace forbids `unsafe` and so a
//! direct `sched_setaffinity(2)`: this process pins all its threads with `taskset -a -p` before
//! the tokio runtime starts (threads made later inherit the mask), and every server the harness
//! starts through [`crate::procs::ChildGuard::spawn`] runs as `taskset -c CPU program ...`
//! (`taskset` execs the program, so the pid the harness holds is the server's own; nginx
//! workers inherit their master's mask). The masks actually in force are read back from
//! `/proc/PID/status` (`Cpus_allowed_list`) and printed under the table.

use std::process::{Command, Stdio};
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};

use crate::procs::Sidecar;

/// The CPU the servers run on.
pub const SERVER_CPU: usize = 0;
/// The CPU the load generator runs on.
pub const CLIENT_CPU: usize = 1;

/// Set once when `--pinned` is given: the CPU list every server is started on.
static SERVER_CPUS: OnceLock<String> = OnceLock::new();
/// The CPUs this process could use before it pinned itself.
static MACHINE_CPUS: OnceLock<usize> = OnceLock::new();

/// CPUs available to the harness (before `--pinned` narrowed its own mask to one).
pub fn machine_cpus() -> usize {
    MACHINE_CPUS
        .get()
        .copied()
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Pins this process (all its threads) to [`CLIENT_CPU`] and makes every server started from
/// now on run on [`SERVER_CPU`]. Call before any thread other than the main one exists.
pub fn enable() -> Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cores < 2 {
        bail!("--pinned needs 2 CPUs, this machine offers {cores}");
    }
    let _ = MACHINE_CPUS.set(cores);
    let me = std::process::id().to_string();
    let st = Command::new("taskset")
        .args(["-a", "-p", "-c", &CLIENT_CPU.to_string(), &me])
        .stdout(Stdio::null())
        .status()
        .context("running taskset (util-linux) to pin the load generator")?;
    if !st.success() {
        bail!("taskset -a -p -c {CLIENT_CPU} {me} failed: {st}");
    }
    if SERVER_CPUS.set(SERVER_CPU.to_string()).is_err() {
        bail!("pinning was enabled twice");
    }
    Ok(())
}

/// `cmd` as given, or, when pinning is on, the same program, arguments, environment and
/// working folder run through `taskset -c SERVER_CPU`.
pub fn wrap(cmd: Command) -> Command {
    match SERVER_CPUS.get() {
        Some(cpus) => wrap_with(&cmd, cpus),
        None => cmd,
    }
}

/// `cmd` run through `taskset -c cpus`, with its arguments, environment and folder.
fn wrap_with(cmd: &Command, cpus: &str) -> Command {
    let mut pinned = Command::new("taskset");
    pinned.arg("-c").arg(cpus).arg(cmd.get_program());
    pinned.args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => pinned.env(k, v),
            None => pinned.env_remove(k),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        pinned.current_dir(dir);
    }
    pinned
}

/// Whether `--pinned` is in force.
pub fn enabled() -> bool {
    SERVER_CPUS.get().is_some()
}

/// `Cpus_allowed_list` of `pid` (e.g. `0` or `0-1`).
pub fn allowed_cpus(pid: u32) -> Result<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .context("no Cpus_allowed_list")?;
    Ok(line.trim().to_owned())
}

/// `pinned: sidecar A pid 12 on CPUs 0; sidecar B ...`, read back from procfs.
pub fn describe(sidecars: &[Sidecar]) -> String {
    let side = |s: &Sidecar| {
        s.pids
            .iter()
            .map(|&p| match allowed_cpus(p) {
                Ok(c) => format!("pid {p} on CPUs {c}"),
                Err(e) => format!("pid {p}: {e:#}"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    match sidecars {
        [a, b] => format!("pinned: sidecar A {}; sidecar B {}", side(a), side(b)),
        _ => "pinned: no sidecars".to_owned(),
    }
}

/// Where the load generator (this process) and the backend (`backend`) may run.
pub fn harness_note(backend: u32) -> String {
    let cpus = |p: u32| allowed_cpus(p).unwrap_or_else(|e| format!("{e:#}"));
    format!(
        "load generator on CPUs {}, backend on CPUs {}",
        cpus(std::process::id()),
        cpus(backend)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_cpu_list_of_this_process() {
        let list = allowed_cpus(std::process::id()).unwrap();
        assert!(!list.is_empty());
        assert!(list
            .chars()
            .all(|c| c.is_ascii_digit() || c == '-' || c == ','));
    }

    #[test]
    fn wrapped_command_runs_on_the_given_cpu_with_its_args_and_env() {
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            "echo $PIN_TEST; grep Cpus_allowed_list /proc/self/status",
        ])
        .env("PIN_TEST", "kept");
        let out = wrap_with(&cmd, "0").output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.starts_with("kept\n"), "{text}");
        assert!(text.trim_end().ends_with("\t0"), "{text}");
    }
}

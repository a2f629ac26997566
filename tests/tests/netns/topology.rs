//! Network namespaces standing in for pods, joined by a bridge, and the guard that removes
//! them. Everything lives inside namespaces this test creates: the bridge sits in a hub
//! namespace of its own, each veth pair is created with both ends already inside the test's
//! namespaces, and the addresses are a private /24 that exists only there. The host's own
//! network namespace is never touched.

use std::path::PathBuf;
use std::process::{Command, Output};

use anyhow::{bail, Context as _};

/// The test subnet's first three octets; hosts are `.2`, `.10`, ...
pub const SUBNET: &str = "10.254.77";
/// The IPv6 subnet (a unique local /64); hosts are `::2`, `::10`, ... (same numbers).
pub const SUBNET6: &str = "fd77:77::";

/// The namespaces of one test run, deleted (with their links and iptables rules) on drop.
pub struct Topology {
    prefix: String,
    hub: String,
    members: Vec<String>,
    /// The proxy binary whose `init --uninstall` runs in each member before it is deleted.
    uninstall_with: Option<PathBuf>,
}

impl Topology {
    /// A hub namespace with a bridge, then one namespace per `(name, host octet)`, each with
    /// `eth0` on the bridge at `SUBNET.octet/24` and `SUBNET6octet/64`, and loopback up.
    pub fn new(members: &[(&str, u8)]) -> anyhow::Result<Self> {
        let prefix = format!("tm{}", std::process::id());
        let hub = format!("{prefix}-hub");
        let mut topo = Self {
            prefix: prefix.clone(),
            hub: hub.clone(),
            members: Vec::new(),
            uninstall_with: None,
        };
        ip(&["netns", "add", &hub])?;
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &hub, "link", "set", "br0", "up"])?;
        for (i, (name, octet)) in members.iter().enumerate() {
            let ns = topo.ns(name);
            ip(&["netns", "add", &ns])?;
            topo.members.push(ns.clone());
            let port = format!("v{i}");
            ip(&[
                "link", "add", "eth0", "netns", &ns, "type", "veth", "peer", "name", &port,
                "netns", &hub,
            ])?;
            ip(&["-n", &hub, "link", "set", &port, "master", "br0"])?;
            ip(&["-n", &hub, "link", "set", &port, "up"])?;
            let addr = format!("{SUBNET}.{octet}/24");
            ip(&["-n", &ns, "addr", "add", &addr, "dev", "eth0"])?;
            // nodad: usable at once, without duplicate address detection's delay.
            let addr6 = format!("{SUBNET6}{octet}/64");
            ip(&["-n", &ns, "addr", "add", &addr6, "dev", "eth0", "nodad"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(topo)
    }

    /// The namespace name of member `name`.
    pub fn ns(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    /// On drop, run `PROXY init --uninstall` in every member first.
    pub fn uninstall_rules_with(&mut self, proxy: PathBuf) {
        self.uninstall_with = Some(proxy);
    }

    /// `ip netns exec NS PROGRAM ARGS...` as a command to spawn.
    pub fn exec(&self, name: &str, program: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns(name), program])
            .args(args);
        cmd
    }

    /// Runs a command in member `name` to completion.
    pub fn run(&self, name: &str, program: &str, args: &[&str]) -> anyhow::Result<Output> {
        self.exec(name, program, args)
            .output()
            .with_context(|| format!("running {program} in {}", self.ns(name)))
    }

    /// `iptables -t nat -S` (or `ip6tables`) in member `name`.
    pub fn nat_rules(&self, name: &str, iptables: &str) -> anyhow::Result<String> {
        let out = self.run(name, iptables, &["-w", "-t", "nat", "-S"])?;
        if !out.status.success() {
            bail!(
                "{iptables} -t nat -S failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for ns in &self.members {
            if let Some(proxy) = &self.uninstall_with {
                let _ = Command::new("ip")
                    .args(["netns", "exec", ns])
                    .arg(proxy)
                    .args(["init", "--uninstall"])
                    .output();
            }
            // Deleting a namespace deletes its end of the veth pair, and with it the peer.
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.hub])
            .output();
    }
}

/// Runs `ip ARGS...`, failing with its stderr.
pub fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (apt package iproute2)")?;
    if !out.status.success() {
        bail!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

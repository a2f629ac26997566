//! `trustmesh-proxy init`: transparent interception, as the pod's init container (NET_ADMIN).
//!
//! It writes nat rules for IPv4 (`iptables`) and IPv6 (`ip6tables`) in four chains of our
//! own, the way Istio's `istio-iptables` does, so that `--uninstall` can remove exactly them:
//!
//! ```text
//! PREROUTING -p tcp -j TRUSTMESH_INBOUND          inbound TCP to the pod
//!   TRUSTMESH_INBOUND   --dport <inbound port>         RETURN  (sidecars dial it directly)
//!                       --dport <outbound, admin port> RETURN  (loopback-only: refused)
//!                       --dport <each excluded port>   RETURN
//!                       -j TRUSTMESH_IN_REDIRECT       REDIRECT --to-ports 15006
//! OUTPUT -p tcp -j TRUSTMESH_OUTPUT               TCP the pod's processes open
//!   TRUSTMESH_OUTPUT    --uid-owner <proxy uid>        RETURN  (the sidecar's own traffic)
//!                       -o lo                          RETURN  (inside the pod)
//!                       -d 127.0.0.1/32 (::1/128)      RETURN
//!                       -d <each excluded CIDR>        RETURN
//!                       --dport <each excluded port>   RETURN
//!                       -j TRUSTMESH_REDIRECT          REDIRECT --to-ports 15001
//! ```
//!
//! Installing first removes any earlier trustmesh rules, so an init container that runs again
//! after a pod restart leaves one copy. iptables runs through [`std::process::Command`] with
//! an argument vector (no shell) and `-w`, so it waits for the xtables lock.

use std::net::IpAddr;
use std::process::{Command, ExitCode};

use anyhow::{bail, Context as _};
use clap::Parser;

/// Our chains, in the order they are created (jump targets first).
pub const CHAINS: [&str; 4] = [
    "TRUSTMESH_IN_REDIRECT",
    "TRUSTMESH_REDIRECT",
    "TRUSTMESH_INBOUND",
    "TRUSTMESH_OUTPUT",
];

/// The two rules in built-in chains that send traffic into ours.
const JUMPS: [[&str; 6]; 2] = [
    ["PREROUTING", "-p", "tcp", "-j", "TRUSTMESH_INBOUND", ""],
    ["OUTPUT", "-p", "tcp", "-j", "TRUSTMESH_OUTPUT", ""],
];

/// trustmesh-proxy init: redirect the pod's TCP through the sidecar with iptables (IPv4 and
/// IPv6, nat table). Run it once per pod, as root or with NET_ADMIN, before the app starts.
#[derive(Debug, Clone, Parser)]
#[command(name = "trustmesh-proxy init", version)]
pub struct InitArgs {
    /// Remove the trustmesh chains and the rules that jump to them, and nothing else.
    #[arg(long)]
    pub uninstall: bool,
    /// The uid the sidecar runs as; its own connections are never redirected.
    #[arg(long, env = "TRUSTMESH_PROXY_UID", default_value_t = 1337)]
    pub proxy_uid: u32,
    /// The sidecar's inbound (mTLS) port: inbound TCP is redirected here.
    #[arg(long, env = "TRUSTMESH_INBOUND_PORT", default_value_t = 15006)]
    pub inbound_port: u16,
    /// The sidecar's outbound port: the app's outbound TCP is redirected here.
    #[arg(long, env = "TRUSTMESH_OUTBOUND_PORT", default_value_t = 15001)]
    pub outbound_port: u16,
    /// The sidecar's admin port. It, like the outbound port, listens on loopback only and is
    /// never redirected, so a caller from outside the pod cannot reach it through the inbound
    /// listener (nor make the sidecar call out on its behalf).
    #[arg(long, env = "TRUSTMESH_ADMIN_PORT", default_value_t = 15000)]
    pub admin_port: u16,
    /// Inbound ports left alone (comma-separated or repeated), e.g. the probe port 15020.
    #[arg(long, env = "TRUSTMESH_EXCLUDE_INBOUND_PORTS", value_delimiter = ',')]
    pub exclude_inbound_ports: Vec<u16>,
    /// Outbound destination ports left alone (comma-separated or repeated).
    #[arg(long, env = "TRUSTMESH_EXCLUDE_OUTBOUND_PORTS", value_delimiter = ',')]
    pub exclude_outbound_ports: Vec<u16>,
    /// Outbound destination networks left alone, e.g. 10.96.0.1/32,fd00::/8.
    #[arg(long, env = "TRUSTMESH_EXCLUDE_OUTBOUND_CIDRS", value_delimiter = ',', value_parser = parse_cidr)]
    pub exclude_outbound_cidrs: Vec<Cidr>,
    /// The IPv4 iptables command (e.g. iptables-legacy).
    #[arg(long, env = "TRUSTMESH_IPTABLES", default_value = "iptables")]
    pub iptables: String,
    /// The IPv6 iptables command (e.g. ip6tables-legacy).
    #[arg(long, env = "TRUSTMESH_IP6TABLES", default_value = "ip6tables")]
    pub ip6tables: String,
    /// IPv6 rules: auto (when the kernel has IPv6), on (fail without it) or off.
    #[arg(long, env = "TRUSTMESH_IPV6", default_value = "auto", value_parser = ["auto", "on", "off"])]
    pub ipv6: String,
    /// Print the iptables commands instead of running them.
    #[arg(long)]
    pub dry_run: bool,
}

/// An IP network written `ADDR/PREFIX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

fn parse_cidr(s: &str) -> Result<Cidr, String> {
    let (addr, prefix) = s.trim().split_once('/').unwrap_or((s.trim(), ""));
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("{s:?} is not ADDR/PREFIX (an IPv4 or IPv6 network)"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = if prefix.is_empty() {
        max
    } else {
        prefix
            .parse::<u8>()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("{s:?} has a bad prefix length (0 to {max})"))?
    };
    Ok(Cidr { addr, prefix })
}

/// The address family a rule set is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `iptables`.
    V4,
    /// `ip6tables`.
    V6,
}

/// The argument vectors (after `-w -t nat`) that install the rules for `family`.
pub fn install_rules(args: &InitArgs, family: Family) -> Vec<Vec<String>> {
    let mut rules: Vec<Vec<String>> = Vec::new();
    let mut rule = |parts: &[&str]| rules.push(parts.iter().map(|s| s.to_string()).collect());
    for chain in CHAINS {
        rule(&["-N", chain]);
    }
    let inbound = args.inbound_port.to_string();
    let outbound = args.outbound_port.to_string();
    rule(&[
        "-A",
        "TRUSTMESH_IN_REDIRECT",
        "-p",
        "tcp",
        "-j",
        "REDIRECT",
        "--to-ports",
        &inbound,
    ]);
    rule(&[
        "-A",
        "TRUSTMESH_REDIRECT",
        "-p",
        "tcp",
        "-j",
        "REDIRECT",
        "--to-ports",
        &outbound,
    ]);

    // Inbound: a sidecar dialling our inbound port directly, the sidecar's loopback-only
    // ports (so they stay unreachable from outside), then the excluded ports.
    let mut in_ports = vec![args.inbound_port, args.outbound_port, args.admin_port];
    in_ports.extend(args.exclude_inbound_ports.iter().copied());
    dedup(&mut in_ports);
    for port in in_ports {
        rule(&[
            "-A",
            "TRUSTMESH_INBOUND",
            "-p",
            "tcp",
            "--dport",
            &port.to_string(),
            "-j",
            "RETURN",
        ]);
    }
    rule(&[
        "-A",
        "TRUSTMESH_INBOUND",
        "-p",
        "tcp",
        "-j",
        "TRUSTMESH_IN_REDIRECT",
    ]);

    // Outbound: the sidecar itself, the pod's own loopback, exclusions, then the redirect.
    let uid = args.proxy_uid.to_string();
    rule(&[
        "-A",
        "TRUSTMESH_OUTPUT",
        "-m",
        "owner",
        "--uid-owner",
        &uid,
        "-j",
        "RETURN",
    ]);
    rule(&["-A", "TRUSTMESH_OUTPUT", "-o", "lo", "-j", "RETURN"]);
    let loopback = match family {
        Family::V4 => "127.0.0.1/32",
        Family::V6 => "::1/128",
    };
    rule(&["-A", "TRUSTMESH_OUTPUT", "-d", loopback, "-j", "RETURN"]);
    for cidr in &args.exclude_outbound_cidrs {
        if cidr.addr.is_ipv4() == (family == Family::V4) {
            rule(&[
                "-A",
                "TRUSTMESH_OUTPUT",
                "-d",
                &cidr.to_string(),
                "-j",
                "RETURN",
            ]);
        }
    }
    let mut out_ports = args.exclude_outbound_ports.clone();
    dedup(&mut out_ports);
    for port in out_ports {
        rule(&[
            "-A",
            "TRUSTMESH_OUTPUT",
            "-p",
            "tcp",
            "--dport",
            &port.to_string(),
            "-j",
            "RETURN",
        ]);
    }
    rule(&[
        "-A",
        "TRUSTMESH_OUTPUT",
        "-p",
        "tcp",
        "-j",
        "TRUSTMESH_REDIRECT",
    ]);

    // Last, the jumps from the built-in chains, so nothing is redirected half-way set up.
    for jump in JUMPS {
        let mut v = vec!["-A".to_string()];
        v.extend(jump.iter().filter(|s| !s.is_empty()).map(|s| s.to_string()));
        rules.push(v);
    }
    rules
}

fn dedup(ports: &mut Vec<u16>) {
    let mut seen = std::collections::BTreeSet::new();
    ports.retain(|p| seen.insert(*p));
}

/// Runs `trustmesh-proxy init` with the arguments after `init`; the process exit code.
pub fn main(argv: impl IntoIterator<Item = std::ffi::OsString>) -> ExitCode {
    let args = InitArgs::parse_from(argv);
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("trustmesh-proxy init: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(args: &InitArgs) -> anyhow::Result<()> {
    let mut families = vec![(Family::V4, args.iptables.as_str())];
    let kernel_v6 = std::path::Path::new("/proc/net/if_inet6").exists();
    match args.ipv6.as_str() {
        "on" if !kernel_v6 && !args.dry_run => {
            bail!("--ipv6 on, but this network namespace has no IPv6 (/proc/net/if_inet6)")
        }
        "on" => families.push((Family::V6, args.ip6tables.as_str())),
        "auto" if kernel_v6 || args.dry_run => families.push((Family::V6, args.ip6tables.as_str())),
        _ => eprintln!(
            "trustmesh-proxy init: IPv6 rules skipped (--ipv6 {})",
            args.ipv6
        ),
    }
    for (family, bin) in families {
        let ipt = Iptables {
            bin,
            dry_run: args.dry_run,
        };
        ipt.uninstall();
        if args.uninstall {
            eprintln!("trustmesh-proxy init: {bin}: trustmesh rules removed");
            continue;
        }
        for rule in install_rules(args, family) {
            if let Err(e) = ipt.run(&rule) {
                ipt.uninstall();
                return Err(e).context(format!("{bin}: installing the rules (rolled back)"));
            }
        }
        eprintln!(
            "trustmesh-proxy init: {bin}: inbound TCP -> :{}, outbound TCP -> :{} (uid {} exempt)",
            args.inbound_port, args.outbound_port, args.proxy_uid
        );
    }
    Ok(())
}

/// One iptables binary, nat table.
struct Iptables<'a> {
    bin: &'a str,
    dry_run: bool,
}

impl Iptables<'_> {
    fn command(&self, rule: &[String]) -> Command {
        let mut cmd = Command::new(self.bin);
        cmd.args(["-w", "-t", "nat"]).args(rule);
        cmd
    }

    fn run(&self, rule: &[String]) -> anyhow::Result<()> {
        if self.dry_run {
            println!("{} -w -t nat {}", self.bin, rule.join(" "));
            return Ok(());
        }
        let out = self
            .command(rule)
            .output()
            .with_context(|| format!("running {} (is iptables installed?)", self.bin))?;
        if !out.status.success() {
            bail!(
                "`{} -t nat {}` failed ({}): {}",
                self.bin,
                rule.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// Succeeds quietly or fails quietly: used where the rule may not exist.
    fn try_run(&self, rule: &[String]) -> bool {
        if self.dry_run {
            println!("{} -w -t nat {}  # if present", self.bin, rule.join(" "));
            return false;
        }
        self.command(rule)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Removes the jumps into our chains (every copy), then flushes and deletes the chains.
    fn uninstall(&self) {
        for jump in JUMPS {
            let mut rule = vec!["-D".to_string()];
            rule.extend(jump.iter().filter(|s| !s.is_empty()).map(|s| s.to_string()));
            // Bounded: one rule is deleted per call; a hundred copies would be someone's loop.
            for _ in 0..100 {
                if !self.try_run(&rule) {
                    break;
                }
            }
        }
        for op in ["-F", "-X"] {
            for chain in CHAINS {
                self.try_run(&[op.to_string(), chain.to_string()]);
            }
        }
    }
}

#[cfg(test)]
mod tests;

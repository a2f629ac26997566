//! Command line: `trustmesh authz check`: asks the policy folder what a sidecar would decide for one
//! request, with exactly the evaluator the proxy calls (`WorkloadPolicies::authorize` after
//! `normalize_path`). Prints ALLOW or DENY with the deciding policy and rule; exit 0 for
//! allow, 3 for deny (a path the proxy would refuse with 400 counts as deny).

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use trustmesh_certs::SpiffeId;
use trustmesh_policies::normalize::normalize_path_with;
use trustmesh_policies::request::Request;
use trustmesh_policies::snapshot::workload_entry;
use trustmesh_policies::CompiledPolicies;

/// `trustmesh authz ...`.
#[derive(Debug, Subcommand)]
pub enum AuthzCommand {
    /// What would a sidecar decide for this request? Prints ALLOW or DENY with the deciding
    /// policy and rule; exit 0 allow, 3 deny.
    Check(AuthzCheckArgs),
}

/// Flags of `trustmesh authz check`.
#[derive(Debug, Args)]
pub struct AuthzCheckArgs {
    /// The policy folder.
    #[arg(long)]
    policies: PathBuf,
    /// The caller's SPIFFE ID, or `none` for a caller with no verified identity.
    #[arg(long)]
    source: String,
    /// The target workload's SPIFFE ID (looked up in the registry for namespace and labels).
    #[arg(long)]
    target: SpiffeId,
    /// HTTP method.
    #[arg(long, default_value = "GET")]
    method: String,
    /// Request path (normalized as the proxy does; a query is allowed).
    #[arg(long)]
    path: String,
    /// Host / :authority.
    #[arg(long)]
    host: Option<String>,
    /// Destination port (default: the target's first service port, else 80).
    #[arg(long)]
    port: Option<u16>,
    /// The caller's IP address, for ipBlocks and source.ip conditions.
    #[arg(long)]
    source_ip: Option<IpAddr>,
    /// A request header, k=v; repeatable.
    #[arg(long = "header", value_parser = parse_header)]
    headers: Vec<(String, String)>,
    /// Check an opaque TCP connection instead of an HTTP request (identity and port only).
    #[arg(long)]
    tcp: bool,
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not k=v"))?;
    Ok((k.trim().to_ascii_lowercase(), v.to_string()))
}

/// Runs the check.
/// Runs `trustmesh authz ...`.
pub fn run(command: AuthzCommand) -> anyhow::Result<ExitCode> {
    let AuthzCommand::Check(args) = command;
    check(args)
}

fn check(args: AuthzCheckArgs) -> anyhow::Result<ExitCode> {
    let set = trustmesh_policies::load_dir(&args.policies).map_err(|diags| {
        let list: Vec<String> = diags.iter().map(|d| d.to_string()).collect();
        anyhow::anyhow!(
            "the policy folder {} is not valid:\n{}",
            args.policies.display(),
            list.join("\n")
        )
    })?;
    let source = match args.source.as_str() {
        "none" => None,
        s => Some(SpiffeId::parse(s).map_err(|e| anyhow::anyhow!("--source {s:?}: {e}"))?),
    };
    if set.registry.find_by_identity(&args.target).is_none() {
        eprintln!(
            "warning: {} is not in the registry; checking it as a workload with no labels in namespace {:?}",
            args.target,
            args.target.namespace().unwrap_or("default")
        );
    }
    let workload = workload_entry(&set.registry, &args.target);
    let compiled = CompiledPolicies::from_set(&set).map_err(|errors| {
        let list: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        anyhow::anyhow!("the policies do not compile:\n{}", list.join("\n"))
    })?;
    let policies = compiled.policies_for(&workload);
    let port = args
        .port
        .or_else(|| workload.ports.first().map(|p| p.port))
        .unwrap_or(80);
    let path = match normalize_path_with(&args.path, set.mesh.path_parameters) {
        Ok(p) => p,
        Err(e) => {
            println!("DENY  bad request path: {e} (the sidecar answers 400)");
            return Ok(ExitCode::from(3));
        }
    };
    let request = if args.tcp {
        Request::tcp(source.as_ref(), args.source_ip, port)
    } else {
        Request {
            source: source.as_ref(),
            source_ip: args.source_ip,
            method: Some(&args.method),
            path: Some(&path),
            host: args.host.as_deref(),
            port,
            headers: &args.headers,
            sni: None,
            is_tcp: false,
        }
    };
    let d = policies.authorize(&request);
    let verdict = if d.allowed { "ALLOW" } else { "DENY" };
    let policy = d.policy.as_deref().unwrap_or("(none)");
    let rule = d
        .rule
        .map(|r| format!("rules[{r}]"))
        .unwrap_or_else(|| "-".into());
    println!(
        "{verdict}  policy={policy} rule={rule} reason={}",
        d.reason.as_str()
    );
    if d.would_deny {
        println!("note: dry run: enforcing would deny this request");
    }
    if d.would_allow {
        println!("note: dry run: a dry-run ALLOW policy would allow this request (it is denied)");
    }
    if let Some(a) = d.audit.as_deref() {
        println!("audit: {a}");
    }
    if !args.tcp {
        println!("normalized path: {}", path.as_str());
    }
    Ok(if d.allowed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

//! `trustmesh route check`: which `HTTPRoute` rule a request from a workload would take, and
//! where it would go, answered from the policy folder with the library code the caller's
//! sidecar runs (the routes its snapshot carries, `CompiledRoutes::route` after
//! `normalize_path`). Exit 0 when a route matched, 3 when none did (default routing: the
//! request goes to the Service it named), 1 when the folder is not valid.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use trustmesh_certs::SpiffeId;
use trustmesh_policies::normalize::normalize_path_with;
use trustmesh_policies::route::{
    format_duration, query_pairs, CompiledRoutes, HeaderEdits, RouteRequest,
};
use trustmesh_policies::CompiledPolicies;

/// `trustmesh route ...`.
#[derive(Debug, Subcommand)]
pub enum RouteCommand {
    /// Which route and rule a request takes, and its backends, weights, timeouts and retry;
    /// exit 0 when a route matched, 3 when none did (default routing applies).
    Check(RouteCheckArgs),
}

/// Flags of `trustmesh route check`.
#[derive(Debug, Args)]
pub struct RouteCheckArgs {
    /// The policy folder.
    #[arg(long)]
    policies: PathBuf,
    /// The caller's SPIFFE ID (routes apply on the caller's sidecar).
    #[arg(long)]
    source: SpiffeId,
    /// Host / :authority, as the caller's app sends it (`orders`, `orders.shop:80`, ...).
    #[arg(long)]
    host: String,
    /// HTTP method.
    #[arg(long, default_value = "GET")]
    method: String,
    /// Request path, normalized as the sidecar does; a query is allowed.
    #[arg(long)]
    path: String,
    /// A request header, k=v; repeatable.
    #[arg(long = "header", value_parser = parse_pair)]
    headers: Vec<(String, String)>,
    /// A query parameter, k=v, after those of --path; repeatable.
    #[arg(long = "query", value_parser = parse_pair)]
    query: Vec<(String, String)>,
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not k=v"))?;
    if k.is_empty() {
        return Err(format!("{s:?} has an empty name"));
    }
    Ok((k.to_string(), v.to_string()))
}

/// The port a Host names, if it names one.
fn host_port(host: &str) -> Option<u16> {
    if let Ok(addr) = host.parse::<SocketAddr>() {
        return Some(addr.port());
    }
    let (name, port) = host.rsplit_once(':')?;
    (!name.contains(':') || name.ends_with(']'))
        .then(|| port.parse().ok())
        .flatten()
}

/// Runs the check.
pub fn run(args: RouteCheckArgs) -> anyhow::Result<ExitCode> {
    let set = trustmesh_policies::load_dir(&args.policies).map_err(|diags| {
        let list: Vec<String> = diags.iter().map(|d| d.to_string()).collect();
        anyhow::anyhow!(
            "the policy folder {} is not valid:\n{}",
            args.policies.display(),
            list.join("\n")
        )
    })?;
    let compiled = CompiledPolicies::from_set(&set).map_err(|errors| {
        let list: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        anyhow::anyhow!("the policies do not compile:\n{}", list.join("\n"))
    })?;
    let none = |why: String| {
        println!("NO ROUTE  {why}");
        Ok(ExitCode::from(3))
    };
    let Some(dest) = set
        .registry
        .find_by_host(&args.host, args.source.namespace())
    else {
        return none(format!(
            "host {:?} is not in the registry (the sidecar answers 404)",
            args.host
        ));
    };
    let service = format!("{}/{}", dest.namespace, dest.name);
    let callable = |e: &trustmesh_policies::ServiceEntry| {
        compiled.policies_for(e).may_be_called_by(&args.source)
    };
    if !callable(dest) {
        return none(format!(
            "{} may not call {service}: it is not in its sidecar's registry (404)",
            args.source
        ));
    }
    let routes = crate::domain::routes::for_caller(&set, &compiled, &args.source);
    let table = CompiledRoutes::compile(&routes).map_err(|errors| {
        let list: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        anyhow::anyhow!("the routes do not compile:\n{}", list.join("\n"))
    })?;
    let path = match normalize_path_with(&args.path, set.mesh.path_parameters) {
        Ok(p) => p,
        Err(e) => return none(format!("bad request path: {e} (the sidecar answers 400)")),
    };
    let port = host_port(&args.host)
        .or_else(|| dest.ports.first().map(|p| p.port))
        .unwrap_or(80);
    let mut query = query_pairs(path.query());
    query.extend(args.query.iter().cloned());
    let headers: Vec<(String, String)> = args
        .headers
        .iter()
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.clone()))
        .collect();
    let req = RouteRequest {
        namespace: &dest.namespace,
        service: &dest.name,
        port,
        method: &args.method,
        path: &path,
        headers: &headers,
        query: &query,
    };
    let Some(routed) = table.route(&req) else {
        return none(format!(
            "no HTTPRoute rule of {service} port {port} matches; default routing to {service}"
        ));
    };
    let a = routed.action;
    println!(
        "ROUTE  {} rules[{}] matches[{}]  (parent {service} port {port})",
        routed.route, routed.rule, routed.matched
    );
    let total: u64 = a.backends.iter().map(|b| u64::from(b.weight)).sum();
    println!("backends:");
    for b in &a.backends {
        let share = if total == 0 {
            0.0
        } else {
            100.0 * f64::from(b.weight) / total as f64
        };
        let target = set
            .registry
            .entries()
            .iter()
            .find(|e| e.namespace == b.namespace && e.name == b.name);
        let note = match target {
            Some(e) if !callable(e) => format!("  (denied: {} may not call it)", args.source),
            _ => String::new(),
        };
        println!(
            "  {}/{}:{}  weight {} ({share:.1}%){note}",
            b.namespace,
            b.name,
            b.port.unwrap_or(port),
            b.weight
        );
    }
    let d = |t: Option<std::time::Duration>| t.map_or("none".to_string(), format_duration);
    println!(
        "timeouts: request {}, backendRequest {}",
        d(a.request_timeout),
        d(a.backend_request_timeout)
    );
    match &a.retry {
        Some(r) => {
            let codes: Vec<String> = r.codes.iter().map(u16::to_string).collect();
            println!(
                "retry: attempts {}, codes [{}], backoff {} (connection errors always retried)",
                r.attempts,
                codes.join(","),
                d(r.backoff)
            );
        }
        None => println!("retry: none"),
    }
    print_edits("request headers", &a.request_headers);
    print_edits("response headers", &a.response_headers);
    Ok(ExitCode::SUCCESS)
}

fn print_edits(what: &str, e: &HeaderEdits) {
    if e.is_empty() {
        return;
    }
    let pairs = |l: &[(http::HeaderName, http::HeaderValue)]| {
        l.iter()
            .map(|(n, v)| format!("{n}: {}", v.to_str().unwrap_or("<binary>")))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut parts = Vec::new();
    if !e.set.is_empty() {
        parts.push(format!("set {}", pairs(&e.set)));
    }
    if !e.add.is_empty() {
        parts.push(format!("add {}", pairs(&e.add)));
    }
    if !e.remove.is_empty() {
        let names: Vec<&str> = e.remove.iter().map(|n| n.as_str()).collect();
        parts.push(format!("remove {}", names.join(", ")));
    }
    println!("{what}: {}", parts.join("; "));
}

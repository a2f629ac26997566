//! Command line: `trustmesh status`, what the control plane knows about the mesh. It calls
//! `GET /v1/proxies` ([`crate::api::proxies`]) over mTLS with the admin file and prints a table
//! (or the JSON as it came with `--output json`).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use serde_json::Value;
use trustmesh_certs::{control_plane_identity, RotatingResolver, TrustBundle};

use super::admin_cert;

/// Largest `/v1/proxies` answer the CLI reads.
const MAX_ANSWER: usize = 16 << 20;

/// `--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns.
    Table,
    /// The answer of `GET /v1/proxies` as it came.
    Json,
}

/// Flags of `trustmesh status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The control plane's API.
    #[arg(
        long,
        env = "TRUSTMESH_CONTROL_PLANE",
        default_value = "https://127.0.0.1:15012"
    )]
    pub control_plane: http::Uri,
    /// The admin certificate and key (`trustmesh admin-cert`).
    #[arg(
        long,
        env = "TRUSTMESH_ADMIN_CERT",
        default_value = ".trustmesh/admin.pem"
    )]
    pub admin_cert: PathBuf,
    /// The trust bundle that verifies the control plane.
    #[arg(
        long,
        env = "TRUSTMESH_TRUST_BUNDLE",
        default_value = ".trustmesh/trust-bundle.pem"
    )]
    pub trust_bundle: PathBuf,
    /// table or json.
    #[arg(long, value_enum, default_value = "table")]
    pub output: Output,
}

/// Runs `trustmesh status`.
pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    let answer = fetch(&args).await?;
    match args.output {
        Output::Json => println!("{answer}"),
        Output::Table => print!("{}", table(&answer)),
    }
    Ok(())
}

async fn fetch(args: &StatusArgs) -> anyhow::Result<Value> {
    let (chain, key) = admin_cert::load(&args.admin_cert)?;
    let me = trustmesh_certs::identity_from_cert(&chain[0])
        .with_context(|| format!("{} holds no SPIFFE certificate", args.admin_cert.display()))?;
    let bundle_pem = std::fs::read_to_string(&args.trust_bundle)
        .with_context(|| format!("reading --trust-bundle {}", args.trust_bundle.display()))?;
    let bundle = TrustBundle::from_pem(&bundle_pem)
        .with_context(|| format!("--trust-bundle {}", args.trust_bundle.display()))?;
    let resolver = Arc::new(RotatingResolver::new());
    resolver
        .set(chain, &key)
        .context("loading the admin certificate")?;
    let tls = trustmesh_certs::tls::control_plane_client_config(
        &bundle,
        control_plane_identity(&me.trust_domain()),
        Some(resolver),
    )?;
    let uri = &args.control_plane;
    let host = uri
        .host()
        .context("--control-plane has no host")?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(15012);
    let addr = tokio::net::lookup_host((host.as_str(), port))
        .await
        .with_context(|| format!("resolving {uri}"))?
        .next()
        .with_context(|| format!("{uri} has no address"))?;
    let target = trustmesh_runtime::client::Target::at(addr, &host);
    let (status, body) = trustmesh_runtime::client::get(
        Arc::new(tls),
        &target,
        "/v1/proxies",
        MAX_ANSWER,
        std::time::Duration::from_secs(15),
    )
    .await
    .with_context(|| format!("asking {uri}"))?;
    let value: Value = serde_json::from_slice(&body)
        .with_context(|| format!("{uri}/v1/proxies answered {status} with no JSON"))?;
    if !status.is_success() {
        anyhow::bail!(
            "{uri}/v1/proxies answered {status}: {}",
            value["message"].as_str().unwrap_or_default()
        );
    }
    Ok(value)
}

/// The human form: the control plane's state, then one row per proxy.
fn table(v: &Value) -> String {
    let cp = &v["control_plane"];
    let s = |v: &Value| v.as_str().unwrap_or("-").to_string();
    let blocked: Vec<String> = cp["blocked_identities"]
        .as_array()
        .map(|a| a.iter().map(s).collect())
        .unwrap_or_default();
    let mut out = format!(
        "control plane\n  policy version:    {}\n  last policy error: {}\n  CA expires:        {}\n  \
         trust bundle:      {} root(s), CA rotation {}\n  blocked:           {}\n  \
         shared state:      {}\n\n",
        s(&cp["policy_version"]),
        cp["policy_error"].as_str().unwrap_or("none"),
        s(&cp["ca_expires_at"]),
        cp["trust_bundle_roots"].as_u64().unwrap_or(0),
        cp["ca_rotation"].as_str().unwrap_or("none"),
        if blocked.is_empty() { "none".to_string() } else { blocked.join(", ") },
        cp["shared_state"].as_str().unwrap_or("-"),
    );
    let header = [
        "IDENTITY",
        "ADDRESS",
        "CERT EXPIRES",
        "POLICY VERSION",
        "LAST SEEN",
    ];
    let rows: Vec<[String; 5]> = v["proxies"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| {
                    [
                        s(&p["identity"]),
                        s(&p["address"]),
                        s(&p["certificate_expiry"]),
                        s(&p["policy_version"]),
                        s(&p["last_seen"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    let mut widths = header.map(str::len);
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    out.push_str(&line(&header.map(str::to_string)));
    for r in &rows {
        out.push_str(&line(r));
    }
    out.push_str(&format!("{} proxies\n", rows.len()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_lists_the_control_plane_then_proxies() {
        let v = serde_json::json!({
            "control_plane": {"policy_version": "git:abc", "policy_error": null,
                              "ca_expires_at": "2030-01-01T00:00:00Z",
                              "shared_state": "kubernetes/trustmesh-system"},
            "proxies": [{"identity": "spiffe://cluster.local/ns/a/sa/b", "address": "127.0.0.1",
                         "certificate_expiry": "2030-01-01T00:00:00Z",
                         "policy_version": "git:abc", "last_seen": "2029-01-01T00:00:00Z"}],
        });
        let t = table(&v);
        assert!(t.contains("policy version:    git:abc"), "{t}");
        assert!(t.contains("last policy error: none"), "{t}");
        assert!(
            t.contains("shared state:      kubernetes/trustmesh-system"),
            "{t}"
        );
        assert!(
            t.lines()
                .any(|l| l.starts_with("spiffe://cluster.local/ns/a/sa/b  127.0.0.1")),
            "{t}"
        );
        assert!(t.ends_with("1 proxies\n"), "{t}");
    }
}

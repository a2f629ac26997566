//! A policy folder written per test: `mesh.yaml` and a `services.yaml` registry.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// The trust domain every test mesh uses.
pub const TRUST_DOMAIN: &str = "cluster.local";

/// The SPIFFE ID of service account `sa` in namespace `ns` of [`TRUST_DOMAIN`].
pub fn spiffe_id(ns: &str, sa: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}/ns/{ns}/sa/{sa}")
}

/// One `kind: Service` registry entry.
#[derive(Debug, Clone)]
pub struct ServiceEntry {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `spec.identity`: the SPIFFE ID a caller must see on the endpoint's certificate.
    pub identity: String,
    /// `spec.endpoints`: the sidecar's inbound address.
    pub endpoint: SocketAddr,
    /// More `spec.endpoints` after `endpoint`: other sidecars of the same service.
    pub more_endpoints: Vec<SocketAddr>,
    /// `spec.ports` as `(port, protocol)`: `(80, "http")` unless changed.
    pub ports: Vec<(u16, &'static str)>,
}

impl ServiceEntry {
    /// Service `name` in `namespace` whose identity is that namespace's service account `name`.
    pub fn new(name: &str, namespace: &str, endpoint: SocketAddr) -> Self {
        Self {
            name: name.to_string(),
            namespace: namespace.to_string(),
            identity: spiffe_id(namespace, name),
            endpoint,
            more_endpoints: Vec::new(),
            ports: vec![(80, "http")],
        }
    }

    /// The same entry with `more` endpoints after its first.
    pub fn with_endpoints(mut self, more: &[SocketAddr]) -> Self {
        self.more_endpoints.extend_from_slice(more);
        self
    }

    /// The same entry with `port` also declared as `protocol` (e.g. `"tcp"`).
    pub fn with_port(mut self, port: u16, protocol: &'static str) -> Self {
        self.ports.push((port, protocol));
        self
    }

    fn yaml(&self) -> String {
        let ports: Vec<String> = self
            .ports
            .iter()
            .map(|(port, protocol)| format!("{{port: {port}, protocol: {protocol}}}"))
            .collect();
        format!(
            "apiVersion: trustmesh.io/v1\n\
             kind: Service\n\
             metadata: {{name: {name}, namespace: {ns}, labels: {{app: {name}}}}}\n\
             spec:\n  \
               identity: {id}\n  \
               endpoints: [{eps}]\n  \
               ports: [{ports}]\n",
            ports = ports.join(", "),
            name = self.name,
            ns = self.namespace,
            id = self.identity,
            eps = std::iter::once(&self.endpoint)
                .chain(&self.more_endpoints)
                .map(|e| format!("\"{e}\""))
                .collect::<Vec<_>>()
                .join(", "),
        )
    }
}

/// Writes `dir/mesh.yaml` (default allow, since authorization is not what these tests prove)
/// and `dir/services.yaml` with `services` (none when `services` is empty); returns `dir`.
pub fn write_policies(dir: &Path, services: &[ServiceEntry]) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(
        dir.join("mesh.yaml"),
        format!("trust_domain: {TRUST_DOMAIN}\ndefault_action: allow\n"),
    )
    .context("writing mesh.yaml")?;
    if services.is_empty() {
        return Ok(dir.to_path_buf());
    }
    let mut docs = String::new();
    for (i, s) in services.iter().enumerate() {
        if i > 0 {
            docs.push_str("---\n");
        }
        let _ = write!(docs, "{}", s.yaml());
    }
    std::fs::write(dir.join("services.yaml"), docs).context("writing services.yaml")?;
    Ok(dir.to_path_buf())
}

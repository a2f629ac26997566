//! The snapshot a proxy receives from the control plane (`GET /v1/snapshot`): everything that
//! concerns one workload, at one policy version. Both binaries use this one type, so the
//! wire format cannot drift between them.

use serde::{Deserialize, Serialize};
use trustmesh_certs::SpiffeId;

use crate::route::HttpRoute;
use crate::{AuthorizationPolicy, IpRanges, MeshConfig, Registry, ServiceEntry};

/// What one proxy needs to serve, at one version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The snapshot version: the policy version (`git:<commit>` for a git checkout, else
    /// `sha256:<content hash>`), then `+b` and a hash of the trust bundle and the blocklist.
    pub version: String,
    /// The workload this snapshot is for (the caller's verified identity).
    pub identity: SpiffeId,
    /// Mesh-wide settings.
    pub mesh: MeshConfig,
    /// The registry entries the workload may call and must verify.
    pub registry: Registry,
    /// The trust bundle (PEM): the roots a peer's certificate must chain to.
    pub trust_bundle: String,
    /// The authorization policies that apply to the workload (its namespace's, selected by its
    /// labels, and the root namespace's).
    #[serde(default)]
    pub policies: Vec<AuthorizationPolicy>,
    /// Identities the mesh refuses at once (`trustmesh identity block`): sidecars close their
    /// new connections after the handshake and answer their requests with 403.
    #[serde(default)]
    pub blocked: Vec<SpiffeId>,
    /// The IP addresses of mesh workloads left out of `registry` because this workload may
    /// not call them: traffic to them is refused, never passed through in plaintext. On the
    /// wire, addresses and inclusive ranges (`"10.0.0.1-10.0.0.9"`, see [`IpRanges`]).
    #[serde(default)]
    pub withheld_ips: IpRanges,
    /// The `HTTPRoute`s whose parent is a Service this workload may call (applied by its
    /// sidecar on outbound requests). Left out when empty, so a snapshot without routes reads
    /// the same for sidecars that predate them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<HttpRoute>,
}

impl Snapshot {
    /// The policy version alone: the snapshot version without its `+b<trust generation>`
    /// suffix (what `/config` and `trustmesh_policy_version_info` report).
    pub fn policy_version(&self) -> &str {
        self.version
            .rsplit_once("+b")
            .map_or(self.version.as_str(), |(policy, _)| policy)
    }

    /// The workload's own registry entry; a workload missing from the registry is taken as an
    /// entry with no labels in the namespace its SPIFFE ID names (so that namespace-wide and
    /// mesh-wide policies still apply to it).
    pub fn workload(&self) -> ServiceEntry {
        workload_entry(&self.registry, &self.identity)
    }
}

/// The registry entry for `identity`, or a label-less stand-in in its SPIFFE namespace.
pub fn workload_entry(registry: &Registry, identity: &SpiffeId) -> ServiceEntry {
    registry
        .find_by_identity(identity)
        .cloned()
        .unwrap_or_else(|| ServiceEntry {
            name: identity.service_account().unwrap_or("unknown").to_string(),
            namespace: identity.namespace().unwrap_or("default").to_string(),
            labels: Default::default(),
            identity: identity.clone(),
            endpoints: Vec::new(),
            ports: Vec::new(),
            endpoint_identities: Default::default(),
        })
}

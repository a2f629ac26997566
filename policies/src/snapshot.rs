//! The snapshot a proxy receives from the control plane (`GET /v1/snapshot`): everything that
//! concerns one workload, at one policy version. Both binaries use this one type, so the
//! wire format cannot drift between them.

use serde::{Deserialize, Serialize};
use trustmesh_certs::SpiffeId;

use crate::{MeshConfig, Registry};

/// What one proxy needs to serve, at one version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The policy version: `git:<commit>` for a git checkout, else `sha256:<content hash>`.
    pub version: String,
    /// The workload this snapshot is for (the caller's verified identity).
    pub identity: SpiffeId,
    /// Mesh-wide settings.
    pub mesh: MeshConfig,
    /// The registry entries the workload may call and must verify.
    pub registry: Registry,
    /// The trust bundle (PEM): the roots a peer's certificate must chain to.
    pub trust_bundle: String,
}

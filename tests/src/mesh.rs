//! The usual topology: a control plane and two sidecars, A and B, each in front of a test app,
//! with B in the registry as service `b` in namespace `test`.
//!
//! ```text
//! test (as A's app) --HTTP--> A outbound --mTLS--> B inbound --HTTP--> B's app
//! ```

use std::net::SocketAddr;

use crate::app::App;
use crate::control_plane::ControlPlane;
use crate::policies::{spiffe_id, write_policies, ServiceEntry};
use crate::ports::ProxyPorts;
use crate::proxy::Proxy;
use crate::workdir::WorkDir;

/// The namespace of the test services.
pub const NAMESPACE: &str = "test";

/// A running two-sidecar mesh. Fields drop in order: sidecars, control plane, apps, folder.
#[derive(Debug)]
pub struct Mesh {
    /// Sidecar of the caller, `spiffe://cluster.local/ns/test/sa/a`.
    pub a: Proxy,
    /// Sidecar of the callee, `spiffe://cluster.local/ns/test/sa/b`, registered as service `b`.
    pub b: Proxy,
    /// The control plane.
    pub cp: ControlPlane,
    /// The app behind A (the test itself plays A's app as a client).
    pub app_a: App,
    /// The app behind B: what it saw is what the mesh delivered.
    pub app_b: App,
    /// Policies, data, tokens and logs.
    pub dir: WorkDir,
}

/// Variations on B's sidecar for the tests that need a broken or lying B.
#[derive(Debug, Default, Clone)]
pub struct MeshOptions {
    /// B's `--app` instead of B's test app (e.g. a closed port).
    pub b_app: Option<SocketAddr>,
    /// The identity B's sidecar bootstraps as, instead of the registry's
    /// `spiffe://cluster.local/ns/test/sa/b`.
    pub b_identity: Option<String>,
    /// Extra flags for B's sidecar.
    pub b_extra: Vec<String>,
    /// B's stdout (its access log) is a pipe that nobody reads.
    pub b_stdout_unread: bool,
    /// B's registry `spec.ports` as `(port, protocol)` instead of `[(80, "http")]` (e.g. B's
    /// app port declared `http2`, so that the inbound sidecar speaks h2c to it).
    pub b_ports: Vec<(u16, &'static str)>,
    /// Also declare B's test app's port in B's `spec.ports` with this protocol.
    pub b_app_protocol: Option<&'static str>,
    /// Policy documents (YAML) written as `policies/authz.yaml` before the control plane starts.
    pub policies: Option<String>,
    /// Extra flags for A's sidecar.
    pub a_extra: Vec<String>,
}

impl Mesh {
    /// Starts the control plane, then B and A, and waits until both sidecars are ready.
    pub async fn a_to_b(test: &str) -> anyhow::Result<Self> {
        Self::start(test, MeshOptions::default()).await
    }

    /// [`Mesh::a_to_b`] with B changed as `opts` says.
    pub async fn start(test: &str, opts: MeshOptions) -> anyhow::Result<Self> {
        let Base {
            dir,
            a_ports,
            b_ports,
            policies,
            app_a,
            app_b,
        } = Base::with_b_ports(test, &opts.b_ports, opts.b_app_protocol).await?;
        if let Some(yaml) = &opts.policies {
            std::fs::write(policies.join("authz.yaml"), yaml)?;
        }
        let cp = ControlPlane::start(dir.path(), &policies).await?;
        let id_a = spiffe_id(NAMESPACE, "a");
        let id_b = opts.b_identity.unwrap_or_else(|| spiffe_id(NAMESPACE, "b"));
        let b_app = opts.b_app.unwrap_or(app_b.addr());
        let b_extra: Vec<&str> = opts.b_extra.iter().map(String::as_str).collect();
        let b = async {
            if opts.b_stdout_unread {
                Proxy::start_stdout_unread(&cp, "b", &id_b, b_app, b_ports, &b_extra).await
            } else {
                Proxy::start_with(&cp, "b", &id_b, b_app, b_ports, &b_extra).await
            }
        };
        let a_extra: Vec<&str> = opts.a_extra.iter().map(String::as_str).collect();
        let a = Proxy::start_with(&cp, "a", &id_a, app_a.addr(), a_ports, &a_extra);
        let (b, a) = tokio::try_join!(b, a)?;
        Ok(Self {
            a,
            b,
            cp,
            app_a,
            app_b,
            dir,
        })
    }
}

/// What every A → B topology starts from: a work folder, ports for both sidecars, the registry
/// of services `a` and `b` in namespace `test`, and the two apps.
pub(crate) struct Base {
    pub dir: WorkDir,
    pub a_ports: ProxyPorts,
    pub b_ports: ProxyPorts,
    pub policies: std::path::PathBuf,
    pub app_a: App,
    pub app_b: App,
}

impl Base {
    pub(crate) async fn new(test: &str) -> anyhow::Result<Self> {
        Self::with_b_ports(test, &[], None).await
    }

    /// [`Base::new`] with B's `spec.ports` as `ports` (unchanged when empty), and B's test
    /// app's port declared as `app_protocol`.
    async fn with_b_ports(
        test: &str,
        ports: &[(u16, &'static str)],
        app_protocol: Option<&'static str>,
    ) -> anyhow::Result<Self> {
        let dir = WorkDir::new(test)?;
        let a_ports = ProxyPorts::allocate()?;
        let b_ports = ProxyPorts::allocate()?;
        let (app_a, app_b) = (App::start().await?, App::start().await?);
        let mut b = ServiceEntry::new("b", NAMESPACE, b_ports.inbound);
        if !ports.is_empty() {
            b.ports = ports.to_vec();
        }
        if let Some(protocol) = app_protocol {
            b = b.with_port(app_b.addr().port(), protocol);
        }
        let policies = write_policies(
            &dir.path().join("policies"),
            &[ServiceEntry::new("a", NAMESPACE, a_ports.inbound), b],
        )?;
        Ok(Self {
            dir,
            a_ports,
            b_ports,
            policies,
            app_a,
            app_b,
        })
    }
}

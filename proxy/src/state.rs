//! What the data path reads: this sidecar's identity and certificate, and the mesh view built
//! from the newest snapshot (registry, trust bundle, TLS configurations). Both are swapped
//! atomically; a request reads them once and keeps what it read.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwapOption;
use trustmesh_certs::{RotatingResolver, SpiffeId, TrustBundle};
use trustmesh_policies::route::CompiledRoutes;
use trustmesh_policies::snapshot::Snapshot;
use trustmesh_policies::{CompiledPolicies, WorkloadPolicies};

use crate::app_ports::{InboundPorts, SidecarPorts};
use crate::observe::metrics::Metrics;
use crate::outbound::pool::hash::FastMap;

/// The certificate in use.
#[derive(Debug, Clone)]
pub struct CertInfo {
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
    /// Serial, hex.
    pub serial: String,
    /// When this proxy installed it: renewal is scheduled from here, since NotBefore is
    /// back-dated for clock skew.
    pub received_at: SystemTime,
}

/// The mesh as the newest snapshot describes it.
pub struct MeshView {
    /// The snapshot itself.
    pub snapshot: Snapshot,
    /// Its trust bundle, parsed.
    pub bundle: TrustBundle,
    /// The inbound TLS configuration (client certificate required, TLS 1.3).
    pub server_config: Arc<rustls::ServerConfig>,
    /// The policies that apply to this workload, compiled.
    pub policies: WorkloadPolicies,
    /// The app ports inbound connections may reach (from this workload's own registry entry).
    pub ports: InboundPorts,
    /// Identities refused at once (see [`crate::revocation`]).
    pub blocked: HashSet<SpiffeId>,
    /// The snapshot's `HTTPRoute`s, compiled once for every request of this view (applied on
    /// outbound, [`crate::outbound::http_route`]).
    pub routes: CompiledRoutes,
    /// The client configuration per peer identity, looked up on every outbound request: keyed
    /// by registry identities (never a caller's input), so hashed with foldhash (`outbound::pool::hash`).
    client_configs: Mutex<FastMap<SpiffeId, Arc<rustls::ClientConfig>>>,
    /// The same configurations with ALPN `http/1.1` (the HTTP/1.1 hop, [`crate::outbound::hop`]).
    http1_client_configs: Mutex<FastMap<SpiffeId, Arc<rustls::ClientConfig>>>,
}

impl MeshView {
    /// Builds the view for a snapshot; fails when its trust bundle is unusable. `sidecar` is
    /// what inbound must never reach (see [`crate::app_ports`]).
    ///
    /// When `previous` (the view in force) has the same trust bundle, its TLS configurations
    /// are kept: they depend only on the bundle, the trust domain and the resolver (which
    /// follows certificate renewals by itself), and the pool re-uses a connection only while
    /// its configuration is the one in force. So a policy commit leaves pooled connections
    /// alone, and a new bundle (a CA rotation step) makes every one of them anew.
    pub fn new(
        snapshot: Snapshot,
        resolver: &Arc<RotatingResolver>,
        sidecar: &SidecarPorts,
        previous: Option<&MeshView>,
    ) -> anyhow::Result<Self> {
        let bundle = TrustBundle::from_pem(&snapshot.trust_bundle)?;
        let compiled =
            CompiledPolicies::compile(&snapshot.mesh, &snapshot.registry, &snapshot.policies)
                .map_err(|errors| {
                    let list: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
                    anyhow::anyhow!(
                        "the snapshot's policies do not compile: {}",
                        list.join("; ")
                    )
                })?;
        let routes = CompiledRoutes::compile(&snapshot.routes).map_err(|errors| {
            let list: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
            anyhow::anyhow!("the snapshot's routes do not compile: {}", list.join("; "))
        })?;
        let workload = snapshot.workload();
        let policies = compiled.policies_for(&workload);
        let ports = InboundPorts::new(sidecar, &workload.ports);
        let td = snapshot.identity.trust_domain();
        let same_trust = previous.filter(|p| {
            p.snapshot.trust_bundle == snapshot.trust_bundle
                && p.snapshot.identity == snapshot.identity
        });
        let (server_config, client_configs, http1_client_configs) = match same_trust {
            Some(p) => {
                // Only for identities the registry still names, so the cache cannot grow
                // with destinations long gone.
                let named: HashSet<&SpiffeId> = snapshot
                    .registry
                    .entries()
                    .iter()
                    .flat_map(|e| e.identities())
                    .collect();
                let kept = |cache: &Mutex<FastMap<SpiffeId, Arc<rustls::ClientConfig>>>| {
                    let mut configs = cache.lock().map(|c| c.clone()).unwrap_or_default();
                    configs.retain(|id, _| named.contains(id));
                    configs
                };
                let (h2, http1) = (kept(&p.client_configs), kept(&p.http1_client_configs));
                (p.server_config.clone(), h2, http1)
            }
            None => {
                let mut server_config =
                    trustmesh_certs::tls::sidecar_server_config(&bundle, &td, resolver.clone())?;
                server_config
                    .alpn_protocols
                    .push(crate::layers::detect::OPAQUE_ALPN.to_vec());
                (
                    Arc::new(server_config),
                    FastMap::default(),
                    FastMap::default(),
                )
            }
        };
        Ok(Self {
            blocked: snapshot.blocked.iter().cloned().collect(),
            snapshot,
            bundle,
            server_config,
            policies,
            ports,
            routes,
            client_configs: Mutex::new(client_configs),
            http1_client_configs: Mutex::new(http1_client_configs),
        })
    }

    /// The client configuration that verifies a peer as `expected` (cached per identity).
    pub fn client_config(
        &self,
        resolver: &Arc<RotatingResolver>,
        expected: &SpiffeId,
    ) -> anyhow::Result<Arc<rustls::ClientConfig>> {
        let mut cache = self
            .client_configs
            .lock()
            .map_err(|_| anyhow::anyhow!("client config cache poisoned"))?;
        if let Some(c) = cache.get(expected) {
            return Ok(c.clone());
        }
        let c = Arc::new(trustmesh_certs::tls::sidecar_client_config(
            &self.bundle,
            resolver.clone(),
            expected.clone(),
        )?);
        cache.insert(expected.clone(), c.clone());
        Ok(c)
    }

    /// [`MeshView::client_config`] with ALPN `http/1.1` in place of `h2` (cached per
    /// identity, kept across snapshots like it).
    pub fn http1_client_config(
        &self,
        resolver: &Arc<RotatingResolver>,
        expected: &SpiffeId,
    ) -> anyhow::Result<Arc<rustls::ClientConfig>> {
        {
            let cache = self
                .http1_client_configs
                .lock()
                .map_err(|_| anyhow::anyhow!("client config cache poisoned"))?;
            if let Some(c) = cache.get(expected) {
                return Ok(c.clone());
            }
        }
        let mut c = (*self.client_config(resolver, expected)?).clone();
        c.alpn_protocols = vec![crate::outbound::pool::http1::ALPN.to_vec()];
        let c = Arc::new(c);
        self.http1_client_configs
            .lock()
            .map_err(|_| anyhow::anyhow!("client config cache poisoned"))?
            .insert(expected.clone(), c.clone());
        Ok(c)
    }
}

/// State shared by every task of the proxy.
pub struct Shared {
    /// Our SPIFFE ID.
    pub identity: SpiffeId,
    /// Hands our current certificate to rustls.
    pub resolver: Arc<RotatingResolver>,
    /// The certificate in use, once we have one.
    pub cert: ArcSwapOption<CertInfo>,
    /// The mesh view, once a snapshot has arrived.
    pub mesh: ArcSwapOption<MeshView>,
    /// Metrics.
    pub metrics: Metrics,
    /// Graceful drain on SIGTERM: not ready, no new connections, in-flight requests finish.
    pub drain: trustmesh_runtime::Drain,
    /// Ticks whenever a new mesh view is in force (open opaque connections re-authorize).
    pub mesh_changes: tokio::sync::watch::Sender<u64>,
    /// The sidecar's own listening ports and its `--app` port, as bound at start.
    pub ports: SidecarPorts,
}

impl Shared {
    /// Ready means: a certificate that has not expired, and a snapshot.
    pub fn readiness(&self) -> Result<(), &'static str> {
        if self.drain.is_draining() {
            return Err("draining");
        }
        let cert = self.cert.load();
        match cert.as_ref() {
            None => return Err("no certificate yet"),
            Some(c) if c.not_after <= SystemTime::now() => return Err("certificate expired"),
            Some(_) => {}
        }
        if self.mesh.load().is_none() {
            return Err("no policy snapshot yet");
        }
        Ok(())
    }
}

//! Outbound routing when iptables redirected the app's connection to us
//! (`trustmesh-proxy init`): which mesh service a request goes to, or what happens to traffic
//! for an address outside the registry.
//!
//! A request is routed, in this order:
//! 1. by its `Host` (or absolute-form authority), through [`Registry::find_by_host`], exactly as
//!    without interception; the balancer ([`super::balance`]) picks one of the service's
//!    endpoints per request;
//! 2. when the connection was redirected, by its original destination `IP:PORT`:
//!    - a `Service` with that exact endpoint: dial it;
//!    - a `Service` with an endpoint on that IP whose `ports` list that port (the app dialled a
//!      meshed pod's app port, e.g. `http://10.0.0.12:8080`): dial the original `IP:PORT`
//!      itself over mTLS. The destination pod's own interception takes it to its inbound
//!      listener, which forwards to that same port of its app, so a pod with several app
//!      ports works;
//! 3. otherwise `outbound_policy` in `mesh.yaml` decides: `deny` (the default) answers `502`
//!    and sends nothing; `passthrough` forwards in plaintext to the original destination.
//!    Both are logged and counted in `trustmesh_outbound_passthrough_total{decision}`.
//!
//! A connection that was not redirected (the app dialled `127.0.0.1:15001`) never reaches
//! step 2 or 3: an unknown Host stays a `404`, and nothing leaves in plaintext.
//!
//! Redirected connections that do not start like HTTP (TLS to an external API, a database
//! protocol) cannot be routed by Host; [`opaque`] applies steps 2 and 3 to them at the TCP
//! level: to a mesh address it is carried as opaque TCP over mTLS ([`crate::opaque`]).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;
use trustmesh_policies::mesh::OutboundPolicy;
use trustmesh_policies::{Registry, ServiceEntry};

use crate::layers::rescue::ProxyError;
use crate::state::Shared;

/// Where an outbound request goes.
#[derive(Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// Over mTLS to one of a mesh service's endpoints, balanced ([`super::balance`]).
    Service(&'a ServiceEntry),
    /// Over mTLS to a mesh service's sidecar at `dial` (an original destination).
    Mesh {
        /// The registry entry (its identity is what the peer must present).
        service: &'a ServiceEntry,
        /// The address to connect to (`host:port`).
        dial: String,
    },
    /// In plaintext to the original destination (`outbound_policy: passthrough`).
    Passthrough(SocketAddr),
}

/// Routes one request (see the module docs).
pub fn route<'a>(
    registry: &'a Registry,
    host: Option<&str>,
    caller_namespace: Option<&str>,
    orig: Option<SocketAddr>,
    policy: OutboundPolicy,
) -> Result<Route<'a>, ProxyError> {
    if let Some(service) = host.and_then(|h| registry.find_by_host(h, caller_namespace)) {
        if service.endpoints.is_empty() {
            return Err(ProxyError::NoEndpoints(format!(
                "{}.{}",
                service.name, service.namespace
            )));
        }
        return Ok(Route::Service(service));
    }
    let Some(orig) = orig else {
        return Err(match host {
            Some(h) => ProxyError::UnknownService {
                host: h.to_string(),
            },
            None => ProxyError::NoHost,
        });
    };
    if let Some((service, dial)) = by_address(registry, orig) {
        return Ok(Route::Mesh { service, dial });
    }
    match policy {
        OutboundPolicy::Passthrough => Ok(Route::Passthrough(orig)),
        OutboundPolicy::Deny => Err(ProxyError::OutsideMesh { addr: orig }),
    }
}

/// The service at an original destination, and the address to dial for it.
pub fn by_address(registry: &Registry, orig: SocketAddr) -> Option<(&ServiceEntry, String)> {
    if let Some(s) = registry.find_by_endpoint(&orig) {
        return Some((s, orig.to_string()));
    }
    registry
        .entries()
        .iter()
        .find(|s| {
            s.ports.iter().any(|p| p.port == orig.port())
                && s.socket_addrs().any(|a| a.ip() == orig.ip())
        })
        .map(|s| (s, orig.to_string()))
}

/// [`route`] with the mesh in force, logging and counting what left the mesh's control.
pub fn decide<'a>(
    shared: &Shared,
    registry: &'a Registry,
    host: Option<&str>,
    orig: Option<SocketAddr>,
    policy: OutboundPolicy,
) -> Result<Route<'a>, ProxyError> {
    let routed = route(registry, host, shared.identity.namespace(), orig, policy);
    if let Ok(Route::Passthrough(addr)) = &routed {
        if withheld(shared, addr.ip()) {
            count(shared, "deny");
            tracing::info!(dst.addr = %addr, decision = "deny", "a mesh workload this identity may not call: refused");
            return Err(ProxyError::Withheld { addr: *addr });
        }
    }
    match &routed {
        Ok(Route::Passthrough(addr)) => {
            count(shared, "passthrough");
            tracing::info!(dst.addr = %addr, host = host.unwrap_or(""), decision = "passthrough", "outside the registry: forwarded in plaintext");
        }
        Err(ProxyError::OutsideMesh { addr }) => {
            count(shared, "deny");
            tracing::info!(dst.addr = %addr, host = host.unwrap_or(""), decision = "deny", "outside the registry: refused");
        }
        _ => {}
    }
    routed
}

/// Whether `ip` is a mesh workload's that the control plane withheld from this sidecar.
fn withheld(shared: &Shared, ip: std::net::IpAddr) -> bool {
    shared
        .mesh
        .load()
        .as_ref()
        .is_some_and(|m| m.snapshot.withheld_ips.contains(&ip))
}

fn count(shared: &Shared, decision: &str) {
    shared
        .metrics
        .outbound_passthrough
        .with_label_values(&[decision])
        .inc();
}

/// A redirected connection that is not HTTP: passthrough copies bytes to the original
/// destination; a mesh address or `outbound_policy: deny` closes it.
pub async fn opaque(
    shared: &Shared,
    mut tcp: TcpStream,
    orig: SocketAddr,
    connect_timeout: Duration,
) {
    let Some(mesh) = shared.mesh.load_full() else {
        return;
    };
    if let Some((service, dial)) = by_address(&mesh.snapshot.registry, orig) {
        let service = service.clone();
        drop(mesh);
        crate::opaque::outbound(shared, tcp, &service, &dial, orig.port(), connect_timeout).await;
        return;
    }
    let policy = mesh.snapshot.mesh.outbound_policy;
    drop(mesh);
    if policy == OutboundPolicy::Passthrough && withheld(shared, orig.ip()) {
        count(shared, "deny");
        tracing::info!(dst.addr = %orig, decision = "deny", "non-HTTP connection to a mesh workload this identity may not call: closed");
        return;
    }
    if policy == OutboundPolicy::Deny {
        count(shared, "deny");
        tracing::info!(dst.addr = %orig, decision = "deny", "non-HTTP connection outside the registry: closed");
        return;
    }
    count(shared, "passthrough");
    tracing::info!(dst.addr = %orig, decision = "passthrough", "non-HTTP connection outside the registry: forwarded");
    let timeout = connect_timeout;
    let mut upstream = match tokio::time::timeout(timeout, TcpStream::connect(orig)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::info!(dst.addr = %orig, "passthrough connect failed: {e}");
            return;
        }
        Err(_) => {
            tracing::info!(dst.addr = %orig, "passthrough connect timed out");
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    if let Err(e) = tokio::io::copy_bidirectional(&mut tcp, &mut upstream).await {
        tracing::debug!(dst.addr = %orig, "passthrough ended: {e}");
    }
}

#[cfg(test)]
mod tests;

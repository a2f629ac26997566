//! Which ports of the app an inbound connection may reach: the step between the mTLS handshake
//! and the dial to the app, for opaque TCP and for redirected HTTP alike.
//!
//! The inbound sidecar dials the app's IP on a port chosen by the caller (the opaque-TCP
//! preamble) or by the network (the original destination of a connection iptables
//! redirected). Without a check, a caller any rule lets through would reach whatever listens
//! on that IP: the sidecar's own admin and outbound listeners (and through the outbound one,
//! other services as this workload's identity), loopback-only ports of the app, the probe
//! listener. So a port is reached only when this workload's own registry entry (its
//! `spec.ports`) declares it, and never when it is one of the sidecar's own listeners:
//!
//! - **opaque TCP** reaches only a port declared `protocol: tcp`. A port declared `http`,
//!   `http2` or `grpc` is authorized on HTTP fields (methods, paths, headers) that opaque
//!   bytes do not carry, so raw bytes to it would pass those rules unseen: refused. (The
//!   registry has no port without a protocol: such a port is a validation error.) An entry
//!   that declares no ports at all reaches nothing over opaque TCP.
//! - **redirected HTTP** reaches a declared port of any protocol, or the `--app` port.
//! - **direct HTTP** (not redirected) always goes to `--app`, which may not be one of the
//!   sidecar's own ports (checked at start).
//!
//! The port checked here is the port dialled, and the port authorized (ARCHITECTURE.md
//! "Transparency"): for a redirected connection its original destination port, else the
//! `--app` port; never a port the caller wrote into `Host`.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use trustmesh_policies::{Protocol, ServicePort};

/// How a connection reached the inbound listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carrier {
    /// HTTP (ALPN `h2` or `http/1.1`) on a connection iptables redirected.
    RedirectedHttp,
    /// Opaque TCP (ALPN `trustmesh-tcp`).
    OpaqueTcp,
}

/// Why an inbound connection may not reach a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PortRefusal {
    /// The port is one of this sidecar's own listeners.
    #[error("port {port} is this sidecar's own {flag} listener")]
    OwnListener {
        /// The port.
        port: u16,
        /// The flag that bound it.
        flag: &'static str,
    },
    /// The workload's registry entry does not declare the port.
    #[error("port {0} is not declared in this workload's registry entry (spec.ports)")]
    Undeclared(u16),
    /// Opaque TCP to a port declared for HTTP.
    #[error("port {port} is declared {}, and opaque TCP reaches only ports declared tcp", protocol_name(*.protocol))]
    NotTcp {
        /// The port.
        port: u16,
        /// Its declared protocol.
        protocol: Protocol,
    },
    /// A redirected opaque connection whose preamble names another port than it was for.
    #[error("the preamble names port {preamble}, but the connection was for port {original}")]
    PreambleMismatch {
        /// The preamble's port.
        preamble: u16,
        /// The original destination port.
        original: u16,
    },
}

/// The sidecar's own listening ports (by port number: a listener on `0.0.0.0` is reachable on
/// the app's IP too) and its `--app` port, fixed at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SidecarPorts {
    own: BTreeMap<u16, &'static str>,
    app: u16,
}

impl SidecarPorts {
    /// The ports of the bound listeners, each with its flag (`--inbound`, `--outbound`,
    /// `--admin`, `--probe-listen`), and `app`. Refuses an `--app` port that is one of them:
    /// inbound would forward callers into the sidecar itself.
    pub fn new(listeners: &[(&'static str, SocketAddr)], app: SocketAddr) -> Result<Self, String> {
        let own: BTreeMap<u16, &'static str> = listeners
            .iter()
            .map(|(flag, a)| (a.port(), *flag))
            .collect();
        if let Some(flag) = own.get(&app.port()) {
            return Err(format!(
                "--app {app}: port {} is the sidecar's own {flag} listener",
                app.port()
            ));
        }
        Ok(Self {
            own,
            app: app.port(),
        })
    }

    /// The `--app` port: what a direct (not redirected) HTTP request reaches.
    pub fn app(&self) -> u16 {
        self.app
    }
}

/// The ports inbound may reach, made once per snapshot from the workload's own registry entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundPorts {
    sidecar: SidecarPorts,
    declared: BTreeMap<u16, Protocol>,
}

impl InboundPorts {
    /// The declared ports of the workload's entry; one that collides with a sidecar listener
    /// is logged (a registry mistake) and refused like any other sidecar port, and so is an
    /// entry that declares ports but not the `--app` port.
    pub fn new(sidecar: &SidecarPorts, declared: &[ServicePort]) -> Self {
        for p in declared {
            if let Some(flag) = sidecar.own.get(&p.port) {
                tracing::warn!(
                    target: "policy",
                    port = p.port,
                    "this workload's registry entry declares port {} ({}), which is the \
                     sidecar's own {flag} listener: inbound connections to it are refused",
                    p.port,
                    protocol_name(p.protocol)
                );
            }
        }
        if !declared.is_empty() && declared.iter().all(|p| p.port != sidecar.app) {
            // `ports` rules match the port reached; one written for a declared port never
            // matches a request that goes to `--app` on another port.
            tracing::warn!(
                target: "policy",
                port = sidecar.app,
                "this workload's registry entry does not declare its --app port {}: requests \
                 that reach it are authorized on port {}, and `ports` rules naming only the \
                 declared ports do not match them",
                sidecar.app,
                sidecar.app
            );
        }
        Self {
            sidecar: sidecar.clone(),
            declared: declared.iter().map(|p| (p.port, p.protocol)).collect(),
        }
    }

    /// The port a connection carried by `carrier` reaches, or why it may not.
    pub fn check(&self, carrier: Carrier, port: u16) -> Result<u16, PortRefusal> {
        if let Some(flag) = self.sidecar.own.get(&port) {
            return Err(PortRefusal::OwnListener { port, flag });
        }
        match (carrier, self.declared.get(&port)) {
            (Carrier::OpaqueTcp, Some(Protocol::Tcp)) => Ok(port),
            (Carrier::OpaqueTcp, Some(&protocol)) => Err(PortRefusal::NotTcp { port, protocol }),
            (Carrier::RedirectedHttp, Some(_)) => Ok(port),
            (Carrier::RedirectedHttp, None) if port == self.sidecar.app => Ok(port),
            (_, None) => Err(PortRefusal::Undeclared(port)),
        }
    }

    /// The protocol this workload's registry entry declares for `port`, if it declares it.
    pub fn protocol(&self, port: u16) -> Option<Protocol> {
        self.declared.get(&port).copied()
    }

    /// The port an opaque connection reaches: its preamble's, which must equal the original
    /// destination port when iptables redirected it; then [`InboundPorts::check`].
    pub fn opaque(&self, preamble: u16, original: Option<u16>) -> Result<u16, PortRefusal> {
        match original {
            Some(original) if original != preamble => {
                Err(PortRefusal::PreambleMismatch { preamble, original })
            }
            _ => self.check(Carrier::OpaqueTcp, preamble),
        }
    }
}

/// The HTTP version the app is sent (ARCHITECTURE.md "Transparency"), from the protocol its
/// registry entry declares for the port reached: `http` is HTTP/1.1 whatever the caller spoke,
/// `http2` and `grpc` are h2c; an undeclared port (or `tcp`, which HTTP reaches only when
/// iptables redirected it there) gets the caller's own version (`caller_http1`).
pub fn app_speaks_http1(declared: Option<Protocol>, caller_http1: bool) -> bool {
    match declared {
        Some(Protocol::Http) => true,
        Some(Protocol::Http2 | Protocol::Grpc) => false,
        Some(Protocol::Tcp) | None => caller_http1,
    }
}

/// The protocol as the registry spells it.
fn protocol_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Http => "http",
        Protocol::Http2 => "http2",
        Protocol::Grpc => "grpc",
        Protocol::Tcp => "tcp",
    }
}

#[cfg(test)]
mod tests;

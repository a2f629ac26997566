//! The registry's unit: a `kind: Service` entry says which workload identity serves a name,
//! where its sidecars listen and which protocols its ports speak. Outbound sidecars use it to
//! find a destination and to check that the server they reach presents the right SPIFFE ID;
//! policy selectors match its labels.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use trustmesh_certs::SpiffeId;

/// The protocol a service port speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP/1.1.
    #[serde(alias = "HTTP")]
    Http,
    /// HTTP/2.
    #[serde(alias = "HTTP2")]
    Http2,
    /// gRPC (HTTP/2 with `content-type: application/grpc`).
    #[serde(alias = "GRPC")]
    Grpc,
    /// Opaque TCP: authorized on identity and port only.
    #[serde(alias = "TCP")]
    Tcp,
}

impl Protocol {
    /// Whether requests on this port are HTTP (and so have methods, paths, hosts and headers).
    pub fn is_http(self) -> bool {
        !matches!(self, Protocol::Tcp)
    }
}

/// A port of a service and its protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServicePort {
    /// The port number callers use.
    pub port: u16,
    /// What the port speaks.
    pub protocol: Protocol,
}

/// One `kind: Service` document: a named workload, its verified identity and where it runs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ServiceEntry {
    /// `metadata.name`; also the short host name callers may use.
    pub name: String,
    /// `metadata.namespace` (default `default`).
    pub namespace: String,
    /// `metadata.labels`: what policy selectors match. Only attested labels belong here.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The SPIFFE ID the service's sidecars present; callers refuse any other.
    pub identity: SpiffeId,
    /// Where its sidecars accept inbound mTLS, as `host:port` (`[v6]:port` for IPv6).
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// Its ports and their protocols.
    #[serde(default)]
    pub ports: Vec<ServicePort>,
    /// Endpoints served by another identity than [`ServiceEntry::identity`] (a Kubernetes
    /// Service whose pods run as several ServiceAccounts): endpoint → the SPIFFE ID its
    /// sidecar presents. Only discovery fills it; git `Service` documents cannot.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub endpoint_identities: BTreeMap<String, SpiffeId>,
}

impl ServiceEntry {
    /// The entry's full Kubernetes-style name, `name.namespace.svc.cluster.local`: the TLS
    /// server name a sidecar sends when it dials the service.
    pub fn fqdn(&self) -> String {
        format!("{}.{}.svc.cluster.local", self.name, self.namespace)
    }

    /// The SPIFFE ID the sidecar at `endpoint` must present: its own entry in
    /// [`ServiceEntry::endpoint_identities`], else the service's [`ServiceEntry::identity`].
    pub fn identity_of(&self, endpoint: &str) -> &SpiffeId {
        self.endpoint_identities
            .get(endpoint)
            .unwrap_or(&self.identity)
    }

    /// Every identity the service's endpoints present (the service's first), each once.
    pub fn identities(&self) -> impl Iterator<Item = &SpiffeId> + '_ {
        let mut seen = std::collections::BTreeSet::new();
        std::iter::once(&self.identity)
            .chain(self.endpoint_identities.values())
            .filter(move |id| seen.insert(id.as_str()))
    }

    /// Whether `id` serves the service (as its identity or one endpoint's).
    pub fn served_by(&self, id: &SpiffeId) -> bool {
        self.identity == *id || self.endpoint_identities.values().any(|e| e == id)
    }

    /// The protocol of `port`, if the entry lists it.
    pub fn protocol_of(&self, port: u16) -> Option<Protocol> {
        self.ports
            .iter()
            .find(|p| p.port == port)
            .map(|p| p.protocol)
    }

    /// The endpoints that are IP socket addresses (DNS-named endpoints are left out).
    pub fn socket_addrs(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.endpoints.iter().filter_map(|e| e.parse().ok())
    }
}

/// Why an endpoint is not a valid `host:port`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// No `:port` part.
    #[error("endpoint {0:?} has no port; write host:port")]
    MissingPort(String),
    /// The port is not a number from 1 to 65535.
    #[error("endpoint {0:?} has a bad port; a port is a number from 1 to 65535")]
    BadPort(String),
    /// The host is neither an IP address nor a DNS name.
    #[error("endpoint {0:?} has a bad host; write an IPv4 address, [IPv6] or a DNS name")]
    BadHost(String),
}

/// Checks that `endpoint` is `host:port`: an IPv4 address, a bracketed IPv6 address or a DNS
/// name, then a port from 1 to 65535.
pub fn validate_endpoint(endpoint: &str) -> Result<(), EndpointError> {
    let bad_host = || EndpointError::BadHost(endpoint.to_string());
    let (host, port) = if let Some(rest) = endpoint.strip_prefix('[') {
        let (v6, after) = rest.split_once(']').ok_or_else(bad_host)?;
        v6.parse::<std::net::Ipv6Addr>().map_err(|_| bad_host())?;
        let port = after
            .strip_prefix(':')
            .ok_or_else(|| EndpointError::MissingPort(endpoint.to_string()))?;
        (None, port)
    } else {
        let (host, port) = endpoint
            .rsplit_once(':')
            .ok_or_else(|| EndpointError::MissingPort(endpoint.to_string()))?;
        (Some(host), port)
    };
    match port.parse::<u16>() {
        Ok(p) if p != 0 && !port.starts_with('+') => {}
        _ => return Err(EndpointError::BadPort(endpoint.to_string())),
    }
    if let Some(host) = host {
        if !is_dns_name(host) && host.parse::<std::net::Ipv4Addr>().is_err() {
            return Err(bad_host());
        }
    }
    Ok(())
}

/// A DNS name: dot-separated labels of ASCII letters, digits and `-`, not starting or ending
/// with `-`, each 1 to 63 bytes, 253 bytes at most (RFC 1123 §2.1).
pub(crate) fn is_dns_name(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

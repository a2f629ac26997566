//! The service registry: every `Service` entry of the policy folder, and the three ways a
//! sidecar looks a destination up — by the request's host (outbound HTTP), by the original
//! destination address (transparent interception) and by a verified peer's SPIFFE ID (inbound,
//! to find the workload's labels).

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use trustmesh_certs::SpiffeId;

use crate::service::ServiceEntry;

/// The Kubernetes cluster DNS suffix accepted after `name.namespace`.
const CLUSTER_SUFFIX_FULL: &str = "svc.cluster.local";

/// The set of [`ServiceEntry`]s, sorted by namespace then name.
///
/// It serializes as a plain list of entries, so it can travel in a JSON snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Vec<ServiceEntry>", into = "Vec<ServiceEntry>")]
pub struct Registry {
    entries: Vec<ServiceEntry>,
}

impl From<Vec<ServiceEntry>> for Registry {
    fn from(entries: Vec<ServiceEntry>) -> Self {
        Self::new(entries)
    }
}

impl From<Registry> for Vec<ServiceEntry> {
    fn from(r: Registry) -> Self {
        r.entries
    }
}

impl Registry {
    /// A registry of `entries`, sorted by (namespace, name). Uniqueness of names, identities and
    /// endpoints is checked by [`crate::load_dir`], not here.
    pub fn new(mut entries: Vec<ServiceEntry>) -> Self {
        entries.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        Self { entries }
    }

    /// All entries, sorted by (namespace, name).
    pub fn entries(&self) -> &[ServiceEntry] {
        &self.entries
    }

    /// Whether the registry has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry a request's `Host` (or `:authority`) names.
    ///
    /// The host is compared case-insensitively, with any port (`host:port`, `[v6]:port`) and a
    /// trailing dot removed. It matches `name` (the caller's namespace first, otherwise the one
    /// entry of that name across namespaces; an ambiguous name matches nothing), `name.namespace`,
    /// `name.namespace.svc` and `name.namespace.svc.cluster.local`. A host that is an IP socket
    /// address (`10.0.0.12:15006`) matches the entry with that endpoint.
    pub fn find_by_host(
        &self,
        host: &str,
        caller_namespace: Option<&str>,
    ) -> Option<&ServiceEntry> {
        // Only a digit (IPv4) or `[` (IPv6) can start a socket address: names skip the parse.
        if host.starts_with(|c: char| c.is_ascii_digit() || c == '[') {
            if let Ok(addr) = host.parse::<SocketAddr>() {
                return self.find_by_endpoint(&addr);
            }
        }
        let host = strip_port(host);
        let host = host.strip_suffix('.').unwrap_or(host);
        if host.is_empty() {
            return None;
        }
        let Some((name, rest)) = split_once_byte(host, b'.') else {
            return self.find_short_name(host, caller_namespace);
        };
        let (namespace, suffix) = split_once_byte(rest, b'.').unwrap_or((rest, ""));
        let qualified = suffix.is_empty()
            || suffix.eq_ignore_ascii_case("svc")
            || suffix.eq_ignore_ascii_case(CLUSTER_SUFFIX_FULL);
        if !qualified {
            return None;
        }
        self.entries.iter().find(|e| {
            e.name.eq_ignore_ascii_case(name) && e.namespace.eq_ignore_ascii_case(namespace)
        })
    }

    fn find_short_name(&self, name: &str, caller_namespace: Option<&str>) -> Option<&ServiceEntry> {
        let mut candidates = self
            .entries
            .iter()
            .filter(|e| e.name.eq_ignore_ascii_case(name));
        if let Some(ns) = caller_namespace {
            if let Some(local) = candidates
                .clone()
                .find(|e| e.namespace.eq_ignore_ascii_case(ns))
            {
                return Some(local);
            }
        }
        let first = candidates.next()?;
        match candidates.next() {
            None => Some(first),
            // The same short name in several namespaces, none the caller's: refuse to guess.
            Some(_) => None,
        }
    }

    /// The entry whose `identity` is `id`, else the first one an endpoint of which is served
    /// by `id` (a discovered Service of several ServiceAccounts).
    pub fn find_by_identity(&self, id: &SpiffeId) -> Option<&ServiceEntry> {
        self.entries
            .iter()
            .find(|e| &e.identity == id)
            .or_else(|| self.entries.iter().find(|e| e.served_by(id)))
    }

    /// The entry with an endpoint equal to `addr` (IP endpoints only; DNS endpoints never match).
    pub fn find_by_endpoint(&self, addr: &SocketAddr) -> Option<&ServiceEntry> {
        self.entries
            .iter()
            .find(|e| e.socket_addrs().any(|a| &a == addr))
    }
}

/// `host` without its port: `[v6]:port` and `[v6]` give `v6`, `name:port` gives `name`; a bare
/// IPv6 address (several colons, no brackets) is returned unchanged.
pub(crate) fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return split_once_byte(rest, b']').map_or(rest, |(v6, _)| v6);
    }
    match split_once_byte(host, b':') {
        Some((name, port)) if !port.as_bytes().contains(&b':') => name,
        _ => host,
    }
}

/// `s.split_once(c)` for an ASCII `c`, by a plain byte scan: hosts are a few dozen bytes, and
/// for those the `str` char searcher costs more to set up than the scan (both run on every
/// request, outbound routing and inbound authorization).
pub(crate) fn split_once_byte(s: &str, c: u8) -> Option<(&str, &str)> {
    debug_assert!(c.is_ascii());
    let i = s.bytes().position(|b| b == c)?;
    // An ASCII byte is a char boundary on both sides.
    Some((s.get(..i)?, s.get(i + 1..)?))
}

#[cfg(test)]
mod tests;

//! Domain: what each proxy is sent: its snapshot (registry, mesh settings, trust bundle), built from the
//! policy set in force for the caller's verified identity, and the book of proxies seen.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use trustmesh_certs::SpiffeId;
#[cfg(test)]
use trustmesh_policies::snapshot::Snapshot;
use trustmesh_policies::{Registry, ServiceEntry};

use crate::domain::trust::TrustView;

mod cache;
mod encode;
mod reach;

pub use cache::SnapshotCache;
#[cfg(test)]
use reach::Prepared;

/// The snapshot version: the policy version, then `+b` and the trust generation (a hash of the
/// trust bundle and the blocklist), e.g. `git:3f2a…+b9c41d07e2b55`. A policy commit, a CA
/// rotation step and a block each change it, so each is pushed; the policy version stays
/// readable as the part before `+b`.
pub fn version(policy_version: &str, trust: &TrustView) -> String {
    format!("{policy_version}{}", generation_suffix(&trust.generation))
}

/// The end of every snapshot version made with trust generation `generation`.
pub fn generation_suffix(generation: &str) -> String {
    format!("+b{generation}")
}

/// Builds the snapshot that concerns `identity` (least privilege): the policies that apply
/// to the caller's workload, the registry entries it could be allowed to call (and its own),
/// the trust bundle and the blocked identities. In Kubernetes mode the workload carries the
/// labels of its pod (found by `caller_ip`, else by its ServiceAccount), and its own entry in
/// the snapshot carries them too, since the sidecar selects its policies from that entry.
/// (The control plane's polls go through [`SnapshotCache`], which indexes a version once for
/// all its snapshots.)
#[cfg(test)]
pub fn build(
    state: &std::sync::Arc<crate::domain::policy_source::PolicyState>,
    trust: &TrustView,
    identity: &SpiffeId,
    caller_ip: Option<std::net::IpAddr>,
) -> Snapshot {
    let own = own_workload(state, identity, caller_ip);
    build_with(&Prepared::new(state.clone()), trust, identity, own)
}

/// In Kubernetes mode, the workload entry of `identity` calling from `caller_ip` with its
/// pod's labels (see [`crate::domain::discovery`]); `None` otherwise.
pub fn own_workload(
    state: &crate::domain::policy_source::PolicyState,
    identity: &SpiffeId,
    caller_ip: Option<std::net::IpAddr>,
) -> Option<ServiceEntry> {
    state
        .discovered
        .as_ref()
        .and_then(|d| d.workload(&state.set.registry, identity, caller_ip))
}

/// The snapshot of `identity` from a version's index (what the cache encodes, in parts:
/// `encode`); `own` is its workload entry from [`own_workload`].
#[cfg(test)]
fn build_with(
    prepared: &Prepared,
    trust: &TrustView,
    identity: &SpiffeId,
    own: Option<ServiceEntry>,
) -> Snapshot {
    let state = &prepared.state;
    let set = &state.set;
    let workload = own.clone().unwrap_or_else(|| prepared.workload(identity));
    let policies = prepared
        .applied(&workload)
        .iter()
        .filter_map(|&i| set.policies.get(i))
        .cloned()
        .collect();
    let reach = prepared.reach(identity);
    let routes = crate::domain::routes::for_callable(set, |namespace, name| {
        prepared.callable_by_name(&reach, namespace, name)
    });
    Snapshot {
        version: version(&state.version, trust),
        identity: identity.clone(),
        mesh: set.mesh.clone(),
        registry: match own {
            Some(own) => with_own_entry(reach.registry, identity, own),
            None => reach.registry,
        },
        withheld_ips: reach.withheld_ips,
        trust_bundle: trust.bundle.pem().to_string(),
        policies,
        blocked: trust.blocked_ids(),
        routes,
    }
}

/// `registry` with the entry its sidecar takes as its own (the one `find_by_identity` finds)
/// replaced by `own`, or `own` added when there is none.
fn with_own_entry(registry: Registry, identity: &SpiffeId, own: ServiceEntry) -> Registry {
    let key = registry
        .find_by_identity(identity)
        .map(|e| (e.namespace.clone(), e.name.clone()));
    let mut entries: Vec<ServiceEntry> = registry.into();
    match key {
        Some(key) => {
            for e in &mut entries {
                if (&e.namespace, &e.name) == (&key.0, &key.1) {
                    e.labels = own.labels.clone();
                }
            }
        }
        None => entries.push(own),
    }
    Registry::new(entries)
}

/// One proxy as last seen by this control plane.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProxyRecord {
    /// The proxy's verified identity.
    pub identity: SpiffeId,
    /// The peer address of its last request.
    pub address: String,
    /// The policy version it last asked with.
    pub policy_version: Option<String>,
    /// Expiry of the certificate it presented, RFC 3339.
    pub certificate_expiry: Option<String>,
    /// When it was last seen, RFC 3339.
    pub last_seen: String,
    #[serde(skip)]
    seen_at: SystemTime,
}

/// A proxy is connected while it was seen this recently: a watching proxy asks again at least
/// every long-poll wait (at most 2 min), so this leaves a minute of slack.
pub const CONNECTED_WINDOW: Duration = Duration::from_secs(180);
/// Proxies not seen for this long are forgotten (pods come and go with new addresses; the
/// book must not grow without end).
const FORGET_AFTER: Duration = Duration::from_secs(3600);
/// How often the book looks for proxies to forget (not on every request: a sweep is O(n)).
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Proxies seen by this replica, keyed by identity and address, and when the book was last
/// swept for proxies to forget.
#[derive(Default)]
pub struct ProxyBook {
    seen: Mutex<HashMap<(SpiffeId, String), ProxyRecord>>,
    swept_at: Mutex<Option<SystemTime>>,
}

impl ProxyBook {
    /// Records a proxy's request.
    pub fn record(
        &self,
        identity: &SpiffeId,
        address: String,
        policy_version: Option<String>,
        certificate_expiry: Option<SystemTime>,
    ) {
        self.record_at(
            identity,
            address,
            policy_version,
            certificate_expiry,
            SystemTime::now(),
        );
    }

    fn record_at(
        &self,
        identity: &SpiffeId,
        address: String,
        policy_version: Option<String>,
        certificate_expiry: Option<SystemTime>,
        now: SystemTime,
    ) {
        let rec = ProxyRecord {
            identity: identity.clone(),
            address: address.clone(),
            policy_version,
            certificate_expiry: certificate_expiry.map(trustmesh_runtime::rfc3339),
            last_seen: trustmesh_runtime::rfc3339(now),
            seen_at: now,
        };
        let Ok(mut seen) = self.seen.lock() else {
            return;
        };
        seen.insert((identity.clone(), address), rec);
        let Ok(mut swept_at) = self.swept_at.lock() else {
            return;
        };
        if swept_at.is_some_and(|t| now < t + SWEEP_EVERY) {
            return;
        }
        *swept_at = Some(now);
        if let Some(forget_before) = now.checked_sub(FORGET_AFTER) {
            seen.retain(|_, r| r.seen_at >= forget_before);
        }
    }

    /// `identity@address` and the snapshot version of each proxy seen since `since`.
    pub fn seen_since(&self, since: SystemTime) -> Vec<(String, Option<String>)> {
        self.seen
            .lock()
            .map(|s| {
                s.values()
                    .filter(|r| r.seen_at >= since)
                    .map(|r| {
                        (
                            format!("{}@{}", r.identity, r.address),
                            r.policy_version.clone(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The proxies connected (seen within [`CONNECTED_WINDOW`]), for `GET /v1/proxies`.
    pub fn records(&self) -> Vec<ProxyRecord> {
        self.connected_at(SystemTime::now())
    }

    fn connected_at(&self, now: SystemTime) -> Vec<ProxyRecord> {
        let since = now
            .checked_sub(CONNECTED_WINDOW)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        self.seen
            .lock()
            .map(|s| s.values().filter(|r| r.seen_at >= since).cloned().collect())
            .unwrap_or_default()
    }

    /// Number of proxies connected (`trustmesh_cp_proxies_connected`).
    pub fn len(&self) -> usize {
        self.records().len()
    }
}

/// A proxy that has not polled this replica for this long is not waited for in a rotation.
pub const PROXY_STALE: Duration = Duration::from_secs(75);

/// Proxies in `book` seen within [`PROXY_STALE`] whose snapshot version does not carry
/// `generation`.
pub fn lagging_in(book: &ProxyBook, generation: &str) -> Vec<String> {
    let suffix = generation_suffix(generation);
    let since = SystemTime::now()
        .checked_sub(PROXY_STALE)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    book.seen_since(since)
        .into_iter()
        .filter(|(_, version)| !version.as_deref().is_some_and(|v| v.ends_with(&suffix)))
        .map(|(who, _)| who)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::policy_source::PolicySource;
    use trustmesh_policies::{IpRanges, Registry};

    #[test]
    fn the_book_lists_connected_proxies_and_forgets_old_ones() {
        let book = ProxyBook::default();
        let id = SpiffeId::parse("spiffe://cluster.local/ns/t/sa/a").unwrap();
        let t0 = SystemTime::now() - Duration::from_secs(7200);
        book.record_at(&id, "10.0.0.1".into(), None, None, t0);
        book.record_at(
            &id,
            "10.0.0.2".into(),
            None,
            None,
            t0 + Duration::from_secs(3000),
        );
        let now = t0 + Duration::from_secs(3700);
        book.record_at(&id, "10.0.0.3".into(), None, None, now);
        // .1 is forgotten (over an hour), .2 kept but no longer connected, .3 connected.
        assert_eq!(book.seen.lock().unwrap().len(), 2);
        let connected: Vec<String> = book
            .connected_at(now)
            .into_iter()
            .map(|r| r.address)
            .collect();
        assert_eq!(connected, ["10.0.0.3"]);
    }

    #[test]
    fn a_proxy_gets_what_it_may_call_and_the_addresses_of_what_it_may_not() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("mesh.yaml"),
            "trust_domain: cluster.local\ndefault_action: deny\n",
        )
        .unwrap();
        let mut docs = String::new();
        for (name, ip) in [("a", 1), ("b", 2), ("c", 3)] {
            docs.push_str(&format!(
                "---\napiVersion: trustmesh.io/v1\nkind: Service\n\
                 metadata: {{name: {name}, namespace: t, labels: {{app: {name}}}}}\n\
                 spec: {{identity: spiffe://cluster.local/ns/t/sa/{name}, endpoints: [\"10.0.0.{ip}:15006\"]}}\n"
            ));
        }
        docs.push_str(
            "---\napiVersion: trustmesh.io/v1\nkind: AuthorizationPolicy\n\
             metadata: {name: b-from-a, namespace: t}\n\
             spec: {selector: {matchLabels: {app: b}}, rules: [{from: [{source: {principals: [cluster.local/ns/t/sa/a]}}]}]}\n",
        );
        std::fs::write(dir.path().join("services.yaml"), docs).unwrap();
        let source = PolicySource::load(dir.path()).unwrap();
        let state = source.current();
        let id =
            |sa: &str| SpiffeId::parse(&format!("spiffe://cluster.local/ns/t/sa/{sa}")).unwrap();
        let names = |r: Registry| {
            r.entries()
                .iter()
                .map(|e| e.name.clone())
                .collect::<Vec<_>>()
        };
        let ip = |n: u8| std::net::IpAddr::from([10, 0, 0, n]);
        let ips = |v: &[std::net::IpAddr]| v.iter().copied().collect::<IpRanges>();
        let prepared = Prepared::new(state);

        let r = prepared.reach(&id("a"));
        assert_eq!(names(r.registry), ["a", "b"]);
        assert_eq!(r.withheld_ips, ips(&[ip(3)]));
        let r = prepared.reach(&id("c"));
        assert_eq!(names(r.registry), ["c"]);
        assert_eq!(r.withheld_ips, ips(&[ip(1), ip(2)]));
    }

    #[test]
    fn a_proxy_gets_its_own_entry_with_its_ports_even_when_nobody_may_call_it() {
        // Inbound reaches only the ports the workload's own entry declares, so the entry must
        // be in its snapshot whatever the policies say.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("mesh.yaml"),
            "trust_domain: cluster.local\ndefault_action: deny\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("services.yaml"),
            "apiVersion: trustmesh.io/v1\nkind: Service\nmetadata: {name: db, namespace: t}\n\
             spec: {identity: spiffe://cluster.local/ns/t/sa/db, endpoints: [\"10.0.0.9:15006\"], \
             ports: [{port: 5432, protocol: tcp}]}\n",
        )
        .unwrap();
        let state = PolicySource::load(dir.path()).unwrap().current();
        let id = SpiffeId::parse("spiffe://cluster.local/ns/t/sa/db").unwrap();
        let registry = Prepared::new(state).reach(&id).registry;
        let own = registry.find_by_identity(&id).expect("its own entry");
        assert_eq!(
            own.protocol_of(5432),
            Some(trustmesh_policies::Protocol::Tcp)
        );
    }
}

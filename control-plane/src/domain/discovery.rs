//! Domain: discovery, the registry of Kubernetes mode, made from the cluster cache
//! ([`crate::storage::kube::watch::ClusterCache`]); the policy source follows it
//! ([`crate::domain::policy_source::follow`]).
//!
//! Every Service in a namespace labelled `trustmesh.io/inject: enabled` is a registry service
//! `name.namespace` with the ports of its spec ([`ports::protocol`]). Its endpoints are the
//! ready addresses of its EndpointSlices (label `kubernetes.io/service-name`), dialled at
//! `<pod IP>:15006`, each verified as the SPIFFE ID of its pod's ServiceAccount. The service's
//! `identity` is the one most of its endpoints present (ties: the smallest); the others are in
//! `endpoint_identities`. Its `labels` are the labels all its ready pods carry (what a policy
//! `selector` matches for callers); each sidecar's own workload carries its pod's labels
//! ([`Discovered::workload`]). A Service with no ready endpoint whose pod is known is left out
//! (its identity is unknown): callers get `404` for it until a pod is ready.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use trustmesh_certs::{SpiffeId, TrustDomain};
use trustmesh_policies::{ServiceEntry, ServicePort};

pub mod bound;
pub mod ports;
pub mod workload;

pub use workload::PodInfo;

/// The label that meshes a namespace, and its value.
pub const INJECT_LABEL: (&str, &str) = ("trustmesh.io/inject", "enabled");
/// The port every sidecar accepts inbound mTLS on.
pub const SIDECAR_PORT: u16 = 15006;
/// The label an EndpointSlice names its Service with.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// What the cluster holds, one list per resource (from the reflector stores).
#[derive(Default)]
pub struct ClusterObjects {
    /// Namespaces.
    pub namespaces: Vec<Arc<Namespace>>,
    /// Services.
    pub services: Vec<Arc<Service>>,
    /// EndpointSlices.
    pub slices: Vec<Arc<EndpointSlice>>,
    /// Pods.
    pub pods: Vec<Arc<Pod>>,
}

/// The registry and workloads discovered from the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Discovered {
    /// One entry per meshed Service with at least one ready endpoint.
    pub entries: Vec<ServiceEntry>,
    /// The pods of meshed namespaces that have an IP, by IP.
    pub pods: BTreeMap<IpAddr, PodInfo>,
    /// A hash of `entries` and the pods' identities and labels: a change of it is a new
    /// snapshot version.
    pub hash: String,
}

/// Builds the discovered registry from `objects`, identities in `td`.
pub fn discover(objects: &ClusterObjects, td: &TrustDomain) -> Discovered {
    let meshed: BTreeSet<&str> = objects
        .namespaces
        .iter()
        .filter(|ns| {
            ns.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(INJECT_LABEL.0))
                .is_some_and(|v| v == INJECT_LABEL.1)
        })
        .filter_map(|ns| ns.metadata.name.as_deref())
        .collect();
    let mut pods_by_name: HashMap<(&str, &str), PodInfo> = HashMap::new();
    let mut pods = BTreeMap::new();
    for pod in &objects.pods {
        let (Some(ns), Some(name)) = (
            pod.metadata.namespace.as_deref(),
            pod.metadata.name.as_deref(),
        ) else {
            continue;
        };
        if !meshed.contains(ns) {
            continue;
        }
        let Some(info) = PodInfo::of(pod, td) else {
            continue;
        };
        if let Some(ip) = info.ip {
            pods.insert(ip, info.clone());
        }
        pods_by_name.insert((ns, name), info);
    }
    let mut slices_of: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
    for slice in &objects.slices {
        let ns = slice.metadata.namespace.as_deref().unwrap_or_default();
        if let Some(svc) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
        {
            slices_of.entry((ns, svc.as_str())).or_default().push(slice);
        }
    }
    let mut entries = Vec::new();
    for svc in &objects.services {
        let (Some(ns), Some(name)) = (
            svc.metadata.namespace.as_deref(),
            svc.metadata.name.as_deref(),
        ) else {
            continue;
        };
        if !meshed.contains(ns) {
            continue;
        }
        let slices = slices_of.get(&(ns, name)).map(Vec::as_slice).unwrap_or(&[]);
        if let Some(entry) = service_entry(svc, ns, name, slices, &pods_by_name) {
            entries.push(entry);
        }
    }
    entries.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let hash = hash_of(&entries, &pods);
    Discovered {
        entries,
        pods,
        hash,
    }
}

/// The entry of one meshed Service, if any of its ready endpoints has a known pod.
fn service_entry(
    svc: &Service,
    ns: &str,
    name: &str,
    slices: &[&EndpointSlice],
    pods: &HashMap<(&str, &str), PodInfo>,
) -> Option<ServiceEntry> {
    // endpoint → its pod, each endpoint once (slices may overlap while they are rewritten).
    let mut endpoints: BTreeMap<String, &PodInfo> = BTreeMap::new();
    for slice in slices {
        for ep in &slice.endpoints {
            // Unknown readiness counts as ready, as the API documents for consumers.
            if ep.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                continue;
            }
            let Some(pod) = ep
                .target_ref
                .as_ref()
                .filter(|r| r.kind.as_deref() == Some("Pod"))
                .and_then(|r| r.name.as_deref())
                .and_then(|pod| pods.get(&(ns, pod)))
            else {
                continue;
            };
            let Some(ip) = ep.addresses.first().and_then(|a| a.parse::<IpAddr>().ok()) else {
                continue;
            };
            endpoints.insert(std::net::SocketAddr::new(ip, SIDECAR_PORT).to_string(), pod);
        }
    }
    let mut count: BTreeMap<&SpiffeId, usize> = BTreeMap::new();
    for pod in endpoints.values() {
        *count.entry(&pod.identity).or_default() += 1;
    }
    // The most common identity; ties go to the smallest (the map is sorted).
    let identity = count
        .iter()
        .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
        .map(|(id, _)| (*id).clone())?;
    let mut labels: Option<BTreeMap<String, String>> = None;
    for pod in endpoints.values() {
        labels = Some(match labels {
            None => pod.labels.clone(),
            Some(mut l) => {
                l.retain(|k, v| pod.labels.get(k) == Some(v));
                l
            }
        });
    }
    let endpoint_identities = endpoints
        .iter()
        .filter(|(_, pod)| pod.identity != identity)
        .map(|(ep, pod)| (ep.clone(), pod.identity.clone()))
        .collect();
    let mut seen = BTreeSet::new();
    let service_ports: Vec<ServicePort> = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .into_iter()
        .flatten()
        .filter_map(ports::service_port)
        .filter(|p| seen.insert(p.port))
        .collect();
    Some(ServiceEntry {
        name: name.to_string(),
        namespace: ns.to_string(),
        labels: labels.unwrap_or_default(),
        identity,
        endpoints: endpoints.keys().cloned().collect(),
        ports: service_ports,
        endpoint_identities,
    })
}

/// A hash of what discovery found (`DefaultHasher::new`, fixed keys: the same binary gives every
/// replica the same value, so a sidecar that moves to another replica is not sent the same
/// registry again). Cheap next to serializing: it runs at every change.
fn hash_of(entries: &[ServiceEntry], pods: &BTreeMap<IpAddr, PodInfo>) -> String {
    use std::hash::{Hash as _, Hasher as _};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    entries.hash(&mut h);
    pods.hash(&mut h);
    format!("{:016x}", h.finish())
}

#[cfg(test)]
mod tests;

//! Domain: a pod as discovery sees it, and the workload entry a sidecar's snapshot is built
//! for: its pod's labels as the API reports them, never labels the workload claims.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Pod;
use trustmesh_certs::{SpiffeId, TrustDomain};
use trustmesh_policies::snapshot::workload_entry;
use trustmesh_policies::{Registry, ServiceEntry};

use super::Discovered;

/// What discovery keeps of a pod of a meshed namespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PodInfo {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.uid`.
    pub uid: String,
    /// The SPIFFE ID of its ServiceAccount (`default` when the spec names none).
    pub identity: SpiffeId,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// `status.podIP`, once it has one.
    pub ip: Option<IpAddr>,
}

impl PodInfo {
    /// The pod's record, `None` when it has no namespace or name, or a ServiceAccount that
    /// makes no SPIFFE ID.
    pub fn of(pod: &Pod, td: &TrustDomain) -> Option<Self> {
        let namespace = pod.metadata.namespace.clone()?;
        let name = pod.metadata.name.clone()?;
        let sa = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.as_deref())
            .unwrap_or("default");
        let identity = SpiffeId::from_service_account(td, &namespace, sa).ok()?;
        Some(Self {
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            ip: pod
                .status
                .as_ref()
                .and_then(|s| s.pod_ip.as_deref())
                .and_then(|ip| ip.parse().ok()),
            namespace,
            name,
            identity,
        })
    }
}

impl Discovered {
    /// The labels of the workload `identity` calling from `ip`: its pod's, when a pod of that
    /// identity has that IP; else those every pod of that identity carries; `None` when no pod
    /// of the meshed namespaces runs as it.
    pub fn workload_labels(
        &self,
        identity: &SpiffeId,
        ip: Option<IpAddr>,
    ) -> Option<BTreeMap<String, String>> {
        if let Some(pod) = ip
            .and_then(|ip| self.pods.get(&ip))
            .filter(|p| &p.identity == identity)
        {
            return Some(pod.labels.clone());
        }
        let mut common: Option<BTreeMap<String, String>> = None;
        for pod in self.pods.values().filter(|p| &p.identity == identity) {
            common = Some(match common {
                None => pod.labels.clone(),
                Some(mut l) => {
                    l.retain(|k, v| pod.labels.get(k) == Some(v));
                    l
                }
            });
        }
        common
    }

    /// The workload entry of `identity` calling from `ip` in `registry`: its registry entry
    /// (or the label-less stand-in) with its pod's labels in place of the entry's.
    pub fn workload(
        &self,
        registry: &Registry,
        identity: &SpiffeId,
        ip: Option<IpAddr>,
    ) -> Option<ServiceEntry> {
        let labels = self.workload_labels(identity, ip)?;
        let known = registry.find_by_identity(identity).is_some();
        let mut entry = workload_entry(registry, identity);
        if !known {
            // A name no Service can have (`~` is not a DNS character), so that no caller's
            // host ever finds this stand-in in place of a real service.
            entry.name = format!("~{}", entry.name);
        }
        entry.labels = labels;
        Some(entry)
    }
}

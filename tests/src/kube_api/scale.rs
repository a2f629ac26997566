//! Fills a [`KubeApi`] with a cluster's worth of objects quickly (written straight into the
//! store, no HTTP): meshed namespaces, `services` Services spread over them, and `pods` Pods
//! spread over the Services, each Service with one EndpointSlice listing its pods (ready, with
//! their IPs and `targetRef`s), as the EndpointSlice controller would write them.

use serde_json::{json, Value};

use super::{ApiError, KubeApi};

/// What to create.
#[derive(Clone, Debug)]
pub struct Cluster {
    /// Meshed namespaces (`ns-0`, `ns-1`, ...), labelled `trustmesh.io/inject: enabled`.
    pub namespaces: usize,
    /// Services (`svc-N` in namespace `ns-(N % namespaces)`), port 80 named `http`.
    pub services: usize,
    /// Pods (`svc-N-M`), pod `k` behind Service `k % services`, service account `svc-N`.
    pub pods: usize,
}

/// The IP of the `index`-th pod: `127.x.y.z`, loopback, so that anything that does dial it
/// stays on this machine.
pub fn pod_ip(index: usize) -> String {
    let n = index + 1;
    format!("127.{}.{}.{}", (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff)
}

/// A Service object.
pub fn service(ns: &str, name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
        "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]},
    })
}

/// A running, ready Pod with an IP.
pub fn pod(ns: &str, name: &str, app: &str, ip: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": app}},
        "spec": {"serviceAccountName": app, "containers": [{"name": "app", "image": "app:1"}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                   "conditions": [{"type": "Ready", "status": "True"}]},
    })
}

/// The EndpointSlice of a Service over `pods` (`(pod name, pod IP)`), all ready.
pub fn endpoint_slice(ns: &str, service: &str, pods: &[(String, String)]) -> Value {
    let endpoints: Vec<Value> = pods
        .iter()
        .map(|(name, ip)| {
            json!({
                "addresses": [ip],
                "conditions": {"ready": true, "serving": true, "terminating": false},
                "targetRef": {"kind": "Pod", "namespace": ns, "name": name},
            })
        })
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{service}-slice"), "namespace": ns,
                     "labels": {"kubernetes.io/service-name": service,
                                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints,
    })
}

/// Creates the cluster; returns the resourceVersion after the last write.
pub fn populate(api: &KubeApi, cluster: &Cluster) -> Result<u64, ApiError> {
    let namespaces = cluster.namespaces.max(1);
    for n in 0..namespaces {
        api.apply(json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": format!("ns-{n}"), "labels": {"trustmesh.io/inject": "enabled"}},
        }))?;
    }
    let services = cluster.services.max(1);
    let mut members: Vec<Vec<(String, String)>> = vec![Vec::new(); services];
    for p in 0..cluster.pods {
        let s = p % services;
        let ns = format!("ns-{}", s % namespaces);
        let name = format!("svc-{s}-{}", p / services);
        let ip = pod_ip(p);
        api.apply(pod(&ns, &name, &format!("svc-{s}"), &ip))?;
        members[s].push((name, ip));
    }
    for (s, pods) in members.iter().enumerate().take(cluster.services) {
        let ns = format!("ns-{}", s % namespaces);
        let name = format!("svc-{s}");
        api.apply(service(&ns, &name))?;
        api.apply(endpoint_slice(&ns, &name, pods))?;
    }
    Ok(api.resource_version())
}

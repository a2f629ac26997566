//! The cluster of the Kubernetes-mode tests: the stand-in API server
//! (`trustmesh_e2e::kube_api`, not a real one: no API server runs on these machines), a real
//! `trustmesh serve --kubeconfig` against it, and pods that are real sidecars on their own
//! loopback addresses `127.a.b.c:15006`, bootstrapped with projected ServiceAccount tokens
//! bound to their Pod objects.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use trustmesh_e2e::app::App;
use trustmesh_e2e::control_plane::ControlPlane;
use trustmesh_e2e::kube_api::KubeApi;
use trustmesh_e2e::policies::{spiffe_id, write_policies};
use trustmesh_e2e::ports::{free_addr, ProxyPorts};
use trustmesh_e2e::proxy::Proxy;
use trustmesh_e2e::workdir::WorkDir;

pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// The meshed namespace of the tests.
pub const NS: &str = "shop";
/// The control plane's own namespace (`--kube-namespace`): its Secrets and ConfigMap.
pub const CP_NS: &str = "trustmesh-system";

/// The cluster's token signing key (ES256), as the API server's JWKS publishes it.
pub struct ClusterKey {
    key: EncodingKey,
}

impl ClusterKey {
    fn new() -> Self {
        let pkcs8 = trustmesh_certs::PrivateKey::generate().unwrap().to_der();
        Self {
            key: EncodingKey::from_ec_der(pkcs8.secret_der()),
        }
    }

    fn jwks(&self) -> JwkSet {
        let mut jwk = Jwk::from_encoding_key(&self.key, Algorithm::ES256).unwrap();
        jwk.common.key_id = Some("k1".into());
        JwkSet { keys: vec![jwk] }
    }

    /// A projected ServiceAccount token bound to pod `pod` (`uid`) as the kubelet mounts it.
    pub fn token(&self, ns: &str, sa: &str, pod: &str, uid: &str) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let claims = json!({
            "iss": ISSUER, "aud": ["trustmesh"], "sub": format!("system:serviceaccount:{ns}:{sa}"),
            "exp": now + 3600, "iat": now - 60, "nbf": now - 60,
            "kubernetes.io": {"namespace": ns, "pod": {"name": pod, "uid": uid},
                              "serviceaccount": {"name": sa, "uid": "0"}},
        });
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("k1".into());
        jsonwebtoken::encode(&header, &claims, &self.key).unwrap()
    }
}

/// One pod: its app, its sidecar on `<ip>:15006`, its Pod object's UID.
pub struct PodRun {
    pub name: String,
    pub ip: IpAddr,
    pub app: App,
    pub proxy: Proxy,
}

/// The stub API server, the control plane and what the test made.
pub struct Cluster {
    /// Kept for the logs and files of the test (removed when it passes).
    _dir: WorkDir,
    pub api: KubeApi,
    pub cp: ControlPlane,
    pub key: ClusterKey,
    /// The second octet of this process's pod IPs, the third of this test's.
    net: (u8, u8),
}

/// A Namespace, meshed or not.
pub fn namespace(name: &str, meshed: bool) -> Value {
    let labels = if meshed {
        json!({"trustmesh.io/inject": "enabled"})
    } else {
        json!({})
    };
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
}

/// A Service with one port 80 named `http-web`.
pub fn service(ns: &str, name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"selector": {"app": name}, "ports": [{"name": "http-web", "port": 80, "protocol": "TCP"}]},
    })
}

/// The EndpointSlice of Service `svc` over `pods` as `(pod, ready)`.
pub fn slice(ns: &str, svc: &str, pods: &[(&PodRun, bool)]) -> Value {
    let eps: Vec<(&str, IpAddr, bool)> = pods
        .iter()
        .map(|(p, ready)| (p.name.as_str(), p.ip, *ready))
        .collect();
    slice_of(ns, svc, &eps)
}

/// The EndpointSlice of Service `svc` over `(pod name, pod IP, ready)`.
pub fn slice_of(ns: &str, svc: &str, pods: &[(&str, IpAddr, bool)]) -> Value {
    let endpoints: Vec<Value> = pods
        .iter()
        .map(|(name, ip, ready)| {
            json!({"addresses": [ip.to_string()],
                   "conditions": {"ready": ready, "serving": true, "terminating": false},
                   "targetRef": {"kind": "Pod", "namespace": ns, "name": name}})
        })
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{svc}-abcde"), "namespace": ns,
                     "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "ports": [{"name": "http-web", "port": 80, "protocol": "TCP"}],
        "endpoints": endpoints,
    })
}

impl Cluster {
    /// Starts the stub with namespace [`NS`] meshed, and `trustmesh serve --kubeconfig`
    /// against it (no Service in git). `test_no` keeps each test's pod IPs its own.
    pub async fn start(test: &str, test_no: u8) -> Self {
        let dir = WorkDir::new(test).unwrap();
        let api = KubeApi::start().await.unwrap();
        api.apply(namespace(NS, true)).unwrap();
        // The control plane's own namespace, where it keeps the CA and the blocklist.
        api.apply(namespace(CP_NS, false)).unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        api.write_kubeconfig(&kubeconfig).unwrap();
        let key = ClusterKey::new();
        let jwks = dir.path().join("jwks.json");
        std::fs::write(&jwks, serde_json::to_vec(&key.jwks()).unwrap()).unwrap();
        let policies = write_policies(&dir.path().join("policies"), &[]).unwrap();
        let (kc, jw) = (kubeconfig.display().to_string(), jwks.display().to_string());
        let cp = ControlPlane::start_with(
            dir.path(),
            &dir.path().join("cp-data"),
            &policies,
            &[
                "--kubeconfig",
                &kc,
                "--kube-namespace",
                CP_NS,
                "--k8s-jwks",
                &jw,
                "--k8s-issuer",
                ISSUER,
            ],
        )
        .await
        .expect("trustmesh serve --kubeconfig starts");
        // Another test binary, or another worktree's run, may use 127.x.y.z:15006 too.
        let second = 100 + (std::process::id() % 100) as u8;
        Self {
            _dir: dir,
            api,
            cp,
            key,
            net: (second, test_no),
        }
    }

    /// The `n`-th pod IP of this test.
    pub fn ip(&self, n: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, self.net.0, self.net.1, n))
    }

    /// Writes a running Pod `name` (ServiceAccount `sa`, label `app`) with IP number `n`.
    pub fn pod_object(&self, ns: &str, name: &str, sa: &str, app: &str, n: u8) -> Value {
        let ip = self.ip(n).to_string();
        self.api
            .apply(json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": ns, "labels": {"app": app}},
                "spec": {"serviceAccountName": sa, "containers": [{"name": "app", "image": "app:1"}]},
                "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                           "conditions": [{"type": "Ready", "status": "True"}]},
            }))
            .unwrap()
    }

    /// Writes the Pod and starts its app and sidecar, bootstrapped with a token bound to it.
    pub async fn pod(&self, ns: &str, name: &str, sa: &str, app_label: &str, n: u8) -> PodRun {
        let obj = self.pod_object(ns, name, sa, app_label, n);
        let uid = obj["metadata"]["uid"].as_str().unwrap().to_string();
        let ip = self.ip(n);
        let app = App::start().await.unwrap();
        let ports = ProxyPorts {
            inbound: SocketAddr::new(ip, 15006),
            outbound: free_addr().unwrap(),
            admin: free_addr().unwrap(),
        };
        let token = self.key.token(ns, sa, name, &uid);
        let proxy = Proxy::start_with_token(
            &self.cp,
            name,
            &spiffe_id(ns, sa),
            app.addr(),
            ports,
            &token,
            // Round robin, so that every endpoint of a Service is called in turn: these tests
            // are about which endpoints and identities discovery gives, not about balancing.
            &["--balancer", "rr"],
        )
        .await
        .unwrap_or_else(|e| panic!("pod {name}'s sidecar starts: {e:#}"));
        PodRun {
            name: name.to_string(),
            ip,
            app,
            proxy,
        }
    }
}

//! Domain: sidecar injection, the pure pod rewrite behind `POST /v1/inject` (the mutating
//! admission webhook for Pods; the HTTP side, who may call it, is [`crate::api::inject`]).
//!
//! The API server sends an `AdmissionReview` (`admission.k8s.io/v1`) for every Pod created in a
//! namespace labelled `trustmesh.io/inject=enabled`; the answer allows it with a JSONPatch
//! (base64 in `response.patch`) that adds:
//!
//! - the init container `trustmesh-init` (`trustmesh-proxy init`): the iptables rules that send
//!   the pod's TCP through the sidecar. It alone has `NET_ADMIN`/`NET_RAW`, runs as root for
//!   that, and exits before the app starts;
//! - the sidecar `trustmesh-proxy` as the first container: uid/gid 1337, non-root, read-only
//!   root filesystem, no privilege escalation, every capability dropped, `RuntimeDefault`
//!   seccomp. Its bootstrap token is a projected ServiceAccount token with audience
//!   `trustmesh`; its trust bundle is the control plane's, put in a pod annotation and
//!   projected as a file through the downward API (so no ConfigMap has to be written into
//!   every namespace, and the control plane needs no write access);
//! - the probe rewrite: every `httpGet` (HTTP) and `tcpSocket` probe of the app's containers
//!   goes to the sidecar's probe listener (`:15020/app-health/<container>/<livez|readyz|startupz>`),
//!   which makes the original probe against the app on loopback (`--app-probes`). Other probes
//!   are left alone, with a warning when interception will make them fail.
//!
//! Skipped (allowed unchanged): non-CREATE operations, pods already injected, pods annotated
//! `trustmesh.io/inject: "false"`, and `hostNetwork` pods (their iptables would be the node's;
//! skipping is logged and warned).
//!
//! **Who may call it.** Only the Kubernetes API server, proven by a client certificate of the
//! mesh CA for the reserved identity `spiffe://TD/ns/trustmesh-system/sa/kube-apiserver`
//! (`trustmesh admin-cert --role kube-apiserver`, handed to the API server through its
//! admission kubeconfig; see `deploy/README.md`). No certificate gets 401, another identity
//! 403, both before the body is read; a body that is no AdmissionReview v1 gets 400.
//!
//! The trust domain and the trust bundle are those the control plane serves from `--data-dir`
//! (so a pod injected during a CA rotation gets the bundle in force); the image and the URL
//! sidecars use come from the control plane's environment, `TRUSTMESH_INJECT_PROXY_IMAGE` and
//! `TRUSTMESH_INJECT_CONTROL_PLANE`. Per pod, the annotations
//! `trustmesh.io/exclude-inbound-ports`, `trustmesh.io/exclude-outbound-ports` and
//! `trustmesh.io/exclude-outbound-cidrs` reach `trustmesh-proxy init`.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde_json::{json, Value};
use trustmesh_certs::{SpiffeId, TrustDomain};

/// The sidecar's uid and gid.
pub const PROXY_UID: u32 = 1337;
/// The sidecar's container name.
pub const PROXY_CONTAINER: &str = "trustmesh-proxy";
/// The init container's name.
pub const INIT_CONTAINER: &str = "trustmesh-init";
/// The probe listener's port.
pub const PROBE_PORT: u16 = 15020;
/// The annotation that marks an injected pod.
pub const STATUS_ANNOTATION: &str = "trustmesh.io/status";
/// The annotation that carries the trust bundle to the sidecar.
pub const BUNDLE_ANNOTATION: &str = "trustmesh.io/trust-bundle";
const TOKEN_DIR: &str = "/var/run/secrets/trustmesh";
const BUNDLE_DIR: &str = "/var/run/trustmesh";
/// The sidecar's `emptyDir` (in memory): its certificate and key survive a container restart,
/// so that a restarted sidecar needs no new token. `--state-dir` is a folder inside it, which
/// the sidecar creates mode 0700 (the volume's root is root's).
const STATE_VOLUME_DIR: &str = "/var/run/trustmesh-proxy";

/// What an injected pod gets: the control plane's trust domain and bundle, and the image and
/// URL from its environment.
#[derive(Debug, Clone)]
pub struct InjectConfig {
    /// The `trustmesh-proxy` image (init container and sidecar).
    pub proxy_image: String,
    /// The control plane URL sidecars use.
    pub control_plane: String,
    /// The mesh trust domain.
    pub trust_domain: String,
    /// The trust bundle (PEM).
    pub trust_bundle: String,
}

impl InjectConfig {
    /// The settings for a control plane of trust domain `trust_domain` that serves
    /// `trust_bundle`; the image and the URL from the environment (module docs).
    pub fn new(trust_domain: &str, trust_bundle: &str) -> Self {
        let var = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
        Self {
            proxy_image: var("TRUSTMESH_INJECT_PROXY_IMAGE", "trustmesh/proxy:0.1.0"),
            control_plane: var(
                "TRUSTMESH_INJECT_CONTROL_PLANE",
                "https://trustmesh.trustmesh-system.svc:15012",
            ),
            trust_domain: trust_domain.to_string(),
            trust_bundle: trust_bundle.to_string(),
        }
    }
}

/// The identity the webhook's caller (the API server) must present, in trust domain `td`.
pub fn caller_identity(td: &TrustDomain) -> Result<SpiffeId, String> {
    SpiffeId::from_service_account(td, CALLER_NAMESPACE, CALLER_SERVICE_ACCOUNT)
        .map_err(|e| e.to_string())
}

/// The namespace of [`caller_identity`].
pub const CALLER_NAMESPACE: &str = "trustmesh-system";
/// The service account of [`caller_identity`].
pub const CALLER_SERVICE_ACCOUNT: &str = "kube-apiserver";

/// The AdmissionReview answering `review`. `Err` only when `review` is no AdmissionReview v1.
pub fn review_response(review: &Value, config: &InjectConfig) -> Result<Value, String> {
    if review["apiVersion"] != "admission.k8s.io/v1" || review["kind"] != "AdmissionReview" {
        return Err("expected apiVersion admission.k8s.io/v1, kind AdmissionReview".into());
    }
    let request = &review["request"];
    let uid = request["uid"]
        .as_str()
        .ok_or("request.uid is missing")?
        .to_string();
    let mut response = json!({"uid": uid, "allowed": true});
    match mutate(request, config) {
        Ok(Mutation::Skip(reason)) => {
            tracing::debug!(uid, reason, "pod not injected");
        }
        Ok(Mutation::Patch { patch, warnings }) => {
            let text = serde_json::to_vec(&patch).map_err(|e| e.to_string())?;
            response["patchType"] = json!("JSONPatch");
            response["patch"] = json!(base64::engine::general_purpose::STANDARD.encode(text));
            if !warnings.is_empty() {
                response["warnings"] = json!(warnings);
            }
            tracing::info!(
                uid,
                namespace = request["namespace"].as_str().unwrap_or(""),
                "sidecar injected"
            );
        }
        Ok(Mutation::Warn(warning)) => {
            response["warnings"] = json!([warning]);
        }
        Err(reason) => {
            response["allowed"] = json!(false);
            response["status"] =
                json!({"code": 400, "message": format!("trustmesh injection: {reason}")});
        }
    }
    Ok(json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": response,
    }))
}

/// What to do with one pod.
#[derive(Debug)]
pub enum Mutation {
    /// Leave it as it is.
    Skip(&'static str),
    /// Leave it, and tell the user why.
    Warn(String),
    /// Apply this JSONPatch.
    Patch {
        /// RFC 6902 operations.
        patch: Vec<Value>,
        /// Shown to the user by kubectl.
        warnings: Vec<String>,
    },
}

/// Decides and builds the patch for `request` (the AdmissionReview's `request`).
pub fn mutate(request: &Value, config: &InjectConfig) -> Result<Mutation, String> {
    if request["operation"] != "CREATE" {
        return Ok(Mutation::Skip("not a CREATE"));
    }
    if request["kind"]["kind"] != "Pod" {
        return Ok(Mutation::Skip("not a Pod"));
    }
    let pod = &request["object"];
    let annotations = pod["metadata"]["annotations"].as_object();
    let annotation = |k: &str| annotations.and_then(|a| a.get(k)).and_then(Value::as_str);
    if annotation("trustmesh.io/inject") == Some("false") {
        return Ok(Mutation::Skip("annotated trustmesh.io/inject: false"));
    }
    let containers = pod["spec"]["containers"]
        .as_array()
        .ok_or("spec.containers is missing")?;
    if annotation(STATUS_ANNOTATION).is_some()
        || containers.iter().any(|c| c["name"] == PROXY_CONTAINER)
    {
        return Ok(Mutation::Skip("already injected"));
    }
    if pod["spec"]["hostNetwork"] == true {
        return Ok(Mutation::Warn(
            "trustmesh: hostNetwork pod not injected (its iptables rules would be the node's)"
                .into(),
        ));
    }
    let namespace = request["namespace"]
        .as_str()
        .or_else(|| pod["metadata"]["namespace"].as_str())
        .ok_or("the request names no namespace")?;
    let sa = pod["spec"]["serviceAccountName"]
        .as_str()
        .unwrap_or("default");
    let identity = format!("spiffe://{}/ns/{namespace}/sa/{sa}", config.trust_domain);

    let mut patch = Vec::new();
    let mut warnings = Vec::new();
    // Probes first: their paths use the containers' current indices.
    let probes = probes::rewrite(containers, &mut patch, &mut warnings);
    let app_port = containers
        .iter()
        .flat_map(|c| c["ports"].as_array().into_iter().flatten())
        .find_map(|p| p["containerPort"].as_u64())
        .unwrap_or(8080);

    let mut init_args = vec![
        "init".to_string(),
        "--proxy-uid".into(),
        PROXY_UID.to_string(),
    ];
    let mut excluded_in = vec![PROBE_PORT.to_string()];
    excluded_in.extend(list_annotation(annotation(
        "trustmesh.io/exclude-inbound-ports",
    )));
    init_args.extend(["--exclude-inbound-ports".into(), excluded_in.join(",")]);
    for (key, flag) in [
        (
            "trustmesh.io/exclude-outbound-ports",
            "--exclude-outbound-ports",
        ),
        (
            "trustmesh.io/exclude-outbound-cidrs",
            "--exclude-outbound-cidrs",
        ),
    ] {
        let values = list_annotation(annotation(key));
        if !values.is_empty() {
            init_args.extend([flag.to_string(), values.join(",")]);
        }
    }
    let init = json!({
        "name": INIT_CONTAINER,
        "image": config.proxy_image,
        "args": init_args,
        "securityContext": {
            "runAsUser": 0,
            "runAsNonRoot": false,
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "privileged": false,
            "capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN", "NET_RAW"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "trustmesh-xtables", "mountPath": "/run"}],
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}},
    });
    let mut env = vec![json!({"name": "TRUSTMESH_LOG_LEVEL", "value": "info"})];
    if !probes.is_empty() {
        let text = serde_json::to_string(&probes).map_err(|e| e.to_string())?;
        env.push(json!({"name": "TRUSTMESH_APP_PROBES", "value": text}));
    }
    let sidecar = json!({
        "name": PROXY_CONTAINER,
        "image": config.proxy_image,
        "args": [
            "--control-plane", config.control_plane,
            "--trust-bundle", format!("{BUNDLE_DIR}/trust-bundle.pem"),
            "--token-file", format!("{TOKEN_DIR}/token"),
            "--identity", identity,
            "--app", format!("127.0.0.1:{app_port}"),
            "--inbound", "0.0.0.0:15006",
            "--outbound", "127.0.0.1:15001",
            "--admin", "127.0.0.1:15000",
            "--probe-listen", format!("0.0.0.0:{PROBE_PORT}"),
            "--state-dir", format!("{STATE_VOLUME_DIR}/state"),
        ],
        "env": env,
        "ports": [
            {"name": "trustmesh-mtls", "containerPort": 15006, "protocol": "TCP"},
            {"name": "trustmesh-probe", "containerPort": PROBE_PORT, "protocol": "TCP"},
        ],
        "securityContext": {
            "runAsUser": PROXY_UID,
            "runAsGroup": PROXY_UID,
            "runAsNonRoot": true,
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "privileged": false,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [
            {"name": "trustmesh-token", "mountPath": TOKEN_DIR, "readOnly": true},
            {"name": "trustmesh-bundle", "mountPath": BUNDLE_DIR, "readOnly": true},
            {"name": "trustmesh-state", "mountPath": STATE_VOLUME_DIR},
        ],
        "resources": {"requests": {"cpu": "50m", "memory": "32Mi"}, "limits": {"memory": "256Mi"}},
    });
    let volumes = [
        json!({"name": "trustmesh-token", "projected": {"sources": [{"serviceAccountToken": {
            "audience": "trustmesh", "expirationSeconds": 3600, "path": "token"}}]}}),
        json!({"name": "trustmesh-bundle", "downwardAPI": {"items": [{"path": "trust-bundle.pem",
            "fieldRef": {"fieldPath": format!("metadata.annotations['{BUNDLE_ANNOTATION}']")}}]}}),
        json!({"name": "trustmesh-xtables", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}),
        json!({"name": "trustmesh-state", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}),
    ];

    append(
        &mut patch,
        pod["spec"]["initContainers"].is_array(),
        "/spec/initContainers",
        vec![init],
    );
    // The sidecar goes first, so the kubelet starts it before the app.
    patch.push(json!({"op": "add", "path": "/spec/containers/0", "value": sidecar}));
    append(
        &mut patch,
        pod["spec"]["volumes"].is_array(),
        "/spec/volumes",
        volumes.to_vec(),
    );
    let mut new_annotations = BTreeMap::new();
    new_annotations.insert(STATUS_ANNOTATION, json!("injected"));
    new_annotations.insert(BUNDLE_ANNOTATION, json!(config.trust_bundle));
    if annotations.is_some() {
        for (k, v) in new_annotations {
            patch.push(json!({"op": "add", "path": format!("/metadata/annotations/{}", escape(k)), "value": v}));
        }
    } else {
        patch.push(json!({"op": "add", "path": "/metadata/annotations", "value": new_annotations}));
    }
    Ok(Mutation::Patch { patch, warnings })
}

fn list_annotation(v: Option<&str>) -> Vec<String> {
    v.unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Adds `values` to the array at `path`, creating it when the pod has none.
fn append(patch: &mut Vec<Value>, exists: bool, path: &str, values: Vec<Value>) {
    if exists {
        for v in values {
            patch.push(json!({"op": "add", "path": format!("{path}/-"), "value": v}));
        }
    } else {
        patch.push(json!({"op": "add", "path": path, "value": values}));
    }
}

/// A JSON Pointer token (RFC 6901): `~` is `~0`, `/` is `~1`.
fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

mod probes;

#[cfg(test)]
mod tests;

//! Sidecar injection: `POST /v1/inject`, the mutating admission webhook for Pods.
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
//! Settings come from the control plane's environment: `TRUSTMESH_INJECT_PROXY_IMAGE`,
//! `TRUSTMESH_INJECT_CONTROL_PLANE` (the URL sidecars use), `TRUSTMESH_TRUST_DOMAIN` and the
//! trust bundle file `TRUSTMESH_INJECT_TRUST_BUNDLE` (default
//! `$TRUSTMESH_DATA_DIR/trust-bundle.pem`). Per pod, the annotations
//! `trustmesh.io/exclude-inbound-ports`, `trustmesh.io/exclude-outbound-ports` and
//! `trustmesh.io/exclude-outbound-cidrs` reach `trustmesh-proxy init`.

use std::collections::BTreeMap;

use base64::Engine as _;
use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use serde_json::{json, Map, Value};

/// Largest AdmissionReview accepted (the API server's own limit is 3 MiB).
const MAX_BODY: usize = 3 * 1024 * 1024;
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

/// What an injected pod gets, from the control plane's environment.
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
    /// Reads the settings listed in the module docs.
    pub fn from_env() -> Result<Self, String> {
        let var = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
        let data_dir = var("TRUSTMESH_DATA_DIR", ".trustmesh");
        let bundle_path = var(
            "TRUSTMESH_INJECT_TRUST_BUNDLE",
            &format!("{data_dir}/trust-bundle.pem"),
        );
        let trust_bundle = std::fs::read_to_string(&bundle_path)
            .map_err(|e| format!("reading the trust bundle {bundle_path}: {e}"))?;
        Ok(Self {
            proxy_image: var("TRUSTMESH_INJECT_PROXY_IMAGE", "trustmesh/proxy:0.1.0"),
            control_plane: var(
                "TRUSTMESH_INJECT_CONTROL_PLANE",
                "https://trustmesh.trustmesh-system.svc:15012",
            ),
            trust_domain: var("TRUSTMESH_TRUST_DOMAIN", "cluster.local"),
            trust_bundle,
        })
    }
}

/// `POST /v1/inject`: an AdmissionReview in, an AdmissionReview out. A body that is not an
/// AdmissionReview gets `400` with a JSON error; a pod that cannot be read is refused in the
/// AdmissionReview (so the API server shows the reason) rather than let through uninjected.
pub async fn handle(req: Request<Incoming>) -> Response<Full<Bytes>> {
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_body", &e.to_string()),
    };
    let review: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_json", &e.to_string()),
    };
    let config = match InjectConfig::from_env() {
        Ok(c) => c,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, "inject_unavailable", &e),
    };
    match review_response(&review, &config) {
        Ok(out) => json_response(StatusCode::OK, &out),
        Err(e) => error(StatusCode::BAD_REQUEST, "bad_admission_review", &e),
    }
}

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
    let probes = rewrite_probes(containers, &mut patch, &mut warnings);
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

/// Rewrites the app containers' probes (see the module docs); returns the original probes by
/// rewritten path, in the sidecar's `--app-probes` format.
fn rewrite_probes(
    containers: &[Value],
    patch: &mut Vec<Value>,
    warnings: &mut Vec<String>,
) -> Map<String, Value> {
    let mut probes = Map::new();
    for (i, c) in containers.iter().enumerate() {
        let name = c["name"].as_str().unwrap_or("app");
        for (field, kind) in [
            ("livenessProbe", "livez"),
            ("readinessProbe", "readyz"),
            ("startupProbe", "startupz"),
        ] {
            let probe = &c[field];
            if !probe.is_object() {
                continue;
            }
            let key = format!("/app-health/{name}/{kind}");
            let original = if let Some(h) = probe.get("httpGet") {
                let scheme = h["scheme"].as_str().unwrap_or("HTTP");
                match (
                    scheme.eq_ignore_ascii_case("HTTP"),
                    resolve_port(c, &h["port"]),
                ) {
                    (true, Some(port)) => {
                        let mut g =
                            json!({"port": port, "path": h["path"].as_str().unwrap_or("/")});
                        if let Some(hs) = h.get("httpHeaders") {
                            g["httpHeaders"] = hs.clone();
                        }
                        json!({"httpGet": g})
                    }
                    _ => {
                        warnings.push(format!("trustmesh: {field} of container {name} is not a plain HTTP probe on a known port; it is left as is and will fail under interception unless its port is in trustmesh.io/exclude-inbound-ports"));
                        continue;
                    }
                }
            } else if let Some(t) = probe.get("tcpSocket") {
                match resolve_port(c, &t["port"]) {
                    Some(port) => json!({"tcpSocket": {"port": port}}),
                    None => {
                        warnings.push(format!("trustmesh: {field} of container {name} names an unknown port; left as is"));
                        continue;
                    }
                }
            } else {
                if probe.get("grpc").is_some() {
                    warnings.push(format!("trustmesh: the gRPC {field} of container {name} is left as is and will fail under interception unless its port is in trustmesh.io/exclude-inbound-ports"));
                }
                continue;
            };
            let mut original = original;
            if let Some(t) = probe.get("timeoutSeconds") {
                original["timeoutSeconds"] = t.clone();
            }
            probes.insert(key.clone(), original);
            let mut rewritten = probe.clone();
            if let Some(o) = rewritten.as_object_mut() {
                o.remove("tcpSocket");
                o.insert(
                    "httpGet".into(),
                    json!({"path": key, "port": PROBE_PORT, "scheme": "HTTP"}),
                );
            }
            patch.push(json!({"op": "replace", "path": format!("/spec/containers/{i}/{field}"), "value": rewritten}));
        }
    }
    probes
}

/// A probe's port: a number, or the name of one of the container's ports.
fn resolve_port(container: &Value, port: &Value) -> Option<u64> {
    if let Some(n) = port.as_u64().filter(|n| (1..=65535).contains(n)) {
        return Some(n);
    }
    let name = port.as_str()?;
    if let Ok(n) = name.parse::<u16>() {
        return (n != 0).then_some(u64::from(n));
    }
    container["ports"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_u64())
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

fn json_response(status: StatusCode, v: &Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(v.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}

fn error(status: StatusCode, code: &str, message: &str) -> Response<Full<Bytes>> {
    json_response(status, &json!({"error": code, "message": message}))
}

#[cfg(test)]
mod tests;

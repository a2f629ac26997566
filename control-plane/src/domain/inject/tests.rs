use super::*;

const BUNDLE: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

fn config() -> InjectConfig {
    InjectConfig {
        proxy_image: "registry.example/trustmesh-proxy:0.1.0".into(),
        control_plane: "https://trustmesh.trustmesh-system.svc:15012".into(),
        trust_domain: "cluster.local".into(),
        trust_bundle: BUNDLE.into(),
    }
}

fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/src/domain/inject/testdata/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Applies the `add` and `replace` operations of an RFC 6902 patch (all the webhook emits).
fn apply(doc: &mut Value, patch: &[Value]) {
    for op in patch {
        let path = op["path"].as_str().unwrap();
        let (parent, last) = path.rsplit_once('/').unwrap();
        let last = last.replace("~1", "/").replace("~0", "~");
        let target = doc
            .pointer_mut(parent)
            .unwrap_or_else(|| panic!("no {parent}"));
        let value = op["value"].clone();
        match (op["op"].as_str().unwrap(), target) {
            ("add", Value::Array(a)) if last == "-" => a.push(value),
            ("add", Value::Array(a)) => a.insert(last.parse().unwrap(), value),
            ("replace", Value::Array(a)) => a[last.parse::<usize>().unwrap()] = value,
            ("add", Value::Object(o)) => {
                o.insert(last, value);
            }
            ("replace", Value::Object(o)) => {
                assert!(o.contains_key(&last), "replace of missing {path}");
                o.insert(last, value);
            }
            (other, t) => panic!("unexpected {other} at {path} on {t}"),
        }
    }
}

/// The review's response, and the pod with its patch applied.
fn injected(name: &str) -> (Value, Value) {
    let review = fixture(name);
    let out = review_response(&review, &config()).unwrap();
    assert_eq!(out["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(out["kind"], "AdmissionReview");
    let resp = out["response"].clone();
    assert_eq!(resp["uid"], review["request"]["uid"]);
    assert_eq!(resp["allowed"], true);
    assert_eq!(resp["patchType"], "JSONPatch");
    let raw = base64::engine::general_purpose::STANDARD
        .decode(resp["patch"].as_str().unwrap())
        .unwrap();
    let patch: Vec<Value> = serde_json::from_slice(&raw).unwrap();
    let mut pod = review["request"]["object"].clone();
    apply(&mut pod, &patch);
    (resp, pod)
}

fn container<'a>(pod: &'a Value, name: &str) -> &'a Value {
    pod["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .chain(
            pod["spec"]["initContainers"]
                .as_array()
                .into_iter()
                .flatten(),
        )
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

#[test]
fn a_deployment_pod_gets_init_sidecar_token_and_bundle() {
    let (_, pod) = injected("pod-create.json");
    let init = container(&pod, INIT_CONTAINER);
    assert_eq!(
        init["args"],
        json!([
            "init",
            "--proxy-uid",
            "1337",
            "--exclude-inbound-ports",
            "15020"
        ])
    );
    let caps = &init["securityContext"]["capabilities"];
    assert_eq!(caps["add"], json!(["NET_ADMIN", "NET_RAW"]));
    assert_eq!(caps["drop"], json!(["ALL"]));
    assert_eq!(init["securityContext"]["allowPrivilegeEscalation"], false);

    // The sidecar is first, non-root 1337, read-only, no escalation, nothing extra.
    assert_eq!(pod["spec"]["containers"][0]["name"], PROXY_CONTAINER);
    let proxy = container(&pod, PROXY_CONTAINER);
    assert_eq!(proxy["image"], "registry.example/trustmesh-proxy:0.1.0");
    let sc = &proxy["securityContext"];
    assert_eq!(sc["runAsUser"], 1337);
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"], json!({"drop": ["ALL"]}));
    let args: Vec<&str> = proxy["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let flag = |f: &str| args[args.iter().position(|a| *a == f).unwrap() + 1];
    assert_eq!(
        flag("--identity"),
        "spiffe://cluster.local/ns/production/sa/order-service"
    );
    assert_eq!(flag("--app"), "127.0.0.1:8080");
    assert_eq!(flag("--token-file"), "/var/run/secrets/trustmesh/token");
    assert_eq!(
        flag("--trust-bundle"),
        "/var/run/trustmesh/trust-bundle.pem"
    );
    assert_eq!(flag("--probe-listen"), "0.0.0.0:15020");
    // Its certificate and key survive a container restart in an in-memory emptyDir.
    assert_eq!(flag("--state-dir"), "/var/run/trustmesh-proxy/state");
    let mounts = proxy["volumeMounts"].as_array().unwrap();
    assert!(mounts.iter().any(|m| m["name"] == "trustmesh-state"
        && m["mountPath"] == "/var/run/trustmesh-proxy"
        && m.get("readOnly").is_none()));

    // The projected token with audience trustmesh, the bundle through the downward API.
    let volumes = pod["spec"]["volumes"].as_array().unwrap();
    assert_eq!(
        volumes[0]["name"], "kube-api-access-x7k2p",
        "existing volumes stay"
    );
    let vol = |n: &str| volumes.iter().find(|v| v["name"] == n).unwrap();
    assert_eq!(
        vol("trustmesh-token")["projected"]["sources"][0]["serviceAccountToken"]["audience"],
        "trustmesh"
    );
    assert_eq!(
        vol("trustmesh-bundle")["downwardAPI"]["items"][0]["fieldRef"]["fieldPath"],
        "metadata.annotations['trustmesh.io/trust-bundle']"
    );
    assert_eq!(vol("trustmesh-state")["emptyDir"]["medium"], "Memory");
    let ann = &pod["metadata"]["annotations"];
    assert_eq!(ann[BUNDLE_ANNOTATION], BUNDLE);
    assert_eq!(ann[STATUS_ANNOTATION], "injected");
    assert_eq!(
        ann["kubectl.kubernetes.io/restartedAt"],
        "2024-05-01T10:00:00Z"
    );
    // The app container is otherwise untouched.
    let app = container(&pod, "orders");
    assert_eq!(app["image"], "registry.example/orders:1.4.2");
    assert_eq!(app["resources"]["requests"]["cpu"], "100m");
}

#[test]
fn probes_are_rewritten_to_the_probe_listener_and_handed_to_the_sidecar() {
    let (resp, pod) = injected("pod-create.json");
    let app = container(&pod, "orders");
    let live = &app["livenessProbe"];
    assert_eq!(
        live["httpGet"],
        json!({"path": "/app-health/orders/livez", "port": 15020, "scheme": "HTTP"})
    );
    // Timing fields stay as the user wrote them.
    assert_eq!(live["initialDelaySeconds"], 5);
    assert_eq!(live["timeoutSeconds"], 2);
    let ready = &app["readinessProbe"];
    assert!(ready.get("tcpSocket").is_none(), "{ready}");
    assert_eq!(ready["httpGet"]["path"], "/app-health/orders/readyz");
    assert_eq!(ready["periodSeconds"], 5);

    let proxy = container(&pod, PROXY_CONTAINER);
    let env = proxy["env"].as_array().unwrap();
    let probes = env
        .iter()
        .find(|e| e["name"] == "TRUSTMESH_APP_PROBES")
        .unwrap();
    let probes: Value = serde_json::from_str(probes["value"].as_str().unwrap()).unwrap();
    assert_eq!(
        probes,
        json!({
            "/app-health/orders/livez": {"httpGet": {"port": 8080, "path": "/healthz",
                "httpHeaders": [{"name": "X-Probe", "value": "liveness"}]}, "timeoutSeconds": 2},
            "/app-health/orders/readyz": {"tcpSocket": {"port": 9090}, "timeoutSeconds": 1},
        })
    );
    // The gRPC startup probe is left alone, with a warning.
    let exporter = container(&pod, "metrics-exporter");
    assert_eq!(
        exporter["startupProbe"],
        json!({"grpc": {"port": 9555}, "periodSeconds": 10})
    );
    let warnings = resp["warnings"].as_array().unwrap();
    assert!(
        warnings[0].as_str().unwrap().contains("gRPC startupProbe"),
        "{warnings:?}"
    );
}

#[test]
fn a_bare_pod_gets_arrays_and_annotations_created() {
    let (resp, pod) = injected("pod-minimal.json");
    assert!(resp.get("warnings").is_none());
    assert_eq!(pod["spec"]["initContainers"][0]["name"], INIT_CONTAINER);
    assert_eq!(pod["spec"]["containers"][1]["name"], "web");
    assert_eq!(pod["spec"]["volumes"].as_array().unwrap().len(), 4);
    assert_eq!(
        pod["metadata"]["annotations"][STATUS_ANNOTATION],
        "injected"
    );
    let proxy = container(&pod, PROXY_CONTAINER);
    assert!(proxy["args"]
        .as_array()
        .unwrap()
        .contains(&json!("spiffe://cluster.local/ns/shop/sa/default")));
    assert!(!proxy["env"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["name"] == "TRUSTMESH_APP_PROBES"));
}

#[test]
fn exclusion_annotations_reach_the_init_container() {
    let mut review = fixture("pod-minimal.json");
    review["request"]["object"]["metadata"]["annotations"] = json!({
        "trustmesh.io/exclude-inbound-ports": "22, 9555",
        "trustmesh.io/exclude-outbound-ports": "5432",
        "trustmesh.io/exclude-outbound-cidrs": "10.96.0.1/32,169.254.169.254/32",
    });
    let Mutation::Patch { patch, .. } = mutate(&review["request"], &config()).unwrap() else {
        panic!("expected a patch");
    };
    let mut pod = review["request"]["object"].clone();
    apply(&mut pod, &patch);
    assert_eq!(
        container(&pod, INIT_CONTAINER)["args"],
        json!([
            "init",
            "--proxy-uid",
            "1337",
            "--exclude-inbound-ports",
            "15020,22,9555",
            "--exclude-outbound-ports",
            "5432",
            "--exclude-outbound-cidrs",
            "10.96.0.1/32,169.254.169.254/32",
        ])
    );
    // Annotation keys with '/' are escaped in the patch path.
    assert!(patch
        .iter()
        .any(|op| op["path"] == "/metadata/annotations/trustmesh.io~1status"));
}

#[test]
fn pods_that_must_not_be_injected_are_allowed_unchanged() {
    type Change = fn(&mut Value);
    let cases: [(&str, Change); 5] = [
        ("update", |r| r["request"]["operation"] = json!("UPDATE")),
        ("opt-out", |r| {
            r["request"]["object"]["metadata"]["annotations"] =
                json!({"trustmesh.io/inject": "false"})
        }),
        ("already injected", |r| {
            r["request"]["object"]["metadata"]["annotations"] =
                json!({"trustmesh.io/status": "injected"})
        }),
        ("sidecar present", |r| {
            r["request"]["object"]["spec"]["containers"][0]["name"] = json!(PROXY_CONTAINER)
        }),
        ("host network", |r| {
            r["request"]["object"]["spec"]["hostNetwork"] = json!(true)
        }),
    ];
    for (what, change) in cases {
        let mut review = fixture("pod-minimal.json");
        change(&mut review);
        let out = review_response(&review, &config()).unwrap();
        let resp = &out["response"];
        assert_eq!(resp["allowed"], true, "{what}");
        assert!(resp.get("patch").is_none(), "{what}: {resp}");
    }
    let mut review = fixture("pod-minimal.json");
    review["request"]["object"]["spec"]["hostNetwork"] = json!(true);
    let out = review_response(&review, &config()).unwrap();
    assert!(out["response"]["warnings"][0]
        .as_str()
        .unwrap()
        .contains("hostNetwork"));
}

#[test]
fn malformed_reviews_are_errors_and_unreadable_pods_are_refused() {
    assert!(review_response(&json!({"kind": "AdmissionReview"}), &config()).is_err());
    assert!(review_response(
        &json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {}}),
        &config()
    )
    .is_err());
    let mut review = fixture("pod-minimal.json");
    review["request"]["object"]["spec"] = json!({});
    let out = review_response(&review, &config()).unwrap();
    assert_eq!(out["response"]["allowed"], false);
    assert_eq!(out["response"]["status"]["code"], 400);
}

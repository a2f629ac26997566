//! The metrics contract, read the way Prometheus reads it: the real `/metrics` output of a
//! sidecar and of the control plane, parsed with a Prometheus text-format parser, has every
//! contract name with its labels and sensible values, and the counters whose label values are
//! known exist at zero before their first event.

// Helpers outside #[test] functions fail the test by panicking, like the tests themselves.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::SystemTime;

use prometheus_parse::{Sample, Scrape, Value};
use trustmesh_certs::TrustBundle;
use trustmesh_e2e::client::{admin_get, http1_get};
use trustmesh_e2e::mesh::{Mesh, NAMESPACE};
use trustmesh_e2e::mtls::{client_without_cert, knock};
use trustmesh_e2e::policies::spiffe_id;

fn parse(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("Prometheus text format")
}

/// The samples named `name` whose labels include every pair of `labels`.
fn find<'a>(s: &'a Scrape, name: &str, labels: &[(&str, &str)]) -> Vec<&'a Sample> {
    s.samples
        .iter()
        .filter(|x| x.metric == name)
        .filter(|x| labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .collect()
}

fn value(s: &Sample) -> f64 {
    match s.value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
        ref other => panic!("{} is not a single value: {other:?}", s.metric),
    }
}

fn one(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found = find(s, name, labels);
    assert_eq!(found.len(), 1, "{name}{labels:?}: {found:?}");
    value(found[0])
}

fn histogram_count(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found = find(s, name, labels);
    let h = found
        .iter()
        .find_map(|x| match &x.value {
            Value::Histogram(b) => Some(b.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no histogram {name}{labels:?}"));
    h.iter().map(|b| b.count).fold(0.0, f64::max)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_the_contract() {
    let mesh = Mesh::a_to_b("metrics").await.expect("mesh starts");
    let (id_a, id_b) = (spiffe_id(NAMESPACE, "a"), spiffe_id(NAMESPACE, "b"));
    // One ALLOW policy with two rules for B, so that requests carry a route: the second rule.
    let version = |s: &Scrape| {
        find(s, "trustmesh_policy_version_info", &[])
            .first()
            .and_then(|x| x.labels.get("version").map(str::to_string))
    };
    let before = version(&parse(
        &admin_get(mesh.b.admin(), "/metrics").await.unwrap().text(),
    ));
    std::fs::write(
        mesh.dir.path().join("policies/allow-b.yaml"),
        format!(
            "apiVersion: trustmesh.io/v1\nkind: AuthorizationPolicy\n\
             metadata: {{name: allow-b, namespace: {NAMESPACE}}}\n\
             spec:\n  selector: {{matchLabels: {{app: b}}}}\n  action: ALLOW\n  rules:\n\
             \x20 - to: [{{operation: {{paths: [\"/other\"]}}}}]\n\
             \x20 - from: [{{source: {{principals: [\"{id_a}\"]}}}}]\n\
             \x20   to: [{{operation: {{methods: [GET], paths: [\"/m\"]}}}}]\n"
        ),
    )
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let now = version(&parse(
            &admin_get(mesh.b.admin(), "/metrics").await.unwrap().text(),
        ));
        if now.is_some() && now != before {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the new policy never reached B"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let route = format!("{NAMESPACE}/allow-b#1");
    for _ in 0..3 {
        let r = http1_get(mesh.a.outbound(), "b.test", "/m", &[])
            .await
            .unwrap();
        assert_eq!(r.status, 200);
    }
    // A client without a certificate fails B's handshake.
    let bundle = TrustBundle::from_pem(&mesh.cp.trust_bundle_pem().unwrap()).unwrap();
    let anon = client_without_cert(&bundle, &id_b).unwrap();
    let _ = knock(anon, mesh.b.inbound()).await;

    let b = parse(&admin_get(mesh.b.admin(), "/metrics").await.unwrap().text());
    let a = parse(&admin_get(mesh.a.admin(), "/metrics").await.unwrap().text());

    let inbound = [
        ("direction", "inbound"),
        ("status", "200"),
        ("peer", id_a.as_str()),
        ("route", route.as_str()),
    ];
    assert_eq!(one(&b, "trustmesh_requests_total", &inbound), 3.0);
    let outbound = [
        ("direction", "outbound"),
        ("status", "200"),
        ("peer", id_b.as_str()),
        ("route", "-"),
    ];
    assert_eq!(one(&a, "trustmesh_requests_total", &outbound), 3.0);
    assert_eq!(
        histogram_count(
            &b,
            "trustmesh_request_duration_seconds",
            &[("direction", "inbound"), ("route", route.as_str())]
        ),
        3.0
    );
    let policy = format!("{NAMESPACE}/allow-b");
    assert_eq!(
        one(
            &b,
            "trustmesh_authz_decisions_total",
            &[("decision", "allow"), ("policy", policy.as_str())]
        ),
        3.0
    );
    let refused: f64 = find(&b, "trustmesh_tls_handshake_errors_total", &[])
        .iter()
        .map(|s| value(s))
        .sum();
    assert!(refused >= 1.0, "no handshake error counted");
    let expiry = one(&b, "trustmesh_certificate_expiry_timestamp_seconds", &[]);
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        expiry > now && expiry < now + 2.0 * 3600.0,
        "expiry {expiry}, now {now}"
    );
    let versions = find(&b, "trustmesh_policy_version_info", &[]);
    assert_eq!(versions.len(), 1, "{versions:?}");
    assert_eq!(value(versions[0]), 1.0);
    assert!(versions[0]
        .labels
        .get("version")
        .is_some_and(|v| !v.is_empty()));
    assert!(!find(
        &b,
        "trustmesh_connections_open",
        &[("direction", "inbound")]
    )
    .is_empty());
    // Labels are bounded: no raw path anywhere.
    assert!(b
        .samples
        .iter()
        .all(|s| s.labels.values().all(|v| !v.contains("/m"))));

    let cp = parse(&mesh.cp.get("/metrics").await.unwrap().text());
    assert!(
        one(
            &cp,
            "trustmesh_cp_certificates_issued_total",
            &[("result", "issued")]
        ) >= 2.0
    );
    assert!(one(&cp, "trustmesh_cp_proxies_connected", &[]) >= 2.0);
    assert!(one(&cp, "trustmesh_cp_policy_reload_total", &[("result", "ok")]) >= 1.0);
    assert!(histogram_count(&cp, "trustmesh_cp_snapshot_push_duration_seconds", &[]) >= 2.0);

    // Counters with known label values exist from the start, at zero until their first event,
    // so that an alert on them (a rate, an absent series) works before anything happened.
    let known: &[(&str, &str, &[&str])] = &[
        (
            "trustmesh_tls_handshake_errors_total",
            "reason",
            &[
                "no_client_certificate",
                "expired",
                "unknown_issuer",
                "bad_certificate",
                "incompatible",
                "protocol",
                "io",
                "timeout",
            ],
        ),
        (
            "trustmesh_certificate_renewals_total",
            "result",
            &["ok", "refused", "unavailable"],
        ),
        (
            "trustmesh_blocked_refusals_total",
            "stage",
            &["connection", "request"],
        ),
        (
            "trustmesh_outbound_passthrough_total",
            "decision",
            &["deny", "passthrough"],
        ),
    ];
    for (name, label, values) in known {
        for v in *values {
            // A's inbound saw no traffic and no certificate of A was renewed: all still zero.
            assert_eq!(
                one(&a, name, &[(label, v)]),
                0.0,
                "{name}{{{label}={v}}} on A"
            );
            one(&b, name, &[(label, v)]);
        }
    }
    for decision in ["allow", "deny", "would_deny", "bad_request"] {
        let labels = [("decision", decision), ("policy", "-")];
        assert_eq!(one(&a, "trustmesh_authz_decisions_total", &labels), 0.0);
    }
    for limit in [
        "connections",
        "handshake_timeout",
        "header_timeout",
        "header_bytes",
        "body_timeout",
        "idle_timeout",
    ] {
        one(
            &a,
            "trustmesh_limits_exceeded_total",
            &[("limit", limit), ("direction", "inbound")],
        );
    }
    one(
        &a,
        "trustmesh_limits_exceeded_total",
        &[("limit", "header_bytes"), ("direction", "outbound")],
    );
    for result in ["ok", "unchanged", "error"] {
        one(
            &cp,
            "trustmesh_cp_policy_reload_total",
            &[("result", result)],
        );
    }
    assert_eq!(
        one(
            &cp,
            "trustmesh_cp_policy_reload_total",
            &[("result", "error")]
        ),
        0.0
    );
    for result in [
        "identity_blocked",
        "reserved_identity",
        "token_used",
        "bad_csr",
        "jwt_invalid",
    ] {
        assert_eq!(
            one(
                &cp,
                "trustmesh_cp_certificates_issued_total",
                &[("result", result)]
            ),
            0.0,
            "{result}"
        );
    }
}

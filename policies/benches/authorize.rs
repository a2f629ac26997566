//! One authorization decision with 100 policies applying to the workload: 10 DENY policies
//! that do not match, then 90 ALLOW policies of which only the last matches, so that the
//! evaluator walks every rule. Also: path normalization of a typical request path.
//!
//! `cargo bench -p trustmesh-policies --bench authorize`

// criterion's macros define undocumented public functions; unwraps fail the benchmark.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use trustmesh_certs::SpiffeId;
use trustmesh_policies::{
    normalize_path, AuthorizationPolicy, CompiledPolicies, MeshConfig, PolicySpec, Registry,
    Request, ServiceEntry,
};

fn spec(yaml: &str) -> PolicySpec {
    serde_yaml::from_str(yaml).unwrap()
}

fn policies() -> Vec<AuthorizationPolicy> {
    let mut out = Vec::new();
    for i in 0..10 {
        out.push(AuthorizationPolicy {
            name: format!("deny-{i:03}"),
            namespace: "production".into(),
            spec: spec(&format!(
                "action: DENY\nrules:\n- to:\n  - operation: {{methods: [DELETE], paths: [\"/admin{i}/*\"]}}\n- from:\n  - source: {{namespaces: [\"evil-{i}\"]}}\n"
            )),
        });
    }
    for i in 0..90 {
        // Only the last ALLOW policy names the caller.
        let caller = if i == 89 {
            "api-gateway".to_string()
        } else {
            format!("client-{i}")
        };
        out.push(AuthorizationPolicy {
            name: format!("allow-{i:03}"),
            namespace: "production".into(),
            spec: spec(&format!(
                "selector: {{matchLabels: {{app: order-service}}}}\nrules:\n- from:\n  - source: {{principals: [\"cluster.local/ns/production/sa/{caller}\", \"cluster.local/ns/staging/sa/{caller}\"]}}\n  to:\n  - operation: {{methods: [GET, POST], paths: [\"/api/v1/orders/*\", \"/api/v1/items/{{*}}\"]}}\n  when:\n  - {{key: \"request.headers[x-tenant]\", notValues: [blocked]}}\n"
            )),
        });
    }
    out
}

fn bench(c: &mut Criterion) {
    let workload = ServiceEntry {
        name: "order-service".into(),
        namespace: "production".into(),
        labels: [("app".to_string(), "order-service".to_string())].into(),
        identity: SpiffeId::parse("spiffe://cluster.local/ns/production/sa/order-service").unwrap(),
        endpoints: vec!["10.0.0.12:15006".into()],
        ports: vec![],
        endpoint_identities: Default::default(),
    };
    let registry = Registry::new(vec![workload.clone()]);
    let compiled =
        CompiledPolicies::compile(&MeshConfig::default(), &registry, &policies()).unwrap();
    let per_workload = compiled.policies_for(&workload);
    assert_eq!(per_workload.policy_names().count(), 100);

    let source = SpiffeId::parse("spiffe://cluster.local/ns/production/sa/api-gateway").unwrap();
    let path = normalize_path("/api/v1/orders/123?expand=items").unwrap();
    let headers = [("x-tenant", "acme")];
    let request = Request {
        source: Some(&source),
        source_ip: None,
        method: Some("GET"),
        path: Some(&path),
        host: Some("order-service.production:80"),
        port: 80,
        headers: &headers,
        sni: None,
        is_tcp: false,
    };
    let d = per_workload.authorize(&request);
    assert!(d.allowed);
    assert_eq!(d.policy.as_deref(), Some("production/allow-089"));

    c.bench_function("authorize/100_policies/workload_policies", |b| {
        b.iter(|| black_box(per_workload.authorize(black_box(&request))))
    });
    c.bench_function("authorize/100_policies/compiled_policies", |b| {
        b.iter(|| black_box(compiled.authorize(black_box(&workload), black_box(&request))))
    });
    c.bench_function("normalize_path", |b| {
        b.iter(|| {
            black_box(normalize_path(black_box(
                "/api/v1/./orders//123/../124?expand=items",
            )))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);

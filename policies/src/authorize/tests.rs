//! The evaluator, as a table: each case is a policy folder (the services below, plus its own
//! `mesh.yaml` and policies) and the decisions expected for a list of requests.

use std::net::IpAddr;

use super::*;
use crate::load::load_dir;
use crate::normalize::normalize_path;
use crate::request::NoHeaders;

const SERVICES: &str = "\
apiVersion: trustmesh.io/v1
kind: Service
metadata: {name: order-service, namespace: production, labels: {app: order-service}}
spec:
  identity: spiffe://cluster.local/ns/production/sa/order-service
  endpoints: [\"127.0.0.1:15106\"]
  ports: [{port: 80, protocol: http}, {port: 9000, protocol: tcp}]
---
apiVersion: trustmesh.io/v1
kind: Service
metadata: {name: api-gateway, namespace: production, labels: {app: api-gateway}}
spec:
  identity: spiffe://cluster.local/ns/production/sa/api-gateway
  endpoints: [\"127.0.0.1:15206\"]
";

const GATEWAY: &str = "ns/production/sa/api-gateway";
const CHECKOUT: &str = "ns/production/sa/checkout-service";
const OUTSIDER: &str = "ns/evil/sa/mallory";

/// A request in the table: HTTP unless `tcp`.
#[derive(Clone, Copy)]
struct Req {
    source: Option<&'static str>,
    method: &'static str,
    path: &'static str,
    host: Option<&'static str>,
    port: u16,
    headers: &'static [(&'static str, &'static str)],
    ip: Option<&'static str>,
    tcp: bool,
}

const fn get(source: &'static str, path: &'static str) -> Req {
    Req {
        source: Some(source),
        method: "GET",
        path,
        host: None,
        port: 80,
        headers: &[],
        ip: None,
        tcp: false,
    }
}

const fn with_method(r: Req, method: &'static str) -> Req {
    Req { method, ..r }
}

const fn anonymous(r: Req) -> Req {
    Req { source: None, ..r }
}

const fn tcp(source: &'static str, port: u16) -> Req {
    Req {
        source: Some(source),
        method: "",
        path: "/",
        host: None,
        port,
        headers: &[],
        ip: None,
        tcp: true,
    }
}

/// `(label, deciding policy name, rule)`; label is allow / deny / would_deny.
type Want = (&'static str, Option<&'static str>, Option<usize>);

struct Case {
    name: &'static str,
    mesh: &'static str,
    policies: &'static str,
    requests: Vec<(Req, Want)>,
}

fn policy(name: &str, ns: &str, body: &str) -> String {
    format!("---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{body}")
}

/// A policy in `production` with an `istio.io/dry-run` annotation of `value` (YAML as written).
fn annotated(name: &str, value: &str, body: &str) -> String {
    format!("---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: {name}\n  namespace: production\n  annotations: {{istio.io/dry-run: {value}}}\nspec:\n{body}")
}

fn compiled(mesh: &str, policies: &str) -> CompiledPolicies {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("services.yaml"), SERVICES).unwrap();
    std::fs::write(dir.path().join("policies.yaml"), policies).unwrap();
    if !mesh.is_empty() {
        std::fs::write(dir.path().join("mesh.yaml"), mesh).unwrap();
    }
    let set = load_dir(dir.path()).unwrap_or_else(|e| panic!("{e:#?}"));
    CompiledPolicies::from_set(&set).unwrap()
}

fn run(policies: &CompiledPolicies, r: &Req) -> Decision {
    let workload = policies
        .registry()
        .entries()
        .iter()
        .find(|e| e.name == "order-service")
        .unwrap()
        .clone();
    let source = r
        .source
        .map(|s| SpiffeId::parse(&format!("spiffe://cluster.local/{s}")).unwrap());
    let path = normalize_path(r.path).unwrap();
    let ip: Option<IpAddr> = r.ip.map(|ip| ip.parse().unwrap());
    let request = if r.tcp {
        Request::tcp(source.as_ref(), ip, r.port)
    } else {
        Request {
            source: source.as_ref(),
            source_ip: ip,
            method: Some(r.method),
            path: Some(&path),
            host: r.host,
            port: r.port,
            headers: &r.headers,
            sni: None,
            is_tcp: false,
        }
    };
    let via_set = policies.authorize(&workload, &request);
    let via_workload = policies.policies_for(&workload).authorize(&request);
    assert_eq!(via_set, via_workload);
    via_set
}

fn cases() -> Vec<(Case, String)> {
    let p = policy;
    vec![
        (
            Case {
                name: "allow-nothing: spec {} ALLOW allows nothing",
                mesh: "default_action: allow\n",
                policies: "",
                requests: vec![(get(GATEWAY, "/orders/1"), ("deny", None, None))],
            },
            p("allow-nothing", "production", "  {}\n"),
        ),
        (
            Case {
                name: "no ALLOW policy falls to default_action deny",
                mesh: "",
                policies: "",
                requests: vec![(get(GATEWAY, "/"), ("deny", None, None))],
            },
            String::new(),
        ),
        (
            Case {
                name: "no ALLOW policy falls to default_action allow",
                mesh: "default_action: allow\n",
                policies: "",
                requests: vec![(get(GATEWAY, "/"), ("allow", None, None))],
            },
            String::new(),
        ),
        (
            Case {
                name: "ALLOW by method",
                mesh: "",
                policies: "",
                requests: vec![
                    (get(GATEWAY, "/orders"), ("allow", Some("production/read"), Some(0))),
                    (with_method(get(GATEWAY, "/orders"), "POST"), ("deny", None, None)),
                ],
            },
            p("read", "production", "  selector: {matchLabels: {app: order-service}}\n  rules:\n  - to:\n    - operation: {methods: [GET]}\n"),
        ),
        (
            Case {
                name: "DENY by method",
                mesh: "default_action: allow\n",
                policies: "",
                requests: vec![
                    (with_method(get(GATEWAY, "/orders/1"), "DELETE"), ("deny", Some("production/no-delete"), Some(0))),
                    (get(GATEWAY, "/orders/1"), ("allow", None, None)),
                ],
            },
            p("no-delete", "production", "  action: DENY\n  rules:\n  - to:\n    - operation: {methods: [DELETE]}\n"),
        ),
        (
            Case {
                name: "DENY unless a header value (notValues)",
                mesh: "default_action: allow\n",
                policies: "",
                requests: vec![
                    (get(GATEWAY, "/"), ("deny", Some("production/need-token"), Some(0))),
                    (Req { headers: &[("X-Token", "wrong")], ..get(GATEWAY, "/") }, ("deny", Some("production/need-token"), Some(0))),
                    (Req { headers: &[("X-Token", "let-me-in")], ..get(GATEWAY, "/") }, ("allow", None, None)),
                    // A second header line cannot slip past a DENY: any value that is not the
                    // token denies, whichever the app reads.
                    (Req { headers: &[("X-Token", "let-me-in"), ("x-token", "wrong")], ..get(GATEWAY, "/") }, ("deny", Some("production/need-token"), Some(0))),
                    (Req { headers: &[("x-token", "wrong"), ("X-Token", "let-me-in")], ..get(GATEWAY, "/") }, ("deny", Some("production/need-token"), Some(0))),
                ],
            },
            p("need-token", "production", "  action: DENY\n  rules:\n  - when:\n    - key: request.headers[x-token]\n      notValues: [let-me-in]\n"),
        ),
        (
            Case {
                name: "headers with several values: DENY on any, ALLOW on all",
                mesh: "",
                policies: "",
                requests: vec![
                    (Req { headers: &[("x-tenant", "acme")], ..get(GATEWAY, "/") }, ("allow", Some("production/tenant"), Some(0))),
                    (Req { headers: &[("x-tenant", "acme"), ("x-tenant", "acme")], ..get(GATEWAY, "/") }, ("allow", Some("production/tenant"), Some(0))),
                    (Req { headers: &[("x-tenant", "acme"), ("x-tenant", "evil")], ..get(GATEWAY, "/") }, ("deny", None, None)),
                    (Req { headers: &[("x-tenant", "evil"), ("x-tenant", "acme")], ..get(GATEWAY, "/") }, ("deny", None, None)),
                    (Req { headers: &[("x-tenant", "acme"), ("x-debug", "0"), ("x-debug", "1")], ..get(GATEWAY, "/") }, ("deny", Some("production/no-debug"), Some(0))),
                    (Req { headers: &[("x-tenant", "acme"), ("x-debug", "1"), ("x-debug", "0")], ..get(GATEWAY, "/") }, ("deny", Some("production/no-debug"), Some(0))),
                    (Req { headers: &[("x-tenant", "acme"), ("x-debug", "0")], ..get(GATEWAY, "/") }, ("allow", Some("production/tenant"), Some(0))),
                ],
            },
            format!(
                "{}{}",
                policy("tenant", "production", "  action: ALLOW\n  rules:\n  - when:\n    - key: request.headers[x-tenant]\n      values: [acme]\n"),
                policy("no-debug", "production", "  action: DENY\n  rules:\n  - when:\n    - key: request.headers[x-debug]\n      values: [\"1\"]\n"),
            ),
        ),
        (
            Case {
                name: "DENY before ALLOW",
                mesh: "",
                policies: "",
                requests: vec![
                    (get(GATEWAY, "/admin/users"), ("deny", Some("production/b-no-admin"), Some(0))),
                    (get(GATEWAY, "/orders"), ("allow", Some("production/a-gateway"), Some(0))),
                    (get(CHECKOUT, "/orders"), ("deny", None, None)),
                ],
            },
            format!(
                "{}{}",
                p("a-gateway", "production", "  rules:\n  - from:\n    - source: {principals: [\"cluster.local/ns/production/sa/api-gateway\"]}\n"),
                p("b-no-admin", "production", "  action: DENY\n  rules:\n  - to:\n    - operation: {paths: [\"/admin/*\"]}\n"),
            ),
        ),
        (
            Case {
                name: "path precedence: /allow/admin denied while /allow* allowed, with and without a query",
                mesh: "",
                policies: "",
                requests: vec![
                    (get(GATEWAY, "/allow/admin"), ("deny", Some("production/deny-admin"), Some(0))),
                    (get(GATEWAY, "/allow/admin?x=1"), ("deny", Some("production/deny-admin"), Some(0))),
                    (get(GATEWAY, "/allow/admin?"), ("deny", Some("production/deny-admin"), Some(0))),
                    (get(GATEWAY, "/allow/other?x=/allow/admin"), ("allow", Some("production/allow-prefix"), Some(0))),
                    (get(GATEWAY, "/allowed"), ("allow", Some("production/allow-prefix"), Some(0))),
                    (get(GATEWAY, "/other"), ("deny", None, None)),
                    // Normalization: what reaches the matcher is the path the app will serve.
                    (get(GATEWAY, "/allow/x/../admin"), ("deny", Some("production/deny-admin"), Some(0))),
                    (get(GATEWAY, "/allow/./admin"), ("deny", Some("production/deny-admin"), Some(0))),
                    (get(GATEWAY, "/allow//admin"), ("deny", Some("production/deny-admin"), Some(0))),
                    (get(GATEWAY, "/allow/x/%2E%2E/admin"), ("deny", Some("production/deny-admin"), Some(0))),
                    (get(GATEWAY, "/allow/%61dmin"), ("deny", Some("production/deny-admin"), Some(0))),
                    (get(GATEWAY, "/allow/%2e%2e/other"), ("deny", None, None)),
                ],
            },
            format!(
                "{}{}",
                p("allow-prefix", "production", "  rules:\n  - to:\n    - operation: {paths: [\"/allow*\"]}\n"),
                p("deny-admin", "production", "  action: DENY\n  rules:\n  - to:\n    - operation: {paths: [\"/allow/admin\"]}\n"),
            ),
        ),
        (
            Case {
                name: "templates {*} and {**}",
                mesh: "",
                policies: "",
                requests: vec![
                    (get(GATEWAY, "/users/7/orders"), ("allow", Some("production/templates"), Some(0))),
                    (get(GATEWAY, "/users/7/8/orders"), ("deny", None, None)),
                    (get(GATEWAY, "/users//orders"), ("deny", None, None)),
                    (get(GATEWAY, "/files/a/b/c.txt"), ("allow", Some("production/templates"), Some(1))),
                    (get(GATEWAY, "/files"), ("deny", None, None)),
                ],
            },
            p("templates", "production", "  rules:\n  - to:\n    - operation: {paths: [\"/users/{*}/orders\"]}\n  - to:\n    - operation: {paths: [\"/files/{**}\"]}\n"),
        ),
        (
            Case {
                name: "TCP ports, and an ALLOW rule with an HTTP field never matches TCP",
                mesh: "",
                policies: "",
                requests: vec![
                    (tcp(GATEWAY, 9000), ("allow", Some("production/tcp"), Some(0))),
                    (tcp(GATEWAY, 9001), ("deny", None, None)),
                    (tcp(GATEWAY, 80), ("deny", None, None)),
                    (get(GATEWAY, "/x"), ("allow", Some("production/tcp"), Some(1))),
                ],
            },
            p("tcp", "production", "  rules:\n  - to:\n    - operation: {ports: [9000]}\n  - to:\n    - operation: {ports: [\"80\"], methods: [GET]}\n"),
        ),
        (
            Case {
                name: "a DENY rule with an HTTP field denies a TCP connection",
                mesh: "default_action: allow\n",
                policies: "",
                requests: vec![
                    (tcp(GATEWAY, 9000), ("deny", Some("production/no-admin"), Some(0))),
                    (get(GATEWAY, "/orders"), ("allow", None, None)),
                    (get(GATEWAY, "/admin/x"), ("deny", Some("production/no-admin"), Some(0))),
                ],
            },
            p("no-admin", "production", "  action: DENY\n  rules:\n  - to:\n    - operation: {paths: [\"/admin/*\"]}\n"),
        ),
        (
            Case {
                name: "notNamespaces with no peer identity: ALLOW does not match, DENY does",
                mesh: "",
                policies: "",
                requests: vec![
                    (get(GATEWAY, "/"), ("allow", Some("production/not-evil"), Some(0))),
                    (get(OUTSIDER, "/"), ("deny", None, None)),
                    (anonymous(get(GATEWAY, "/")), ("deny", None, None)),
                    (anonymous(get(GATEWAY, "/deny-outsiders")), ("deny", Some("production/outsiders"), Some(0))),
                ],
            },
            format!(
                "{}{}",
                p("not-evil", "production", "  rules:\n  - from:\n    - source: {notNamespaces: [evil]}\n"),
                p("outsiders", "production", "  action: DENY\n  rules:\n  - from:\n    - source: {notPrincipals: [\"cluster.local/ns/production/*\"]}\n    to:\n    - operation: {paths: [/deny-outsiders]}\n"),
            ),
        ),
        (
            Case {
                name: "hosts match case-insensitively with the port stripped",
                mesh: "",
                policies: "",
                requests: vec![
                    (Req { host: Some("API.Example.com:443"), ..get(GATEWAY, "/") }, ("allow", Some("production/hosts"), Some(0))),
                    (Req { host: Some("api.example.com"), ..get(GATEWAY, "/") }, ("allow", Some("production/hosts"), Some(0))),
                    (Req { host: Some("example.com:443"), ..get(GATEWAY, "/") }, ("deny", None, None)),
                    (get(GATEWAY, "/"), ("deny", None, None)),
                ],
            },
            p("hosts", "production", "  rules:\n  - to:\n    - operation: {hosts: [\"*.example.com\"]}\n"),
        ),
        (
            Case {
                name: "AUDIT changes no decision",
                mesh: "",
                policies: "",
                requests: vec![(get(GATEWAY, "/"), ("deny", None, None))],
            },
            p("audit", "production", "  action: AUDIT\n  rules:\n  - {}\n"),
        ),
        (
            Case {
                name: "dry run: a mode audit DENY lets the request pass as would_deny",
                mesh: "",
                policies: "",
                requests: vec![
                    (get(GATEWAY, "/orders/1"), ("would_deny", Some("production/b-dry"), Some(0))),
                    (get(GATEWAY, "/other"), ("allow", Some("production/a-all"), Some(0))),
                ],
            },
            format!(
                "{}{}",
                p("a-all", "production", "  rules:\n  - {}\n"),
                p("b-dry", "production", "  action: DENY\n  mode: audit\n  rules:\n  - to:\n    - operation: {paths: [\"/orders/*\"]}\n"),
            ),
        ),
        (
            Case {
                name: "dry run: a mode audit ALLOW that would deny others",
                mesh: "default_action: allow\n",
                policies: "",
                requests: vec![
                    // The dry-run ALLOW decides nothing: the workload has no enforced ALLOW
                    // policy, so the mesh default decides, and enforcing it would deny others.
                    (get(GATEWAY, "/"), ("allow", None, None)),
                    (get(CHECKOUT, "/"), ("would_deny", None, None)),
                ],
            },
            p("only-gateway", "production", "  mode: audit\n  rules:\n  - from:\n    - source: {principals: [\"*/sa/api-gateway\"]}\n"),
        ),
        (
            Case {
                name: "dry run: a mode audit ALLOW never allows under default_action deny",
                mesh: "",
                policies: "",
                requests: vec![
                    (get(GATEWAY, "/"), ("deny", None, None)),
                    (get(CHECKOUT, "/"), ("deny", None, None)),
                ],
            },
            p("only-gateway", "production", "  mode: audit\n  rules:\n  - from:\n    - source: {principals: [\"*/sa/api-gateway\"]}\n"),
        ),
        (
            Case {
                name: "dry run: a mode audit ALLOW beside an enforced one adds nothing",
                mesh: "",
                policies: "",
                requests: vec![
                    (get(GATEWAY, "/"), ("deny", None, None)),
                    (get(CHECKOUT, "/"), ("allow", Some("production/b-checkout"), Some(0))),
                ],
            },
            format!(
                "{}{}",
                p("a-dry-gateway", "production", "  mode: audit\n  rules:\n  - from:\n    - source: {principals: [\"*/sa/api-gateway\"]}\n"),
                p("b-checkout", "production", "  rules:\n  - from:\n    - source: {principals: [\"*/sa/checkout-service\"]}\n"),
            ),
        ),
        (
            Case {
                name: "istio.io/dry-run: \"true\" is mode audit, \"false\" is enforced",
                mesh: "",
                policies: "",
                requests: vec![
                    // The dry-run ALLOW of the gateway does not let it in ...
                    (get(GATEWAY, "/"), ("deny", None, None)),
                    // ... the enforced ALLOW (annotation "false") lets checkout in, and the
                    // dry-run DENY of /admin only reports.
                    (get(CHECKOUT, "/"), ("allow", Some("production/checkout"), Some(0))),
                    (get(CHECKOUT, "/admin"), ("would_deny", Some("production/no-admin"), Some(0))),
                ],
            },
            format!(
                "{}{}{}",
                annotated("gateway", "\"true\"", "  rules:\n  - from:\n    - source: {principals: [\"*/sa/api-gateway\"]}\n"),
                annotated("checkout", "\"false\"", "  rules:\n  - from:\n    - source: {principals: [\"*/sa/checkout-service\"]}\n"),
                annotated("no-admin", "\"True\"", "  action: DENY\n  rules:\n  - to:\n    - operation: {paths: [\"/admin\"]}\n"),
            ),
        ),
        (
            Case {
                name: "request.headers[host] is the request's authority, any case, port ignored",
                mesh: "default_action: allow\n",
                policies: "",
                requests: vec![
                    (Req { host: Some("ADMIN.example.com:8443"), ..get(GATEWAY, "/") }, ("deny", Some("production/no-admin-host"), Some(0))),
                    (Req { host: Some("admin.example.com"), ..get(GATEWAY, "/") }, ("deny", Some("production/no-admin-host"), Some(0))),
                    (Req { host: Some("api.example.com"), ..get(GATEWAY, "/") }, ("allow", None, None)),
                    (get(GATEWAY, "/"), ("allow", None, None)),
                ],
            },
            p("no-admin-host", "production", "  action: DENY\n  rules:\n  - when:\n    - {key: \"request.headers[Host]\", values: [\"admin.example.com\"]}\n"),
        ),
        (
            Case {
                name: "mesh-wide enforcement audit",
                mesh: "enforcement: audit\n",
                policies: "",
                requests: vec![(get(GATEWAY, "/"), ("would_deny", None, None))],
            },
            String::new(),
        ),
        (
            Case {
                name: "root-namespace policies apply mesh-wide; other namespaces' do not",
                mesh: "default_action: allow\n",
                policies: "",
                requests: vec![
                    (get(GATEWAY, "/debug/pprof"), ("deny", Some("trustmesh-system/no-debug"), Some(0))),
                    (get(GATEWAY, "/staging-only"), ("allow", None, None)),
                ],
            },
            format!(
                "{}{}",
                p("no-debug", "trustmesh-system", "  action: DENY\n  rules:\n  - to:\n    - operation: {paths: [\"/debug/*\"]}\n"),
                p("other-ns", "staging", "  action: DENY\n  rules:\n  - {}\n"),
            ),
        ),
        (
            Case {
                name: "ipBlocks and when conditions",
                mesh: "",
                policies: "",
                requests: vec![
                    (Req { ip: Some("10.1.2.3"), ..get(GATEWAY, "/") }, ("allow", Some("production/net"), Some(0))),
                    (Req { ip: Some("10.9.9.9"), ..get(GATEWAY, "/") }, ("deny", None, None)),
                    (get(GATEWAY, "/"), ("deny", None, None)),
                    (Req { ip: Some("10.1.2.3"), port: 8080, ..get(GATEWAY, "/") }, ("deny", None, None)),
                    (Req { ip: Some("10.1.2.3"), ..get(OUTSIDER, "/") }, ("deny", None, None)),
                ],
            },
            p("net", "production", "  rules:\n  - from:\n    - source: {ipBlocks: [10.0.0.0/8], notIpBlocks: [10.9.0.0/16]}\n    when:\n    - {key: destination.port, values: [80]}\n    - {key: source.namespace, values: [production]}\n"),
        ),
    ]
}

#[test]
fn authorization_table() {
    for (case, policies) in cases() {
        let policies = if case.policies.is_empty() {
            policies
        } else {
            case.policies.to_string()
        };
        let compiled = compiled(case.mesh, &policies);
        for (i, (req, (label, policy, rule))) in case.requests.iter().enumerate() {
            let d = run(&compiled, req);
            assert_eq!(
                (d.label(), d.policy.as_deref(), d.rule),
                (*label, *policy, *rule),
                "case {:?}, request #{i} ({} {}): {d:?}",
                case.name,
                req.method,
                req.path,
            );
            // The route is the deciding rule, named by its policy and index.
            let route = policy.zip(*rule).map(|(p, r)| format!("{p}#{r}"));
            assert_eq!(d.route.as_deref(), route.as_deref(), "{d:?}");
        }
    }
}

#[test]
fn audit_policies_are_named_for_the_log() {
    let c = compiled(
        "",
        &policy("watch", "production", "  action: AUDIT\n  rules:\n  - {}\n"),
    );
    let d = run(&c, &get(GATEWAY, "/"));
    assert_eq!(d.audit.as_deref(), Some("production/watch"));
    assert_eq!(d.reason, Reason::DefaultDeny);
    assert!(!d.allowed);
}

#[test]
fn workload_outside_the_registry_is_evaluated_on_its_own_labels() {
    let c = compiled(
        "default_action: allow\n",
        &policy(
            "deny-canary",
            "production",
            "  action: DENY\n  selector: {matchLabels: {track: canary}}\n  rules:\n  - {}\n",
        ),
    );
    let mut canary = c.registry().entries()[1].clone();
    assert_eq!(canary.name, "order-service");
    canary.labels.insert("track".into(), "canary".into());
    let path = normalize_path("/").unwrap();
    let req = Request::http(None, "GET", &path, 80);
    assert!(!c.authorize(&canary, &req).allowed);
    let names: Vec<_> = c
        .policies_for(&canary)
        .policy_names()
        .map(String::from)
        .collect();
    assert_eq!(names, ["production/deny-canary"]);
    let stable = &c.registry().entries()[1];
    assert!(c.authorize(stable, &req).allowed);
    let _ = NoHeaders;
}

#[test]
fn a_dry_run_allow_is_reported_as_would_allow_and_still_denies() {
    let c = compiled(
        "",
        &policy(
            "dry",
            "production",
            "  mode: audit\n  rules:\n  - from:\n    - source: {principals: [\"*/sa/api-gateway\"]}\n",
        ),
    );
    let d = run(&c, &get(GATEWAY, "/"));
    assert!(!d.allowed, "{d:?}");
    assert!(d.would_allow && !d.would_deny, "{d:?}");
    assert_eq!(d.reason, Reason::DefaultDeny);
    let d = run(&c, &get(CHECKOUT, "/"));
    assert!(!d.allowed && !d.would_allow, "{d:?}");
    // Least privilege: a dry-run ALLOW does not make the gateway a caller of the service.
    let workload = c.registry().entries()[1].clone();
    assert_eq!(workload.name, "order-service");
    let gateway = SpiffeId::parse(&format!("spiffe://cluster.local/{GATEWAY}")).unwrap();
    assert!(!c.policies_for(&workload).may_be_called_by(&gateway));
}

#[test]
fn a_bad_dry_run_annotation_is_an_error_at_its_value() {
    for value in ["\"yes\"", "\"\"", "on"] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("services.yaml"), SERVICES).unwrap();
        std::fs::write(
            dir.path().join("policies.yaml"),
            annotated("p", value, "  rules:\n  - {}\n"),
        )
        .unwrap();
        let errors = load_dir(dir.path()).unwrap_err();
        let found: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(errors.len(), 1, "{found:?}");
        assert!(found[0].contains("policies.yaml:7:"), "{found:?}");
        assert!(found[0].contains("istio.io/dry-run"), "{found:?}");
    }
}

#[test]
fn cluster_local_principals_name_the_mesh_trust_domain() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("services.yaml"),
        SERVICES.replace("cluster.local", "example.org"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("mesh.yaml"),
        "trust_domain: example.org\ndefault_action: allow\n",
    )
    .unwrap();
    let policies = format!(
        "{}{}",
        policy("no-mallory", "production", "  action: DENY\n  rules:\n  - from:\n    - source: {principals: [\"cluster.local/ns/evil/sa/mallory\"]}\n"),
        policy("no-eve", "production", "  action: DENY\n  rules:\n  - when:\n    - {key: source.principal, values: [\"spiffe://cluster.local/ns/evil/sa/eve\"]}\n"),
    );
    std::fs::write(dir.path().join("policies.yaml"), policies).unwrap();
    let set = load_dir(dir.path()).unwrap_or_else(|e| panic!("{e:#?}"));
    let c = CompiledPolicies::from_set(&set).unwrap();
    let workload = c.registry().entries()[1].clone();
    let path = normalize_path("/").unwrap();
    let decide = |who: &str| {
        let id = SpiffeId::parse(&format!("spiffe://example.org/{who}")).unwrap();
        c.authorize(&workload, &Request::http(Some(&id), "GET", &path, 80))
    };
    let d = decide("ns/evil/sa/mallory");
    assert_eq!(
        (d.allowed, d.policy.as_deref()),
        (false, Some("production/no-mallory")),
        "{d:?}"
    );
    let d = decide("ns/evil/sa/eve");
    assert_eq!(
        (d.allowed, d.policy.as_deref()),
        (false, Some("production/no-eve")),
        "{d:?}"
    );
    assert!(decide(GATEWAY).allowed);
}

#[test]
fn conditions_on_trustmesh_headers_are_errors_at_their_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("services.yaml"), SERVICES).unwrap();
    let body = "  rules:\n  - when:\n    - key: request.headers[X-Trustmesh-Peer-Identity]\n      values: [\"spiffe://cluster.local/ns/production/sa/api-gateway\"]\n";
    std::fs::write(
        dir.path().join("policies.yaml"),
        policy("spoofable", "production", body),
    )
    .unwrap();
    let errors: Vec<String> = load_dir(dir.path())
        .unwrap_err()
        .iter()
        .map(|e| e.to_string())
        .collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("policies.yaml:8:12: key \"request.headers[X-Trustmesh-Peer-Identity]\": conditions on x-trustmesh-* headers are refused"), "{errors:?}");
}

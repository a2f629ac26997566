use std::fs;
use std::path::Path;

use super::*;
use crate::diagnostic::Severity;
use crate::mesh::{DefaultAction, Enforcement};

fn write(dir: &Path, files: &[(&str, &str)]) {
    for (rel, text) in files {
        let path = dir.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }
}

/// Loads `files` and returns the diagnostics as `rel:line:col: message` strings.
fn errors_of(files: &[(&str, &str)]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), files);
    let diags = load_dir(dir.path()).expect_err("folder should be invalid");
    diags
        .iter()
        .map(|d| {
            let rel = d
                .file
                .strip_prefix(dir.path())
                .unwrap()
                .display()
                .to_string();
            Diagnostic {
                file: rel.into(),
                ..d.clone()
            }
            .to_string()
        })
        .collect()
}

const SERVICE: &str = "\
apiVersion: trustmesh.io/v1
kind: Service
metadata:
  name: orders
  namespace: production
  labels: {app: orders}
spec:
  identity: spiffe://cluster.local/ns/production/sa/orders
  endpoints: [\"10.0.0.12:15006\"]
  ports: [{port: 80, protocol: http}]
";

fn example(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
}

#[test]
fn loads_the_production_example() {
    let set = load_dir(&example("production")).unwrap();
    assert_eq!(set.mesh.trust_domain.as_str(), "cluster.local");
    assert_eq!(set.mesh.default_action, DefaultAction::Deny);
    let names: Vec<_> = set
        .registry
        .entries()
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(names, ["api-gateway", "checkout-service", "order-service"]);
    let orders = set
        .registry
        .find_by_host("order-service.production:80", None)
        .unwrap();
    assert_eq!(orders.endpoints, ["127.0.0.1:15106"]);
    assert_eq!(set.policies.len(), 1);
    assert_eq!(set.policies[0].key(), "production/orders-api");
    assert!(set.warnings.is_empty(), "{:?}", set.warnings);
    assert_eq!(set.content_hash.len(), 64);
}

#[test]
fn an_empty_folder_is_a_valid_empty_set_with_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let set = load_dir(dir.path()).unwrap();
    assert_eq!(set.mesh, MeshConfig::default());
    assert_eq!(set.mesh.root_namespace, "trustmesh-system");
    assert_eq!(set.mesh.enforcement, Enforcement::Enforce);
    assert!(set.registry.is_empty() && set.policies.is_empty());
}

#[test]
fn reports_every_error_with_its_position() {
    // (files, expected diagnostics) — each case is one folder.
    let twice = format!("{SERVICE}---\n{SERVICE}");
    let foreign = SERVICE.replace("cluster.local/ns", "other.domain/ns");
    type Case<'a> = (Vec<(&'a str, &'a str)>, Vec<&'a str>);
    let cases: Vec<Case<'_>> = vec![
        (
            vec![("mesh.yaml", "trust_domain: cluster.local\nbogus: 1\n")],
            vec!["mesh.yaml:2:1: unknown field `bogus`, expected one of `trust_domain`, `default_action`, `root_namespace`, `enforcement`, `outbound_policy`, `path_parameters`"],
        ),
        (
            vec![("mesh.yaml", "trust_domain: Cluster.Local\n")],
            vec!["mesh.yaml:1:15: bad trust_domain: trust domain \"Cluster.Local\" has the character 'C'; only lowercase letters, digits, '.', '-' and '_' are allowed"],
        ),
        (
            vec![("mesh.yaml", "default_action: maybe\n")],
            vec!["mesh.yaml:1:17: default_action: unknown variant `maybe`, expected `deny` or `allow`"],
        ),
        (
            vec![("a.yaml", "apiVersion: trustmesh.io/v1\nkind: Service\nmetadata: {name: a}\nspec:\n  identity: spiffe://cluster.local/ns/default/sa/a\n  colour: red\n")],
            vec!["a.yaml:6:3: spec: unknown field `colour`, expected one of `identity`, `endpoints`, `ports`"],
        ),
        (
            // Per-endpoint identities come from Kubernetes discovery only, never from git.
            vec![("a.yaml", "apiVersion: trustmesh.io/v1\nkind: Service\nmetadata: {name: a}\nspec:\n  identity: spiffe://cluster.local/ns/default/sa/a\n  endpoint_identities: {\"10.0.0.1:15006\": spiffe://cluster.local/ns/default/sa/b}\n")],
            vec!["a.yaml:6:3: spec: unknown field `endpoint_identities`, expected one of `identity`, `endpoints`, `ports`"],
        ),
        (
            // Errors in two documents and two files are all reported.
            vec![
                ("a.yaml", "apiVersion: trustmesh.io/v1\nkind: Service\nmetadata: {name: a}\nspec:\n  identity: not-a-spiffe-id\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\n"),
                ("sub/b.yml", "apiVersion: trustmesh.io/v1\nkind: Service\nmetadata: {name: b}\nspec:\n  identity: spiffe://cluster.local/ns/default/sa/b\n  endpoints: [\"10.0.0.1\", \"10.0.0.2:99999\"]\n"),
            ],
            vec![
                "a.yaml:5:13: bad identity \"not-a-spiffe-id\": SPIFFE ID must start with \"spiffe://\"",
                "a.yaml:8:7: unknown kind `ConfigMap`; expected Service, AuthorizationPolicy or HTTPRoute",
                "sub/b.yml:6:15: endpoint \"10.0.0.1\" has no port; write host:port",
                "sub/b.yml:6:27: endpoint \"10.0.0.2:99999\" has a bad port; a port is a number from 1 to 65535",
            ],
        ),
        (
            vec![("a.yaml", &twice)],
            vec![
                "a.yaml:15:9: duplicate Service production/orders (first defined at A:4:9)",
                "a.yaml:19:13: identity spiffe://cluster.local/ns/production/sa/orders is already the identity of Service production/orders; one Service per identity",
                "a.yaml:20:15: endpoint 10.0.0.12:15006 is already an endpoint of Service production/orders",
            ],
        ),
        (
            vec![("a.yaml", "kind: Service\nmetadata: {name: a}\nspec: [\n")],
            vec!["a.yaml:4:1: did not find expected node content, while parsing a flow node"],
        ),
        (
            vec![("a.yaml", "apiVersion: trustmesh.io/v1\nmetadata: {name: a}\n")],
            vec!["a.yaml:1:1: missing field `kind`"],
        ),
        (
            vec![("a.yaml", "apiVersion: trustmesh.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p}\nspec:\n  action: CUSTOM\n  provider: {name: ext}\n")],
            vec![
                "a.yaml:5:11: spec.action: unsupported action CUSTOM: external authorizers are not supported; use ALLOW, DENY or AUDIT",
                "a.yaml:6:3: spec: unsupported field `provider`: CUSTOM authorization providers are not supported",
            ],
        ),
        (
            vec![("a.yaml", "apiVersion: trustmesh.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p}\nspec:\n  rules:\n  - from:\n    - source:\n        requestPrincipals: [\"*\"]\n")],
            vec!["a.yaml:8:9: spec.rules[0].from[0].source: unsupported field `requestPrincipals`: JWT request principals are not supported (trustmesh does no request authentication)"],
        ),
        (
            vec![("a.yaml", "apiVersion: security.istio.io/v2\nkind: AuthorizationPolicy\nmetadata: {name: Bad_Name, namespace: prod}\n")],
            vec![
                "a.yaml:1:13: unsupported apiVersion `security.istio.io/v2` for AuthorizationPolicy; expected one of trustmesh.io/v1, security.istio.io/v1, security.istio.io/v1beta1",
                "a.yaml:3:18: bad name \"Bad_Name\": lowercase letters, digits, '-' and '.', starting and ending with a letter or digit, at most 253 characters",
            ],
        ),
        (
            // Every unknown key of a document, in two documents, each at its own position;
            // a document whose only shape errors are unknown keys is still checked further.
            vec![("a.yaml", "apiVersion: trustmesh.io/v1\nkind: Service\nmetadata: {name: a, lables: {}}\nspec:\n  identity: not-an-id\n  port: []\n---\napiVersion: trustmesh.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p}\nspec:\n  action: ALOW\n  rules:\n  - from: [{source: {principal: [a]}}]\n")],
            vec![
                "a.yaml:3:21: metadata: unknown field `lables`, expected one of `name`, `namespace`, `labels`, `annotations`",
                "a.yaml:5:13: bad identity \"not-an-id\": SPIFFE ID must start with \"spiffe://\"",
                "a.yaml:6:3: spec: unknown field `port`, expected one of `identity`, `endpoints`, `ports`",
                "a.yaml:12:11: spec.action: unknown variant `ALOW`, expected one of `ALLOW`, `DENY`, `AUDIT`",
                "a.yaml:14:22: spec.rules[0].from[0].source: unknown field `principal`, expected one of `principals`, `notPrincipals`, `namespaces`, `notNamespaces`, `ipBlocks`, `notIpBlocks`",
            ],
        ),
        (
            // A protocol the proxy does not know is refused where it is written.
            vec![("a.yaml", "apiVersion: trustmesh.io/v1\nkind: Service\nmetadata: {name: a}\nspec:\n  identity: spiffe://cluster.local/ns/default/sa/a\n  ports:\n  - {port: 80, protocol: http}\n  - port: 81\n    protocol: foo\n")],
            vec!["a.yaml:9:15: spec.ports[1].protocol: unknown variant `foo`, expected one of `HTTP`, `http`, `HTTP2`, `http2`, `GRPC`, `grpc`, `TCP`, `tcp`"],
        ),
        (
            vec![("a.yaml", &foreign)],
            vec!["a.yaml:8:13: identity spiffe://other.domain/ns/production/sa/orders is not in the mesh's trust domain cluster.local (mesh.yaml trust_domain)"],
        ),
    ];
    for (files, want) in cases {
        let got = errors_of(&files);
        let got: Vec<_> = got.iter().map(|s| strip_dir_in_message(s)).collect();
        assert_eq!(got, want, "files: {files:?}");
    }
}

/// Duplicate messages quote the first definition's full path; shorten it to `A` for the table.
fn strip_dir_in_message(s: &str) -> String {
    match (s.find("(first defined at "), s.rfind(".yaml:")) {
        (Some(i), Some(j)) if j > i => format!("{}(first defined at A{}", &s[..i], &s[j + 5..]),
        _ => s.to_string(),
    }
}

#[test]
fn a_selector_that_selects_nothing_is_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let policy = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p, namespace: production}\nspec:\n  selector:\n    matchLabels: {app: nobody}\n";
    let root_policy = "---\napiVersion: security.istio.io/v1beta1\nkind: AuthorizationPolicy\nmetadata: {name: q, namespace: trustmesh-system}\nspec:\n  selector:\n    matchLabels: {app: orders}\n";
    write(
        dir.path(),
        &[
            ("svc.yaml", SERVICE),
            ("p.yaml", &format!("{policy}{root_policy}")),
        ],
    );
    let set = load_dir(dir.path()).unwrap();
    let warnings: Vec<_> = set.warnings.iter().map(|w| w.to_string()).collect();
    let p = dir.path().join("p.yaml").display().to_string();
    assert_eq!(
        warnings,
        [format!("{p}:6:5: warning: selector of AuthorizationPolicy production/p selects no Service in namespace production")]
    );
}

#[test]
fn diagnostics_print_as_file_line_col() {
    let e = Diagnostic::error("p/a.yaml", 3, 7, "bad");
    assert_eq!(e.to_string(), "p/a.yaml:3:7: bad");
    let w = Diagnostic::warning("p/a.yaml", 1, 1, "meh");
    assert_eq!(w.to_string(), "p/a.yaml:1:1: warning: meh");
    assert_eq!(w.severity, Severity::Warning);
}

#[test]
fn skips_hidden_entries_and_follows_a_top_level_symlink() {
    let root = tempfile::tempdir().unwrap();
    let real = root.path().join(".worktrees/abc");
    write(
        &real,
        &[
            ("svc.yml", SERVICE),
            (".git/config.yaml", "not: [valid"),
            ("README.md", "# hi"),
        ],
    );
    let link = root.path().join("current");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let set = load_dir(&link).unwrap();
    assert_eq!(set.registry.entries().len(), 1);
}

#[test]
fn content_hash_follows_paths_and_bytes() {
    let hash = |files: &[(&str, &str)]| {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), files);
        load_dir(dir.path()).unwrap().content_hash
    };
    let a = hash(&[("a.yaml", SERVICE)]);
    assert_eq!(a, hash(&[("a.yaml", SERVICE)]));
    assert_ne!(a, hash(&[("b.yaml", SERVICE)]));
    assert_ne!(a, hash(&[("a.yaml", &format!("{SERVICE}# comment\n"))]));
    // SHA-256 of nothing: no files, nothing hashed.
    assert_eq!(
        hash(&[]),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
}

#[test]
fn policy_set_round_trips_through_json() {
    let set = load_dir(&example("production")).unwrap();
    let json = serde_json::to_string(&set).unwrap();
    let back: PolicySet = serde_json::from_str(&json).unwrap();
    assert_eq!(back, set);
}

//! [`LoadCache`]: a new version of a folder re-parses only what changed, and loads exactly as
//! an uncached load would.

use std::fs;
use std::path::Path;

use super::*;

fn service(i: usize) -> String {
    format!(
        "apiVersion: trustmesh.io/v1\nkind: Service\nmetadata: {{name: s{i}, namespace: t, labels: {{app: s{i}}}}}\n\
         spec: {{identity: spiffe://cluster.local/ns/t/sa/s{i}, endpoints: [\"10.0.{}.{}:15006\"]}}\n",
        i / 256,
        i % 256
    )
}

fn policy(i: usize, path: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: p{i}, namespace: t}}\n\
         spec: {{selector: {{matchLabels: {{app: s{i}}}}}, action: DENY, rules: [{{to: [{{operation: {{paths: [\"{path}\"]}}}}]}}]}}\n"
    )
}

/// `mesh.yaml` and ten files of a service and its policy each.
fn folder(dir: &Path) {
    fs::write(dir.join("mesh.yaml"), "trust_domain: cluster.local\n").unwrap();
    for i in 0..10 {
        fs::write(
            dir.join(format!("f{i}.yaml")),
            format!("{}---\n{}", service(i), policy(i, "/a")),
        )
        .unwrap();
    }
}

fn load(dir: &Path, cache: &mut LoadCache) -> Result<PolicySet, Vec<Diagnostic>> {
    let cached = load_dir_cached(dir, cache);
    assert_eq!(cached, load_dir(dir), "cached and uncached loads differ");
    cached
}

#[test]
fn one_changed_file_of_many_is_the_only_one_parsed_again() {
    let dir = tempfile::tempdir().unwrap();
    folder(dir.path());
    let mut cache = LoadCache::default();
    let first = load(dir.path(), &mut cache).unwrap();
    assert_eq!(cache.files_parsed(), 11);
    assert_eq!(cache.len(), 11);

    // Nothing changed: nothing parsed.
    assert_eq!(load(dir.path(), &mut cache).unwrap(), first);
    assert_eq!(cache.files_parsed(), 11);

    // Same length, new content: parsed again (the key is the bytes, not size and time).
    fs::write(
        dir.path().join("f3.yaml"),
        format!("{}---\n{}", service(3), policy(3, "/b")),
    )
    .unwrap();
    let second = load(dir.path(), &mut cache).unwrap();
    assert_eq!(cache.files_parsed(), 12, "only f3.yaml is parsed again");
    let p3 = second.policies.iter().find(|p| p.name == "p3").unwrap();
    let paths = &p3.spec.rules[0].to[0].operation.paths;
    assert_eq!(paths, &["/b"]);
    assert_ne!(second.content_hash, first.content_hash);
}

#[test]
fn a_bad_edit_is_reported_at_its_place_and_the_fix_loads_again() {
    let dir = tempfile::tempdir().unwrap();
    folder(dir.path());
    let mut cache = LoadCache::default();
    let good = load(dir.path(), &mut cache).unwrap();

    // A cross-file error: f9 takes f2's identity. Only f9 is parsed; the check still sees both.
    fs::write(
        dir.path().join("f9.yaml"),
        service(2)
            .replace("name: s2", "name: s9")
            .replace("10.0.0.2", "10.0.0.9"),
    )
    .unwrap();
    let errors = load(dir.path(), &mut cache).unwrap_err();
    assert_eq!(cache.files_parsed(), 12);
    let f9 = dir.path().join("f9.yaml");
    let texts: Vec<String> = errors.iter().map(|d| d.to_string()).collect();
    assert!(
        texts
            .iter()
            .any(|t| t.starts_with(&format!("{}:4:18: identity", f9.display()))),
        "{texts:#?}"
    );

    // A syntax error in another file: reported at its line and column.
    fs::write(dir.path().join("f5.yaml"), "kind: Service\nmetadata: [\n").unwrap();
    let errors = load(dir.path(), &mut cache).unwrap_err();
    let f5 = dir.path().join("f5.yaml").display().to_string();
    assert!(
        errors.iter().any(|d| d.to_string().starts_with(&f5)),
        "{errors:#?}"
    );

    // Both put back as they were: the set is the first one again, taken from what was kept
    // for the other files.
    folder(dir.path());
    assert_eq!(load(dir.path(), &mut cache).unwrap(), good);
}

#[test]
fn a_removed_file_is_gone_from_the_set_and_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    folder(dir.path());
    let mut cache = LoadCache::default();
    load(dir.path(), &mut cache).unwrap();
    fs::remove_file(dir.path().join("f4.yaml")).unwrap();
    let set = load(dir.path(), &mut cache).unwrap();
    assert_eq!(cache.files_parsed(), 11, "removing a file parses nothing");
    assert_eq!(cache.len(), 10);
    assert!(set.registry.entries().iter().all(|e| e.name != "s4"));
    assert!(set.policies.iter().all(|p| p.name != "p4"));
    assert_eq!(set.registry.entries().len(), 9);
}

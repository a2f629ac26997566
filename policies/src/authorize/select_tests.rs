//! The registry entries' policies, picked through the label index, are exactly those that
//! trying every policy on every entry picks.

use super::*;
use crate::load::{load_dir, load_dir_compiled, LoadCache};

fn keys(wp: &WorkloadPolicies) -> [Vec<String>; 3] {
    let k = |v: &[Arc<CompiledPolicy>]| v.iter().map(|p| p.key.to_string()).collect();
    [k(&wp.inner.deny), k(&wp.inner.allow), k(&wp.inner.audit)]
}

#[test]
fn indexed_selection_is_the_selection_of_every_policy_tried_on_every_entry() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("mesh.yaml"),
        "trust_domain: cluster.local\nroot_namespace: mesh-root\n",
    )
    .unwrap();
    let mut docs = String::new();
    let labels = [
        "{app: a}",
        "{app: a, tier: web}",
        "{app: b}",
        "{tier: web}",
        "{}",
    ];
    for (i, ns) in ["one", "two", "mesh-root"].iter().enumerate() {
        for (j, l) in labels.iter().enumerate() {
            docs.push_str(&format!(
                "---\napiVersion: trustmesh.io/v1\nkind: Service\nmetadata: {{name: s{j}, namespace: {ns}, labels: {l}}}\n\
                 spec: {{identity: spiffe://cluster.local/ns/{ns}/sa/s{j}, endpoints: [\"10.0.{i}.{j}:15006\"]}}\n"
            ));
        }
    }
    let selectors = [
        "",
        "selector: {matchLabels: {}}, ",
        "selector: {matchLabels: {app: a}}, ",
        "selector: {matchLabels: {app: a, tier: web}}, ",
        "selector: {matchLabels: {tier: web}}, ",
        "selector: {matchLabels: {app: none}}, ",
    ];
    for ns in ["one", "two", "mesh-root"] {
        for (k, sel) in selectors.iter().enumerate() {
            for action in ["ALLOW", "DENY", "AUDIT"] {
                docs.push_str(&format!(
                    "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
                     metadata: {{name: p{k}-{}, namespace: {ns}}}\n\
                     spec: {{{sel}action: {action}, rules: [{{to: [{{operation: {{paths: [\"/x\"]}}}}]}}]}}\n",
                    action.to_lowercase()
                ));
            }
        }
    }
    std::fs::write(dir.path().join("all.yaml"), docs).unwrap();
    let set = load_dir(dir.path()).unwrap_or_else(|e| panic!("{e:#?}"));
    let (_, indexed) = load_dir_compiled(dir.path(), &mut LoadCache::default()).unwrap();
    let all = CompiledPolicies::from_set(&set).unwrap();
    assert_eq!(set.registry.entries().len(), 15);
    let mut picked = 0;
    for entry in set.registry.entries() {
        let want = select(&set.mesh, &all.inner.policies, entry);
        assert_eq!(
            keys(&indexed.policies_for(entry)),
            keys(&want),
            "{}",
            entry.name
        );
        assert_eq!(
            keys(&all.policies_for(entry)),
            keys(&want),
            "{}",
            entry.name
        );
        picked += want.inner.deny.len() + want.inner.allow.len() + want.inner.audit.len();
    }
    assert!(picked > 0);
}

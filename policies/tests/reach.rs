//! Which registry entries a proxy is sent: only those its identity could be allowed to call.

// Helpers outside #[test] functions fail the test by panicking, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use trustmesh_certs::SpiffeId;
use trustmesh_policies::{load_dir, CompiledPolicies};

fn id(sa: &str) -> SpiffeId {
    SpiffeId::parse(&format!("spiffe://cluster.local/ns/production/sa/{sa}")).unwrap()
}

#[test]
fn only_callers_an_allow_rule_could_match_may_call_a_workload() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/production");
    let set = load_dir(&dir).unwrap();
    let compiled = CompiledPolicies::from_set(&set).unwrap();
    let entry = |sa: &str| set.registry.find_by_identity(&id(sa)).unwrap().clone();
    let orders = compiled.policies_for(&entry("order-service"));
    assert!(orders.may_be_called_by(&id("api-gateway")));
    assert!(orders.may_be_called_by(&id("checkout-service")));
    assert!(!orders.may_be_called_by(&id("order-service")));
    let stranger = SpiffeId::parse("spiffe://cluster.local/ns/other/sa/x").unwrap();
    assert!(!orders.may_be_called_by(&stranger));
    // api-gateway has no ALLOW policy and the mesh default is deny: nobody may call it.
    let gateway = compiled.policies_for(&entry("api-gateway"));
    assert!(!gateway.may_be_called_by(&id("order-service")));
}

//! The snapshot JSON a proxy reads from `GET /v1/snapshot`, taken as the proxy's watch loop
//! takes it (`proxy/src/watch.rs`, `state.rs`): deserialize, read the trust bundle, compile
//! the policies, pick the workload's own, authorize. Properties: a snapshot that parses
//! serializes back to one that parses equal; a bad one is an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trustmesh_certs::TrustBundle;
use trustmesh_fuzz::{assert_same, callers};
use trustmesh_policies::snapshot::Snapshot;
use trustmesh_policies::{normalize_path, CompiledPolicies, Request};

fuzz_target!(|data: &[u8]| {
    let Ok(snapshot) = serde_json::from_slice::<Snapshot>(data) else {
        return;
    };
    match serde_json::to_vec(&snapshot) {
        Ok(json) => assert_eq!(
            serde_json::from_slice::<Snapshot>(&json).ok().as_ref(),
            Some(&snapshot),
            "a snapshot does not survive serde_json"
        ),
        Err(e) => panic!("a parsed snapshot does not serialize: {e}"),
    }
    let _ = snapshot.policy_version();
    let _ = TrustBundle::from_pem(&snapshot.trust_bundle);
    let Ok(compiled) =
        CompiledPolicies::compile(&snapshot.mesh, &snapshot.registry, &snapshot.policies)
    else {
        return;
    };
    let workload = snapshot.workload();
    let policies = compiled.policies_for(&workload);
    let Ok(path) = normalize_path("/orders/1?x=1") else {
        return;
    };
    let port = workload.ports.first().map_or(80, |p| p.port);
    let own = Some(snapshot.identity.clone());
    for caller in callers().iter().chain([&own]) {
        let http = Request::http(caller.as_ref(), "POST", &path, port);
        assert_same(&policies.authorize(&http), &policies.authorize(&http));
        let tcp = Request::tcp(caller.as_ref(), snapshot.withheld_ips.first(), port);
        assert_same(&policies.authorize(&tcp), &policies.authorize(&tcp));
    }
});

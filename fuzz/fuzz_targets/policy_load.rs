//! Policy folder loading: one fuzz input is a whole folder (`mesh.yaml`, then policy files,
//! split at NUL bytes; see `write_folder`), read by `load_dir` as the control plane reads a
//! git checkout, then compiled and put to work. An invalid folder must come back as
//! diagnostics, never a panic; a valid one must compile (the loader promises that only
//! compilable sets get out) and authorize.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trustmesh_fuzz::{authorize_http, scratch_dir, write_folder};
use trustmesh_policies::{load_dir, normalize_path, CompiledPolicies, Request};

fuzz_target!(|data: &[u8]| {
    let Ok(dir) = scratch_dir() else {
        return;
    };
    if write_folder(dir.path(), data).is_err() {
        return;
    }
    let set = match load_dir(dir.path()) {
        Ok(set) => set,
        Err(diagnostics) => {
            assert!(
                diagnostics.iter().any(|d| d.is_error()),
                "a refused folder must name at least one error"
            );
            return;
        }
    };
    let compiled = match CompiledPolicies::from_set(&set) {
        Ok(c) => c,
        Err(errors) => panic!("a folder that loaded does not compile: {errors:?}"),
    };
    for path in ["/", "/orders/1", "/debug/pprof"] {
        if let Ok(path) = normalize_path(path) {
            authorize_http(&compiled, &path);
        }
    }
    for workload in compiled.registry().entries() {
        let policies = compiled.policies_for(workload);
        for port in [80, 5432] {
            let _ = policies.authorize(&Request::tcp(Some(&workload.identity), None, port));
        }
    }
});

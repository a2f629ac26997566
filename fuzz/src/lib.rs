//! Helpers shared by the fuzz targets in `fuzz_targets/`: the example policy folders compiled
//! once, a scratch policy folder written from fuzz input, and the requests every target
//! authorizes. Nothing here is part of trustmesh itself.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use trustmesh_certs::SpiffeId;
use trustmesh_policies::{load_dir, CompiledPolicies, Decision, Request, RoutePath};

/// `policies/examples/`, found from this crate's own folder.
pub fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/examples")
}

/// The example policy folders (`production`, `deny`), loaded and compiled once per process.
/// A fuzz target that cannot load them has nothing to test against, so it stops loudly.
pub fn example_policies() -> &'static [CompiledPolicies] {
    static COMPILED: OnceLock<Vec<CompiledPolicies>> = OnceLock::new();
    COMPILED.get_or_init(|| {
        ["production", "deny"]
            .iter()
            .map(|name| {
                let set = match load_dir(&examples_dir().join(name)) {
                    Ok(set) => set,
                    Err(diags) => panic!("policies/examples/{name} does not load: {diags:?}"),
                };
                match CompiledPolicies::from_set(&set) {
                    Ok(c) => c,
                    Err(errors) => panic!("policies/examples/{name} does not compile: {errors:?}"),
                }
            })
            .collect()
    })
}

/// Callers the targets authorize as: an identity of the examples' registry, one of another
/// namespace, and no verified peer at all.
pub fn callers() -> &'static [Option<SpiffeId>] {
    static CALLERS: OnceLock<Vec<Option<SpiffeId>>> = OnceLock::new();
    CALLERS.get_or_init(|| {
        [
            "spiffe://cluster.local/ns/production/sa/api-gateway",
            "spiffe://cluster.local/ns/staging/sa/reporting",
        ]
        .iter()
        .map(|s| SpiffeId::parse(s).ok())
        .chain([None])
        .collect()
    })
}

/// Authorizes `GET`/`DELETE` of `path` on port 80 from every caller, for every workload of
/// `compiled`; the same request must always get the same decision.
pub fn authorize_http(compiled: &CompiledPolicies, path: &RoutePath) {
    for workload in compiled.registry().entries() {
        let policies = compiled.policies_for(workload);
        for caller in callers() {
            for method in ["GET", "DELETE"] {
                let request = Request::http(caller.as_ref(), method, path, 80);
                let first = policies.authorize(&request);
                assert_same(&first, &policies.authorize(&request));
            }
        }
    }
}

/// Asserts that two decisions for one request agree (the evaluator keeps no state).
pub fn assert_same(a: &Decision, b: &Decision) {
    assert_eq!(a, b, "the same request got two decisions");
}

/// A fresh scratch folder for one input's policy files, in memory (`/dev/shm`) where the
/// machine has it: on a disk, the file system calls cost more than the parsing under test.
pub fn scratch_dir() -> std::io::Result<tempfile::TempDir> {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::tempdir_in(shm) {
            return Ok(dir);
        }
    }
    tempfile::tempdir()
}

/// A policy folder written from one fuzz input: the parts split at NUL bytes (which YAML
/// text never holds) are `mesh.yaml`, then `policy-1.yaml`, `policy-2.yaml`, ... An empty
/// first part means no `mesh.yaml`.
pub fn write_folder(dir: &Path, data: &[u8]) -> std::io::Result<()> {
    for (i, part) in data.split(|b| *b == 0).enumerate() {
        let name = if i == 0 {
            if part.is_empty() {
                continue;
            }
            "mesh.yaml".to_string()
        } else {
            format!("policy-{i}.yaml")
        };
        std::fs::write(dir.join(name), part)?;
    }
    Ok(())
}

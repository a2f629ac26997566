//! The control plane's Kubernetes ServiceAccount token check, `control-plane/src/domain/k8s_jwt.rs`,
//! compiled in here unchanged through `#[path]` (it is a self-contained module of the binary
//! crate, so nothing is restructured to reach it). Each input is a bootstrap token as
//! `POST /v1/certificates` receives it, verified against a fixed JWKS (`fixtures/jwks.json`,
//! one ES256 public key; the seed tokens are signed by its private key, which is not kept).
//! The same bytes are also tried as a token subject (`service_account_id`), which a forged
//! token cannot reach. Property: whatever is accepted is a `/ns/NS/sa/SA` ID of the trust
//! domain whose parts hold no `/` or dot segment.
#![no_main]

#[allow(dead_code)]
#[rustfmt::skip]
#[path = "../../control-plane/src/domain/k8s_jwt.rs"]
mod k8s_jwt;

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use trustmesh_certs::{SpiffeId, TrustDomain};

/// The issuer the seed tokens name.
const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

struct Harness {
    rt: tokio::runtime::Runtime,
    verifier: k8s_jwt::K8sVerifier,
    td: TrustDomain,
    _dir: tempfile::TempDir,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let setup = || -> anyhow::Result<Harness> {
            let dir = tempfile::tempdir()?;
            let jwks = dir.path().join("jwks.json");
            std::fs::write(&jwks, include_str!("../fixtures/jwks.json"))?;
            let td = TrustDomain::parse("cluster.local")?;
            let args = k8s_jwt::K8sArgs {
                jwks: Some(jwks.display().to_string()),
                issuer: Some(ISSUER.to_string()),
                audience: "trustmesh".to_string(),
                jwks_ca: None,
                jwks_token_file: None,
            };
            let rt = tokio::runtime::Builder::new_current_thread().build()?;
            let verifier = rt
                .block_on(k8s_jwt::K8sVerifier::from_args(&args, &td))?
                .ok_or_else(|| anyhow::anyhow!("no verifier"))?;
            Ok(Harness {
                rt,
                verifier,
                td,
                _dir: dir,
            })
        };
        match setup() {
            Ok(h) => h,
            Err(e) => panic!("cannot set up the JWT verifier: {e:#}"),
        }
    })
}

fn check_accepted(td: &TrustDomain, id: &SpiffeId) {
    assert_eq!(id.trust_domain_str(), td.as_str());
    let (Some(ns), Some(sa)) = (id.namespace(), id.service_account()) else {
        panic!("{id} is not a service account ID");
    };
    assert_eq!(id.path(), format!("/ns/{ns}/sa/{sa}"));
    for part in [ns, sa] {
        assert!(!part.contains('/') && part != "." && part != "..", "{id}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let h = harness();
    if let Ok(id) = h.rt.block_on(h.verifier.verify(text)) {
        check_accepted(&h.td, &id);
    }
    if let Ok(id) = k8s_jwt::service_account_id(&h.td, text) {
        check_accepted(&h.td, &id);
        assert_eq!(
            text,
            format!(
                "system:serviceaccount:{}:{}",
                id.namespace().unwrap_or_default(),
                id.service_account().unwrap_or_default()
            )
        );
    }
});

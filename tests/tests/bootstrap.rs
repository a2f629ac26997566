//! Bootstrap tokens: single use (also across a restart and under concurrent use), bound to one
//! identity, unforgeable and short lived. Driven directly against `POST /v1/certificates`.

// Helpers outside #[test] functions fail the test by panicking, like the tests themselves.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::Method;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::CertificateDer;
use serde_json::{json, Value};
use trustmesh_e2e::client::Resp;
use trustmesh_e2e::control_plane::ControlPlane;
use trustmesh_e2e::mtls::spiffe;
use trustmesh_e2e::policies::{spiffe_id, write_policies};
use trustmesh_e2e::workdir::WorkDir;

async fn start_cp(test: &str) -> (ControlPlane, WorkDir) {
    let dir = WorkDir::new(test).expect("work dir");
    let policies = write_policies(&dir.path().join("policies"), &[]).expect("policies");
    let cp = ControlPlane::start(dir.path(), &policies)
        .await
        .expect("control plane starts");
    (cp, dir)
}

fn csr_body(identity: &str) -> Bytes {
    let csr = trustmesh_certs::generate_csr(&spiffe(identity).expect("id")).expect("CSR");
    Bytes::from(json!({ "csr": csr.csr_pem }).to_string())
}

async fn post_csr(cp: &ControlPlane, token: &str, identity: &str) -> Resp {
    cp.request(
        Method::POST,
        "/v1/certificates",
        Some(token),
        csr_body(identity),
    )
    .await
    .expect("the control plane answers")
}

/// A 401 (or other `status`) with a JSON `{"error": .., "message": ..}` body.
fn assert_json_error(resp: &Resp, ok: impl Fn(u16) -> bool, what: &str) {
    assert!(
        ok(resp.status.as_u16()),
        "{what}: got {} {}",
        resp.status,
        resp.text()
    );
    let v: Value = resp.json().unwrap_or_else(|e| panic!("{what}: {e:#}"));
    assert!(v["error"].is_string(), "{what}: no \"error\" in {v}");
    assert!(v["message"].is_string(), "{what}: no \"message\" in {v}");
}

fn assert_issued(resp: &Resp, identity: &str, bundle_pem: &str) {
    assert_eq!(resp.status, 200, "body: {}", resp.text());
    let v = resp.json().expect("JSON");
    let chain = v["certificate_chain"].as_str().expect("certificate_chain");
    let leaf = CertificateDer::pem_slice_iter(chain.as_bytes())
        .next()
        .expect("a certificate in the chain")
        .expect("PEM parses");
    let id = trustmesh_certs::identity_from_cert(&leaf).expect("the leaf has a SPIFFE ID");
    assert_eq!(
        id.as_str(),
        identity,
        "the certificate is for the token's identity"
    );
    let expires = v["expires_at"].as_str().expect("expires_at");
    let expires =
        time::OffsetDateTime::parse(expires, &time::format_description::well_known::Rfc3339)
            .expect("expires_at is RFC 3339");
    assert!(
        expires > time::OffsetDateTime::now_utc(),
        "already expired: {expires}"
    );
    assert_eq!(
        v["trust_bundle"].as_str().map(str::trim),
        Some(bundle_pem.trim()),
        "trust_bundle is the control plane's trust-bundle.pem"
    );
}

/// Changes one character in the middle of the token, keeping it in the same alphabet.
fn forge(token: &str) -> String {
    let mut chars: Vec<char> = token.chars().collect();
    let i = chars.len() / 2;
    chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
    let forged: String = chars.into_iter().collect();
    assert_ne!(forged, token);
    forged
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_token_works_once() {
    let (mut cp, _dir) = start_cp("token-once").await;
    let bundle = cp.trust_bundle_pem().expect("bundle");
    let id = spiffe_id("test", "svc");

    let token = cp.token(&id).await.expect("token");
    assert_issued(&post_csr(&cp, &token, &id).await, &id, &bundle);

    let again = post_csr(&cp, &token, &id).await;
    assert_json_error(&again, |s| s == 401, "the same token a second time");

    let fresh = cp.token(&id).await.expect("token");
    let forged = post_csr(&cp, &forge(&fresh), &id).await;
    assert_json_error(&forged, |s| s == 401, "a forged token");

    let other = cp.token(&id).await.expect("token");
    let wrong_id = post_csr(&cp, &other, &spiffe_id("test", "someone-else")).await;
    assert_json_error(
        &wrong_id,
        |s| s == 403 || s == 400,
        "a CSR for another identity than the token's",
    );

    // Used tokens are remembered across a restart on the same data folder; an unused token
    // from before the restart still works (the control case).
    let unused = cp.token(&id).await.expect("token");
    cp.restart().await.expect("the control plane restarts");
    let after = post_csr(&cp, &token, &id).await;
    assert_json_error(&after, |s| s == 401, "a used token after a restart");
    assert_issued(&post_csr(&cp, &unused, &id).await, &id, &bundle);
}

/// The leaf of a certificate response, DER.
fn leaf_of(resp: &Resp) -> CertificateDer<'static> {
    let v = resp.json().expect("JSON");
    let chain = v["certificate_chain"].as_str().expect("certificate_chain");
    CertificateDer::pem_slice_iter(chain.as_bytes())
        .next()
        .expect("a certificate")
        .expect("PEM parses")
}

/// Mass start: the proxy's request timed out after the control plane had signed and spent the
/// token, and it retries the same enrolment (same token, same CSR). The retry gets the same
/// answer; another key with that token is still refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_enrolment_gets_the_same_certificate_and_another_key_is_refused() {
    let (mut cp, _dir) = start_cp("token-retry").await;
    let bundle = cp.trust_bundle_pem().expect("bundle");
    let id = spiffe_id("test", "svc");
    let token = cp.token(&id).await.expect("token");
    let csr = csr_body(&id);
    let post = |body: Bytes| cp.request(Method::POST, "/v1/certificates", Some(&token), body);
    let first = post(csr.clone()).await.expect("answers");
    assert_issued(&first, &id, &bundle);
    let retry = post(csr.clone()).await.expect("answers");
    assert_issued(&retry, &id, &bundle);
    assert_eq!(
        first.json().unwrap()["certificate_chain"],
        retry.json().unwrap()["certificate_chain"],
        "the retry gets the certificate already issued"
    );
    let other_key = post(csr_body(&id)).await.expect("answers");
    assert_json_error(
        &other_key,
        |s| s == 401 || s == 403,
        "another key with a spent token",
    );

    // After a restart the same key is signed again (the chain itself was in memory); another
    // key is still refused.
    cp.restart().await.expect("the control plane restarts");
    let post = |body: Bytes| cp.request(Method::POST, "/v1/certificates", Some(&token), body);
    let again = post(csr.clone()).await.expect("answers");
    assert_issued(&again, &id, &bundle);
    assert_eq!(
        trustmesh_certs::cert_public_key(&leaf_of(&again)).unwrap(),
        trustmesh_certs::cert_public_key(&leaf_of(&first)).unwrap(),
        "a certificate for the key of the first enrolment"
    );
    let other_key = post(csr_body(&id)).await.expect("answers");
    assert_json_error(
        &other_key,
        |s| s == 401 || s == 403,
        "another key after a restart",
    );
}

/// No bootstrap token is made for the control plane's own identity or the admin identity:
/// whoever held one could pose as the control plane to proxies and replicas, or read
/// `/v1/proxies` and the blocklist. (The API refuses them too, whatever proves them:
/// `lifecycle_identity.rs` tries Kubernetes ServiceAccount tokens.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_identities_get_no_token() {
    let (cp, _dir) = start_cp("token-reserved").await;
    for id in [
        spiffe_id("trustmesh-system", "trustmesh-control-plane"),
        spiffe_id("trustmesh-system", "admin"),
    ] {
        let err = cp
            .token(&id)
            .await
            .expect_err("no token for a reserved identity");
        assert!(format!("{err:#}").contains("is reserved"), "{err:#}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_token_works_once_under_concurrent_use() {
    let (cp, _dir) = start_cp("token-race").await;
    let id = spiffe_id("test", "svc");
    let token = cp.token(&id).await.expect("token");
    let attempts = (0..6).map(|_| post_csr(&cp, &token, &id));
    let results = futures_util::future::join_all(attempts).await;
    let ok = results.iter().filter(|r| r.status == 200).count();
    let refused = results.iter().filter(|r| r.status == 401).count();
    assert_eq!(
        (ok, refused),
        (1, 5),
        "exactly one use may succeed: {:?}",
        results
            .iter()
            .map(|r| (r.status, r.text()))
            .collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_bootstrap_token_is_refused() {
    let (cp, _dir) = start_cp("token-expired").await;
    let id = spiffe_id("test", "svc");
    let token = cp.token_with(&id, &["--ttl", "1s"]).await.expect("token");
    let created = SystemTime::now();
    // Not synchronisation: the subject of the test is time passing.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(created.elapsed().unwrap_or_default() >= Duration::from_secs(2));
    let resp = post_csr(&cp, &token, &id).await;
    assert_json_error(&resp, |s| s == 401, "an expired token");
}

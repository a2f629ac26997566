//! Damaged files in the control plane's data folder stop its start with the file named, and
//! are never silently used or rewritten: a truncated `used-tokens` would make spent tokens
//! valid again, a short `token-key` would be a weaker MAC key, an altered CA certificate
//! would be trusted without its signature.

// Helpers outside #[test] functions fail the test by panicking, like the tests themselves.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use trustmesh_e2e::control_plane::{spawn_serve, ControlPlane};
use trustmesh_e2e::mtls::spiffe;
use trustmesh_e2e::policies::write_policies;
use trustmesh_e2e::ports::free_addr;
use trustmesh_e2e::workdir::WorkDir;

/// Starts `trustmesh serve` on `data` and returns its log once it has exited non-zero.
fn refused_start(work: &Path, data: &Path, policies: &Path) -> String {
    let mut cp = spawn_serve(work, data, policies, free_addr().expect("port"), 2).expect("spawn");
    let status = cp
        .wait_exit(Duration::from_secs(15))
        .expect("the control plane must exit by itself");
    assert!(!status.success(), "it must exit non-zero, got {status}");
    cp.log()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_data_files_stop_the_start_and_name_the_file() {
    let dir = WorkDir::new("data-files").expect("work dir");
    let policies = write_policies(&dir.path().join("policies"), &[]).expect("policies");
    let mut cp = ControlPlane::start(dir.path(), &policies)
        .await
        .expect("control plane starts");
    // Spend a token so that `used-tokens` has a line.
    let id = "spiffe://cluster.local/ns/test/sa/a";
    let token = cp.token(id).await.expect("token");
    let csr = trustmesh_certs::generate_csr(&spiffe(id).expect("id")).expect("CSR");
    let body = Bytes::from(serde_json::json!({ "csr": csr.csr_pem }).to_string());
    let issued = cp
        .request(Method::POST, "/v1/certificates", Some(&token), body)
        .await
        .expect("answers");
    assert_eq!(issued.status.as_u16(), 200, "the token is spent");
    cp.stop();
    let data = cp.data_dir().to_path_buf();

    // A truncated used-tokens line.
    let used = data.join("used-tokens");
    let good = std::fs::read_to_string(&used).unwrap_or_default();
    std::fs::write(&used, format!("{good}deadbeef")).expect("truncate");
    let log = refused_start(dir.path(), &data, &policies);
    assert!(
        log.contains("used-tokens"),
        "the error must name used-tokens: {log}"
    );
    assert_eq!(
        std::fs::read_to_string(&used).expect("used-tokens"),
        format!("{good}deadbeef"),
        "the damaged file is left as it was"
    );
    std::fs::write(&used, &good).expect("restore");

    // A token key of the wrong length.
    let key = data.join("token-key");
    let key_text = std::fs::read(&key).expect("token-key");
    std::fs::write(&key, b"abcd\n").expect("short key");
    let log = refused_start(dir.path(), &data, &policies);
    assert!(
        log.contains("token-key"),
        "the error must name token-key: {log}"
    );
    std::fs::write(&key, &key_text).expect("restore");

    // A CA certificate whose signature no longer verifies.
    let ca = data.join("ca-cert.pem");
    let pem = std::fs::read_to_string(&ca).expect("ca-cert.pem");
    let (der, _) = rustls::pki_types::pem::PemObject::from_pem_slice(pem.as_bytes())
        .map(|c: rustls::pki_types::CertificateDer<'static>| (c.to_vec(), ()))
        .expect("parse");
    let mut der = der;
    let last = der.len() - 1;
    der[last] ^= 0x01;
    let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &der);
    let mut altered = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        altered.push_str(std::str::from_utf8(chunk).unwrap());
        altered.push('\n');
    }
    altered.push_str("-----END CERTIFICATE-----\n");
    std::fs::write(&ca, altered).expect("alter");
    let log = refused_start(dir.path(), &data, &policies);
    assert!(
        log.contains("ca-cert.pem"),
        "the error must name ca-cert.pem: {log}"
    );
    std::fs::write(&ca, pem).expect("restore");

    // Restored, it starts again.
    cp.restart().await.expect("starts with the files restored");
}

//! `trustmesh status`: with the admin certificate from `trustmesh admin-cert` (a 0600 file),
//! it lists the proxies connected and the control plane's own state, as a table or JSON;
//! `GET /v1/proxies` refuses any other caller.

// Helpers outside #[test] functions fail the test by panicking, like the tests themselves.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::Value;
use trustmesh_certs::{control_plane_identity, TrustBundle};
use trustmesh_e2e::control_plane::run_cli;
use trustmesh_e2e::mesh::{Mesh, NAMESPACE};
use trustmesh_e2e::mtls::{
    client_with_cert, client_without_cert, issue, mesh_ca, mtls_get, trust_domain,
};
use trustmesh_e2e::policies::spiffe_id;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_lists_proxies_for_the_admin_only() {
    let mesh = Mesh::a_to_b("status").await.expect("mesh starts");
    let data_dir = mesh.cp.data_dir().to_string_lossy().into_owned();
    let admin_file = mesh.dir.path().join("admin.pem");
    let admin = admin_file.to_string_lossy().into_owned();
    let out = run_cli(&["admin-cert", "--data-dir", &data_dir, "--out", &admin])
        .await
        .unwrap();
    assert!(out.status.success(), "{}", out.stderr);
    let mode = std::fs::metadata(&admin_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "admin file mode {mode:o}");

    let url = mesh.cp.url();
    let bundle = mesh.cp.trust_bundle_path().to_string_lossy().into_owned();
    let status = |output: &'static str| {
        let (url, admin, bundle) = (url.clone(), admin.clone(), bundle.clone());
        async move {
            run_cli(&[
                "status",
                "--control-plane",
                &url,
                "--admin-cert",
                &admin,
                "--trust-bundle",
                &bundle,
                "--output",
                output,
            ])
            .await
            .unwrap()
        }
    };
    let out = status("json").await;
    assert!(out.status.success(), "{}", out.stderr);
    let v: Value = serde_json::from_str(&out.stdout).expect("JSON");
    let cp = &v["control_plane"];
    assert!(
        cp["policy_version"].as_str().is_some_and(|s| !s.is_empty()),
        "{v}"
    );
    assert!(cp["ca_expires_at"].as_str().is_some(), "{v}");
    assert!(cp["policy_error"].is_null(), "{v}");
    let proxies = v["proxies"].as_array().expect("proxies");
    for id in [spiffe_id(NAMESPACE, "a"), spiffe_id(NAMESPACE, "b")] {
        let p = proxies
            .iter()
            .find(|p| p["identity"] == id.as_str())
            .unwrap_or_else(|| panic!("{id} missing from {v}"));
        assert!(p["certificate_expiry"].as_str().is_some(), "{p}");
        assert!(p["last_seen"].as_str().is_some(), "{p}");
        assert!(p["address"].as_str().is_some(), "{p}");
        assert!(p["policy_version"].as_str().is_some(), "{p}");
    }

    let out = status("table").await;
    assert!(out.status.success(), "{}", out.stderr);
    let t = out.stdout;
    assert!(t.contains("IDENTITY") && t.contains("CERT EXPIRES"), "{t}");
    assert!(t.contains("CA expires:"), "{t}");
    assert!(t.contains(&spiffe_id(NAMESPACE, "a")), "{t}");
    assert!(t.contains(&spiffe_id(NAMESPACE, "b")), "{t}");

    // A workload's certificate may not list the mesh; no certificate at all is 401.
    let pem = mesh.cp.trust_bundle_pem().unwrap();
    let trust = TrustBundle::from_pem(&pem).unwrap();
    let cp_id = control_plane_identity(&trust_domain().unwrap());
    let ca = mesh_ca(&mesh.cp).unwrap();
    let (cert, key) = issue(
        &ca,
        &spiffe_id(NAMESPACE, "a"),
        Duration::from_secs(600),
        SystemTime::now(),
    )
    .unwrap();
    let mut tls = (*client_with_cert(&trust, &cert, &key, cp_id.as_str()).unwrap()).clone();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let resp = mtls_get(Arc::new(tls), mesh.cp.addr(), "localhost", "/v1/proxies")
        .await
        .unwrap();
    assert_eq!(resp.status, 403, "{}", resp.text());
    assert_eq!(resp.json().unwrap()["error"], "forbidden");
    let anon = client_without_cert(&trust, cp_id.as_str()).unwrap();
    let resp = mtls_get(anon, mesh.cp.addr(), "localhost", "/v1/proxies")
        .await
        .unwrap();
    assert_eq!(resp.status, 401, "{}", resp.text());

    // An admin file others can read is refused.
    std::fs::set_permissions(&admin_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = status("json").await;
    assert!(!out.status.success(), "a 0644 admin file was used");
}

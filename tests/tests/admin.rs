//! The sidecar's admin listener: liveness, readiness and a JSON view of its configuration.

// Helpers outside #[test] functions fail the test by panicking, like the tests themselves.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use trustmesh_e2e::client::admin_get;
use trustmesh_e2e::mesh::Mesh;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints() {
    let mesh = Mesh::a_to_b("admin").await.expect("mesh starts");
    let b = &mesh.b;

    let live = admin_get(b.admin(), "/live").await.expect("/live");
    assert_eq!(live.status, 200, "/live: {}", live.text());
    let ready = admin_get(b.admin(), "/ready").await.expect("/ready");
    assert_eq!(ready.status, 200, "/ready: {}", ready.text());

    let config = admin_get(b.admin(), "/config").await.expect("/config");
    assert_eq!(config.status, 200, "/config: {}", config.text());
    let v = config.json().expect("/config is JSON");
    assert_eq!(v["identity"], b.identity(), "{v}");

    let expiry = v["certificate"]["expires_at"]
        .as_str()
        .unwrap_or_else(|| panic!("no certificate.expires_at in {v}"));
    let expiry = OffsetDateTime::parse(expiry, &Rfc3339).expect("expires_at is RFC 3339");
    let now = OffsetDateTime::now_utc();
    assert!(expiry > now, "the certificate has expired: {expiry}");
    // The default certificate lifetime is 1 h.
    assert!(
        expiry <= now + Duration::from_secs(3600 + 120),
        "the certificate lives longer than 1 h: {expiry}"
    );

    let version = v["policy_version"].as_str().unwrap_or_default();
    assert!(!version.is_empty(), "no policy_version in {v}");

    let listeners = &v["listeners"];
    assert_eq!(listeners["inbound"], b.inbound().to_string(), "{v}");
    assert_eq!(listeners["outbound"], b.outbound().to_string(), "{v}");
    assert_eq!(listeners["admin"], b.admin().to_string(), "{v}");
}

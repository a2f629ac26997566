//! The port a request is authorized on is the port it reaches (ARCHITECTURE.md
//! "Transparency"): B's `--app` port for a connection that was not redirected, never the port
//! the caller writes into `Host`. A `Host` port that disagrees is no way around a `ports` or
//! `notPorts` rule, in either direction.

// Helpers outside #[test] functions fail the test by panicking, like the tests themselves.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use trustmesh_e2e::client::{admin_get, http1_get};
use trustmesh_e2e::mesh::Mesh;

async fn version(mesh: &Mesh) -> String {
    let config = admin_get(mesh.b.admin(), "/config")
        .await
        .unwrap()
        .json()
        .unwrap();
    config["policy_version"].as_str().unwrap().to_string()
}

/// Replaces B's policy with one `action` rule whose operation is `operation`, and waits until
/// B has it in force.
async fn set_policy(mesh: &Mesh, action: &str, operation: &str) {
    let old = version(mesh).await;
    std::fs::write(
        mesh.cp.policies().join("ports.yaml"),
        format!(
            "apiVersion: trustmesh.io/v1\nkind: AuthorizationPolicy\n\
             metadata: {{name: ports, namespace: test}}\n\
             spec:\n  selector: {{matchLabels: {{app: b}}}}\n  action: {action}\n  \
             rules:\n    - to: [{{operation: {operation}}}]\n"
        ),
    )
    .unwrap();
    for _ in 0..200 {
        if version(mesh).await != old {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("B never received the new policy");
}

/// GET `path` through A with `Host: host`; the status, and whether B's app saw the request.
async fn status(mesh: &Mesh, host: &str, path: &str) -> (u16, bool) {
    let before = mesh.app_b.request_count();
    let resp = http1_get(mesh.a.outbound(), host, path, &[])
        .await
        .expect("GET through A");
    (resp.status.as_u16(), mesh.app_b.request_count() > before)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_authorized_on_the_port_they_reach_not_the_host_port() {
    let mesh = Mesh::a_to_b("authz-ports").await.expect("mesh starts");
    let app = mesh.b.app().port();
    // B's registry entry declares port 80 (http); B's app listens on `app`.
    let other = if app == 1234 { 1235 } else { 1234 };

    // A DENY on the app port holds whatever port Host names.
    set_policy(
        &mesh,
        "DENY",
        &format!("{{ports: [\"{app}\"], paths: [\"/admin/*\"]}}"),
    )
    .await;
    for host in [
        format!("b.test:{other}"),
        "b.test:80".into(),
        "b.test".into(),
    ] {
        assert_eq!(
            status(&mesh, &host, "/admin/x").await,
            (403, false),
            "Host: {host} got past a DENY on port {app}"
        );
    }
    assert_eq!(status(&mesh, "b.test:80", "/public").await, (200, true));

    // An ALLOW on a port the request does not reach allows nothing, even when Host names it.
    set_policy(&mesh, "ALLOW", "{ports: [\"80\"]}").await;
    assert_eq!(
        status(&mesh, "b.test:80", "/x").await,
        (403, false),
        "Host: b.test:80 matched an ALLOW on port 80 though the request reaches port {app}"
    );

    // An ALLOW on the port reached allows, whatever port Host names.
    set_policy(&mesh, "ALLOW", &format!("{{ports: [\"{app}\"]}}")).await;
    assert_eq!(
        status(&mesh, &format!("b.test:{other}"), "/x").await,
        (200, true)
    );

    // `notPorts` is decided on the real port too.
    set_policy(&mesh, "ALLOW", &format!("{{notPorts: [\"{app}\"]}}")).await;
    assert_eq!(
        status(&mesh, &format!("b.test:{other}"), "/x").await,
        (403, false),
        "Host: b.test:{other} matched notPorts [{app}] though the request reaches {app}"
    );
}

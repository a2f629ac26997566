//! The CA key on disk: created private (0600), and a control plane refuses to run with a key
//! that group or others can read.

// Helpers outside #[test] functions fail the test by panicking, like the tests themselves.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt as _;
use std::time::Duration;

use trustmesh_e2e::control_plane::{spawn_serve, ControlPlane};
use trustmesh_e2e::policies::write_policies;
use trustmesh_e2e::ports::free_addr;
use trustmesh_e2e::workdir::WorkDir;

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_key_is_mode_0600() {
    let dir = WorkDir::new("ca-key").expect("work dir");
    let policies = write_policies(&dir.path().join("policies"), &[]).expect("policies");
    let cp = ControlPlane::start(dir.path(), &policies)
        .await
        .expect("control plane starts");
    let key = cp.ca_key_path();
    assert_eq!(mode(&key), 0o600, "{} must be 0600", key.display());
    drop(cp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_refuses_group_readable_ca_key() {
    let dir = WorkDir::new("ca-key-0644").expect("work dir");
    let policies = write_policies(&dir.path().join("policies"), &[]).expect("policies");
    let mut cp = ControlPlane::start(dir.path(), &policies)
        .await
        .expect("control plane starts");
    cp.stop();
    let key = cp.ca_key_path();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod 0644");

    let mut second = spawn_serve(
        dir.path(),
        cp.data_dir(),
        &policies,
        free_addr().expect("port"),
        2,
    )
    .expect("spawn");
    let status = second
        .wait_exit(Duration::from_secs(15))
        .expect("the control plane must exit by itself");
    assert!(!status.success(), "it must exit non-zero, got {status}");
    let log = second.log();
    assert!(
        log.contains("ca-key.pem"),
        "the error must name the key file: {log:?}"
    );
    assert_eq!(
        mode(&key),
        0o644,
        "the control plane must not silently fix the mode"
    );
}

//! Configuration: `--config FILE` under TRUSTMESH_* under flags, `--print-config` with the
//! source of every value, mistakes reported with where they are (FILE:LINE:COL, the variable,
//! the flag), and the log level changed at run time with `PUT /log-level`.

// Helpers outside #[test] functions fail the test by panicking, like the tests themselves.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use trustmesh_e2e::bins::binaries;
use trustmesh_e2e::client::{admin_get, collect, connect, http1_get, send_http1_on, Resp};
use trustmesh_e2e::mesh::Mesh;
use trustmesh_e2e::workdir::WorkDir;

/// Runs a binary to completion with `env` added (bounded: these commands never serve).
fn run(bin: &Path, args: &[&str], env: &[(&str, &str)], dir: &Path) -> Output {
    let mut cmd = std::process::Command::new(bin);
    cmd.args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("{} {args:?} did not finish", bin.display());
        }
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const PROXY_CONFIG: &str = "\
# a sidecar's flags as YAML
control_plane: https://127.0.0.1:15012
trust_bundle: bundle.pem
token_file: token
identity: spiffe://cluster.local/ns/test/sa/a
upstream_timeout: 10s
connect-timeout: 2s
drain_timeout: 5s
";

#[test]
fn proxy_flags_win_over_env_which_wins_over_the_file() {
    let dir = WorkDir::new("config-proxy").unwrap();
    let file = dir.path().join("proxy.yaml");
    std::fs::write(&file, PROXY_CONFIG).unwrap();
    let proxy = binaries().unwrap().proxy;
    let out = run(
        &proxy,
        &[
            "--config",
            "proxy.yaml",
            "--print-config",
            "--drain-timeout",
            "7s",
        ],
        &[
            ("TRUSTMESH_CONNECT_TIMEOUT", "3s"),
            ("TRUSTMESH_DRAIN_TIMEOUT", "9s"),
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    for line in [
        "upstream_timeout: \"10s\"  # file proxy.yaml:6",
        "connect_timeout: \"3s\"  # env TRUSTMESH_CONNECT_TIMEOUT",
        "drain_timeout: \"7s\"  # flag",
        "access_log: \"json\"  # default",
        "identity: \"spiffe://cluster.local/ns/test/sa/a\"  # file proxy.yaml:5",
    ] {
        assert!(shown.lines().any(|l| l == line), "no `{line}` in:\n{shown}");
    }

    // An unknown key: FILE:LINE:COL, exit 2, nothing started.
    std::fs::write(&file, format!("{PROXY_CONFIG}\nlisten_addr: 0.0.0.0:1\n")).unwrap();
    let out = run(&proxy, &["--config", "proxy.yaml"], &[], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("proxy.yaml:10:1: unknown key \"listen_addr\""),
        "{}",
        text(&out.stderr)
    );
    // A bad value in the file names the key and the place; in the environment, the variable;
    // on the command line, the flag.
    std::fs::write(&file, PROXY_CONFIG.replace("10s", "1x")).unwrap();
    let out = run(&proxy, &["--config", "proxy.yaml"], &[], dir.path());
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("proxy.yaml:6:1: upstream_timeout: \"1x\" is not a duration"),
        "{err}"
    );
    std::fs::write(&file, PROXY_CONFIG).unwrap();
    let out = run(
        &proxy,
        &["--config", "proxy.yaml"],
        &[("TRUSTMESH_UPSTREAM_TIMEOUT", "soon")],
        dir.path(),
    );
    let err = text(&out.stderr);
    assert!(
        err.contains("TRUSTMESH_UPSTREAM_TIMEOUT (--upstream-timeout): \"soon\" is not a duration"),
        "{err}"
    );
    let out = run(
        &proxy,
        &["--config", "proxy.yaml", "--upstream-timeout", "soon"],
        &[],
        dir.path(),
    );
    let err = text(&out.stderr);
    assert!(
        err.contains("'--upstream-timeout <UPSTREAM_TIMEOUT>': \"soon\" is not a duration"),
        "{err}"
    );
}

#[test]
fn serve_reads_its_config_file_too() {
    let dir = WorkDir::new("config-serve").unwrap();
    std::fs::write(
        dir.path().join("cp.yaml"),
        "listen: 127.0.0.1:1\ncert_ttl: 1x\n",
    )
    .unwrap();
    let cp = binaries().unwrap().control_plane;
    let out = run(&cp, &["serve", "--config", "cp.yaml"], &[], dir.path());
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("cp.yaml:2:1: cert_ttl: \"1x\" is not a duration"),
        "{err}"
    );
    std::fs::write(
        dir.path().join("cp.yaml"),
        "listen: 127.0.0.1:1\ncert_ttl: 30m\n",
    )
    .unwrap();
    let out = run(
        &cp,
        &["serve", "--config", "cp.yaml", "--print-config"],
        &[("TRUSTMESH_LISTEN", "127.0.0.1:2")],
        dir.path(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(
        shown.contains("cert_ttl: \"30m\"  # file cp.yaml:2"),
        "{shown}"
    );
    assert!(
        shown.contains("listen: \"127.0.0.1:2\"  # env TRUSTMESH_LISTEN"),
        "{shown}"
    );
    let out = run(
        &cp,
        &["serve", "--config", "cp.yaml"],
        &[("TRUSTMESH_CERT_TTL", "1x")],
        dir.path(),
    );
    let err = text(&out.stderr);
    assert!(
        err.contains("TRUSTMESH_CERT_TTL (--cert-ttl): \"1x\" is not a duration"),
        "{err}"
    );
}

async fn put_log_level(admin: std::net::SocketAddr, filter: &str) -> Resp {
    let req = Request::put("/log-level")
        .header(http::header::HOST, "localhost")
        .body(Full::new(Bytes::from(filter.to_string())))
        .unwrap();
    let resp = send_http1_on(connect(admin).await.unwrap(), req)
        .await
        .unwrap();
    collect(resp).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_level_changes_at_run_time() {
    let mut mesh = Mesh::a_to_b("log-level").await.expect("mesh starts");
    let admin = mesh.b.admin();
    assert_eq!(
        admin_get(admin, "/log-level").await.unwrap().text().trim(),
        "info"
    );
    let bad = put_log_level(admin, "trustmesh_proxy=loud").await;
    assert_eq!(bad.status, 400, "{}", bad.text());
    let ok = put_log_level(admin, "debug").await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(
        admin_get(admin, "/log-level").await.unwrap().text().trim(),
        "debug"
    );

    let resp = http1_get(mesh.a.outbound(), "b.test", "/now-debug", &[])
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    // The allow decision is logged at debug: it shows up only after the change.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = mesh.b.process().log();
        if log
            .lines()
            .any(|l| l.contains("DEBUG") && l.contains("/now-debug"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no debug line after PUT /log-level:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

//! Sidecar state across restarts and the lifecycle faults, with the real binaries: a sidecar
//! killed with SIGKILL comes back from `--state-dir` without a token (ready, same identity,
//! serving mTLS, renewed); one whose certificate expired while the control plane was away
//! re-enrols with a fresh token in its token file without a restart; one restarted with an
//! expired certificate and a spent token exits with code 3; the open-files limit is raised.
//! Times from process start to `/ready` are printed (run with `--nocapture`), not asserted.

// Helpers outside #[test] functions fail the test by panicking, like the tests themselves.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use trustmesh_e2e::app::App;
use trustmesh_e2e::client::http1_get;
use trustmesh_e2e::control_plane::ControlPlane;
use trustmesh_e2e::lifecycle::{config, ready, renewals_ok};
use trustmesh_e2e::mesh::NAMESPACE;
use trustmesh_e2e::policies::{spiffe_id, write_policies, ServiceEntry};
use trustmesh_e2e::ports::ProxyPorts;
use trustmesh_e2e::proxy::{Launch, Proxy};
use trustmesh_e2e::wait::poll_until;
use trustmesh_e2e::workdir::WorkDir;

/// How often `/ready` is asked while measuring the time to ready.
const READY_STEP: Duration = Duration::from_millis(1);

/// A control plane and the registry of `a` and `b`, each with its app.
struct Setup {
    cp: ControlPlane,
    a_ports: ProxyPorts,
    b_ports: ProxyPorts,
    app_a: App,
    app_b: App,
    dir: WorkDir,
}

async fn setup(test: &str, cert_ttl: &str) -> Setup {
    let dir = WorkDir::new(test).expect("work dir");
    let (a_ports, b_ports) = (
        ProxyPorts::allocate().unwrap(),
        ProxyPorts::allocate().unwrap(),
    );
    let policies = write_policies(
        &dir.path().join("policies"),
        &[
            ServiceEntry::new("a", NAMESPACE, a_ports.inbound),
            ServiceEntry::new("b", NAMESPACE, b_ports.inbound),
        ],
    )
    .expect("policies");
    let data = dir.path().join("cp-data");
    let cp = ControlPlane::start_with(dir.path(), &data, &policies, &["--cert-ttl", cert_ttl])
        .await
        .expect("control plane starts");
    Setup {
        cp,
        a_ports,
        b_ports,
        app_a: App::start().await.expect("app a"),
        app_b: App::start().await.expect("app b"),
        dir,
    }
}

impl Setup {
    fn token_file(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.token"))
    }

    async fn write_token(&self, name: &str, identity: &str) -> String {
        let token = self.cp.token(identity).await.expect("token");
        std::fs::write(self.token_file(name), format!("{token}\n")).expect("token file");
        token
    }

    /// Starts sidecar `a` (with `extra` flags) and returns it with the time from process
    /// start to `/ready` 200.
    async fn start_a(&self, extra: &[&str]) -> (Proxy, Duration) {
        let id = spiffe_id(NAMESPACE, "a");
        let token_file = self.token_file("a");
        let launch = Launch {
            name: "a",
            identity: &id,
            app: self.app_a.addr(),
            ports: self.a_ports,
            token_file: &token_file,
            extra,
            wrapper: &[],
        };
        let started = Instant::now();
        let mut a = Proxy::spawn(&self.cp, &launch).expect("a starts");
        a.wait_ready_every(READY_STEP).await.expect("a is ready");
        (a, started.elapsed())
    }
}

async fn serial(admin: std::net::SocketAddr) -> String {
    config(admin).await.expect("config")["certificate"]["serial"]
        .as_str()
        .expect("a serial")
        .to_string()
}

async fn a_reaches_b(a: &Proxy) {
    let resp = http1_get(a.outbound(), "b.test", "/hello", &[])
        .await
        .expect("A's outbound answers");
    assert_eq!(resp.status, 200, "A -> B over mTLS: {}", resp.text());
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).expect("exists").permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_killed_and_restarted_with_its_state_dir_needs_no_token_and_renews() {
    let s = setup("lc-state-restart", "1h").await;
    let _b = Proxy::start(
        &s.cp,
        "b",
        &spiffe_id(NAMESPACE, "b"),
        s.app_b.addr(),
        s.b_ports,
    )
    .await
    .expect("b starts");
    let state = s.dir.path().join("a-state");
    let state_arg = state.display().to_string();
    let extra = ["--state-dir", state_arg.as_str()];
    let token = s.write_token("a", &spiffe_id(NAMESPACE, "a")).await;

    let (mut a, first) = s.start_a(&extra).await;
    a_reaches_b(&a).await;
    let before = config(a.admin()).await.expect("config");
    let saved = state.join("identity.pem");
    assert_eq!(mode(&state), 0o700, "the state folder");
    assert_eq!(mode(&saved), 0o600, "the key file");
    let saved_first = std::fs::read(&saved).expect("state file");

    // SIGKILL, and no token at all: the saved certificate must do.
    a.process().kill();
    std::fs::remove_file(s.token_file("a")).expect("token file removed");
    let (mut a, no_token) = s.start_a(&extra).await;
    let after = config(a.admin()).await.expect("config");
    // Ready with no token at all: only the kept certificate can have authenticated it (it may
    // already have renewed with it by now, so its serial is not compared).
    assert_eq!(after["identity"], before["identity"]);
    a_reaches_b(&a).await;
    // It renews at once over mTLS with that certificate, and saves the new one.
    poll_until(
        "a renewal after the restart",
        Duration::from_secs(20),
        || async { Ok((renewals_ok(a.admin()).await? >= 1).then_some(())) },
    )
    .await
    .expect("renewed");
    let renewed = serial(a.admin()).await;
    assert_ne!(
        Some(renewed.as_str()),
        before["certificate"]["serial"].as_str()
    );
    let kept = std::fs::read(&saved).expect("state file");
    assert_ne!(kept, saved_first, "the renewed certificate was saved");
    assert_eq!(ready(a.admin()).await.expect("ready"), 200);
    a_reaches_b(&a).await;

    // Again, now with the spent token back in the token file: still no bootstrap.
    a.process().kill();
    std::fs::write(s.token_file("a"), format!("{token}\n")).expect("spent token back");
    let (mut a, spent_token) = s.start_a(&extra).await;
    a_reaches_b(&a).await;
    let log = a.process().log();
    assert_eq!(
        log.matches("using the certificate kept in --state-dir")
            .count(),
        2,
        "both restarts used the saved certificate, neither bootstrapped:\n{log}"
    );
    eprintln!(
        "time from process start to /ready 200: bootstrap {first:?}, restart from --state-dir \
         without a token {no_token:?}, with a spent token {spent_token:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_certificate_re_enrols_with_a_fresh_token_without_a_restart() {
    let mut s = setup("lc-state-expired", "10s").await;
    let (id_a, id_b) = (spiffe_id(NAMESPACE, "a"), spiffe_id(NAMESPACE, "b"));
    s.write_token("a", &id_a).await;
    let (mut a, _) = s.start_a(&[]).await;
    // B keeps its certificate in a state folder and is killed at once: by the time it comes
    // back its certificate has expired, and its token is spent.
    let b_state = s.dir.path().join("b-state").display().to_string();
    let b_extra = ["--state-dir", b_state.as_str()];
    let b_token = s.cp.token(&id_b).await.expect("token");
    let mut b = Proxy::start_with_token(
        &s.cp,
        "b",
        &id_b,
        s.app_b.addr(),
        s.b_ports,
        &b_token,
        &b_extra,
    )
    .await
    .expect("b starts");
    let b_expires = config(b.admin()).await.expect("config")["certificate"]["expires_at"]
        .as_str()
        .map(|t| time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339))
        .expect("expires_at")
        .expect("RFC 3339");
    b.process().kill();

    // The control plane goes away past the certificates' expiry.
    s.cp.stop();
    poll_until(
        "A's certificate to expire",
        Duration::from_secs(30),
        || async { Ok((ready(a.admin()).await? == 503).then_some(())) },
    )
    .await
    .expect("A reports not ready once expired");
    while time::OffsetDateTime::now_utc() <= b_expires + Duration::from_secs(1) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    s.cp.restart().await.expect("the control plane is back");

    // B, restarted with its expired certificate and its spent token, says so and exits 3.
    let b_token_file = s.dir.path().join("b.token");
    let launch = Launch {
        name: "b",
        identity: &id_b,
        app: s.app_b.addr(),
        ports: s.b_ports,
        token_file: &b_token_file,
        extra: &b_extra,
        wrapper: &[],
    };
    let mut b = Proxy::spawn(&s.cp, &launch).expect("b starts again");
    let status = b
        .process()
        .wait_exit(Duration::from_secs(20))
        .expect("b exits");
    let log = b.process().log();
    assert_eq!(status.code(), Some(3), "{log}");
    assert!(
        log.contains("no usable credential") && log.contains("expired"),
        "{log}"
    );

    // A, still running, picks up a fresh token from its token file.
    let pid = a.process().pid();
    s.write_token("a", &id_a).await;
    poll_until("A ready again", Duration::from_secs(30), || async {
        Ok((ready(a.admin()).await? == 200).then_some(()))
    })
    .await
    .expect("A re-enrolled");
    a.process().ensure_running().expect("A never restarted");
    assert_eq!(a.process().pid(), pid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_files_soft_limit_is_raised_to_the_hard_limit() {
    let s = setup("lc-nofile", "1h").await;
    let id = spiffe_id(NAMESPACE, "a");
    s.write_token("a", &id).await;
    let token_file = s.token_file("a");
    let launch = Launch {
        name: "a",
        identity: &id,
        app: s.app_a.addr(),
        ports: s.a_ports,
        token_file: &token_file,
        extra: &[],
        wrapper: &["prlimit", "--nofile=256:4096", "--"],
    };
    let mut a = Proxy::spawn(&s.cp, &launch).expect("a starts");
    a.wait_ready_every(READY_STEP).await.expect("ready");
    let c = config(a.admin()).await.expect("config");
    assert_eq!(c["open_files_limit"], 4096, "{c}");
    assert_eq!(c["open_files_limit_hard"], 4096, "{c}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_started_while_its_control_plane_is_away_waits_for_it() {
    let mut s = setup("lc-state-cp-away", "1h").await;
    let id = spiffe_id(NAMESPACE, "a");
    s.write_token("a", &id).await;
    s.cp.stop();
    let token_file = s.token_file("a");
    let launch = Launch {
        name: "a",
        identity: &id,
        app: s.app_a.addr(),
        ports: s.a_ports,
        token_file: &token_file,
        extra: &[],
        wrapper: &[],
    };
    let mut a = Proxy::spawn(&s.cp, &launch).expect("a starts");
    let log = a.process().log_path().to_path_buf();
    poll_until(
        "a failed bootstrap attempt",
        Duration::from_secs(20),
        || async {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            Ok(text.contains("bootstrap failed, retrying").then_some(()))
        },
    )
    .await
    .expect("it retries");
    a.process().ensure_running().expect("still running");
    assert_eq!(ready(a.admin()).await.expect("ready"), 503);
    s.cp.restart().await.expect("the control plane starts");
    a.wait_ready_every(READY_STEP)
        .await
        .expect("ready once it is there");
}

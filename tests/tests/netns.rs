//! Transparent interception end to end, in network namespaces standing in for pods (root only;
//! CI runs as root). Namespaces joined by a bridge: the control plane, pod A (an app and its
//! sidecar, interception installed by `trustmesh-proxy init`), pod B (the same), and an
//! outsider with no sidecar. The apps know nothing of the mesh:
//!
//! - A's app calls `http://B_IP:8080/orders/1` and gets 200 over mTLS; B's app sees A's
//!   verified identity; a second app port (9090) of B is reached on that port; the same
//!   works over IPv6 (ip6tables, `IP6T_SO_ORIGINAL_DST`);
//! - a DENY policy on `/admin/*` answers 403;
//! - the outsider's plaintext to B's app port is refused; only B's declared probe passes
//!   (through the probe listener, 15020), and nothing else there; over mTLS with a mesh
//!   certificate, a port B's app listens on but B's registry entry does not declare gets 403;
//! - A's app calling the outsider is refused under `outbound_policy: deny` (502, counted) and
//!   forwarded in plaintext after a commit switches it to `passthrough`; the same for a real
//!   WebSocket (Python `websockets`): refused 502 with nothing sent, then upgraded, tunnelled
//!   and echoed both ways; one to a mesh workload A may not call gets 403 even then;
//! - `init --uninstall` removes exactly the trustmesh rules, and then the outsider's plaintext
//!   reaches B's app directly, which shows it was interception that refused it.
//!
//! Namespaces, links and rules are removed by a drop guard, also when the test fails.

// Helpers outside #[test] functions fail the test by panicking, like the tests themselves.
#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "netns/topology.rs"]
mod topology;
#[path = "netns/undeclared.rs"]
mod undeclared;
#[path = "netns/websocket.rs"]
mod websocket;

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use trustmesh_e2e::bins::binaries;
use trustmesh_e2e::policies::spiffe_id;
use trustmesh_e2e::process::Process;
use trustmesh_e2e::workdir::WorkDir;

use topology::{Topology, SUBNET, SUBNET6};

const PROXY_UID: &str = "1337";
const APP: &str = env!("CARGO_BIN_EXE_trustmesh-netns-app");
const WAIT: Duration = Duration::from_secs(30);

fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn addr(octet: u8) -> String {
    format!("{SUBNET}.{octet}")
}

#[test]
fn interception_in_network_namespaces() {
    if !is_root() {
        println!("skipped: needs root (CI runs as root)");
        return;
    }
    for (tool, package) in [
        ("ip", "iproute2"),
        ("iptables", "iptables"),
        ("ip6tables", "iptables"),
        ("setpriv", "util-linux"),
    ] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(found, "{tool} is missing: apt-get install {package}");
    }
    let work = WorkDir::new("netns").unwrap();
    let dir = work.path().to_path_buf();
    // The sidecars run as uid 1337 and read their files from here.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bins = binaries().unwrap();
    let proxy_bin = dir.join("trustmesh-proxy");
    std::fs::copy(&bins.proxy, &proxy_bin).unwrap();
    std::fs::set_permissions(&proxy_bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let proxy = proxy_bin.to_str().unwrap();
    let cp_bin = bins.control_plane.to_str().unwrap().to_string();

    let (cp_ip, a_ip, b_ip, out_ip) = (addr(2), addr(10), addr(11), addr(20));
    let (id_a, id_b) = (spiffe_id("test", "a"), spiffe_id("test", "b"));
    let policies = dir.join("policies");
    write_policies(&policies, &a_ip, &b_ip, "deny");
    git(&policies, &["init", "-q"]);
    git(&policies, &["add", "."]);
    git(&policies, &["commit", "-q", "-m", "mesh"]);

    // Declared first, dropped last: every process below is stopped before the namespaces go.
    let mut topo = Topology::new(&[("cp", 2), ("a", 10), ("b", 11), ("out", 20)]).unwrap();
    topo.uninstall_rules_with(proxy_bin.clone());
    // A rule of someone else's, which uninstall must leave alone.
    for args in [
        &["-w", "-t", "nat", "-N", "KEEP_ME"][..],
        &[
            "-w", "-t", "nat", "-A", "OUTPUT", "-p", "udp", "--dport", "9", "-j", "KEEP_ME",
        ],
    ] {
        assert!(topo.run("b", "iptables", args).unwrap().status.success());
    }

    let data = dir.join("cp-data");
    let listen = format!("{cp_ip}:15012");
    let cp_cmd = topo.exec(
        "cp",
        &cp_bin,
        &[
            "serve",
            "--listen",
            &listen,
            "--data-dir",
            data.to_str().unwrap(),
            "--policies",
            policies.to_str().unwrap(),
            "--trust-domain",
            "cluster.local",
        ],
    );
    let mut cp = Process::spawn("control plane", cp_cmd, &dir.join("cp.log")).unwrap();
    wait_for("the control plane", || {
        cp.ensure_running().unwrap();
        cp.log().contains("control plane serving")
    });
    let bundle = dir.join("bundle.pem");
    std::fs::copy(data.join("trust-bundle.pem"), &bundle).unwrap();
    std::fs::set_permissions(&bundle, std::fs::Permissions::from_mode(0o644)).unwrap();

    // Interception first, as an init container does, then the apps and the sidecars.
    for pod in ["a", "b"] {
        let out = topo
            .run(pod, proxy, &["init", "--exclude-inbound-ports", "15020"])
            .unwrap();
        assert!(out.status.success(), "init in {pod}: {out:?}");
        for ipt in ["iptables", "ip6tables"] {
            let rules = topo.nat_rules(pod, ipt).unwrap();
            assert!(
                rules.contains("-A OUTPUT -p tcp -j TRUSTMESH_OUTPUT")
                    && rules.contains("-A PREROUTING -p tcp -j TRUSTMESH_INBOUND"),
                "{ipt} in {pod}:\n{rules}"
            );
        }
    }
    let app_b = spawn_app(&topo, "b", &["8080", "9090", "7070"], &dir);
    let _app_a = spawn_app(&topo, "a", &["8080"], &dir);
    let app_out = spawn_app(&topo, "out", &["8080"], &dir);
    let ws_out = websocket::start_echo(&topo, "out", &dir);
    let probes = r#"{"/app-health/app/livez": {"httpGet": {"path": "/healthz", "port": 8080}}}"#;
    let mut sidecars = Vec::new();
    for (pod, id) in [("a", &id_a), ("b", &id_b)] {
        let token_file = token(&cp_bin, &data, id, &dir, pod);
        let cp_url = format!("https://{listen}");
        let cmd = topo.exec(
            pod,
            "setpriv",
            &[
                &format!("--reuid={PROXY_UID}"),
                &format!("--regid={PROXY_UID}"),
                "--clear-groups",
                proxy,
                "--control-plane",
                &cp_url,
                "--trust-bundle",
                bundle.to_str().unwrap(),
                "--token-file",
                token_file.to_str().unwrap(),
                "--identity",
                id,
                "--app",
                "127.0.0.1:8080",
                "--probe-listen",
                "0.0.0.0:15020",
                "--app-probes",
                probes,
            ],
        );
        let log = dir.join(format!("proxy-{pod}.log"));
        let mut p = Process::spawn(&format!("proxy {pod}"), cmd, &log).unwrap();
        wait_for(&format!("sidecar {pod} ready"), || {
            p.ensure_running().unwrap();
            get(&topo, pod, "http://127.0.0.1:15000/ready").is_some_and(|(s, _)| s == 200)
        });
        sidecars.push(p);
    }

    // 1. A's app calls B's app port in plain HTTP; it crosses over mTLS.
    let (status, body) = get(&topo, "a", &format!("http://{b_ip}:8080/orders/1")).unwrap();
    assert_eq!(status, 200, "{body}");
    let seen: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["path"], "/orders/1");
    assert_eq!(seen["port"], 8080);
    assert_eq!(seen["peer_identity"], json!([id_a]), "{seen}");

    // 2. Another app port of B is reached on that port.
    let (status, body) = get(&topo, "a", &format!("http://{b_ip}:9090/orders/2")).unwrap();
    assert_eq!(status, 200, "{body}");
    let seen: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (seen["port"].clone(), seen["path"].clone()),
        (json!(9090), json!("/orders/2"))
    );
    assert_eq!(seen["peer_identity"], json!([id_a]), "{seen}");

    // 2b. The same over IPv6 (ip6tables, IP6T_SO_ORIGINAL_DST, the [::1]/[::] listeners).
    let b_ip6 = format!("[{SUBNET6}11]");
    let (status, body) = get(&topo, "a", &format!("http://{b_ip6}:8080/orders/v6")).unwrap();
    assert_eq!(status, 200, "{body}");
    let seen: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["path"], "/orders/v6");
    assert_eq!(seen["peer_identity"], json!([id_a]), "{seen}");
    let outsider = get(
        &topo,
        "out",
        &format!("http://{b_ip6}:8080/orders/outsider6"),
    );
    assert!(outsider.is_none(), "plaintext over IPv6 got {outsider:?}");
    let probe6 = get(
        &topo,
        "out",
        &format!("http://{b_ip6}:15020/app-health/app/livez"),
    );
    assert_eq!(probe6.map(|p| p.0), Some(200));

    // 3. The outsider's plaintext to B's app port never reaches the app.
    let outsider = get(&topo, "out", &format!("http://{b_ip}:8080/orders/outsider"));
    assert!(
        outsider.is_none(),
        "plaintext from outside got {outsider:?}"
    );
    assert!(!app_b.log().contains("/orders/outsider"), "{}", app_b.log());
    // Nor the sidecar's loopback-only outbound and admin listeners.
    for port in [15001, 15000] {
        let got = get(&topo, "out", &format!("http://{b_ip}:{port}/ready"));
        assert!(got.is_none(), "port {port} answered from outside: {got:?}");
    }

    // 3b. Even over mTLS with a mesh certificate, a redirected connection reaches only a port
    //     B declares: B's app also listens on 7070, which B's registry entry does not name.
    let admin_pem = undeclared::admin_cert(&cp_bin, &data, &dir);
    undeclared::only_declared_ports(&topo, &admin_pem, &b_ip, &[8080], &[7070]);
    let log = app_b.log();
    assert!(
        !log.contains("/mtls-7070") && log.contains("/mtls-8080"),
        "{log}"
    );

    // 4. Only the declared probe passes in plaintext, through the probe listener.
    let probe = get(
        &topo,
        "out",
        &format!("http://{b_ip}:15020/app-health/app/livez"),
    );
    assert_eq!(probe.map(|p| p.0), Some(200));
    assert!(app_b.log().contains("8080 GET /healthz"), "{}", app_b.log());
    let other = get(&topo, "out", &format!("http://{b_ip}:15020/orders/1"));
    assert_eq!(other.map(|p| p.0), Some(404));

    // 5. Outside the registry with outbound_policy deny: refused in A, counted, nothing sent.
    let (status, body) = get(&topo, "a", &format!("http://{out_ip}:8080/leak")).unwrap();
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("outbound_policy: deny"), "{body}");
    assert!(!app_out.log().contains("/leak"));
    let metrics = get(&topo, "a", "http://127.0.0.1:15000/metrics").unwrap().1;
    assert!(
        metrics.contains(r#"trustmesh_outbound_passthrough_total{decision="deny"} 1"#),
        "{metrics}"
    );
    // 5b. So is a WebSocket upgrade: the policy's 502, and no handshake reaches the outsider.
    let got = websocket::client(&topo, "a", &out_ip, "/ws-denied");
    assert_eq!(got["status"], 502, "{got}");
    assert!(
        websocket::handshakes(&ws_out).is_empty(),
        "{}",
        ws_out.log()
    );

    // 6. A commit switches to passthrough: the same call leaves in plaintext, with no identity.
    write_policies(&policies, &a_ip, &b_ip, "passthrough");
    git(&policies, &["commit", "-q", "-am", "passthrough"]);
    let mut last = None;
    wait_for("passthrough to be in force", || {
        last = get(&topo, "a", &format!("http://{out_ip}:8080/egress"));
        last.as_ref().is_some_and(|(s, _)| *s == 200)
    });
    let seen: Value = serde_json::from_str(&last.unwrap().1).unwrap();
    assert_eq!(seen["peer_identity"], json!([]), "{seen}");
    let metrics = get(&topo, "a", "http://127.0.0.1:15000/metrics").unwrap().1;
    assert!(
        metrics.contains(r#"trustmesh_outbound_passthrough_total{decision="passthrough"}"#),
        "{metrics}"
    );
    // 6b. A WebSocket to the outsider upgrades through A's sidecar, in plaintext, no identity
    //     added, and messages pass both ways.
    let got = websocket::client(&topo, "a", &out_ip, "/ws");
    let echoes = json!(["hello", "000162696e617279", "after idle"]);
    assert_eq!(got["echoes"], echoes, "{got}");
    let seen = websocket::handshakes(&ws_out);
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0]["path"], "/ws", "{seen:?}");
    let headers = &seen[0]["headers"];
    assert_eq!(headers["upgrade"], "websocket", "{headers}");
    assert!(headers["sec-websocket-key"].is_string(), "{headers}");
    assert!(
        headers.get("x-trustmesh-peer-identity").is_none(),
        "{headers}"
    );
    // 6c. Passthrough never reaches a mesh workload this identity may not call: 403.
    let got = websocket::client(&topo, "a", &addr(websocket::WITHHELD), "/ws-withheld");
    assert_eq!(got["status"], 403, "{got}");

    // 7. Authorization still holds on intercepted traffic: B denies /admin/*.
    let (status, body) = get(&topo, "a", &format!("http://{b_ip}:8080/admin/keys")).unwrap();
    assert_eq!(status, 403, "{body}");
    assert!(!app_b.log().contains("/admin/keys"));

    // 8. Uninstall removes exactly our rules; then plaintext reaches B's app directly.
    let out = topo.run("b", proxy, &["init", "--uninstall"]).unwrap();
    assert!(out.status.success(), "{out:?}");
    for ipt in ["iptables", "ip6tables"] {
        let rules = topo.nat_rules("b", ipt).unwrap();
        assert!(
            !rules.contains("TRUSTMESH"),
            "{ipt} after uninstall:\n{rules}"
        );
    }
    let rules = topo.nat_rules("b", "iptables").unwrap();
    assert!(
        rules.contains("-N KEEP_ME") && rules.contains("--dport 9 -j KEEP_ME"),
        "someone else's rules must stay:\n{rules}"
    );
    let direct = get(&topo, "out", &format!("http://{b_ip}:8080/orders/direct"));
    assert_eq!(direct.map(|d| d.0), Some(200));

    drop(sidecars);
    drop(cp);
}

/// Writes the policy folder: mesh.yaml, A and B in the registry, a DENY on B's `/admin/*`.
fn write_policies(dir: &Path, a_ip: &str, b_ip: &str, outbound_policy: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("mesh.yaml"),
        format!(
            "trust_domain: cluster.local\ndefault_action: allow\n\
             outbound_policy: {outbound_policy}\n"
        ),
    )
    .unwrap();
    let service = |name: &str, ip: &str, ports: &str| {
        format!(
            "apiVersion: trustmesh.io/v1\nkind: Service\n\
             metadata: {{name: {name}, namespace: test, labels: {{app: {name}}}}}\n\
             spec:\n  identity: {id}\n  endpoints: [\"{ip}:15006\", \"[{ip6}]:15006\"]\n  \
             ports: [{ports}]\n",
            id = spiffe_id("test", name),
            ip6 = ip6(ip),
        )
    };
    // W: a mesh workload that only B may call (no namespace holds its address: A's sidecar
    // refuses before anything leaves).
    let services = format!(
        "{}---\n{}---\n{}",
        service("a", a_ip, "{port: 8080, protocol: http}"),
        service(
            "b",
            b_ip,
            "{port: 8080, protocol: http}, {port: 9090, protocol: http}"
        ),
        service(
            "w",
            &addr(websocket::WITHHELD),
            "{port: 8765, protocol: http}"
        )
    );
    std::fs::write(dir.join("services.yaml"), services).unwrap();
    std::fs::write(
        dir.join("deny-admin.yaml"),
        "apiVersion: trustmesh.io/v1\nkind: AuthorizationPolicy\n\
         metadata: {name: b-no-admin, namespace: test}\n\
         spec:\n  selector: {matchLabels: {app: b}}\n  action: DENY\n  \
         rules:\n    - to: [{operation: {paths: [\"/admin/*\"]}}]\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("w-only-b.yaml"),
        format!(
            "apiVersion: trustmesh.io/v1\nkind: AuthorizationPolicy\n\
             metadata: {{name: w-only-b, namespace: test}}\n\
             spec:\n  selector: {{matchLabels: {{app: w}}}}\n  action: ALLOW\n  \
             rules:\n    - from: [{{source: {{principals: [\"{}\"]}}}}]\n",
            spiffe_id("test", "b").trim_start_matches("spiffe://")
        ),
    )
    .unwrap();
}

/// The IPv6 address of the host whose IPv4 address is `ip`.
fn ip6(ip: &str) -> String {
    format!("{SUBNET6}{}", ip.rsplit('.').next().unwrap_or_default())
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=test",
            "-c",
            "user.email=test@example.invalid",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {out:?}");
}

/// A bootstrap token for `id`, in a file only uid 1337 can read.
fn token(cp_bin: &str, data: &Path, id: &str, dir: &Path, pod: &str) -> PathBuf {
    let out = Command::new(cp_bin)
        .args(["token", "create", "--identity", id, "--data-dir"])
        .arg(data)
        .output()
        .unwrap();
    assert!(out.status.success(), "token create: {out:?}");
    let file = dir.join(format!("{pod}.token"));
    std::fs::write(&file, &out.stdout).unwrap();
    std::os::unix::fs::chown(&file, Some(1337), Some(1337)).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    file
}

fn spawn_app(topo: &Topology, pod: &str, ports: &[&str], dir: &Path) -> Process {
    let mut args = vec!["serve"];
    args.extend_from_slice(ports);
    let cmd = topo.exec(pod, APP, &args);
    let mut p = Process::spawn(
        &format!("app {pod}"),
        cmd,
        &dir.join(format!("app-{pod}.log")),
    )
    .unwrap();
    wait_for(&format!("app {pod}"), || {
        p.ensure_running().unwrap();
        p.log().contains("serving on")
    });
    p
}

/// `GET url` from inside pod `pod` as a plain app: `Some((status, body))`, or `None` when no
/// HTTP response came back.
fn get(topo: &Topology, pod: &str, url: &str) -> Option<(u16, String)> {
    let out = topo.run(pod, APP, &["get", url]).unwrap();
    match out.status.code() {
        Some(0) => {
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let (status, body) = text.split_once('\n').unwrap_or((&text, ""));
            Some((status.trim().parse().unwrap(), body.to_string()))
        }
        Some(3) => None,
        _ => panic!("get {url} in {pod}: {out:?}"),
    }
}

/// Polls `ready` every 100 ms for up to [`WAIT`].
fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

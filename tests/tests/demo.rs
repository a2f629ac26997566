//! The README's first command: `trustmesh demo` starts a whole mesh on loopback, tries the
//! example requests itself (allowed, denied, and a service the caller may not even know), prints
//! the curl commands, and on a stop signal stops everything it started and exits 0.

// Helpers outside #[test] functions fail the test by panicking, like the tests themselves.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::process::Command;
use std::time::Duration;

use trustmesh_e2e::bins::binaries;
use trustmesh_e2e::process::Process;
use trustmesh_e2e::wait::poll_until;
use trustmesh_e2e::workdir::WorkDir;

/// The demo's fixed admin ports (api-gateway, checkout-service, order-service's sidecars).
const ADMIN_PORTS: [u16; 3] = [15200, 15300, 15100];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_the_examples_and_stops_everything() {
    let dir = WorkDir::new("demo").unwrap();
    let bins = binaries().unwrap();
    let mut cmd = Command::new(&bins.control_plane);
    cmd.arg("demo").env("TMPDIR", dir.path());
    let mut demo = Process::spawn("trustmesh demo", cmd, &dir.path().join("demo.log")).unwrap();
    poll_until("the demo is up", Duration::from_secs(90), || {
        let log = demo.log();
        let running = demo.ensure_running();
        async move {
            running?;
            Ok(log.contains("Press Ctrl-C").then_some(()))
        }
    })
    .await
    .unwrap();
    let out = demo.log();
    // Each tried request: the curl command, then its outcome.
    let outcome = |url: &str| {
        let mut lines = out.lines().skip_while(|l| !l.contains(url));
        lines.next().expect("the curl line");
        lines.next().expect("the outcome line").to_string()
    };
    let allowed = outcome("http://127.0.0.1:15201/orders/42");
    assert!(allowed.starts_with("#  -> 200"), "{allowed}\n{out}");
    assert!(
        allowed.contains("spiffe://cluster.local/ns/production/sa/api-gateway"),
        "the app sees the verified caller: {allowed}"
    );
    assert!(
        outcome("http://127.0.0.1:15301/orders/7").starts_with("#  -> 200"),
        "{out}"
    );
    let denied = outcome("http://127.0.0.1:15201/admin");
    assert!(
        denied.starts_with("#  -> 403 RBAC: access denied"),
        "{denied}\n{out}"
    );
    let unknown = outcome("http://127.0.0.1:15101/health");
    assert!(unknown.starts_with("#  -> 404"), "{unknown}\n{out}");
    // The canary example: 100 requests split by the HTTPRoute, most to orders, and a command
    // that shows the split; a tester's header always reaches the canary.
    let split = out
        .lines()
        .find(|l| l.starts_with("#  -> 100 requests: "))
        .unwrap_or_else(|| panic!("no split line in:\n{out}"));
    let count = |service: &str| -> u32 {
        split
            .trim_start_matches("#  -> 100 requests: ")
            .split(", ")
            .find_map(|part| part.strip_suffix(&format!(" {service}"))?.parse().ok())
            .unwrap_or(0)
    };
    assert_eq!(count("orders") + count("orders-canary"), 100, "{split}");
    assert!(count("orders") > count("orders-canary"), "{split}");
    assert!(
        out.contains("| sort | uniq -c"),
        "the command that shows it:\n{out}"
    );
    let tester = outcome("-H 'x-canary: always' http://127.0.0.1:16301/orders/1");
    assert!(
        tester.starts_with("#  -> 200") && tester.contains("\"service\":\"orders-canary\""),
        "{tester}\n{out}"
    );
    for port in ADMIN_PORTS {
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    }

    // A stop signal (what Ctrl-C or a supervisor sends) stops the demo and everything it started.
    let pid = demo.pid().unwrap().to_string();
    let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(sent.success());
    let status = demo.wait_exit(Duration::from_secs(15)).unwrap();
    assert!(status.success(), "{status}\n{}", demo.tail());
    assert!(
        demo.log().contains("trustmesh demo: stopped."),
        "{}",
        demo.tail()
    );
    for port in ADMIN_PORTS {
        poll_until(
            "the sidecars are gone",
            Duration::from_secs(5),
            || async move {
                Ok(std::net::TcpStream::connect(("127.0.0.1", port))
                    .is_err()
                    .then_some(()))
            },
        )
        .await
        .unwrap();
    }
}

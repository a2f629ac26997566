//! The access log: every request leaves one JSON line on the sidecar's stdout, outbound on A
//! and inbound on B, with identities, normalized path, status, decision and trace id, and
//! nothing secret (no Authorization value, no query string).

// Helpers outside #[test] functions fail the test by panicking, like the tests themselves.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use trustmesh_e2e::client::http1_get;
use trustmesh_e2e::lifecycle::metric;
use trustmesh_e2e::mesh::{Mesh, MeshOptions, NAMESPACE};
use trustmesh_e2e::policies::spiffe_id;

const SECRET: &str = "s3cr3t-b34r3r";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_has_one_json_line_per_request_on_each_side() {
    let mut mesh = Mesh::a_to_b("access-log").await.expect("mesh starts");
    let (id_a, id_b) = (spiffe_id(NAMESPACE, "a"), spiffe_id(NAMESPACE, "b"));
    let bearer = format!("Bearer {SECRET}");
    let resp = http1_get(
        mesh.a.outbound(),
        "b.test",
        &format!("/orders/./1//items?token={SECRET}"),
        &[("authorization", &bearer), ("traceparent", TRACEPARENT)],
    )
    .await
    .expect("GET through A");
    assert_eq!(resp.status, 200, "{}", resp.text());
    // An encoded slash is refused by B with 400 and logged as such.
    let resp = http1_get(mesh.a.outbound(), "b.test", "/a%2Fb", &[])
        .await
        .expect("GET /a%2Fb");
    assert_eq!(resp.status, 400, "{}", resp.text());

    let out = mesh.a.wait_access_log(2).await;
    let inb = mesh.b.wait_access_log(2).await;
    assert_eq!(out.len(), 2, "A's access lines: {out:?}");
    assert_eq!(inb.len(), 2, "B's access lines: {inb:?}");

    let o = &out[0];
    assert_eq!(o["direction"], "outbound", "{o}");
    assert_eq!(o["source"], id_a.as_str(), "{o}");
    assert_eq!(o["destination"], id_b.as_str(), "{o}");
    assert_eq!(o["method"], "GET", "{o}");
    assert_eq!(o["authority"], "b.test", "{o}");
    assert_eq!(o["path"], "/orders/1/items", "{o}");
    assert_eq!(o["status"], 200, "{o}");
    assert_eq!(o["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736", "{o}");
    assert!(o["duration_ms"].as_f64().is_some(), "{o}");
    let t = o["time"].as_str().expect("time");
    OffsetDateTime::parse(t, &Rfc3339).expect("time is RFC 3339");

    let i = &inb[0];
    assert_eq!(i["direction"], "inbound", "{i}");
    assert_eq!(i["source"], id_a.as_str(), "{i}");
    assert_eq!(i["destination"], id_b.as_str(), "{i}");
    assert_eq!(i["method"], "GET", "{i}");
    assert_eq!(i["path"], "/orders/1/items", "{i}");
    assert_eq!(i["status"], 200, "{i}");
    assert_eq!(i["decision"], "allow", "{i}");
    // The mesh default (allow) decided: no policy, no route, and both fields are still there.
    assert!(i.get("policy").is_some_and(|p| p.is_null()), "{i}");
    assert!(i.get("route").is_some_and(|r| r.is_null()), "{i}");
    assert_eq!(i["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736", "{i}");
    assert!(i["response_bytes"].as_u64().is_some_and(|n| n > 0), "{i}");

    assert_eq!(inb[1]["status"], 400, "{}", inb[1]);
    assert_eq!(inb[1]["decision"], "bad_request", "{}", inb[1]);
    assert_eq!(out[1]["status"], 400, "{}", out[1]);

    for log in [mesh.a.process().log(), mesh.b.process().log()] {
        assert!(!log.contains(SECRET), "a secret reached the log:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_off_writes_nothing() {
    let opts = MeshOptions {
        b_extra: vec!["--access-log".into(), "off".into()],
        ..MeshOptions::default()
    };
    let mut mesh = Mesh::start("access-log-off", opts)
        .await
        .expect("mesh starts");
    let resp = http1_get(mesh.a.outbound(), "b.test", "/x", &[])
        .await
        .expect("GET through A");
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(mesh.a.wait_access_log(1).await.len(), 1);
    assert!(
        mesh.b.access_log().is_empty(),
        "B logged with --access-log off"
    );
}

/// A stuck reader of stdout (a full pipe) must not stall traffic: lines that do not fit are
/// dropped and counted. 2,500 lines are ~900 KB, far past the 64 KiB a pipe holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stdout_nobody_reads_drops_lines_and_never_stalls_requests() {
    const REQUESTS: usize = 2_500;
    const CONCURRENCY: usize = 8;
    let opts = MeshOptions {
        b_stdout_unread: true,
        ..MeshOptions::default()
    };
    let mesh = Mesh::start("access-log-unread", opts)
        .await
        .expect("mesh starts");
    let dropped = "trustmesh_access_log_dropped_total";
    let outbound = mesh.a.outbound();
    let next = Arc::new(AtomicUsize::new(0));
    let workers = (0..CONCURRENCY).map(|_| {
        let next = next.clone();
        tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < REQUESTS {
                // Bounded, so that a stalled sidecar fails the test instead of hanging it.
                let resp = tokio::time::timeout(
                    Duration::from_secs(5),
                    http1_get(outbound, "b.test", "/flood", &[]),
                )
                .await
                .expect("a request finishes within 5 s while stdout is not read")
                .expect("GET through A");
                assert_eq!(resp.status, 200, "{}", resp.text());
            }
        })
    });
    for w in futures_util::future::join_all(workers).await {
        w.expect("worker");
    }
    let n = metric(mesh.b.admin(), dropped).await.unwrap();
    assert!(n > 0.0, "no access-log line was counted as dropped");
    assert!(n <= REQUESTS as f64, "{n} dropped of {REQUESTS}");
    // Still serving.
    let resp = http1_get(outbound, "b.test", "/after", &[]).await.unwrap();
    assert_eq!(resp.status, 200);
}

//! Limits: a slow client (slowloris) is answered 408 and cut at `--header-timeout`, an oversized head gets 431,
//! connections over `--max-connections` are closed at once, and each hit is counted in
//! `trustmesh_limits_exceeded_total{limit,direction}`.

// Helpers outside #[test] functions fail the test by panicking, like the tests themselves.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use trustmesh_e2e::client::admin_get;
use trustmesh_e2e::mesh::{Mesh, NAMESPACE};
use trustmesh_e2e::policies::spiffe_id;
use trustmesh_e2e::ports::ProxyPorts;
use trustmesh_e2e::proxy::Proxy;

/// Reads until the server closes (or `within` passes); returns what it sent and when it closed.
async fn read_until_closed(s: &mut TcpStream, within: Duration) -> (String, Option<Instant>) {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                return (String::from_utf8_lossy(&got).into(), Some(Instant::now()))
            }
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&got).into(), None),
        }
    }
}

async fn counter(proxy: &Proxy, limit: &str) -> u64 {
    let text = admin_get(proxy.admin(), "/metrics").await.unwrap().text();
    let prefix =
        format!("trustmesh_limits_exceeded_total{{direction=\"outbound\",limit=\"{limit}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |v| v.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_oversized_clients_are_cut() {
    let mesh = Mesh::a_to_b("limits").await.expect("mesh starts");
    // A third sidecar with tight limits, in front of A's app.
    let c = Proxy::start_with(
        &mesh.cp,
        "c",
        &spiffe_id(NAMESPACE, "c"),
        mesh.app_a.addr(),
        ProxyPorts::allocate().unwrap(),
        &[
            "--header-timeout",
            "1s",
            "--max-header-bytes",
            "8192",
            "--max-connections",
            "3",
        ],
    )
    .await
    .expect("C starts");

    // Slowloris: a head that never ends, one header every 200 ms.
    let mut slow = TcpStream::connect(c.outbound()).await.unwrap();
    let start = Instant::now();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: b.test\r\n")
        .await
        .unwrap();
    let mut cut_after = None;
    let mut answer = Vec::new();
    for i in 0..40 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if slow
            .write_all(format!("x-slow-{i}: 1\r\n").as_bytes())
            .await
            .is_err()
        {
            cut_after = Some(start.elapsed());
            break;
        }
        let mut probe = [0u8; 64];
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(1), slow.read(&mut probe)).await
        {
            answer.extend_from_slice(&probe[..n]);
            cut_after = Some(start.elapsed());
            break;
        }
    }
    let cut_after = cut_after.expect("the slow client was never cut");
    let (rest, _) = read_until_closed(&mut slow, Duration::from_secs(2)).await;
    let answer = String::from_utf8_lossy(&answer).into_owned() + &rest;
    assert!(
        answer.starts_with("HTTP/1.1 408"),
        "the slow client is told why: {answer:?}"
    );
    assert!(
        cut_after >= Duration::from_millis(900) && cut_after < Duration::from_secs(4),
        "cut after {cut_after:?}, want about the 1 s header timeout"
    );
    assert_eq!(counter(&c, "header_timeout").await, 1);

    // A head over --max-header-bytes gets 431.
    let mut big = TcpStream::connect(c.outbound()).await.unwrap();
    let req = format!(
        "GET / HTTP/1.1\r\nHost: b.test\r\nx-big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let _ = big.write_all(req.as_bytes()).await;
    let (answer, _) = read_until_closed(&mut big, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");
    assert_eq!(counter(&c, "header_bytes").await, 1);

    // Three connections are allowed; a fourth is closed at once.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(c.outbound()).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut extra = TcpStream::connect(c.outbound()).await.unwrap();
    let (_, closed) = read_until_closed(&mut extra, Duration::from_millis(800)).await;
    assert!(
        closed.is_some(),
        "the connection over --max-connections was kept"
    );
    assert!(counter(&c, "connections").await >= 1);
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_request_body_gets_408_at_the_body_timeout() {
    let mesh = Mesh::a_to_b("body-timeout").await.expect("mesh starts");
    let c = Proxy::start_with(
        &mesh.cp,
        "c",
        &spiffe_id(NAMESPACE, "c"),
        mesh.app_a.addr(),
        ProxyPorts::allocate().unwrap(),
        &["--body-timeout", "1s"],
    )
    .await
    .expect("C starts");

    // A body announced as 100 bytes, of which 10 arrive; then nothing.
    let mut s = TcpStream::connect(c.outbound()).await.unwrap();
    let start = Instant::now();
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: b.test\r\nContent-Length: 100\r\n\r\n0123456789")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout(Duration::from_secs(8), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
    let answer = String::from_utf8_lossy(&got);
    let took = start.elapsed();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "answered after {took:?}, want about the 1 s body timeout"
    );
    assert_eq!(counter(&c, "body_timeout").await, 1);
    // B's app never got a whole request.
    assert!(
        mesh.app_b
            .requests()
            .iter()
            .all(|r| r["body_bytes"].as_u64() != Some(100)),
        "{:?}",
        mesh.app_b.requests()
    );
}

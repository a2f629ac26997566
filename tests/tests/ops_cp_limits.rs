//! The control plane's listener against denial of service without credentials: a client that
//! trickles its TLS handshake or its request head is closed at `--handshake-timeout` and
//! `--header-timeout` (a stalled body gets 408); anonymous connections up to `--max-anonymous-connections` cannot keep a
//! client with a mesh certificate (a sidecar's watch among them) from its snapshot; one
//! identity's long polls beyond `--max-watches-per-identity` get `429 too_many_watches` while
//! another identity's wait; an HTTP/2 client (rapid reset) on the HTTP/1.1 listener is cut off.
//! Every refusal is counted in `trustmesh_cp_limits_exceeded_total{limit}`.

// Helpers outside #[test] functions fail the test by panicking, like the tests themselves.
#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "ops_cp_limits/support.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt as _;
use trustmesh_e2e::client::connect;
use trustmesh_e2e::mtls::mtls_get;
use trustmesh_e2e::policies::spiffe_id;
use trustmesh_e2e::ports::{free_addr, ProxyPorts};
use trustmesh_e2e::proxy::Proxy;
use trustmesh_e2e::wait::poll_until;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_handshakes_heads_and_bodies_are_cut_at_their_timeouts() {
    let (_dir, cp) = start(
        "cp-limits-slow",
        &["--header-timeout", "2s", "--handshake-timeout", "2s"],
    )
    .await;
    // A TCP connection that never starts its handshake.
    let mut silent = connect(cp.addr()).await.unwrap();
    // A TLS client (no certificate) that trickles its request head, one header at a time.
    let mut slow = tls(anonymous(&cp), cp.addr()).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nhost: cp\r\n")
        .await
        .unwrap();
    let trickle_until = Instant::now() + Duration::from_secs(20);
    let mut cut = false;
    while Instant::now() < trickle_until {
        if slow.write_all(b"x-slow: 1\r\n").await.is_err() {
            cut = true;
            break;
        }
        let (closed, got) = closed_within(&mut slow, Duration::from_millis(300)).await;
        assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
        if closed {
            cut = true;
            break;
        }
    }
    assert!(cut, "a trickled request head was still open after 20 s");
    let (closed, _) = closed_within(&mut silent, BOUND).await;
    assert!(closed, "a connection that never handshakes is closed");
    // A bootstrap request (a good token) whose body stalls gets 408 instead of holding on.
    let token = cp.token(&spiffe_id("test", "a")).await.unwrap();
    let mut stalled = tls(anonymous(&cp), cp.addr()).await.unwrap();
    let head = format!(
        "POST /v1/certificates HTTP/1.1\r\nhost: cp\r\nauthorization: Bearer {token}\r\n\
         content-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"csr\": "
    );
    stalled.write_all(head.as_bytes()).await.unwrap();
    let (_, got) = closed_within(&mut stalled, BOUND).await;
    let got = String::from_utf8_lossy(&got);
    assert!(
        got.starts_with("HTTP/1.1 408"),
        "a stalled body was answered {got:?}"
    );
    assert!(got.contains("body_timeout"), "{got}");

    // A client that sends its head at once is served as before.
    let resp = cp.get("/healthz").await.unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    let reader = mtls(&cp, "a");
    assert!(metric(&reader, &cp, "header_timeout").await >= 1);
    assert!(metric(&reader, &cp, "handshake_timeout").await >= 1);
    assert!(metric(&reader, &cp, "body_timeout").await >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_connections_cannot_keep_mtls_clients_from_their_snapshot() {
    let (_dir, cp) = start(
        "cp-limits-anon",
        &[
            "--max-connections",
            "6",
            "--max-anonymous-connections",
            "3",
            "--header-timeout",
            "60s",
        ],
    )
    .await;
    // A real sidecar, bootstrapped before the flood, long-polls with its mesh certificate.
    let proxy = Proxy::start(
        &cp,
        "a",
        &spiffe_id("test", "a"),
        free_addr().unwrap(),
        ProxyPorts::allocate().unwrap(),
    )
    .await
    .expect("the sidecar starts");
    let before = proxy_version(&proxy).await;
    let anon = anonymous(&cp);
    let mut held = Vec::new();
    for i in 0..3 {
        held.push(
            hold_soon(
                &anon,
                cp.addr(),
                &format!("anonymous connection {i} within the budget"),
            )
            .await,
        );
    }
    for i in 3..5 {
        assert!(
            hold(anon.clone(), cp.addr()).await.is_err(),
            "anonymous connection {i} is over --max-anonymous-connections 3 and must be closed"
        );
    }
    // The anonymous budget is spent, yet a client with a mesh certificate gets its snapshot.
    let a = mtls(&cp, "a");
    let snap = mtls_get(a.clone(), cp.addr(), "localhost", "/v1/snapshot")
        .await
        .expect("an mTLS client is served while the anonymous budget is spent");
    assert_eq!(snap.status, 200, "{}", snap.text());
    assert_eq!(
        snap.json().unwrap()["identity"],
        spiffe_id("test", "a"),
        "{}",
        snap.text()
    );
    assert!(metric(&a, &cp, "anonymous_connections").await >= 2);
    // And the sidecar's watch carries a policy change to it.
    std::fs::write(cp.policies().join("allow-b.yaml"), ALLOW_B).unwrap();
    poll_until(
        "the sidecar to get the new policy version",
        BOUND,
        || async { Ok((proxy_version(&proxy).await != before).then_some(())) },
    )
    .await
    .unwrap();

    // --max-connections bounds everyone: 3 anonymous + 3 verified fill it (the sidecar gone).
    drop(proxy);
    for i in 0..3 {
        held.push(
            hold_soon(
                &a,
                cp.addr(),
                &format!("verified connection {i} within --max-connections"),
            )
            .await,
        );
    }
    assert!(
        hold(a.clone(), cp.addr()).await.is_err(),
        "a seventh connection is over --max-connections 6"
    );
    held.pop();
    // The server frees the slot once it sees the close; until then /metrics is refused too.
    let metrics = poll_until("a slot to free up", BOUND, || async {
        Ok(mtls_get(a.clone(), cp.addr(), "localhost", "/metrics")
            .await
            .ok()
            .map(|r| r.text()))
    })
    .await
    .expect("a closed connection frees its slot");
    assert!(value(&metrics, "connections") >= 1, "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_identitys_long_polls_are_capped_while_another_identity_waits() {
    let (_dir, cp) = start("cp-limits-watch", &["--max-watches-per-identity", "2"]).await;
    let a = mtls(&cp, "a");
    let b = mtls(&cp, "b");
    let first = mtls_get(a.clone(), cp.addr(), "localhost", "/v1/snapshot")
        .await
        .unwrap();
    assert_eq!(first.status, 200, "{}", first.text());
    let version = first.json().unwrap()["version"]
        .as_str()
        .unwrap()
        .to_string();
    let waiting = format!("/v1/snapshot?version={version}&wait=60s");
    let mut polls = Vec::new();
    for _ in 0..2 {
        let (a, addr, path) = (a.clone(), cp.addr(), waiting.clone());
        polls.push(tokio::spawn(async move {
            mtls_get(a, addr, "localhost", &path).await
        }));
    }
    poll_until("two of a's polls waiting", BOUND, || async {
        Ok((metric(&b, &cp, "trustmesh_cp_watches_open").await == 2).then_some(()))
    })
    .await
    .unwrap();

    let third = mtls_get(a.clone(), cp.addr(), "localhost", &waiting)
        .await
        .expect("the third poll is answered at once");
    assert_eq!(third.status, 429, "{}", third.text());
    assert_eq!(third.json().unwrap()["error"], "too_many_watches");
    // A poll that does not wait is not a watch, and another identity waits as usual.
    let now = format!("/v1/snapshot?version={version}&wait=0s");
    let quick = mtls_get(a.clone(), cp.addr(), "localhost", &now)
        .await
        .unwrap();
    assert_eq!(quick.status, 304, "{}", quick.text());
    let b_first = mtls_get(b.clone(), cp.addr(), "localhost", "/v1/snapshot")
        .await
        .unwrap();
    let b_version = b_first.json().unwrap()["version"]
        .as_str()
        .unwrap()
        .to_string();
    let b_wait = format!("/v1/snapshot?version={b_version}&wait=1s");
    let b_poll = mtls_get(b.clone(), cp.addr(), "localhost", &b_wait)
        .await
        .unwrap();
    assert_eq!(b_poll.status, 304, "b's poll waited: {}", b_poll.text());
    assert_eq!(metric(&b, &cp, "watches").await, 1);
    for p in &polls {
        assert!(!p.is_finished(), "a's first two polls still wait");
    }
    polls.iter().for_each(|p| p.abort());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_rapid_reset_on_the_http11_listener_is_cut_off() {
    let (_dir, cp) = start("cp-limits-h2", &[]).await;
    let a = mtls(&cp, "a");
    // RFC 9113 §3.4 preface and SETTINGS, then the rapid-reset pattern (CVE-2023-44487):
    // HEADERS of `GET /` (HPACK static :method GET, :scheme https, :path /) and RST_STREAM
    // CANCEL at once, over and over.
    let mut flood = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    flood.extend(frame(0x4, 0, 0, &[]));
    for i in 0..500u32 {
        let stream = 2 * i + 1;
        flood.extend(frame(0x1, 0x5, stream, &[0x82, 0x87, 0x84]));
        flood.extend(frame(0x3, 0, stream, &8u32.to_be_bytes()));
    }
    let mut s = tls(a.clone(), cp.addr()).await.unwrap();
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    // The server may close while the flood is still being written.
    let _ = s.write_all(&flood).await;
    let _ = s.flush().await;
    let (closed, got) = closed_within(&mut s, BOUND).await;
    assert!(closed, "the HTTP/2 client's connection stays open");
    assert!(
        got.is_empty(),
        "the server answered HTTP/2 on an http/1.1 connection: {got:?}"
    );
    // A client that asks for h2 alone gets no protocol at all (ALPN and the served protocol
    // agree).
    let mut h2_only = (*a).clone();
    h2_only.alpn_protocols = vec![b"h2".to_vec()];
    let refused = match tls(Arc::new(h2_only), cp.addr()).await {
        Err(_) => true,
        Ok(mut s) => closed_within(&mut s, BOUND).await.0,
    };
    assert!(refused, "an h2-only client was accepted");
    assert!(metric(&a, &cp, "protocol").await >= 1);
    let snap = mtls_get(a, cp.addr(), "localhost", "/v1/snapshot")
        .await
        .unwrap();
    assert_eq!(snap.status, 200, "HTTP/1.1 is served as before");
}

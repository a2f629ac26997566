//! Denial of service without credentials, or with one identity's: an HTTP/2 connection that
//! sends only its preface and PINGs is closed at `--header-timeout` (inbound mTLS and
//! outbound h2c); one that has served requests lives on and is closed with a GOAWAY after
//! `--idle-timeout` without a stream, PINGs or not; one identity cannot hold more than
//! `--max-connections-per-identity` inbound connections while another still connects; the
//! probe listener is capped and cuts slow clients. Each hit is counted in
//! `trustmesh_limits_exceeded_total{limit,direction}`.

// Helpers outside #[test] functions fail the test by panicking, like the tests themselves.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use trustmesh_certs::TrustBundle;
use trustmesh_e2e::client::{admin_get, http1_get};
use trustmesh_e2e::mesh::{Mesh, MeshOptions, NAMESPACE};
use trustmesh_e2e::mtls::{client_with_cert, issue, knock, mesh_ca, Knock};
use trustmesh_e2e::policies::spiffe_id;
use trustmesh_e2e::ports::{free_addr, ProxyPorts};
use trustmesh_e2e::proxy::Proxy;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const SETTINGS: [u8; 9] = [0, 0, 0, 4, 0, 0, 0, 0, 0];
const PING: [u8; 17] = [0, 0, 8, 6, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8];
const GOAWAY: u8 = 7;
const HEADERS: u8 = 1;

async fn counter(admin: SocketAddr, limit: &str, direction: &str) -> u64 {
    let text = admin_get(admin, "/metrics").await.unwrap().text();
    let prefix =
        format!("trustmesh_limits_exceeded_total{{direction=\"{direction}\",limit=\"{limit}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |v| v.trim().parse().unwrap())
}

/// A mesh client as `sa` (a certificate from the mesh CA) for B's inbound, ALPN h2.
fn caller(mesh: &Mesh, sa: &str) -> Arc<ClientConfig> {
    let ca = mesh_ca(&mesh.cp).unwrap();
    let id = spiffe_id(NAMESPACE, sa);
    let (cert, key) = issue(&ca, &id, Duration::from_secs(3600), SystemTime::now()).unwrap();
    let bundle = TrustBundle::from_pem(&mesh.cp.trust_bundle_pem().unwrap()).unwrap();
    client_with_cert(&bundle, &cert, &key, &spiffe_id(NAMESPACE, "b")).unwrap()
}

async fn mtls(
    config: Arc<ClientConfig>,
    addr: SocketAddr,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into());
    TlsConnector::from(config).connect(name, tcp).await.unwrap()
}

/// A `GET /` HEADERS frame on `stream` (HPACK: static :method GET, :scheme http, :path /,
/// and `:authority: b.test` as a literal with an indexed name).
fn get_headers(stream: u8) -> Vec<u8> {
    let block = [&[0x82, 0x86, 0x84, 0x01, 6][..], b"b.test"].concat();
    let mut f = vec![0, 0, block.len() as u8, HEADERS, 0x05, 0, 0, 0, stream];
    f.extend_from_slice(&block);
    f
}

/// What the server sent: each frame's (type, stream), and whether it closed.
#[derive(Debug, Default)]
struct Seen {
    frames: Vec<(u8, u32)>,
    closed: bool,
}

/// Reads frames into `seen` until the server closes (then sets `closed`).
async fn read_frames<R: AsyncRead + Unpin>(mut r: R, seen: Arc<Mutex<Seen>>) {
    let mut head = [0u8; 9];
    loop {
        if r.read_exact(&mut head).await.is_err() {
            break;
        }
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let stream = u32::from_be_bytes([head[5] & 0x7f, head[6], head[7], head[8]]);
        let mut payload = vec![0u8; len];
        if r.read_exact(&mut payload).await.is_err() {
            break;
        }
        seen.lock().unwrap().frames.push((head[3], stream));
    }
    seen.lock().unwrap().closed = true;
}

/// Sends the preface and SETTINGS, then `at` (ms after the start) each extra frame, and a
/// PING every 200 ms, until the server closes or `within` passes. Returns what it saw;
/// `closed` only when the server closed while the client was still sending.
async fn ping_until_closed<S>(s: S, extra: &[(u64, Vec<u8>)], within: Duration) -> Seen
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (r, mut w) = tokio::io::split(s);
    let seen = Arc::new(Mutex::new(Seen::default()));
    let reader = tokio::spawn(read_frames(r, seen.clone()));
    let start = Instant::now();
    let _ = w.write_all(&[PREFACE, &SETTINGS[..]].concat()).await;
    let mut pending: Vec<(u64, Vec<u8>)> = extra.to_vec();
    while start.elapsed() < within && !seen.lock().unwrap().closed {
        let now = start.elapsed().as_millis() as u64;
        while pending.first().is_some_and(|(at, _)| *at <= now) {
            let (_, frame) = pending.remove(0);
            let _ = w.write_all(&frame).await;
        }
        let _ = w.write_all(&PING).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Only a close while the client was still sending counts: once it stops, any limit
    // would close the connection.
    reader.abort();
    let _ = reader.await;
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_connections_live_on_streams_not_on_pings() {
    let flags = ["--header-timeout", "1s", "--idle-timeout", "3s"];
    let opts = MeshOptions {
        b_extra: flags.iter().map(|s| s.to_string()).collect(),
        ..MeshOptions::default()
    };
    let mesh = Mesh::start("limits-h2", opts).await.expect("mesh starts");
    let c = Proxy::start_with(
        &mesh.cp,
        "c",
        &spiffe_id(NAMESPACE, "c"),
        mesh.app_a.addr(),
        ProxyPorts::allocate().unwrap(),
        &flags,
    )
    .await
    .expect("C starts");

    // Inbound, mTLS: the preface and PINGs, never a request.
    let tls = mtls(caller(&mesh, "c"), mesh.b.inbound()).await;
    let seen = ping_until_closed(tls, &[], Duration::from_secs(8)).await;
    assert!(
        seen.closed,
        "PINGs held an inbound h2 connection open: {seen:?}"
    );
    assert_eq!(
        counter(mesh.b.admin(), "header_timeout", "inbound").await,
        1
    );

    // Outbound, h2c: the same.
    let tcp = TcpStream::connect(c.outbound()).await.unwrap();
    let seen = ping_until_closed(tcp, &[], Duration::from_secs(8)).await;
    assert!(
        seen.closed,
        "PINGs held an outbound h2c connection open: {seen:?}"
    );
    assert_eq!(counter(c.admin(), "header_timeout", "outbound").await, 1);

    // A connection that served a request outlives the header timeout (a second request
    // after it is answered), then, with no stream open, gets a GOAWAY at the idle timeout
    // however many PINGs it sends.
    let tcp = TcpStream::connect(c.outbound()).await.unwrap();
    let requests = [(0, get_headers(1)), (1500, get_headers(3))];
    let seen = ping_until_closed(tcp, &requests, Duration::from_secs(15)).await;
    let answered: Vec<u32> = seen
        .frames
        .iter()
        .filter(|(t, _)| *t == HEADERS)
        .map(|(_, s)| *s)
        .collect();
    assert_eq!(answered, [1, 3], "both requests answered: {seen:?}");
    assert!(
        seen.closed,
        "PINGs held an idle h2c connection open: {seen:?}"
    );
    assert!(
        seen.frames.iter().any(|(t, _)| *t == GOAWAY),
        "closed without a GOAWAY: {seen:?}"
    );
    assert_eq!(counter(c.admin(), "idle_timeout", "outbound").await, 1);
    assert_eq!(mesh.app_b.request_count(), 2, "{:?}", mesh.app_b.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_identity_cannot_take_every_inbound_connection() {
    let opts = MeshOptions {
        b_extra: [
            "--max-connections-per-identity",
            "2",
            "--header-timeout",
            "60s",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        ..MeshOptions::default()
    };
    let mesh = Mesh::start("limits-per-identity", opts)
        .await
        .expect("mesh starts");
    let (as_c, as_d) = (caller(&mesh, "c"), caller(&mesh, "d"));
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut tls = mtls(as_c.clone(), mesh.b.inbound()).await;
        tls.write_all(&[PREFACE, &SETTINGS[..]].concat())
            .await
            .unwrap();
        // The server's SETTINGS: it is past the handshake and holds the connection.
        let mut buf = [0u8; 9];
        tls.read_exact(&mut buf).await.unwrap();
        held.push(tls);
    }
    let third = knock(as_c.clone(), mesh.b.inbound()).await.unwrap();
    assert!(
        matches!(third, Knock::Refused(_)),
        "a third connection of c: {third:?}"
    );
    let other = knock(as_d, mesh.b.inbound()).await.unwrap();
    assert_eq!(other, Knock::Accepted, "d connects while c holds its share");
    assert_eq!(
        counter(mesh.b.admin(), "connections_per_identity", "inbound").await,
        1
    );
    // A share that is given back can be taken again.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    while knock(as_c.clone(), mesh.b.inbound()).await.unwrap() != Knock::Accepted {
        assert!(Instant::now() < deadline, "c never got its slot back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A's sidecar (another identity) is not held up either.
    let r = http1_get(mesh.a.outbound(), "b.test", "/", &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probe_listener_is_capped_and_cuts_slow_clients() {
    let mesh = Mesh::a_to_b("limits-probes").await.expect("mesh starts");
    let probe = free_addr().unwrap();
    let probes = format!(
        r#"{{"/app-health/app/livez": {{"tcpSocket": {{"port": {}}}}}}}"#,
        mesh.app_a.addr().port()
    );
    let probe_flag = probe.to_string();
    let d = Proxy::start_with(
        &mesh.cp,
        "d",
        &spiffe_id(NAMESPACE, "d"),
        mesh.app_a.addr(),
        ProxyPorts::allocate().unwrap(),
        &[
            "--probe-listen",
            &probe_flag,
            "--app-probes",
            &probes,
            "--header-timeout",
            "2s",
        ],
    )
    .await
    .expect("D starts");
    let probe_get = || async {
        let r = http1_get(probe, "localhost", "/app-health/app/livez", &[]).await;
        r.map(|r| r.status.as_u16()).unwrap_or(0)
    };
    assert_eq!(probe_get().await, 200);

    // 64 connections are held; the 65th is closed at once.
    let mut held = Vec::new();
    for _ in 0..64 {
        held.push(TcpStream::connect(probe).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut extra = TcpStream::connect(probe).await.unwrap();
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(1), extra.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "the 65th probe connection was kept"
    );
    assert!(counter(d.admin(), "connections", "probe").await >= 1);
    drop(held);

    // Slowloris: a head that never ends is answered 408 and cut.
    let mut slow = TcpStream::connect(probe).await.unwrap();
    slow.write_all(b"GET /app-health/app/livez HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    for i in 0..50 {
        if Instant::now() >= deadline
            || slow
                .write_all(format!("x-{i}: 1\r\n").as_bytes())
                .await
                .is_err()
        {
            break;
        }
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(200), slow.read(&mut buf)).await
        {
            answer.extend_from_slice(&buf[..n]);
            if n == 0 || answer.ends_with(b"\r\n\r\n") {
                break;
            }
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 408"),
        "the slow probe client: {answer:?}"
    );
    assert!(counter(d.admin(), "header_timeout", "probe").await >= 1);
    // The listener still answers probes.
    assert_eq!(probe_get().await, 200);
}

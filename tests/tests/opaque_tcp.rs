//! Opaque TCP into a sidecar: authorized once on identity and port, spliced to the app, and
//! closed when a new policy denies it; a rule that names HTTP-only fields never allows TCP.
//! The preamble reaches only a port B's registry entry declares `tcp`, never B's own
//! listeners (admin, outbound) or an undeclared loopback port, whatever the policy allows.

// Helpers outside #[test] functions fail the test by panicking, like the tests themselves.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use trustmesh_certs::TrustBundle;
use trustmesh_e2e::client::admin_get;
use trustmesh_e2e::mesh::{Mesh, NAMESPACE};
use trustmesh_e2e::mtls::{client_with_cert, issue, mesh_ca};
use trustmesh_e2e::policies::{spiffe_id, write_policies, ServiceEntry};

/// An echo server on loopback; returns its port.
async fn echo_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    port
}

/// A loopback server that greets every connection with `hello` and counts them.
async fn counting_server() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let _ = s.write_all(b"hello").await;
        }
    });
    (port, accepted)
}

/// Rewrites the registry with B's extra `(port, protocol)` declarations and waits until B
/// has the new snapshot.
async fn declare_b_ports(mesh: &Mesh, ports: &[(u16, &'static str)]) {
    let v0 = version(mesh).await;
    let mut b = ServiceEntry::new("b", NAMESPACE, mesh.b.inbound());
    for &(port, protocol) in ports {
        b = b.with_port(port, protocol);
    }
    let a = ServiceEntry::new("a", NAMESPACE, mesh.a.inbound());
    write_policies(mesh.cp.policies(), &[a, b]).unwrap();
    wait_for_version_change(mesh, &v0).await;
}

/// Sends `msg` and returns whatever comes back first, or `None` when the connection is closed
/// without a byte.
async fn answer(tls: &mut TlsStream<tokio::net::TcpStream>, msg: &[u8]) -> Option<Vec<u8>> {
    if tls.write_all(msg).await.is_err() {
        return None;
    }
    let mut buf = vec![0u8; 256];
    match tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => None,
        Ok(Ok(n)) => Some(buf[..n].to_vec()),
        Err(_) => panic!("neither answered nor closed within 5 s"),
    }
}

async fn open(mesh: &Mesh, port: u16) -> TlsStream<tokio::net::TcpStream> {
    let ca = mesh_ca(&mesh.cp).unwrap();
    let (cert, key) = issue(
        &ca,
        &spiffe_id(NAMESPACE, "a"),
        Duration::from_secs(3600),
        SystemTime::now(),
    )
    .unwrap();
    let bundle = TrustBundle::from_pem(&mesh.cp.trust_bundle_pem().unwrap()).unwrap();
    let config = client_with_cert(&bundle, &cert, &key, &spiffe_id(NAMESPACE, "b")).unwrap();
    let mut config = (*config).clone();
    config.alpn_protocols = vec![b"trustmesh-tcp".to_vec()];
    let tcp = tokio::net::TcpStream::connect(mesh.b.inbound())
        .await
        .unwrap();
    let name = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into());
    let mut tls = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"trustmesh-tcp"[..]));
    tls.write_all(&port.to_be_bytes()).await.unwrap();
    tls
}

/// Sends `msg` and expects it echoed (true), or the connection closed (false).
async fn echoes(tls: &mut TlsStream<tokio::net::TcpStream>, msg: &[u8]) -> bool {
    if tls.write_all(msg).await.is_err() {
        return false;
    }
    let mut buf = vec![0u8; msg.len()];
    match tokio::time::timeout(Duration::from_secs(5), tls.read_exact(&mut buf)).await {
        Ok(Ok(_)) => buf == msg,
        Ok(Err(_)) => false,
        Err(_) => panic!("neither echoed nor closed within 5 s"),
    }
}

async fn wait_for_version_change(mesh: &Mesh, old: &str) {
    for _ in 0..200 {
        let config = admin_get(mesh.b.admin(), "/config")
            .await
            .unwrap()
            .json()
            .unwrap();
        if config["policy_version"].as_str() != Some(old) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("B never received the new policy version");
}

async fn version(mesh: &Mesh) -> String {
    let config = admin_get(mesh.b.admin(), "/config")
        .await
        .unwrap()
        .json()
        .unwrap();
    config["policy_version"].as_str().unwrap().to_string()
}

fn policy(action: &str, operation: &str) -> String {
    format!(
        "apiVersion: trustmesh.io/v1\nkind: AuthorizationPolicy\n\
         metadata: {{name: tcp-{}, namespace: test}}\n\
         spec:\n  selector: {{matchLabels: {{app: b}}}}\n  action: {action}\n  \
         rules:\n    - to: [{{operation: {operation}}}]\n",
        action.to_lowercase()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opaque_tcp_is_authorized_on_port_and_closed_when_a_new_policy_denies_it() {
    let mesh = Mesh::a_to_b("opaque-tcp").await.expect("mesh starts");
    let port = echo_server().await;
    declare_b_ports(&mesh, &[(port, "tcp")]).await;

    // Default allow: the connection is spliced to the app's port.
    let mut conn = open(&mesh, port).await;
    assert!(
        echoes(&mut conn, b"ping").await,
        "allowed connection echoes"
    );

    // A DENY on that port closes the open connection and refuses new ones.
    let v0 = version(&mesh).await;
    std::fs::write(
        mesh.cp.policies().join("tcp.yaml"),
        policy("DENY", &format!("{{ports: [\"{port}\"]}}")),
    )
    .unwrap();
    wait_for_version_change(&mesh, &v0).await;
    let mut closed = false;
    for _ in 0..50 {
        if !echoes(&mut conn, b"again").await {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(closed, "the open connection must be closed by the new DENY");
    let mut fresh = open(&mesh, port).await;
    assert!(
        !echoes(&mut fresh, b"new").await,
        "a new connection is refused"
    );

    // An ALLOW that names only HTTP fields never allows TCP (safer than Istio).
    let v1 = version(&mesh).await;
    std::fs::write(
        mesh.cp.policies().join("tcp.yaml"),
        policy("ALLOW", "{methods: [\"GET\"]}"),
    )
    .unwrap();
    wait_for_version_change(&mesh, &v1).await;
    let mut http_only = open(&mesh, port).await;
    assert!(
        !echoes(&mut http_only, b"x").await,
        "an HTTP-only ALLOW does not allow TCP"
    );

    // An ALLOW on the port lets it through again.
    let v2 = version(&mesh).await;
    std::fs::write(
        mesh.cp.policies().join("tcp.yaml"),
        policy("ALLOW", &format!("{{ports: [\"{port}\"]}}")),
    )
    .unwrap();
    wait_for_version_change(&mesh, &v2).await;
    let mut ok = open(&mesh, port).await;
    assert!(
        echoes(&mut ok, b"pong").await,
        "the ALLOW on the port lets it pass"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opaque_tcp_reaches_only_declared_tcp_ports_never_the_sidecars_own_listeners() {
    let mut mesh = Mesh::a_to_b("opaque-tcp-pivot").await.expect("mesh starts");
    let echo = echo_server().await;
    let (undeclared, undeclared_hits) = counting_server().await;
    let (http_port, http_hits) = counting_server().await;
    let admin = mesh.b.admin().port();
    let outbound = mesh.b.outbound().port();
    // B declares the echo port tcp, another port http, and (a registry mistake) its own admin
    // port tcp; A is allowed by a `from`-only rule, which matches at the TCP level.
    declare_b_ports(&mesh, &[(echo, "tcp"), (http_port, "http"), (admin, "tcp")]).await;
    let v0 = version(&mesh).await;
    std::fs::write(
        mesh.cp.policies().join("from-a.yaml"),
        "apiVersion: trustmesh.io/v1\nkind: AuthorizationPolicy\n\
         metadata: {name: from-a, namespace: test}\n\
         spec:\n  selector: {matchLabels: {app: b}}\n  action: ALLOW\n  \
         rules:\n    - from: [{source: {principals: [cluster.local/ns/test/sa/a]}}]\n",
    )
    .unwrap();
    wait_for_version_change(&mesh, &v0).await;

    let mut ok = open(&mesh, echo).await;
    assert!(echoes(&mut ok, b"ping").await, "a declared tcp port works");

    let mut reached = Vec::new();
    let get = b"GET /config HTTP/1.1\r\nHost: localhost\r\n\r\n";
    for (what, port, msg) in [
        (
            "B's admin listener (declared tcp by mistake)",
            admin,
            &get[..],
        ),
        (
            "B's outbound listener",
            outbound,
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        ),
        ("an undeclared loopback port", undeclared, b"x"),
        ("a port declared http", http_port, b"x"),
    ] {
        let mut conn = open(&mesh, port).await;
        if let Some(got) = answer(&mut conn, msg).await {
            let got = String::from_utf8_lossy(&got);
            reached.push(format!("{what} (port {port}) answered {got:?}"));
        }
    }
    for (what, hits) in [
        ("the undeclared port", &undeclared_hits),
        ("the http port", &http_hits),
    ] {
        let n = hits.load(Ordering::SeqCst);
        if n > 0 {
            reached.push(format!("{what} accepted {n} connection(s)"));
        }
    }
    assert!(
        reached.is_empty(),
        "opaque TCP reached what it must not:\n{}",
        reached.join("\n")
    );
    // Nothing went out through B's outbound listener as B's identity.
    let outbound_lines: Vec<_> = mesh
        .b
        .access_log()
        .into_iter()
        .filter(|l| l["direction"] == "outbound")
        .collect();
    assert!(outbound_lines.is_empty(), "{outbound_lines:?}");
}

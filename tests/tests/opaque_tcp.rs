//! Opaque TCP into a sidecar: authorized once on identity and port, spliced to the app, and
//! closed when a new policy denies it; a rule that names HTTP-only fields never allows TCP.

// Helpers outside #[test] functions fail the test by panicking, like the tests themselves.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
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
use trustmesh_e2e::policies::spiffe_id;

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
    let _ = SocketAddr::from(([127, 0, 0, 1], port));

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

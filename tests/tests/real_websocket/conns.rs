//! Connections the `--max-connections` tests open by hand: a plain `GET` to an outbound
//! listener, and a mesh workload's HTTP/1.1 WebSocket upgrade over mTLS to an inbound one.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use trustmesh_certs::TrustBundle;
use trustmesh_e2e::mesh::{Mesh, NAMESPACE};
use trustmesh_e2e::mtls::{client_with_cert, issue, mesh_ca, Knock};
use trustmesh_e2e::policies::spiffe_id;

/// A plain `GET` for b.test on a fresh connection to `addr`: what came back before the
/// connection closed (within 10 s); empty when it was closed unanswered.
pub async fn raw_get(addr: SocketAddr) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let req = "GET /plain HTTP/1.1\r\nHost: b.test\r\nConnection: close\r\n\r\n";
    // A write into a connection the sidecar already closed may fail; the read says the rest.
    let _ = tcp.write_all(req.as_bytes()).await;
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "neither an answer nor a close within 10 s");
    String::from_utf8_lossy(&got).into_owned()
}

/// A mesh workload `sa` (a certificate from the mesh CA) calling B over HTTP/1.1.
pub fn caller(mesh: &Mesh, sa: &str) -> Arc<ClientConfig> {
    let ca = mesh_ca(&mesh.cp).unwrap();
    let id = spiffe_id(NAMESPACE, sa);
    let (cert, key) = issue(&ca, &id, Duration::from_secs(3600), SystemTime::now()).unwrap();
    let bundle = TrustBundle::from_pem(&mesh.cp.trust_bundle_pem().unwrap()).unwrap();
    let config = client_with_cert(&bundle, &cert, &key, &spiffe_id(NAMESPACE, "b")).unwrap();
    let mut config = (*config).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// Opens a WebSocket at `path` over mTLS to the inbound listener `addr`: the stream, once
/// answered `101` (the tunnel is open while it lives).
pub async fn mtls_upgrade(
    config: Arc<ClientConfig>,
    addr: SocketAddr,
    path: &str,
) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into());
    let mut tls = TlsConnector::from(config).connect(name, tcp).await.unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: b.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    tls.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), tls.read(&mut byte))
            .await
            .expect("an answer within 10 s")
            .unwrap();
        assert_eq!(n, 1, "closed mid-head: {}", String::from_utf8_lossy(&head));
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    tls
}

/// [`trustmesh_e2e::mtls::knock`], its error a failure of the test.
pub async fn knock(config: Arc<ClientConfig>, addr: SocketAddr) -> Knock {
    trustmesh_e2e::mtls::knock(config, addr).await.unwrap()
}

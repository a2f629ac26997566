//! The inbound stack built from its config, with an app on loopback and a peer sidecar's
//! mTLS over an in-memory stream: no process, no listener of its own.

use std::sync::Arc;

use rustls::pki_types::ServerName;
use trustmesh_certs::TrustBundle;
use trustmesh_policies::Protocol;

use super::{Config, Inbound};
use crate::testing::{self, get, id, read};

/// An inbound sidecar for `api` in front of a loopback app, and an h2 client presenting
/// `caller`'s certificate to it over a duplex stream.
async fn connect(
    caller: &str,
) -> hyper::client::conn::http2::SendRequest<http_body_util::Full<bytes::Bytes>> {
    connect_to(caller, testing::app().await, Vec::new()).await
}

/// [`connect`] to an inbound sidecar in front of `app`, with `registry` in its snapshot.
async fn connect_to(
    caller: &str,
    app: std::net::SocketAddr,
    registry: Vec<trustmesh_policies::ServiceEntry>,
) -> hyper::client::conn::http2::SendRequest<http_body_util::Full<bytes::Bytes>> {
    let ca = testing::ca();
    let args = testing::args("api", app);
    let config = Config::from_args(&args);
    let shared = testing::shared(&ca, args, registry, testing::allow_hello(&id("web")));
    let inbound = Inbound::new(shared, config);
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let addr = "10.1.2.3:40000".parse().unwrap();
    tokio::spawn(inbound.connection_io(server_io, addr, None, None));
    let bundle = TrustBundle::from_pem(ca.cert_pem()).unwrap();
    let resolver = testing::resolver(&ca, &id(caller));
    let tls = trustmesh_certs::tls::sidecar_client_config(&bundle, resolver, id("api")).unwrap();
    let name = ServerName::try_from("api.prod.svc.cluster.local").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(name, client_io)
        .await
        .unwrap();
    testing::h2_client(tls).await
}

#[tokio::test]
async fn an_allowed_request_reaches_the_app_with_the_verified_identity() {
    let mut client = connect("web").await;
    let spoofed = [(
        "x-trustmesh-peer-identity",
        "spiffe://cluster.local/ns/prod/sa/admin",
    )];
    let resp = client
        .send_request(get("https://api/hello/x?q=1", &spoofed))
        .await
        .unwrap();
    let (status, _, body) = read(resp).await;
    assert_eq!(status, 200, "{body}");
    let web = id("web");
    assert_eq!(
        body,
        format!("GET /hello/x?q=1\npeer={web}\nhost=\nversion=HTTP/2.0\n")
    );
}

#[tokio::test]
async fn a_denied_request_gets_403_and_a_grpc_caller_permission_denied() {
    let mut client = connect("web").await;
    let resp = client
        .send_request(get("https://api/admin", &[]))
        .await
        .unwrap();
    let (status, headers, body) = read(resp).await;
    assert_eq!(status, 403);
    assert_eq!(headers["content-type"], "text/plain; charset=utf-8");
    assert_eq!(body, "RBAC: access denied");

    let grpc = [("content-type", "application/grpc")];
    let resp = client
        .send_request(get("https://api/admin", &grpc))
        .await
        .unwrap();
    let (status, headers, body) = read(resp).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/grpc");
    assert_eq!(headers["grpc-status"], "7");
    assert_eq!(headers["grpc-message"], "RBAC: access denied");
    assert_eq!(body, "");
}

#[tokio::test]
async fn a_caller_no_policy_allows_is_denied_and_a_bad_path_refused() {
    let mut client = connect("batch").await;
    let resp = client
        .send_request(get("https://api/hello", &[]))
        .await
        .unwrap();
    assert_eq!(read(resp).await.0, 403);

    let mut client = connect("web").await;
    let resp = client
        .send_request(get("https://api/hello/%2e%2e/admin%2Fx", &[]))
        .await
        .unwrap();
    let (status, _, body) = read(resp).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.starts_with("trustmesh: bad request path: "), "{body}");

    let grpc = [("content-type", "application/grpc+proto")];
    let resp = client
        .send_request(get("https://api/hello/%2e%2e/admin%2Fx", &grpc))
        .await
        .unwrap();
    let (status, headers, _) = read(resp).await;
    assert_eq!(status, 200);
    assert_eq!(headers["grpc-status"], "13");
}

#[tokio::test]
async fn the_app_being_down_is_a_502_and_unavailable_for_grpc() {
    let ca = testing::ca();
    // A port nothing listens on: bound, then released.
    let gone = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = gone.local_addr().unwrap();
    drop(gone);
    let args = testing::args("api", app);
    let config = Config::from_args(&args);
    let shared = testing::shared(&ca, args, Vec::new(), testing::allow_hello(&id("web")));
    let inbound = Inbound::new(shared, config);
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    tokio::spawn(inbound.connection_io(server_io, "10.1.2.3:1".parse().unwrap(), None, None));
    let bundle = TrustBundle::from_pem(ca.cert_pem()).unwrap();
    let resolver = testing::resolver(&ca, &id("web"));
    let tls = trustmesh_certs::tls::sidecar_client_config(&bundle, resolver, id("api")).unwrap();
    let name = ServerName::try_from("api.prod.svc.cluster.local").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(name, client_io)
        .await
        .unwrap();
    let mut client = testing::h2_client(tls).await;
    let resp = client
        .send_request(get("https://api/hello", &[]))
        .await
        .unwrap();
    let (status, _, body) = read(resp).await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body.starts_with("trustmesh: cannot connect to the app at "),
        "{body}"
    );
    let grpc = [("content-type", "application/grpc")];
    let resp = client
        .send_request(get("https://api/hello", &grpc))
        .await
        .unwrap();
    assert_eq!(read(resp).await.1["grpc-status"], "14");
}

/// The registry entry of `api` declaring `port` as `protocol`.
fn api_declaring(port: u16, protocol: Protocol) -> Vec<trustmesh_policies::ServiceEntry> {
    let mut api = testing::service("api", "10.0.0.1:15006".parse().unwrap());
    api.ports = vec![trustmesh_policies::ServicePort { port, protocol }];
    vec![api]
}

#[tokio::test]
async fn an_h2_caller_reaches_an_app_port_declared_http_over_http1_with_its_authority_as_host() {
    let app = testing::app().await;
    let mut client = connect_to("web", app, api_declaring(app.port(), Protocol::Http)).await;
    let resp = client
        .send_request(get("https://api.test/hello", &[]))
        .await
        .unwrap();
    let (status, _, body) = read(resp).await;
    assert_eq!(status, 200, "{body}");
    let web = id("web");
    assert_eq!(
        body,
        format!("GET /hello\npeer={web}\nhost=api.test\nversion=HTTP/1.1\n")
    );
}

#[tokio::test]
async fn a_preflight_is_answered_once_authorized_and_never_reaches_the_app() {
    // The app is down: a preflight that reached it would get 502.
    let gone = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = gone.local_addr().unwrap();
    drop(gone);
    let mut client = connect_to("web", app, Vec::new()).await;
    let preflight = [
        ("x-trustmesh-expect", "preflight"),
        ("expect", "100-continue"),
    ];
    let resp = client
        .send_request(get("https://api/hello/upload", &preflight))
        .await
        .unwrap();
    let (status, headers, body) = read(resp).await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(headers["x-trustmesh-expect"], "continue");
    let resp = client
        .send_request(get("https://api/admin/upload", &preflight))
        .await
        .unwrap();
    let (status, headers, body) = read(resp).await;
    assert_eq!(status, 403, "{body}");
    assert!(!headers.contains_key("x-trustmesh-expect"));
}

/// An app on a bare socket that answers each request with its request line and `Host` as it
/// read them.
async fn raw_app() -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match tcp.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_string();
                    buf.drain(..end + 4);
                    let mut lines = head.split("\r\n");
                    let line = lines.next().unwrap_or_default();
                    let hosts: Vec<_> = lines
                        .filter_map(|l| l.split_once(':'))
                        .filter(|(k, _)| k.eq_ignore_ascii_case("host"))
                        .map(|(_, v)| v.trim())
                        .collect();
                    let body = format!("{line}\nhost={}\n", hosts.join(","));
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if tcp.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn an_http1_app_gets_the_origin_form_and_the_callers_authority_or_its_own_address_as_host() {
    let app = raw_app().await;
    let mut client = connect_to("web", app, api_declaring(app.port(), Protocol::Http)).await;
    let resp = client
        .send_request(get("https://api.test/hello/x?q=1", &[]))
        .await
        .unwrap();
    let (status, _, body) = read(resp).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, "GET /hello/x?q=1 HTTP/1.1\nhost=api.test\n");
    // No `:authority` and no `Host`: the app's address, as hyper-util's client made it.
    let resp = client.send_request(get("/hello", &[])).await.unwrap();
    let (status, _, body) = read(resp).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, format!("GET /hello HTTP/1.1\nhost={app}\n"));
}

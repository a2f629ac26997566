//! The inbound sidecar authorizes the request the app will receive, never the one the caller
//! wrote: a policy on `x-trustmesh-peer-identity` sees the verified identity (a spoofed one
//! cannot satisfy it, and a DENY on it cannot be dodged), a hop-by-hop header the app never
//! gets cannot satisfy a policy, a lower-case method, two `Host`s or userinfo get 400 and
//! `CONNECT` 405 before any policy, and request trailers lose trustmesh's own and hop-by-hop
//! fields. The callers are a real A sidecar and, for what an honest sidecar would never send,
//! raw mTLS clients with certificates minted by the mesh CA.

// Helpers outside #[test] functions fail the test by panicking, like the tests themselves.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, Method, Request};
use http_body::Frame;
use http_body_util::{Empty, StreamBody};
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use trustmesh_certs::TrustBundle;
use trustmesh_e2e::client::{admin_get, collect, http1_get, send_h2_on, Resp};
use trustmesh_e2e::mesh::{Mesh, NAMESPACE};
use trustmesh_e2e::mtls::{client_with_cert, issue, mesh_ca};
use trustmesh_e2e::policies::spiffe_id;

/// A client of the mesh as `sa` (a certificate from the mesh CA), speaking h2 to B.
fn caller(mesh: &Mesh, sa: &str) -> Arc<ClientConfig> {
    let ca = mesh_ca(&mesh.cp).unwrap();
    let (cert, key) = issue(
        &ca,
        &spiffe_id(NAMESPACE, sa),
        Duration::from_secs(3600),
        SystemTime::now(),
    )
    .unwrap();
    let bundle = TrustBundle::from_pem(&mesh.cp.trust_bundle_pem().unwrap()).unwrap();
    client_with_cert(&bundle, &cert, &key, &spiffe_id(NAMESPACE, "b")).unwrap()
}

async fn tls(
    config: Arc<ClientConfig>,
    addr: SocketAddr,
    alpn: &[u8],
) -> impl AsyncRead + AsyncWrite + Unpin + Send + 'static {
    let mut config = (*config).clone();
    config.alpn_protocols = vec![alpn.to_vec()];
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into());
    TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap()
}

/// Writes `request` as is and reads one response (head and `content-length` body), or
/// until the server closes (bounded to 10 s).
async fn raw<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, request: &str) -> String {
    s.write_all(request.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    while !complete(&got) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// Whether `got` holds a whole response with a `content-length` body.
fn complete(got: &[u8]) -> bool {
    let text = String::from_utf8_lossy(got);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    head.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .is_some_and(|len| body.len() >= len)
}

/// Raw HTTP/1.1 over mTLS to B's inbound as `config`'s identity.
async fn raw_mtls(mesh: &Mesh, config: &Arc<ClientConfig>, request: &str) -> String {
    raw(
        tls(config.clone(), mesh.b.inbound(), b"http/1.1").await,
        request,
    )
    .await
}

/// Raw HTTP/1.1 to A's outbound, as A's app.
async fn raw_outbound(mesh: &Mesh, request: &str) -> String {
    raw(
        TcpStream::connect(mesh.a.outbound()).await.unwrap(),
        request,
    )
    .await
}

/// An h2 request over mTLS to B's inbound as `config`'s identity.
async fn h2_mtls<B>(mesh: &Mesh, config: &Arc<ClientConfig>, req: Request<B>) -> Resp
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let io = tls(config.clone(), mesh.b.inbound(), b"h2").await;
    collect(send_h2_on(io, req).await.unwrap()).await.unwrap()
}

fn status(answer: &str) -> &str {
    answer.get(9..12).unwrap_or(answer)
}

/// The paths B's app has seen.
fn app_paths(mesh: &Mesh) -> Vec<String> {
    mesh.app_b
        .requests()
        .iter()
        .filter_map(|r| r["path"].as_str().map(str::to_string))
        .collect()
}

async fn policy_version(mesh: &Mesh) -> Value {
    admin_get(mesh.b.admin(), "/config")
        .await
        .unwrap()
        .json()
        .unwrap()["policy_version"]
        .clone()
}

/// Writes `yaml` into the policy folder and waits (up to 10 s) until B holds a new version.
async fn put_policy(mesh: &Mesh, yaml: &str) {
    let before = policy_version(mesh).await;
    std::fs::write(mesh.dir.path().join("policies/authz.yaml"), yaml).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while policy_version(mesh).await == before {
        assert!(Instant::now() < deadline, "the policy never reached B");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_judge_headers_as_the_app_receives_them() {
    let mesh = Mesh::a_to_b("authz-headers").await.expect("mesh starts");
    let (id_a, id_admin) = (spiffe_id(NAMESPACE, "a"), spiffe_id(NAMESPACE, "admin"));
    put_policy(
        &mesh,
        &format!(
            "apiVersion: trustmesh.io/v1\nkind: AuthorizationPolicy\n\
             metadata: {{name: deny-a, namespace: {NAMESPACE}}}\n\
             spec:\n  selector: {{matchLabels: {{app: b}}}}\n  action: DENY\n  rules:\n\
             \x20 - to: [{{operation: {{paths: [\"/deny-a\"]}}}}]\n\
             \x20   from: [{{source: {{principals: [\"{id_a}\"]}}}}]\n\
             ---\n\
             apiVersion: trustmesh.io/v1\nkind: AuthorizationPolicy\n\
             metadata: {{name: allow-b, namespace: {NAMESPACE}}}\n\
             spec:\n  selector: {{matchLabels: {{app: b}}}}\n  action: ALLOW\n  rules:\n\
             \x20 - to: [{{operation: {{notPaths: [\"/admin\", \"/role\"]}}}}]\n\
             \x20 - to: [{{operation: {{paths: [\"/admin\"]}}}}]\n\
             \x20   from: [{{source: {{principals: [\"{id_admin}\"]}}}}]\n\
             \x20 - to: [{{operation: {{paths: [\"/role\"]}}}}]\n\
             \x20   when: [{{key: \"request.headers[x-role]\", values: [reader]}}]\n"
        ),
    )
    .await;

    // (A condition on `x-trustmesh-*` headers is a validation error; policies name callers by
    // principal.) A DENY on A holds whatever identity header A's app or A itself writes: the
    // decision and the app see the verified identity only.
    let r = http1_get(mesh.a.outbound(), "b.test", "/deny-a", &[])
        .await
        .unwrap();
    assert_eq!(r.status, 403, "{}", r.text());
    let spoof = [(
        "x-trustmesh-peer-identity",
        "spiffe://cluster.local/ns/test/sa/x",
    )];
    let r = http1_get(mesh.a.outbound(), "b.test", "/deny-a", &spoof)
        .await
        .unwrap();
    assert_eq!(r.status, 403, "{}", r.text());
    let as_a = caller(&mesh, "a");
    let req = Request::get("http://b.test/deny-a")
        .header(
            "x-trustmesh-peer-identity",
            "spiffe://cluster.local/ns/test/sa/x",
        )
        .body(Empty::<Bytes>::new())
        .unwrap();
    let r = h2_mtls(&mesh, &as_a, req).await;
    assert_eq!(
        r.status,
        403,
        "a peer's own spoofed header dodged the DENY: {}",
        r.text()
    );

    // A spoofed identity header cannot get a caller past an ALLOW for another principal; the
    // real identity does, and the app sees only the verified one.
    let req = Request::get("http://b.test/admin")
        .header("x-trustmesh-peer-identity", id_admin.as_str())
        .body(Empty::<Bytes>::new())
        .unwrap();
    let r = h2_mtls(&mesh, &as_a, req).await;
    assert_eq!(
        r.status,
        403,
        "a spoofed identity header was let in: {}",
        r.text()
    );
    let as_admin = caller(&mesh, "admin");
    let req = Request::get("http://b.test/admin")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let r = h2_mtls(&mesh, &as_admin, req).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json().unwrap()["peer_identity"],
        serde_json::json!([id_admin])
    );

    // A header the caller marks hop-by-hop never reaches the app, so it cannot satisfy a
    // policy either; sent end to end, the same header does.
    let hop =
        "GET /role HTTP/1.1\r\nHost: b.test\r\nx-role: reader\r\nConnection: close, x-role\r\n\r\n";
    let answer = raw_mtls(&mesh, &as_a, hop).await;
    assert_eq!(status(&answer), "403", "{answer}");
    let end_to_end =
        "GET /role HTTP/1.1\r\nHost: b.test\r\nx-role: reader\r\nConnection: close\r\n\r\n";
    let answer = raw_mtls(&mesh, &as_a, end_to_end).await;
    assert_eq!(status(&answer), "200", "{answer}");

    assert_eq!(
        app_paths(&mesh),
        ["/admin", "/role"],
        "{:?}",
        mesh.app_b.requests()
    );
    let seen = mesh.app_b.requests();
    assert_eq!(seen[1]["headers"]["x-role"], serde_json::json!(["reader"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_heads_are_refused_before_authorization() {
    let mesh = Mesh::a_to_b("authz-heads").await.expect("mesh starts");
    put_policy(
        &mesh,
        &format!(
            "apiVersion: trustmesh.io/v1\nkind: AuthorizationPolicy\n\
             metadata: {{name: no-delete, namespace: {NAMESPACE}}}\n\
             spec:\n  selector: {{matchLabels: {{app: b}}}}\n  action: DENY\n  rules:\n\
             \x20 - to: [{{operation: {{methods: [DELETE], paths: [\"/items/*\"]}}}}]\n"
        ),
    )
    .await;
    let as_a = caller(&mesh, "a");
    let r = raw_outbound(
        &mesh,
        "DELETE /items/1 HTTP/1.1\r\nHost: b.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status(&r), "403", "the DENY holds for DELETE: {r}");

    // A lower-case method cannot slip past the DENY on DELETE: 400, from either sidecar.
    for method in ["delete", "Delete"] {
        let req =
            format!("{method} /items/1 HTTP/1.1\r\nHost: b.test\r\nConnection: close\r\n\r\n");
        let r = raw_outbound(&mesh, &req).await;
        assert_eq!(status(&r), "400", "{method} via A: {r}");
        let r = raw_mtls(&mesh, &as_a, &req).await;
        assert_eq!(status(&r), "400", "{method} to B over HTTP/1.1: {r}");
    }
    let req = Request::builder()
        .method(Method::from_bytes(b"delete").unwrap())
        .uri("http://b.test/items/1")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let r = h2_mtls(&mesh, &as_a, req).await;
    assert_eq!(r.status, 400, "delete to B over h2: {}", r.text());

    // Two Host headers, and userinfo in Host: 400.
    let two = "GET /two HTTP/1.1\r\nHost: b.test\r\nHost: a.test\r\nConnection: close\r\n\r\n";
    assert_eq!(status(&raw_outbound(&mesh, two).await), "400");
    assert_eq!(status(&raw_mtls(&mesh, &as_a, two).await), "400");
    let userinfo = "GET /userinfo HTTP/1.1\r\nHost: x@b.test\r\nConnection: close\r\n\r\n";
    assert_eq!(status(&raw_outbound(&mesh, userinfo).await), "400");
    assert_eq!(status(&raw_mtls(&mesh, &as_a, userinfo).await), "400");

    // CONNECT into the inbound sidecar: 405.
    let connect = "CONNECT b.test:80 HTTP/1.1\r\nHost: b.test:80\r\n\r\n";
    let r = raw_mtls(&mesh, &as_a, connect).await;
    assert_eq!(status(&r), "405", "{r}");

    assert!(app_paths(&mesh).is_empty(), "{:?}", mesh.app_b.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_trailers_lose_trustmesh_and_hop_by_hop_fields() {
    let mesh = Mesh::a_to_b("authz-trailers").await.expect("mesh starts");
    let mut trailers = HeaderMap::new();
    for (k, v) in [
        (
            "x-trustmesh-peer-identity",
            "spiffe://cluster.local/ns/test/sa/forged",
        ),
        ("x-trustmesh-orig-proto", "HTTP/1.1"),
        // h2 has no hop-by-hop fields (RFC 9113 §8.2.2); a framing or routing field then.
        ("host", "evil.test"),
        ("x-checksum", "kept"),
    ] {
        trailers.insert(k, v.parse().unwrap());
    }
    let frames: Vec<Result<Frame<Bytes>, Infallible>> = vec![
        Ok(Frame::data(Bytes::from_static(b"hello"))),
        Ok(Frame::trailers(trailers)),
    ];
    let req = Request::post("http://b.test/upload")
        .body(StreamBody::new(futures_util::stream::iter(frames)))
        .unwrap();
    let r = h2_mtls(&mesh, &caller(&mesh, "a"), req).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = r.json().unwrap();
    assert_eq!(seen["body_bytes"], 5);
    assert_eq!(
        seen["trailers"],
        serde_json::json!({"x-checksum": ["kept"]}),
        "the app got trailers it must never see: {seen}"
    );
}

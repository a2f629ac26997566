//! The outbound stack built from its config, the app's HTTP/1.1 over an in-memory stream,
//! carried over real mTLS on loopback to an inbound stack in front of an app: no process.

use std::sync::Arc;

use super::{Config, Outbound};
use crate::inbound::{self, Inbound};
use crate::testing::{self, get, id, read};

/// Sidecar `web`'s outbound stack, with `api`'s inbound sidecar on loopback in the registry,
/// and `web`'s state.
async fn stack() -> (Arc<Outbound>, Arc<crate::state::Shared>) {
    let ca = testing::ca();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let registry = vec![testing::service("api", listener.local_addr().unwrap())];
    let api_app = testing::app().await;
    let api_args = testing::args("api", api_app);
    let api_config = inbound::Config::from_args(&api_args);
    let api = testing::shared(
        &ca,
        api_args,
        registry.clone(),
        testing::allow_hello(&id("web")),
    );
    tokio::spawn(Inbound::new(api, api_config).serve(listener));

    let web_args = testing::args("web", "127.0.0.1:1".parse().unwrap());
    let config = Config::from_args(&web_args);
    let web = testing::shared(&ca, web_args, registry, serde_json::json!([]));
    (Outbound::new(Arc::clone(&web), config), web)
}

/// An HTTP/1.1 client of `outbound`, as the app would be.
async fn client_of(
    outbound: &Arc<Outbound>,
) -> hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>> {
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    tokio::spawn(outbound.clone().serve_http(server_io, None, None));
    testing::h1_client(client_io).await
}

/// [`stack`] and one HTTP/1.1 client of it.
async fn app_client() -> hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>
{
    client_of(&stack().await.0).await
}

#[tokio::test]
async fn a_request_for_a_service_reaches_its_app_as_this_identity() {
    let mut client = app_client().await;
    let spoofed = [
        ("host", "api"),
        ("x-trustmesh-peer-identity", "spiffe://evil/ns/x/sa/y"),
    ];
    let resp = client
        .send_request(get("/hello?x=1", &spoofed))
        .await
        .unwrap();
    let (status, _, body) = read(resp).await;
    assert_eq!(status, 200, "{body}");
    let web = id("web");
    assert_eq!(
        body,
        format!("GET /hello?x=1\npeer={web}\nhost=api\nversion=HTTP/1.1\n")
    );
    // The callee's policy still decides: the same connection, a path it does not allow.
    let resp = client
        .send_request(get("/admin", &[("host", "api.prod")]))
        .await
        .unwrap();
    let (status, _, body) = read(resp).await;
    assert_eq!(
        (status.as_u16(), body.as_str()),
        (403, "RBAC: access denied")
    );
}

#[tokio::test]
async fn an_unknown_host_is_answered_here_in_http_or_grpc_terms() {
    let mut client = app_client().await;
    let resp = client
        .send_request(get("/x", &[("host", "nope")]))
        .await
        .unwrap();
    let (status, headers, body) = read(resp).await;
    assert_eq!(status, 404);
    assert_eq!(headers["content-type"], "text/plain; charset=utf-8");
    assert!(
        body.starts_with("trustmesh: no service \"nope\" in the mesh registry"),
        "{body}"
    );

    let grpc = [("host", "nope"), ("content-type", "application/grpc")];
    let resp = client
        .send_request(get("/pkg.Svc/Call", &grpc))
        .await
        .unwrap();
    let (status, headers, body) = read(resp).await;
    assert_eq!(status, 200);
    assert_eq!(headers["grpc-status"], "12");
    assert!(
        headers["grpc-message"]
            .to_str()
            .unwrap()
            .starts_with("trustmesh: no service \"nope\""),
        "{headers:?}"
    );
    assert_eq!(body, "");
}

#[tokio::test]
async fn a_request_without_host_or_with_a_bad_head_gets_400() {
    let mut client = app_client().await;
    let two_hosts = [("host", "api"), ("host", "other")];
    let resp = client
        .send_request(get("/hello", &two_hosts))
        .await
        .unwrap();
    let (status, _, body) = read(resp).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.starts_with("trustmesh: "), "{body}");
}

/// A TLS server with `api`'s certificate whose HTTP/2 connection refuses every stream
/// (`REFUSED_STREAM`, as a peer over its stream limit does); counts the refusals.
async fn refusing_peer(
    ca: &trustmesh_certs::CertificateAuthority,
) -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let bundle = trustmesh_certs::TrustBundle::from_pem(ca.cert_pem()).unwrap();
    let td = trustmesh_certs::TrustDomain::parse("cluster.local").unwrap();
    let resolver = testing::resolver(ca, &id("api"));
    let config = trustmesh_certs::tls::sidecar_server_config(&bundle, &td, resolver).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let refused = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = refused.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, count) = (acceptor.clone(), count.clone());
            tokio::spawn(async move {
                let tls = acceptor.accept(tcp).await.unwrap();
                let mut conn = h2::server::handshake(tls).await.unwrap();
                while let Some(Ok((_req, mut respond))) = conn.accept().await {
                    count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    respond.send_reset(h2::Reason::REFUSED_STREAM);
                }
            });
        }
    });
    (addr, refused)
}

/// `web`'s outbound stack, round robin over `api`'s endpoints `bad` (first) and a real
/// inbound sidecar; an HTTP/1.1 client of it, and `web`'s state (its metrics). `hop_http1`
/// off keeps its requests on the HTTP/2 hop (what a refused stream needs).
async fn client_with_a_bad_endpoint(
    ca: &trustmesh_certs::CertificateAuthority,
    bad: std::net::SocketAddr,
    hop_http1: bool,
) -> (
    hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>,
    Arc<crate::state::Shared>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut api_entry = testing::service("api", listener.local_addr().unwrap());
    api_entry.endpoints.insert(0, bad.to_string());
    let registry = vec![api_entry];
    let api_args = testing::args("api", testing::app().await);
    let api_config = inbound::Config::from_args(&api_args);
    let api = testing::shared(
        ca,
        api_args,
        registry.clone(),
        testing::allow_hello(&id("web")),
    );
    tokio::spawn(Inbound::new(api, api_config).serve(listener));
    let web_args = testing::args("web", "127.0.0.1:1".parse().unwrap());
    let mut config = Config::from_args(&web_args);
    config.balance.kind = super::balance::Kind::Rr;
    config.hop_http1 = hop_http1;
    let web = testing::shared(ca, web_args, registry, serde_json::json!([]));
    let outbound = Outbound::new(Arc::clone(&web), config);
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    tokio::spawn(outbound.serve_http(server_io, None, None));
    (testing::h1_client(client_io).await, web)
}

fn ejections(web: &crate::state::Shared, reason: &str) -> u64 {
    web.metrics
        .ejections
        .with_label_values(&["api.prod", reason])
        .get()
}

#[tokio::test]
async fn a_refused_connection_goes_to_the_next_endpoint_which_leaves_rotation() {
    let ca = testing::ca();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (mut client, web) = client_with_a_bad_endpoint(&ca, closed, true).await;
    for _ in 0..4 {
        let resp = client.send_request(get("/hello", &[("host", "api")])).await;
        let (status, _, body) = read(resp.unwrap()).await;
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(ejections(&web, "connect"), 1);
}

#[tokio::test]
async fn a_refused_stream_without_a_body_goes_to_the_next_endpoint() {
    let ca = testing::ca();
    let (refuser, refused) = refusing_peer(&ca).await;
    let (mut client, web) = client_with_a_bad_endpoint(&ca, refuser, false).await;
    // Round robin sends the first to the refusing peer: failed over, answered.
    let resp = client.send_request(get("/hello", &[("host", "api")])).await;
    let (status, _, body) = read(resp.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(refused.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(ejections(&web, "connect"), 1);
    // Out of rotation now: the next ones go straight to the other endpoint.
    for _ in 0..3 {
        let resp = client.send_request(get("/hello", &[("host", "api")])).await;
        assert_eq!(read(resp.unwrap()).await.0, 200);
    }
    assert_eq!(refused.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_refused_stream_with_a_body_hyper_took_is_answered_502() {
    let ca = testing::ca();
    let (refuser, refused) = refusing_peer(&ca).await;
    let (mut client, web) = client_with_a_bad_endpoint(&ca, refuser, false).await;
    let post = http::Request::post("/hello")
        .header("host", "api")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            b"once",
        )))
        .unwrap();
    let (status, _, body) = read(client.send_request(post).await.unwrap()).await;
    // The body was streamed into the refused stream: nothing is left to send elsewhere.
    assert_eq!(status, 502, "{body}");
    assert_eq!(refused.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(ejections(&web, "connect"), 0);
}

/// Many HTTP/1.1 clients at once: a few HTTP/1.1 connections between the sidecars, each taken
/// again once free (never one per request), and the requests beyond
/// [`super::hop::HTTP1_MAX_IN_FLIGHT`] in flight share one HTTP/2 connection.
#[tokio::test]
async fn concurrent_http1_requests_share_a_few_connections_then_http2() {
    let (outbound, web) = stack().await;
    let (clients, each) = (64, 20);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let mut client = client_of(&outbound).await;
        tasks.push(tokio::spawn(async move {
            for i in 0..each {
                let path = format!("/hello/{c}/{i}");
                let resp = client.send_request(get(&path, &[("host", "api")])).await;
                let (status, _, body) = read(resp.unwrap()).await;
                assert_eq!(status, 200, "{body}");
            }
        }));
    }
    let all = futures_util::future::join_all(tasks);
    let done = tokio::time::timeout(std::time::Duration::from_secs(60), all).await;
    for t in done.expect("every request answered") {
        t.unwrap();
    }
    let http1 = web.metrics.upstream_http1_connections.get() as usize;
    let most = 2 * super::hop::HTTP1_MAX_IN_FLIGHT;
    assert!((1..=most).contains(&http1), "{http1} HTTP/1.1 connections");
    let h2 = web.metrics.upstream_connections.get() as usize - http1;
    assert_eq!(h2, 1, "one HTTP/2 connection");
}

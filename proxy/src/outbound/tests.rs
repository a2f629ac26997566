//! The outbound stack built from its config, the app's HTTP/1.1 over an in-memory stream,
//! carried over real mTLS on loopback to an inbound stack in front of an app: no process.

use std::sync::Arc;

use super::{Config, Outbound};
use crate::inbound::{self, Inbound};
use crate::testing::{self, get, id, read};

/// Sidecar `web`'s outbound stack, with `api`'s inbound sidecar on loopback in the registry,
/// and an HTTP/1.1 client of it as the app would be.
async fn app_client() -> hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>
{
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
    let outbound = Outbound::new(Arc::clone(&web), config);
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    tokio::spawn(outbound.serve_http(server_io, None, None));
    testing::h1_client(client_io).await
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

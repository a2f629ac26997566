//! The client against a real TLS listener on loopback with a control-plane certificate.

use std::convert::Infallible;
use std::time::SystemTime;

use hyper::body::Incoming;
use hyper::service::service_fn;
use tokio::net::TcpListener;
use trustmesh_certs::{control_plane_identity, CertificateAuthority, SpiffeId, TrustDomain};

use super::*;

const SECOND: Duration = Duration::from_secs(1);

fn td() -> TrustDomain {
    TrustDomain::parse("cluster.local").unwrap()
}

/// A TLS listener that serves `id`'s certificate and echoes the request's method, path,
/// `Authorization` and `Content-Type` headers and body, or sends `big` bytes for `/big`.
async fn server(ca: &CertificateAuthority, id: &SpiffeId) -> SocketAddr {
    let (issued, key) = ca
        .issue(
            id,
            &["localhost".into()],
            &[],
            3600 * SECOND,
            SystemTime::now(),
        )
        .unwrap();
    let cfg = trustmesh_certs::tls::control_plane_server_config(
        &ca.trust_bundle(),
        ca.trust_domain(),
        issued.chain,
        &key,
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = service_fn(|req: Request<Incoming>| async move {
                    let (parts, body) = req.into_parts();
                    let body = body
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    let text = if parts.uri.path() == "/big" {
                        "x".repeat(4096)
                    } else {
                        let h = |n: header::HeaderName| {
                            parts
                                .headers
                                .get(n)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("-")
                                .to_string()
                        };
                        format!(
                            "{} {} {} {} {} {}",
                            parts.method,
                            parts.uri,
                            h(header::HOST),
                            h(header::AUTHORIZATION),
                            h(header::CONTENT_TYPE),
                            String::from_utf8_lossy(&body)
                        )
                    };
                    Ok::<_, Infallible>(
                        http::Response::builder()
                            .status(StatusCode::ACCEPTED)
                            .body(Full::new(Bytes::from(text)))
                            .unwrap(),
                    )
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    addr
}

fn client(ca: &CertificateAuthority, expected: SpiffeId) -> Arc<rustls::ClientConfig> {
    Arc::new(
        trustmesh_certs::tls::control_plane_client_config(&ca.trust_bundle(), expected, None)
            .unwrap(),
    )
}

#[tokio::test]
async fn sends_the_call_and_returns_status_and_body() {
    let ca = CertificateAuthority::generate(&td(), SystemTime::now()).unwrap();
    let addr = server(&ca, &control_plane_identity(&td())).await;
    let tls = client(&ca, control_plane_identity(&td()));
    let call = Call {
        method: Method::POST,
        path: "/v1/certificates?x=1",
        bearer: Some("tok"),
        json: Some(Bytes::from_static(b"{\"csr\":1}")),
    };
    let target = Target::at(addr, "localhost");
    let answer = send(tls.clone(), &target, call, 1024, 10 * SECOND)
        .await
        .unwrap();
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    assert_eq!(
        answer.body,
        format!(
            "POST /v1/certificates?x=1 localhost:{} Bearer tok application/json {{\"csr\":1}}",
            addr.port()
        )
    );
    // By name too, resolved.
    let target = Target::named("localhost", addr.port());
    let (status, body) = get(tls, &target, "/v1/snapshot", 1024, 10 * SECOND)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::ACCEPTED);
    assert!(body.starts_with(b"GET /v1/snapshot localhost:"), "{body:?}");
    assert!(body.ends_with(b" - - "), "{body:?}");
}

#[tokio::test]
async fn an_answer_over_the_limit_is_an_error() {
    let ca = CertificateAuthority::generate(&td(), SystemTime::now()).unwrap();
    let addr = server(&ca, &control_plane_identity(&td())).await;
    let tls = client(&ca, control_plane_identity(&td()));
    let target = Target::at(addr, "localhost");
    let err = get(tls.clone(), &target, "/big", 1024, 10 * SECOND)
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("reading the answer"), "{err:#}");
    assert!(get(tls, &target, "/big", 4096, 10 * SECOND).await.is_ok());
}

#[tokio::test]
async fn a_server_with_another_identity_is_refused() {
    let ca = CertificateAuthority::generate(&td(), SystemTime::now()).unwrap();
    let impostor = SpiffeId::parse("spiffe://cluster.local/ns/default/sa/web").unwrap();
    let addr = server(&ca, &impostor).await;
    let tls = client(&ca, control_plane_identity(&td()));
    let err = get(tls, &Target::at(addr, "localhost"), "/", 1024, 10 * SECOND)
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("TLS to"), "{err:#}");
}

#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    let ca = CertificateAuthority::generate(&td(), SystemTime::now()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Accepts and holds the connection without a word.
    let held = tokio::spawn(async move { listener.accept().await.map(|(tcp, _)| tcp) });
    let tls = client(&ca, control_plane_identity(&td()));
    let timeout = Duration::from_millis(200);
    let err = get(tls, &Target::at(addr, "localhost"), "/", 1024, timeout)
        .await
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("did not answer within"),
        "{err:#}"
    );
    drop(held);
}

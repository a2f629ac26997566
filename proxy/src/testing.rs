//! Test fixtures for the stacks: a mesh CA, a sidecar's [`Shared`] with a mesh view built from
//! a snapshot (no control plane, no process), an in-process app on loopback, and clients that
//! speak to a stack over an in-memory stream; a stand-in control plane ([`control_plane`]).

pub mod control_plane;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use trustmesh_certs::{CertificateAuthority, RotatingResolver, SpiffeId, TrustDomain};
use trustmesh_policies::snapshot::Snapshot;
use trustmesh_policies::ServiceEntry;

use crate::app_ports::SidecarPorts;
use crate::state::{MeshView, Shared};

/// The mesh's CA.
pub fn ca() -> CertificateAuthority {
    let td = TrustDomain::parse("cluster.local").unwrap();
    CertificateAuthority::generate(&td, SystemTime::now()).unwrap()
}

/// `spiffe://cluster.local/ns/prod/sa/<sa>`.
pub fn id(sa: &str) -> SpiffeId {
    SpiffeId::parse(&format!("spiffe://cluster.local/ns/prod/sa/{sa}")).unwrap()
}

/// A registry entry for service `name` in `prod`, its sidecar at `endpoint`.
pub fn service(name: &str, endpoint: SocketAddr) -> ServiceEntry {
    ServiceEntry {
        name: name.to_string(),
        namespace: "prod".to_string(),
        labels: Default::default(),
        identity: id(name),
        endpoints: vec![endpoint.to_string()],
        ports: Vec::new(),
        endpoint_identities: Default::default(),
    }
}

/// A resolver holding a fresh certificate for `identity`.
pub fn resolver(ca: &CertificateAuthority, identity: &SpiffeId) -> Arc<RotatingResolver> {
    let (issued, key) = ca
        .issue(
            identity,
            &[],
            &[],
            Duration::from_secs(3600),
            SystemTime::now(),
        )
        .unwrap();
    let r = RotatingResolver::new();
    r.set(issued.chain, &key).unwrap();
    Arc::new(r)
}

/// The flags of sidecar `sa` fronting `app`, every other flag at its default.
pub fn args(sa: &str, app: SocketAddr) -> crate::config::Args {
    use clap::Parser as _;
    let identity = id(sa);
    let app = app.to_string();
    crate::config::Args::try_parse_from([
        "trustmesh-proxy",
        "--control-plane",
        "https://127.0.0.1:1",
        "--trust-bundle",
        "bundle.pem",
        "--token-file",
        "token",
        "--identity",
        identity.as_str(),
        "--app",
        app.as_str(),
        "--access-log",
        "off",
    ])
    .unwrap()
}

/// The state of sidecar `sa`, certified by `ca`, with a snapshot of `registry` and `policies`
/// (a JSON list of AuthorizationPolicy documents) in force.
pub fn shared(
    ca: &CertificateAuthority,
    args: crate::config::Args,
    registry: Vec<ServiceEntry>,
    policies: serde_json::Value,
) -> Arc<Shared> {
    let identity = args.identity.clone();
    let resolver = resolver(ca, &identity);
    let ports = SidecarPorts::new(&[], args.app).unwrap();
    let snapshot = Snapshot {
        version: "test".to_string(),
        identity: identity.clone(),
        mesh: Default::default(),
        registry: registry.into(),
        trust_bundle: ca.cert_pem().to_string(),
        policies: serde_json::from_value(policies).unwrap(),
        blocked: Vec::new(),
        withheld_ips: Default::default(),
        routes: Vec::new(),
    };
    let view = MeshView::new(snapshot, &resolver, &ports, None).unwrap();
    Arc::new(Shared {
        identity,
        resolver,
        cert: arc_swap::ArcSwapOption::empty(),
        mesh: arc_swap::ArcSwapOption::from(Some(Arc::new(view))),
        metrics: crate::observe::metrics::Metrics::new().unwrap(),
        drain: Default::default(),
        mesh_changes: tokio::sync::watch::channel(0).0,
        ports,
    })
}

/// An ALLOW policy in `prod`: `principal` may call paths under `/hello`.
pub fn allow_hello(principal: &SpiffeId) -> serde_json::Value {
    let principal = principal.as_str().trim_start_matches("spiffe://");
    serde_json::json!([{
        "name": "allow-hello",
        "namespace": "prod",
        "spec": {
            "action": "ALLOW",
            "rules": [{
                "from": [{"source": {"principals": [principal]}}],
                "to": [{"operation": {"paths": ["/hello", "/hello/*"]}}]
            }]
        }
    }])
}

/// An app on loopback that answers every request with what it received: `METHOD path`, then
/// one line each for the peer identity header, the Host and the HTTP version.
pub async fn app() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                let header = |name: &str| {
                    req.headers()
                        .get_all(name)
                        .iter()
                        .map(|v| v.to_str().unwrap_or("?").to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                };
                let text = format!(
                    "{} {}\npeer={}\nhost={}\nversion={:?}\n",
                    req.method(),
                    req.uri()
                        .path_and_query()
                        .map(|p| p.as_str())
                        .unwrap_or("/"),
                    header("x-trustmesh-peer-identity"),
                    header("host"),
                    req.version(),
                );
                Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(text))))
            });
            tokio::spawn(async move {
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let _ = builder.serve_connection(TokioIo::new(tcp), svc).await;
            });
        }
    });
    addr
}

/// An HTTP/2 client on `io`.
pub async fn h2_client<IO>(io: IO) -> hyper::client::conn::http2::SendRequest<Full<Bytes>>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .unwrap();
    tokio::spawn(conn);
    sender
}

/// An HTTP/1.1 client on `io`.
pub async fn h1_client<IO>(io: IO) -> hyper::client::conn::http1::SendRequest<Full<Bytes>>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

/// A response's status, headers and body as text.
pub async fn read(resp: Response<Incoming>) -> (http::StatusCode, http::HeaderMap, String) {
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8(bytes.to_vec()).unwrap(),
    )
}

/// A GET of `uri` with `headers`.
pub fn get(uri: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut b = Request::get(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(Bytes::new())).unwrap()
}

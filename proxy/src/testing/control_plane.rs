//! A stand-in control plane on loopback for the components that talk to one (identity, the
//! snapshot watch): HTTPS/1.1 with a certificate for the control-plane identity of the mesh
//! CA, every request recorded, each answered by the test's function. It sends TLS 1.3 session
//! tickets, as the real one does, and records whether each connection resumed a session and
//! which connection each request came on. A request whose query has `close` is answered with
//! `Connection: close`, as a draining control plane answers; one whose query has `drop` and
//! that is not the first on its connection is not answered at all: the connection is closed,
//! as a client sees a race with an idle close; one whose query has `hold` is answered only
//! after [`FakeControlPlane::release`] (and [`FakeControlPlane::holding`] tells when one has
//! come), so that a test can keep a connection busy.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use trustmesh_certs::{control_plane_identity, CertificateAuthority, SpiffeId, TrustBundle};
use trustmesh_policies::snapshot::Snapshot;

use crate::control::{self, ControlClient};

/// One request the control plane received.
#[derive(Debug, Clone)]
pub struct Seen {
    /// `GET`, `POST`.
    pub method: http::Method,
    /// The path and query.
    pub path: String,
    /// The bearer token, when one came.
    pub bearer: Option<String>,
    /// The identity of the client certificate, when one was presented.
    pub client: Option<SpiffeId>,
    /// The client's leaf certificate (DER), when one was presented (or resumed).
    pub client_cert: Option<Vec<u8>>,
    /// The connection resumed a TLS session.
    pub resumed: bool,
    /// The connection it came on: 0 for the first one accepted, then 1, ...
    pub connection: usize,
    /// The body.
    pub body: Bytes,
}

/// A running stand-in: its address and what it has received.
pub struct FakeControlPlane {
    /// Where it listens.
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    hold: Arc<Hold>,
}

/// The gate of `hold` requests.
#[derive(Default)]
struct Hold {
    arrived: tokio::sync::Notify,
    released: tokio::sync::Notify,
}

/// How the stand-in answers a request.
pub type Answer = dyn Fn(&Seen) -> (StatusCode, String) + Send + Sync;

impl FakeControlPlane {
    /// Starts one certified by `ca` that answers with `answer`.
    pub async fn start(ca: &CertificateAuthority, answer: Arc<Answer>) -> Self {
        let td = ca.trust_domain().clone();
        let (issued, key) = ca
            .issue(
                &control_plane_identity(&td),
                &[],
                &["127.0.0.1".parse().unwrap()],
                Duration::from_secs(3600),
                SystemTime::now(),
            )
            .unwrap();
        let mut tls = trustmesh_certs::tls::control_plane_server_config(
            &ca.trust_bundle(),
            &td,
            issued.chain,
            &key,
        )
        .unwrap();
        tls.ticketer = rustls::crypto::ring::Ticketer::new().unwrap();
        tls.send_tls13_tickets = 2;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let hold = Arc::new(Hold::default());
        let gate = hold.clone();
        tokio::spawn(async move {
            let mut accepted = 0;
            while let Ok((tcp, _)) = listener.accept().await {
                let connection = accepted;
                accepted += 1;
                let Ok(tls) = acceptor.accept(tcp).await else {
                    continue;
                };
                let session = tls.get_ref().1;
                let resumed = session.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
                let leaf = session.peer_certificates().and_then(|c| c.first());
                let client_cert = leaf.map(|c| c.as_ref().to_vec());
                let client =
                    leaf.and_then(|c| trustmesh_certs::identity::identity_from_cert(c).ok());
                let (answer, log, gate) = (answer.clone(), log.clone(), gate.clone());
                let requests = Arc::new(std::sync::atomic::AtomicUsize::new(0));
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let (answer, log, client) = (answer.clone(), log.clone(), client.clone());
                    let (client_cert, gate) = (client_cert.clone(), gate.clone());
                    let nth = requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    async move {
                        let query = req.uri().query().unwrap_or_default();
                        let close = query.contains("close");
                        if query.contains("drop") && nth > 0 {
                            return Err(std::io::Error::other("dropped unanswered"));
                        }
                        if query.contains("hold") {
                            gate.arrived.notify_one();
                            gate.released.notified().await;
                        }
                        let seen = Seen {
                            method: req.method().clone(),
                            path: req.uri().path_and_query().unwrap().to_string(),
                            bearer: req
                                .headers()
                                .get(http::header::AUTHORIZATION)
                                .and_then(|v| v.to_str().ok())
                                .and_then(|v| v.strip_prefix("Bearer "))
                                .map(str::to_string),
                            client,
                            client_cert,
                            resumed,
                            connection,
                            body: req.into_body().collect().await.unwrap().to_bytes(),
                        };
                        let (status, body) = answer(&seen);
                        log.lock().unwrap().push(seen);
                        let mut resp = Response::new(Full::new(Bytes::from(body)));
                        *resp.status_mut() = status;
                        if close {
                            resp.headers_mut().insert(
                                http::header::CONNECTION,
                                http::HeaderValue::from_static("close"),
                            );
                        }
                        Ok::<_, std::io::Error>(resp)
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc),
                );
            }
        });
        Self { addr, seen, hold }
    }

    /// Waits until a `hold` request has come (and is held).
    pub async fn holding(&self) {
        self.hold.arrived.notified().await;
    }

    /// Answers the held request.
    pub fn release(&self) {
        self.hold.released.notify_one();
    }

    /// What it has received so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// A client of this control plane for a sidecar of `ca`'s mesh presenting what
    /// `resolver` holds.
    pub fn client(
        &self,
        ca: &CertificateAuthority,
        resolver: Arc<trustmesh_certs::RotatingResolver>,
    ) -> Arc<ControlClient> {
        let config = control::Config {
            control_plane: vec![format!("https://{}", self.addr).parse().unwrap()],
            trust_domain: ca.trust_domain().clone(),
        };
        let bundle = TrustBundle::from_pem(ca.cert_pem()).unwrap();
        Arc::new(ControlClient::new(&config, &bundle, resolver).unwrap())
    }
}

/// A control plane's certificate answer: the CSR of `seen` signed by `ca` for `id`.
pub fn sign(ca: &CertificateAuthority, id: &SpiffeId, seen: &Seen) -> (StatusCode, String) {
    let req: serde_json::Value = serde_json::from_slice(&seen.body).unwrap();
    let csr = req["csr"].as_str().unwrap();
    let issued = ca
        .sign_csr(csr, id, Duration::from_secs(3600), SystemTime::now())
        .unwrap();
    let body = serde_json::json!({ "certificate_chain": issued.chain_pem });
    (StatusCode::OK, body.to_string())
}

/// A snapshot of `ca`'s mesh for `identity` at `version`, no services and no policies, as the
/// control plane sends it.
pub fn snapshot_json(ca: &CertificateAuthority, identity: &SpiffeId, version: &str) -> String {
    let snapshot = Snapshot {
        version: version.to_string(),
        identity: identity.clone(),
        mesh: Default::default(),
        registry: Vec::new().into(),
        trust_bundle: ca.cert_pem().to_string(),
        policies: Vec::new(),
        blocked: Vec::new(),
        withheld_ips: Default::default(),
        routes: Vec::new(),
    };
    serde_json::to_string(&snapshot).unwrap()
}

//! Identity lifecycle with real processes on loopback: blocking an identity cuts it off within
//! a second and unblocking restores it; projected Kubernetes ServiceAccount tokens bootstrap
//! proxies and bad ones get 401; a CA the operator brings (an intermediate below an offline
//! root) serves full chains while proxies trust the root alone; and a proxy whose control
//! plane is gone stays ready until its certificate expires, then reports not ready.

// Helpers outside #[test] functions fail the test by panicking, like the tests themselves.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt as _, Empty};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};
use trustmesh_certs::{CertificateAuthority, TrustBundle};
use trustmesh_e2e::admin_api::control_plane_state;
use trustmesh_e2e::app::App;
use trustmesh_e2e::client::{connect, http1_get, Resp};
use trustmesh_e2e::control_plane::{run_cli, ControlPlane};
use trustmesh_e2e::lifecycle::{
    config, metric, presented, probe_config, ready, LifeMesh, LifeOptions,
};
use trustmesh_e2e::mesh::{Mesh, NAMESPACE};
use trustmesh_e2e::mtls::{client_with_cert, issue, knock, mesh_ca, spiffe, trust_domain, Knock};
use trustmesh_e2e::policies::{spiffe_id, write_policies, ServiceEntry};
use trustmesh_e2e::ports::ProxyPorts;
use trustmesh_e2e::proxy::Proxy;
use trustmesh_e2e::wait::poll_until;
use trustmesh_e2e::workdir::WorkDir;

const WITHIN: Duration = Duration::from_secs(1);

/// An HTTP/2 connection to a sidecar's inbound, kept open across requests.
async fn open_h2(config: Arc<rustls::ClientConfig>, addr: SocketAddr) -> SendRequest<Empty<Bytes>> {
    let tcp = connect(addr).await.expect("connect");
    let name = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into());
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .expect("handshake");
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    send
}

async fn h2_status(send: &mut SendRequest<Empty<Bytes>>, path: &str) -> u16 {
    let req = Request::get(format!("http://b.test{path}"))
        .body(Empty::new())
        .unwrap();
    let resp = send
        .send_request(req)
        .await
        .expect("request on the open connection");
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    status
}

/// Polls `check` every 20 ms until it is true; returns how long that took, or fails after 5 s.
async fn until<F, Fut>(what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{what}: not after 5 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

fn csr_body(identity: &str) -> Bytes {
    let csr = trustmesh_certs::generate_csr(&spiffe(identity).expect("id")).expect("CSR");
    Bytes::from(json!({ "csr": csr.csr_pem }).to_string())
}

async fn post_csr(cp: &ControlPlane, bearer: &str, identity: &str) -> Resp {
    cp.request(
        Method::POST,
        "/v1/certificates",
        Some(bearer),
        csr_body(identity),
    )
    .await
    .expect("the control plane answers")
}

fn error_code(resp: &Resp) -> String {
    resp.json()
        .map(|v| v["error"].as_str().unwrap_or_default().to_string())
        .unwrap_or_default()
}

fn leaf_identity(resp: &Resp) -> String {
    let v = resp.json().expect("JSON");
    let chain = v["certificate_chain"].as_str().expect("chain");
    let leaf = CertificateDer::pem_slice_iter(chain.as_bytes())
        .next()
        .unwrap()
        .unwrap();
    trustmesh_certs::identity_from_cert(&leaf)
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_identity_is_refused_within_a_second_and_unblock_restores_it() {
    let mesh = Mesh::a_to_b("lc-block").await.expect("mesh starts");
    let id_a = spiffe_id(NAMESPACE, "a");
    let data = mesh.cp.data_dir().display().to_string();
    let bundle = TrustBundle::from_pem(&mesh.cp.trust_bundle_pem().unwrap()).unwrap();
    let (cert, key) = issue(
        &mesh_ca(&mesh.cp).unwrap(),
        &id_a,
        Duration::from_secs(3600),
        SystemTime::now(),
    )
    .unwrap();
    let as_a = client_with_cert(&bundle, &cert, &key, mesh.b.identity()).unwrap();

    // A connection as A that stays open, and A's own sidecar: both get through.
    let mut open = open_h2(as_a.clone(), mesh.b.inbound()).await;
    assert_eq!(h2_status(&mut open, "/before").await, 200);
    let via_a = http1_get(mesh.a.outbound(), "b.test", "/before", &[])
        .await
        .unwrap();
    assert_eq!(via_a.status, 200, "{}", via_a.text());

    let out = run_cli(&["identity", "block", &id_a, "--data-dir", &data])
        .await
        .unwrap();
    assert!(out.status.success(), "{}", out.stderr);
    let blocked = Instant::now();
    let on_open = until("the open connection refuses A", || {
        let mut open = open.clone();
        async move { h2_status(&mut open, "/after").await == 403 }
    })
    .await;
    let new_conn = until("a new connection as A is refused", || async {
        matches!(
            knock(as_a.clone(), mesh.b.inbound()).await,
            Ok(Knock::Refused(_))
        )
    })
    .await;
    let since_block = blocked.elapsed();
    let reached = mesh.app_b.request_count();
    eprintln!(
        "block: refused on the open connection after {on_open:?}, on a new connection \
         {new_conn:?} later ({since_block:?} after the block)"
    );
    assert!(
        on_open <= WITHIN,
        "open connection refused only after {on_open:?}"
    );
    assert!(
        since_block <= WITHIN + Duration::from_millis(300),
        "new connections refused only after {since_block:?}"
    );
    // Through A's own sidecar as well: the new snapshot made A reconnect, and B closes the
    // connection right after the handshake (502 at A; 403 had A kept its old connection).
    let via_a = http1_get(mesh.a.outbound(), "b.test", "/after", &[])
        .await
        .unwrap();
    assert!(
        via_a.status == 502 || via_a.status == 403,
        "{} {}",
        via_a.status,
        via_a.text()
    );
    // No certificate for A any more, with a token or its current certificate.
    let token = mesh.cp.token(&id_a).await.unwrap();
    let refused = post_csr(&mesh.cp, &token, &id_a).await;
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert_eq!(error_code(&refused), "identity_blocked");
    // Listed by the CLI and by the control plane.
    let list = run_cli(&["identity", "list", "--data-dir", &data])
        .await
        .unwrap();
    assert!(list.stdout.contains(&id_a), "{}", list.stdout);
    let status = run_cli(&["ca", "status", "--data-dir", &data])
        .await
        .unwrap();
    assert!(status.stdout.contains(&id_a), "{}", status.stdout);
    let admin = mesh.dir.path().join("admin.pem").display().to_string();
    let out = run_cli(&["admin-cert", "--data-dir", &data, "--out", &admin])
        .await
        .unwrap();
    assert!(out.status.success(), "{}", out.stderr);
    let bundle_path = mesh.cp.trust_bundle_path().display().to_string();
    let status = run_cli(&[
        "status",
        "--control-plane",
        &mesh.cp.url(),
        "--admin-cert",
        &admin,
        "--trust-bundle",
        &bundle_path,
    ])
    .await
    .unwrap();
    assert!(status.status.success(), "{}", status.stderr);
    assert!(
        status
            .stdout
            .contains(&format!("blocked:           {id_a}")),
        "{}",
        status.stdout
    );
    let health = control_plane_state(&mesh.cp).await.unwrap();
    assert_eq!(
        health["trust"]["blocked_identities"],
        json!([id_a]),
        "{health}"
    );
    for stage in ["connection", "request"] {
        let n = metric(
            mesh.b.admin(),
            &format!("trustmesh_blocked_refusals_total{{stage=\"{stage}\"}}"),
        )
        .await
        .unwrap();
        assert!(n >= 1.0, "B counted no refusal at {stage}");
    }
    assert_eq!(
        mesh.app_b.request_count(),
        reached,
        "nothing from A reached B's app once the block was in force"
    );

    let out = run_cli(&["identity", "unblock", &id_a, "--data-dir", &data])
        .await
        .unwrap();
    assert!(out.status.success(), "{}", out.stderr);
    let restored = until("A is let through again", || {
        let mut open = open.clone();
        async move { h2_status(&mut open, "/again").await == 200 }
    })
    .await;
    assert!(restored <= WITHIN, "unblock took {restored:?}");
    assert_eq!(
        knock(as_a.clone(), mesh.b.inbound()).await.unwrap(),
        Knock::Accepted
    );
    let via_a = http1_get(mesh.a.outbound(), "b.test", "/again", &[])
        .await
        .unwrap();
    assert_eq!(via_a.status, 200, "{}", via_a.text());
    let ok = post_csr(&mesh.cp, &mesh.cp.token(&id_a).await.unwrap(), &id_a).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
}

const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// A signing key of the "cluster" (or of a stranger), ES256.
struct ClusterKey {
    key: EncodingKey,
    kid: String,
}

impl ClusterKey {
    fn new(kid: &str) -> Self {
        let pkcs8 = trustmesh_certs::PrivateKey::generate().unwrap().to_der();
        Self {
            key: EncodingKey::from_ec_der(pkcs8.secret_der()),
            kid: kid.to_string(),
        }
    }

    fn jwk(&self) -> Jwk {
        let mut jwk = Jwk::from_encoding_key(&self.key, Algorithm::ES256).unwrap();
        jwk.common.key_id = Some(self.kid.clone());
        jwk
    }

    /// A projected ServiceAccount token as the kubelet mounts it.
    fn token(&self, ns: &str, sa: &str, aud: &str, exp_in: i64) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let claims = json!({
            "iss": ISSUER, "aud": [aud], "sub": format!("system:serviceaccount:{ns}:{sa}"),
            "exp": now + exp_in, "iat": now - 60, "nbf": now - 60,
            "kubernetes.io": {"namespace": ns, "serviceaccount": {"name": sa, "uid": "0"}},
        });
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.key).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_service_account_tokens_bootstrap_and_bad_ones_get_401() {
    let dir = WorkDir::new("lc-jwt").unwrap();
    let cluster = ClusterKey::new("cluster-key-1");
    let jwks = dir.path().join("jwks.json");
    std::fs::write(
        &jwks,
        serde_json::to_vec(&JwkSet {
            keys: vec![cluster.jwk()],
        })
        .unwrap(),
    )
    .unwrap();
    let ports = ProxyPorts::allocate().unwrap();
    let policies = write_policies(
        &dir.path().join("policies"),
        &[ServiceEntry::new("k8s", NAMESPACE, ports.inbound)],
    )
    .unwrap();
    let jwks_arg = jwks.display().to_string();
    let cp = ControlPlane::start_with(
        dir.path(),
        &dir.path().join("cp-data"),
        &policies,
        &["--k8s-jwks", &jwks_arg, "--k8s-issuer", ISSUER],
    )
    .await
    .expect("control plane starts");
    let api = "spiffe://cluster.local/ns/prod/sa/api";

    let good = cluster.token("prod", "api", "trustmesh", 600);
    let resp = post_csr(&cp, &good, api).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(leaf_identity(&resp), api, "system:serviceaccount:prod:api");
    // The token proves one service account; a CSR for another is refused.
    let other = post_csr(&cp, &good, "spiffe://cluster.local/ns/prod/sa/admin").await;
    assert_eq!(other.status, 403, "{}", other.text());
    // The control plane's own identity and the admin identity are never issued, even to a
    // valid token for their service accounts.
    for sa in ["trustmesh-control-plane", "admin"] {
        let id = format!("spiffe://cluster.local/ns/trustmesh-system/sa/{sa}");
        let token = cluster.token("trustmesh-system", sa, "trustmesh", 600);
        let resp = post_csr(&cp, &token, &id).await;
        assert_eq!(resp.status, 403, "{sa}: {}", resp.text());
        let v: Value = resp.json().unwrap();
        assert_eq!(v["error"], "reserved_identity", "{sa}: {v}");
    }

    let cases = [
        (
            "a key not in the JWKS (same kid)",
            ClusterKey::new("cluster-key-1").token("prod", "api", "trustmesh", 600),
        ),
        (
            "a key not in the JWKS (unknown kid)",
            ClusterKey::new("stranger").token("prod", "api", "trustmesh", 600),
        ),
        (
            "another audience",
            cluster.token("prod", "api", "vault", 600),
        ),
        ("expired", cluster.token("prod", "api", "trustmesh", -3600)),
        ("not a JWT at all", "eyJhbGciOi.garbage.x".to_string()),
    ];
    for (what, token) in cases {
        let resp = post_csr(&cp, &token, api).await;
        assert_eq!(resp.status, 401, "{what}: {}", resp.text());
        let v: Value = resp.json().unwrap_or_else(|e| panic!("{what}: {e:#}"));
        assert!(
            v["error"].as_str().is_some_and(|c| c.starts_with("jwt_")),
            "{what}: {v}"
        );
        eprintln!("{what}: 401 {}", v["error"]);
    }
    // trustmesh tokens keep working beside JWTs.
    let tm1 = cp.token(api).await.unwrap();
    assert_eq!(post_csr(&cp, &tm1, api).await.status, 200);

    // A real sidecar bootstraps with a projected token as its token file.
    let app = App::start().await.unwrap();
    let id = spiffe_id(NAMESPACE, "k8s");
    let jwt = cluster.token(NAMESPACE, "k8s", "trustmesh", 3600);
    let proxy = Proxy::start_with_token(&cp, "k8s", &id, app.addr(), ports, &jwt, &[])
        .await
        .expect("the sidecar bootstraps with a ServiceAccount token");
    let cfg = config(proxy.admin()).await.unwrap();
    assert_eq!(cfg["identity"], id);
    let issued = metric_cp(
        &cp,
        "trustmesh_cp_certificates_issued_total{result=\"jwt_audience\"}",
    )
    .await;
    assert!(issued >= 1.0, "refusals are counted by reason");
}

async fn metric_cp(cp: &ControlPlane, series: &str) -> f64 {
    let text = cp.get("/metrics").await.unwrap().text();
    trustmesh_e2e::lifecycle::sample(&text, series)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operators_intermediate_ca_serves_full_chains_and_proxies_trust_only_its_root() {
    let offline = WorkDir::new("lc-byo-offline").unwrap();
    let root = CertificateAuthority::generate(&trust_domain().unwrap(), SystemTime::now()).unwrap();
    let inter = root
        .new_intermediate(SystemTime::now(), Duration::from_secs(30 * 86400))
        .unwrap();
    let cert = offline.path().join("intermediate-chain.pem");
    let key = offline.path().join("intermediate-key.pem");
    std::fs::write(&cert, inter.chain_pem()).unwrap();
    std::fs::write(&key, inter.key_pem()).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();

    let mut opts = LifeOptions::ttl("1h");
    opts.cp_extra = vec![
        "--ca-cert".into(),
        cert.display().to_string(),
        "--ca-key".into(),
        key.display().to_string(),
    ];
    let mesh = LifeMesh::start("lc-byo", opts).await.expect("mesh starts");
    assert_eq!(
        mesh.cps[0].trust_bundle_pem().unwrap(),
        root.trust_bundle().pem(),
        "the bundle is the offline root alone"
    );
    let via_a = http1_get(mesh.a.outbound(), "b.test", "/byo", &[])
        .await
        .unwrap();
    assert_eq!(via_a.status, 200, "{}", via_a.text());
    let probe = probe_config(root.trust_bundle().pem(), mesh.b.identity()).unwrap();
    let (_, chain_len) = presented(probe, mesh.b.inbound()).await.unwrap();
    assert_eq!(chain_len, 2, "B serves its leaf and the intermediate");
    // The issued chains carry the intermediate, and the control plane's own certificate
    // verifies with the root alone (the harness trusts trust-bundle.pem only).
    let token = mesh.cps[0].token(&spiffe_id(NAMESPACE, "c")).await.unwrap();
    let resp = post_csr(&mesh.cps[0], &token, &spiffe_id(NAMESPACE, "c")).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let chain = resp.json().unwrap()["certificate_chain"]
        .as_str()
        .unwrap()
        .to_string();
    let certs: Vec<_> = CertificateDer::pem_slice_iter(chain.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(certs.len(), 2);
    assert_eq!(&certs[1], inter.cert_der());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_without_control_plane_stays_ready_until_its_certificate_expires() {
    let mut mesh = LifeMesh::start("lc-expiry", LifeOptions::ttl("6s"))
        .await
        .expect("mesh starts");
    mesh.cps[0].process().kill();
    // Let a renewal that was on the wire land before reading the expiry.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let expires = config(mesh.a.admin()).await.unwrap()["certificate"]["expires_at"]
        .as_str()
        .unwrap()
        .to_string();
    let expires =
        time::OffsetDateTime::parse(&expires, &time::format_description::well_known::Rfc3339)
            .unwrap();
    let expires = UNIX_EPOCH + Duration::from_secs(expires.unix_timestamp() as u64);
    let mut checks = 0;
    while SystemTime::now() + Duration::from_millis(500) < expires {
        assert_eq!(
            ready(mesh.a.admin()).await.unwrap(),
            200,
            "ready while the certificate is valid"
        );
        checks += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(checks >= 3, "the certificate was nearly expired already");
    poll_until("not ready after expiry", Duration::from_secs(4), || async {
        let r = trustmesh_e2e::client::admin_get(mesh.a.admin(), "/ready").await?;
        Ok((r.status == 503 && r.text().contains("expired")).then_some(()))
    })
    .await
    .expect("not ready once expired");
    let log = mesh.a.process().log();
    assert!(log.contains("past 80%"), "A warned at 80% of the lifetime");
}

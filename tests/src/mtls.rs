//! TLS clients that knock on a sidecar's inbound port directly, built with `trustmesh_certs`:
//! with a good certificate from the mesh CA, with none, with one from another CA, with an
//! expired one. They prove what the inbound listener accepts and what it refuses.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use bytes::Bytes;
use http::Request;
use http_body_util::Empty;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio_rustls::TlsConnector;
use trustmesh_certs::{
    CertificateAuthority, IssuedCert, PrivateKey, RotatingResolver, SpiffeId, SpiffeServerVerifier,
    TrustBundle, TrustDomain,
};

use crate::client::{collect, connect, send_h2_on, send_http1_on, Resp, REQUEST_TIMEOUT};
use crate::control_plane::ControlPlane;
use crate::policies::TRUST_DOMAIN;

/// The mesh's trust domain as the certs crate's type.
pub fn trust_domain() -> anyhow::Result<TrustDomain> {
    TrustDomain::parse(TRUST_DOMAIN).context("parsing the trust domain")
}

/// A SPIFFE ID, parsed.
pub fn spiffe(id: &str) -> anyhow::Result<SpiffeId> {
    SpiffeId::parse(id).with_context(|| format!("parsing {id}"))
}

/// The control plane's own CA, loaded from `ca-cert.pem` and `ca-key.pem` in its data folder,
/// so a test can mint certificates the mesh trusts.
pub fn mesh_ca(cp: &ControlPlane) -> anyhow::Result<CertificateAuthority> {
    let cert = std::fs::read_to_string(cp.ca_cert_path()).context("reading ca-cert.pem")?;
    let key = std::fs::read_to_string(cp.ca_key_path()).context("reading ca-key.pem")?;
    CertificateAuthority::from_pem(&cert, &key).context("loading the mesh CA")
}

/// A CA that has nothing to do with the mesh, for the same trust domain.
pub fn foreign_ca() -> anyhow::Result<CertificateAuthority> {
    CertificateAuthority::generate(&trust_domain()?, SystemTime::now())
        .context("making a foreign CA")
}

/// A certificate for `id` from `ca`, valid from `now` - 1 min to `now` + `ttl`.
pub fn issue(
    ca: &CertificateAuthority,
    id: &str,
    ttl: Duration,
    now: SystemTime,
) -> anyhow::Result<(IssuedCert, PrivateKey)> {
    ca.issue(&spiffe(id)?, &[], &[], ttl, now)
        .with_context(|| format!("issuing a certificate for {id}"))
}

/// A sidecar-style client: presents `cert`, requires the server to be `expected`.
pub fn client_with_cert(
    bundle: &TrustBundle,
    cert: &IssuedCert,
    key: &PrivateKey,
    expected: &str,
) -> anyhow::Result<Arc<ClientConfig>> {
    let resolver = Arc::new(RotatingResolver::new());
    resolver
        .set(cert.chain.clone(), key)
        .context("loading the client certificate")?;
    let config = trustmesh_certs::tls::sidecar_client_config(bundle, resolver, spiffe(expected)?)
        .context("building the client configuration")?;
    Ok(Arc::new(config))
}

/// A client of the control plane's API as `id`, with a certificate of the mesh CA valid for
/// `ttl`, speaking HTTP/1.1 (the one protocol the API offers).
pub fn control_plane_client(
    cp: &ControlPlane,
    id: &str,
    ttl: Duration,
) -> anyhow::Result<ClientConfig> {
    let bundle = TrustBundle::from_pem(&cp.trust_bundle_pem()?)?;
    let (cert, key) = issue(&mesh_ca(cp)?, id, ttl, SystemTime::now())?;
    let cp_id = trustmesh_certs::control_plane_identity(&trust_domain()?);
    let mut tls = (*client_with_cert(&bundle, &cert, &key, cp_id.as_str())?).clone();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tls)
}

/// A TLS connection to the control plane's API with `tls` (from [`control_plane_client`]).
pub async fn connect_control_plane(
    cp: &ControlPlane,
    tls: Arc<ClientConfig>,
) -> anyhow::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = connect(cp.addr()).await?;
    // The name is not checked (the SPIFFE verifier checks the URI SAN), but rustls needs one.
    let name = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into());
    TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .context("TLS handshake with the control plane")
}

/// A client that verifies the server as `expected` but presents no certificate.
pub fn client_without_cert(
    bundle: &TrustBundle,
    expected: &str,
) -> anyhow::Result<Arc<ClientConfig>> {
    let verifier = Arc::new(SpiffeServerVerifier::new(bundle, spiffe(expected)?));
    let mut config = ClientConfig::builder_with_provider(trustmesh_certs::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3")?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Connects to `addr` with `config` and sends `GET path` (`Host`/`:authority` `authority`)
/// over whichever HTTP version ALPN chose. An `Err` means the handshake, the request or the
/// response failed; in TLS 1.3 a refused client certificate surfaces as the server's alert on
/// the first read, after the client's half of the handshake succeeded.
pub async fn mtls_get(
    config: Arc<ClientConfig>,
    addr: SocketAddr,
    authority: &str,
    path: &str,
) -> anyhow::Result<Resp> {
    let work = async {
        let tcp = connect(addr).await?;
        // The name is not checked (the SPIFFE verifier checks the URI SAN), but rustls needs one.
        let name = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into());
        let tls = TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .context("TLS handshake")?;
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        let resp = if h2 {
            let req = Request::get(format!("http://{authority}{path}"))
                .body(Empty::<Bytes>::new())
                .context("building the request")?;
            send_h2_on(tls, req).await?
        } else {
            let req = Request::get(path)
                .header(http::header::HOST, authority)
                .body(Empty::<Bytes>::new())
                .context("building the request")?;
            send_http1_on(tls, req).await?
        };
        collect(resp).await
    };
    tokio::time::timeout(REQUEST_TIMEOUT, work)
        .await
        .with_context(|| format!("timed out: mTLS GET {path} to {addr}"))?
}

/// How a TLS client fared against a listener that should refuse it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Knock {
    /// The handshake or the first read failed, or the server closed without sending a byte:
    /// the reason as the client saw it (for TLS 1.3 usually the server's fatal alert).
    Refused(String),
    /// The server sent application data: the connection was accepted.
    Accepted,
}

/// Handshakes with `config`, writes an HTTP/2 preface and a tiny HTTP/1.1 request, and reads.
/// An accepting sidecar answers either with HTTP/2 frames (at least its SETTINGS) or an HTTP/1
/// response; a refusing one fails the handshake or sends an alert on the first read.
pub async fn knock(config: Arc<ClientConfig>, addr: SocketAddr) -> anyhow::Result<Knock> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let work = async {
        let tcp = connect(addr).await?;
        let name = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into());
        let mut tls = match TlsConnector::from(config).connect(name, tcp).await {
            Ok(tls) => tls,
            Err(e) => return Ok(Knock::Refused(format!("handshake: {e}"))),
        };
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        let hello: &[u8] = if h2 {
            // RFC 9113 §3.4: the preface, then an empty SETTINGS frame.
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00"
        } else {
            b"GET / HTTP/1.1\r\nhost: knock\r\n\r\n"
        };
        if let Err(e) = tls.write_all(hello).await.and(tls.flush().await) {
            return Ok(Knock::Refused(format!("write: {e}")));
        }
        let mut buf = [0u8; 64];
        Ok(match tls.read(&mut buf).await {
            Ok(0) => Knock::Refused("closed without a byte".into()),
            Ok(_) => Knock::Accepted,
            Err(e) => Knock::Refused(format!("read: {e}")),
        })
    };
    tokio::time::timeout(REQUEST_TIMEOUT, work)
        .await
        .with_context(|| format!("timed out knocking on {addr}"))?
}

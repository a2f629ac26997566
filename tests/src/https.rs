//! HTTPS to the control plane's API, verified the ordinary way: the trust bundle as the only
//! root and `127.0.0.1` as the server name (the control plane's certificate carries that IP SAN
//! besides its SPIFFE ID).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use anyhow::Context as _;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio_rustls::TlsConnector;
use trustmesh_certs::TrustBundle;

use crate::client::{collect, connect, send_http1_on, Resp, REQUEST_TIMEOUT};

/// A rustls client configuration that trusts only `bundle_pem`, presents no certificate and
/// speaks HTTP/1.1.
pub fn client_config(bundle_pem: &str) -> anyhow::Result<Arc<ClientConfig>> {
    let bundle = TrustBundle::from_pem(bundle_pem).context("parsing the trust bundle")?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_root_certificates(bundle.root_store())
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Sends `req` (origin-form URI) over TLS to `addr` and reads the whole response.
pub async fn request(
    config: Arc<ClientConfig>,
    addr: SocketAddr,
    req: Request<Full<Bytes>>,
) -> anyhow::Result<Resp> {
    let work = async {
        let tcp = connect(addr).await?;
        let name = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into());
        let tls = TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .with_context(|| format!("TLS handshake with the control plane at {addr}"))?;
        collect(send_http1_on(tls, req).await?).await
    };
    tokio::time::timeout(REQUEST_TIMEOUT, work)
        .await
        .with_context(|| format!("timed out talking to the control plane at {addr}"))?
}

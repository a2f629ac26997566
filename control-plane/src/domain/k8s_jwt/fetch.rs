//! Domain: reading the cluster's JWKS: from a file, or over HTTPS (or plain HTTP on loopback, for
//! `kubectl proxy`) with an optional bearer token, bounded in size and time.

use std::path::PathBuf;

use anyhow::Context as _;
use bytes::Bytes;
use http::{header, Request, Uri};
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_util::rt::TokioIo;
use jsonwebtoken::jwk::JwkSet;

/// Largest JWKS document accepted.
const MAX_JWKS: usize = 1024 * 1024;
/// Upper bound of one JWKS fetch.
const FETCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Where the key set is read from.
pub(super) enum Source {
    /// `--k8s-jwks FILE`.
    File(PathBuf),
    /// `--k8s-jwks URL`, with `--k8s-jwks-ca` (https) and `--k8s-jwks-token-file`.
    Url {
        uri: Uri,
        tls: Option<std::sync::Arc<rustls::ClientConfig>>,
        token_file: Option<PathBuf>,
    },
}

pub(super) fn tls_config(ca: &std::path::Path) -> anyhow::Result<rustls::ClientConfig> {
    use rustls::pki_types::{pem::PemObject as _, CertificateDer};
    let pem =
        std::fs::read(ca).with_context(|| format!("reading --k8s-jwks-ca {}", ca.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.with_context(|| format!("--k8s-jwks-ca {}", ca.display()))?;
        roots
            .add(cert)
            .with_context(|| format!("--k8s-jwks-ca {}", ca.display()))?;
    }
    if roots.is_empty() {
        anyhow::bail!("--k8s-jwks-ca {} holds no certificate", ca.display());
    }
    Ok(
        rustls::ClientConfig::builder_with_provider(trustmesh_certs::tls::provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

pub(super) async fn fetch(source: &Source) -> anyhow::Result<JwkSet> {
    let bytes = match source {
        Source::File(path) => tokio::fs::read(path)
            .await
            .with_context(|| format!("reading --k8s-jwks {}", path.display()))?,
        Source::Url {
            uri,
            tls,
            token_file,
        } => tokio::time::timeout(FETCH_TIMEOUT, get(uri, tls.clone(), token_file.as_deref()))
            .await
            .with_context(|| format!("{uri} did not answer within {FETCH_TIMEOUT:?}"))??,
    };
    let set: JwkSet =
        serde_json::from_slice(&bytes).context("the JWKS is not a JSON Web Key Set")?;
    Ok(set)
}

async fn get(
    uri: &Uri,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    token_file: Option<&std::path::Path>,
) -> anyhow::Result<Vec<u8>> {
    let host = uri.host().context("the JWKS URL has no host")?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri
        .port_u16()
        .unwrap_or(if tls.is_some() { 443 } else { 80 });
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .with_context(|| format!("connecting to {uri}"))?;
    let mut req = Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(header::HOST, format!("{host}:{port}"))
        .header(header::ACCEPT, "application/json");
    if let Some(path) = token_file {
        let token = tokio::fs::read_to_string(path)
            .await
            .with_context(|| format!("reading --k8s-jwks-token-file {}", path.display()))?;
        req = req.header(header::AUTHORIZATION, format!("Bearer {}", token.trim()));
    }
    let req = req.body(Empty::<Bytes>::new())?;
    let resp = match tls {
        Some(cfg) => {
            let name = rustls::pki_types::ServerName::try_from(host.clone())
                .context("the JWKS host is not a valid TLS name")?;
            let stream = tokio_rustls::TlsConnector::from(cfg)
                .connect(name, tcp)
                .await
                .with_context(|| format!("TLS to {uri}"))?;
            send(TokioIo::new(stream), req).await?
        }
        None => send(TokioIo::new(tcp), req).await?,
    };
    Ok(resp)
}

async fn send<IO>(io: IO, req: Request<Empty<Bytes>>) -> anyhow::Result<Vec<u8>>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    let conn = tokio::spawn(conn);
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let body = Limited::new(resp.into_body(), MAX_JWKS)
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("reading the JWKS: {e}"))?
        .to_bytes();
    conn.abort();
    if !status.is_success() {
        anyhow::bail!("the JWKS URL answered {status}");
    }
    Ok(body.to_vec())
}

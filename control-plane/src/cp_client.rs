//! One HTTPS GET to a control plane, for the operator CLI (`trustmesh status`) and for peer
//! replicas ([`crate::peers`]): TCP, TLS with the given client configuration, HTTP/1.1, an
//! answer of at most `limit` bytes, all within `timeout`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;

/// Where to send the request.
pub struct Target<'a> {
    /// The address to connect to.
    pub addr: SocketAddr,
    /// The TLS server name (SNI) and `Host` header: the name the operator gave, or the address.
    pub host: &'a str,
}

/// `GET path` on `target`; the status and the body.
pub async fn get(
    tls: Arc<rustls::ClientConfig>,
    target: &Target<'_>,
    path: &str,
    limit: usize,
    timeout: Duration,
) -> anyhow::Result<(StatusCode, Bytes)> {
    let work = async {
        let tcp = tokio::net::TcpStream::connect(target.addr)
            .await
            .with_context(|| format!("connecting to {}", target.addr))?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(target.host.to_string())
            .with_context(|| format!("{:?} is not a TLS server name", target.host))?;
        let tls = tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .with_context(|| format!("TLS to {}", target.addr))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        let conn = tokio::spawn(conn);
        let req = Request::get(path)
            .header(
                header::HOST,
                format!("{}:{}", target.host, target.addr.port()),
            )
            .body(Empty::<Bytes>::new())?;
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), limit)
            .collect()
            .await
            .map_err(|e| anyhow::anyhow!("reading the answer: {e}"))?
            .to_bytes();
        conn.abort();
        Ok((status, body))
    };
    tokio::time::timeout(timeout, work)
        .await
        .with_context(|| format!("{} did not answer within {timeout:?}", target.addr))?
}

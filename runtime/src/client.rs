//! One HTTPS/1.1 exchange with a control plane, for the sidecar (bootstrap, renewal, the
//! snapshot long poll), the operator CLI (`trustmesh status`) and peer replicas (the
//! blocklist exchange): TCP, TLS with the caller's client configuration (which decides what
//! the server must prove), one request, an answer of at most `limit` bytes, all within
//! `timeout`. [`send`] keeps no connection: every call is a fresh handshake, so a renewed
//! client certificate is the one presented next time. [`Connection`] is one connection for
//! several requests in turn, for a caller that keeps it only while its TLS configuration is
//! the same (the sidecar's control-plane client).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;

/// Where to send the request.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The TLS server name (SNI) and the host of the `Host` header: the name the operator
    /// gave, or an address.
    pub host: &'a str,
    /// The port, also in the `Host` header.
    pub port: u16,
    /// The address to connect to; `None` resolves `host`.
    pub addr: Option<SocketAddr>,
}

impl<'a> Target<'a> {
    /// A target at a resolved address, named `host` for TLS and `Host`.
    pub fn at(addr: SocketAddr, host: &'a str) -> Self {
        Self {
            host,
            port: addr.port(),
            addr: Some(addr),
        }
    }

    /// A target reached by resolving `host`.
    pub fn named(host: &'a str, port: u16) -> Self {
        Self {
            host,
            port,
            addr: None,
        }
    }

    fn describe(&self) -> String {
        match self.addr {
            Some(a) => a.to_string(),
            None => format!("{}:{}", self.host, self.port),
        }
    }
}

/// One request: method, path and query, an optional bearer token and an optional JSON body.
#[derive(Debug, Clone)]
pub struct Call<'a> {
    /// The method.
    pub method: Method,
    /// The path and query (`/v1/snapshot?version=...`).
    pub path: &'a str,
    /// Sent as `Authorization: Bearer <token>`.
    pub bearer: Option<&'a str>,
    /// Sent with `Content-Type: application/json`.
    pub json: Option<Bytes>,
}

impl<'a> Call<'a> {
    /// `GET path`, no token, no body.
    pub fn get(path: &'a str) -> Self {
        Self {
            method: Method::GET,
            path,
            bearer: None,
            json: None,
        }
    }
}

/// The answer: status and body.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The HTTP status.
    pub status: StatusCode,
    /// The body, at most the call's `limit` bytes.
    pub body: Bytes,
}

/// Sends `call` to `target` over TLS with `tls`; the answer within `timeout`, its body at most
/// `limit` bytes (a longer one is an error).
pub async fn send(
    tls: Arc<rustls::ClientConfig>,
    target: &Target<'_>,
    call: Call<'_>,
    limit: usize,
    timeout: Duration,
) -> anyhow::Result<Answer> {
    let at = target.describe();
    tokio::time::timeout(timeout, exchange(tls, target, call, limit))
        .await
        .with_context(|| format!("{at} did not answer within {timeout:?}"))?
}

/// `GET path` on `target`: [`send`] with [`Call::get`].
pub async fn get(
    tls: Arc<rustls::ClientConfig>,
    target: &Target<'_>,
    path: &str,
    limit: usize,
    timeout: Duration,
) -> anyhow::Result<(StatusCode, Bytes)> {
    let answer = send(tls, target, Call::get(path), limit, timeout).await?;
    Ok((answer.status, answer.body))
}

async fn exchange(
    tls: Arc<rustls::ClientConfig>,
    target: &Target<'_>,
    call: Call<'_>,
    limit: usize,
) -> anyhow::Result<Answer> {
    let mut conn = Connection::open(tls, target).await?;
    conn.request(target, call, limit).await
}

/// The request got no answer at all: the connection was closed or failed before a response
/// head came (on a kept connection, a race with the server's idle close: an idempotent
/// request may be sent again on a new one).
#[derive(Debug)]
pub struct NoAnswer(anyhow::Error);

impl std::fmt::Display for NoAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl std::error::Error for NoAnswer {}

/// One HTTP/1.1 connection over TLS, for one request or several in turn; the task that
/// drives it ends when this is dropped.
pub struct Connection {
    send: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    driver: tokio::task::JoinHandle<()>,
    /// The server said `Connection: close`, or an exchange failed: no further request.
    done: bool,
    at: String,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl Connection {
    /// TCP to `target`, TLS with `tls` (which decides what the server must prove), HTTP/1.1.
    pub async fn open(tls: Arc<rustls::ClientConfig>, target: &Target<'_>) -> anyhow::Result<Self> {
        let at = target.describe();
        let tcp = match target.addr {
            Some(addr) => tokio::net::TcpStream::connect(addr).await,
            None => tokio::net::TcpStream::connect((target.host, target.port)).await,
        }
        .with_context(|| format!("connecting to {at}"))?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(target.host.to_string())
            .with_context(|| format!("{:?} is not a TLS server name", target.host))?;
        let tls = tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .with_context(|| format!("TLS to {at}"))?;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .with_context(|| format!("HTTP handshake with {at}"))?;
        let driver = tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("control-plane connection ended: {e}");
            }
        });
        Ok(Self {
            send,
            driver,
            done: false,
            at,
        })
    }

    /// Whether another request may be sent: the server has not asked to close, no exchange
    /// failed, and the connection is still open.
    pub fn is_reusable(&self) -> bool {
        !self.done && !self.send.is_closed()
    }

    /// Sends `call` (to `target`, for the `Host` header) and reads the answer, its body at most
    /// `limit` bytes. An error before any response head is [`NoAnswer`].
    pub async fn request(
        &mut self,
        target: &Target<'_>,
        call: Call<'_>,
        limit: usize,
    ) -> anyhow::Result<Answer> {
        // Unusable from here until the answer has been read whole.
        self.done = true;
        let at = &self.at;
        let mut req = Request::builder()
            .method(call.method)
            .uri(call.path)
            .header(header::HOST, format!("{}:{}", target.host, target.port));
        if let Some(t) = call.bearer {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        if call.json.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let req = req.body(Full::new(call.json.unwrap_or_default()))?;
        let sent = async {
            self.send.ready().await?;
            self.send.send_request(req).await
        };
        let resp = sent
            .await
            .map_err(|e| NoAnswer(anyhow::Error::new(e).context(format!("request to {at}"))))?;
        let status = resp.status();
        let close = resp
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .any(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        let body = Limited::new(resp.into_body(), limit)
            .collect()
            .await
            .map_err(|e| anyhow::anyhow!("reading the answer of {at}: {e}"))?
            .to_bytes();
        self.done = close;
        Ok(Answer { status, body })
    }
}

#[cfg(test)]
mod tests;

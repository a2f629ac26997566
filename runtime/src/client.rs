//! One HTTPS/1.1 exchange with a control plane, for the sidecar (bootstrap, renewal, the
//! snapshot long poll), the operator CLI (`trustmesh status`) and peer replicas (the
//! blocklist exchange): TCP, TLS with the caller's client configuration (which decides what
//! the server must prove), one request, an answer of at most `limit` bytes, all within
//! `timeout`. No connection is kept: every call is a fresh handshake, so a renewed client
//! certificate is the one presented next time.

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
    tokio::time::timeout(timeout, exchange(tls, target, call, limit, &at))
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
    at: &str,
) -> anyhow::Result<Answer> {
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
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .with_context(|| format!("HTTP handshake with {at}"))?;
    let conn = tokio::spawn(conn);
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
    let resp = sender
        .send_request(req)
        .await
        .with_context(|| format!("request to {at}"))?;
    let status = resp.status();
    let body = Limited::new(resp.into_body(), limit)
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("reading the answer of {at}: {e}"))?
        .to_bytes();
    conn.abort();
    Ok(Answer { status, body })
}

#[cfg(test)]
mod tests;

//! Plain HTTP clients as an app would use them: HTTP/1.1 and h2c with prior knowledge, over any
//! byte stream (TCP to a sidecar's outbound port, or TLS in the TLS tests).

use std::error::Error as StdError;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Upper bound for one ordinary request and its whole response.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// A response read to its end.
#[derive(Debug, Clone)]
pub struct Resp {
    /// The status code.
    pub status: StatusCode,
    /// The response headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

impl Resp {
    /// The body as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON; the error quotes the status and body.
    pub fn json(&self) -> anyhow::Result<Value> {
        serde_json::from_slice(&self.body)
            .with_context(|| format!("{} body is not JSON: {:?}", self.status, self.text()))
    }
}

/// Reads `resp`'s body to the end (bounded by [`REQUEST_TIMEOUT`]).
pub async fn collect(resp: Response<Incoming>) -> anyhow::Result<Resp> {
    let (parts, body) = resp.into_parts();
    let body = tokio::time::timeout(REQUEST_TIMEOUT, body.collect())
        .await
        .context("timed out reading the response body")?
        .context("reading the response body")?
        .to_bytes();
    Ok(Resp {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

/// Connects to `addr` over TCP.
pub async fn connect(addr: SocketAddr) -> anyhow::Result<TcpStream> {
    tokio::time::timeout(REQUEST_TIMEOUT, TcpStream::connect(addr))
        .await
        .with_context(|| format!("timed out connecting to {addr}"))?
        .with_context(|| format!("connecting to {addr}"))
}

/// Sends one HTTP/1.1 request on a fresh connection over `io`; returns the response head with
/// its body still streaming. The connection closes when the response is done.
pub async fn send_http1_on<IO, B>(io: IO, req: Request<B>) -> anyhow::Result<Response<Incoming>>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .context("HTTP/1.1 handshake")?;
    tokio::spawn(conn);
    send.send_request(req)
        .await
        .context("sending the HTTP/1.1 request")
}

/// Sends one HTTP/2 request (prior knowledge: no upgrade, no ALPN needed) over `io`.
/// The request URI should be absolute (`http://b.test/x`) so that `:authority` is set.
pub async fn send_h2_on<IO, B>(io: IO, req: Request<B>) -> anyhow::Result<Response<Incoming>>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    B: Body<Data = Bytes> + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .context("HTTP/2 handshake")?;
    tokio::spawn(conn);
    send.send_request(req)
        .await
        .context("sending the HTTP/2 request")
}

/// An empty-bodied request builder shortcut: `GET path` with `Host: host` and extra headers.
pub fn get(
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<Request<Empty<Bytes>>> {
    let mut b = Request::get(path).header(http::header::HOST, host);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Empty::new()).context("building the request")
}

/// HTTP/1.1 `GET path` with `Host: host` to `addr`, read to the end.
pub async fn http1_get(
    addr: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<Resp> {
    let req = get(host, path, headers)?;
    let work = async {
        let resp = send_http1_on(connect(addr).await?, req).await?;
        collect(resp).await
    };
    tokio::time::timeout(REQUEST_TIMEOUT, work)
        .await
        .with_context(|| format!("timed out: GET {path} (Host: {host}) via {addr}"))?
}

/// h2c (prior knowledge) `GET http://authority/path` to `addr`, read to the end.
pub async fn h2c_get(
    addr: SocketAddr,
    authority: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<Resp> {
    let mut b = Request::get(format!("http://{authority}{path}"));
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b
        .body(Empty::<Bytes>::new())
        .context("building the request")?;
    let work = async {
        let resp = send_h2_on(connect(addr).await?, req).await?;
        collect(resp).await
    };
    tokio::time::timeout(REQUEST_TIMEOUT, work)
        .await
        .with_context(|| format!("timed out: h2c GET {path} (:authority {authority}) via {addr}"))?
}

/// Plain HTTP/1.1 `GET path` to a local admin listener (`Host: localhost`).
pub async fn admin_get(addr: SocketAddr, path: &str) -> anyhow::Result<Resp> {
    http1_get(addr, "localhost", path, &[]).await
}

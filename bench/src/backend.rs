//! The backend every case sends to: a tiny hyper HTTP/1.1 server answering `200 ok`.
//!
//! It runs in its own process (`trustmesh-bench backend --listen ADDR`, re-executed by the
//! harness) on a single-threaded runtime, so its cost is the same small, fixed share of the
//! machine in the direct, trustmesh and nginx cases.

use std::convert::Infallible;
use std::net::SocketAddr;

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// The response body; short, as a health check or small JSON answer would be.
const BODY: &[u8] = b"ok\n";

/// Serves until the process is killed (by the harness's guard).
pub fn serve(listen: SocketAddr) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding {listen}"))?;
        accept_loop(listener).await
    })
}

/// Answers every request on every connection accepted from `listener` with `200 ok`.
pub async fn accept_loop(listener: TcpListener) -> Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let svc = service_fn(|_req: Request<Incoming>| async {
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(BODY))))
            });
            // A client that goes away mid-request is not the backend's problem.
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

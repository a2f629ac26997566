//! The kubelet's health probes, rewritten to go through the sidecar as Istio does.
//!
//! With interception on, every plaintext connection to an app port is redirected to the mTLS
//! inbound listener and fails its handshake, kubelet probes included. The injector therefore
//! rewrites each `httpGet` / `tcpSocket` probe of the pod to
//! `GET http://POD_IP:15020/app-health/<container>/<livez|readyz|startupz>` and hands the
//! original probes to the sidecar as JSON (`--app-probes`, env `TRUSTMESH_APP_PROBES`), in the
//! format of Istio's `ISTIO_KUBE_APP_PROBERS`:
//!
//! ```json
//! {"/app-health/orders/livez": {"httpGet": {"path": "/healthz", "port": 8080}, "timeoutSeconds": 1},
//!  "/app-health/orders/readyz": {"tcpSocket": {"port": 8080}}}
//! ```
//!
//! The probe listener (`--probe-listen`, 0.0.0.0:15020 when injected; `init` is given
//! `--exclude-inbound-ports 15020`) answers exactly those paths, `GET` or `HEAD` only, by
//! making the declared probe against the app on loopback and returning its status (a TCP
//! probe answers 200 or 503). Any other path gets 404, so the only plaintext that reaches the
//! app from outside the pod is the probes the pod declares, with their declared paths. The
//! listener needs no credentials, so it is held to the same header and idle timeouts as the
//! others and to [`MAX_CONNECTIONS`] connections.
//!
//! [`declared`] parses `--app-probes`; [`serve`] takes what it needs of the flags as a
//! [`Config`], made once at start-up.

pub mod declared;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::layers::body::{self, Body};
use crate::layers::drive::{drive, ServeConfig};
use crate::layers::limits;
use crate::layers::rescue::text_response;
use crate::state::Shared;
use declared::{AppProbes, HttpGet};

/// A probe's timeout when it declares none (the Kubernetes default).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);

/// Most probe connections open at once: the kubelet opens one per probe and period, so this
/// is plenty, and a client without credentials cannot hold more.
pub const MAX_CONNECTIONS: usize = 64;

/// What the probe listener needs from the flags, made once at start-up.
#[derive(Debug, Clone)]
pub struct Config {
    /// The app's address (the IP of `--app`): probes go to its ports there.
    pub app_ip: IpAddr,
    /// `--app-probes`: the only paths answered.
    pub probes: AppProbes,
    /// The header and idle limits every served connection is held to (HTTP/1.1 only here).
    pub serve: ServeConfig,
}

/// Serves rewritten probes until the listener fails. Each connection is held to
/// `--header-timeout` (408) and `--idle-timeout`, and at most [`MAX_CONNECTIONS`] are open;
/// hits count as `trustmesh_limits_exceeded_total` with `direction="probe"`.
pub async fn serve(listener: TcpListener, config: Config, shared: Arc<Shared>) {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(DEFAULT_TIMEOUT * 5));
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build(connector);
    let serve_config = config.serve;
    let state = Arc::new((config.app_ip, config.probes, client));
    let conns = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(permit) = conns.clone().try_acquire_owned() else {
            limits::exceeded(&shared.metrics, "connections", DIRECTION);
            continue;
        };
        let (state, shared) = (state.clone(), shared.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let state = state.clone();
                async move {
                    let (app_ip, probes, client) = &*state;
                    Ok::<_, Infallible>(answer(&req, *app_ip, probes, client).await)
                }
            });
            let activity = limits::Activity::new();
            let io = TokioIo::new(limits::Tracked::with_head_timeout(
                tcp,
                activity.clone(),
                serve_config.header_timeout,
            ));
            let mut builder = Builder::new(TokioExecutor::new()).http1_only();
            builder
                .http1()
                .timer(TokioTimer::new())
                // `Tracked` answers 408, only while a head arrives; hyper's own would close
                // idle keep-alive connections (see `layers::drive::builder`).
                .header_read_timeout(None)
                .max_headers(serve_config.max_headers as usize)
                .max_buf_size(serve_config.max_header_bytes as usize);
            let conn = builder.serve_connection(io, svc);
            let (drain, metrics) = (&shared.drain, &shared.metrics);
            drive(
                conn,
                None,
                &activity,
                serve_config.timeouts(),
                drain,
                metrics,
                DIRECTION,
            )
            .await;
            drop(permit);
        });
    }
}

/// The `direction` label of the probe listener's limits.
const DIRECTION: &str = "probe";

async fn answer(
    req: &Request<Incoming>,
    app_ip: IpAddr,
    probes: &AppProbes,
    client: &Client<HttpConnector, Empty<Bytes>>,
) -> Response<Body> {
    let Some(probe) = probes.get(req.uri().path()) else {
        return text_response(StatusCode::NOT_FOUND, "trustmesh: no such probe\n".into());
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "trustmesh: GET only\n".into(),
        );
    }
    let timeout = probe
        .timeout_seconds
        .filter(|s| *s > 0)
        .map_or(DEFAULT_TIMEOUT, Duration::from_secs);
    let status = match (&probe.http_get, &probe.tcp_socket) {
        (Some(h), _) => http_probe(client, app_ip, h, timeout).await,
        (None, Some(t)) => tcp_probe(SocketAddr::new(app_ip, t.port), timeout).await,
        (None, None) => StatusCode::SERVICE_UNAVAILABLE,
    };
    let mut resp = Response::new(body::full(Bytes::new()));
    *resp.status_mut() = status;
    resp
}

async fn http_probe(
    client: &Client<HttpConnector, Empty<Bytes>>,
    app_ip: IpAddr,
    h: &HttpGet,
    timeout: Duration,
) -> StatusCode {
    let uri = format!("http://{}{}", SocketAddr::new(app_ip, h.port), h.path);
    let mut b = Request::get(uri).header(http::header::USER_AGENT, "kube-probe (via trustmesh)");
    for hdr in &h.http_headers {
        b = b.header(hdr.name.as_str(), hdr.value.as_str());
    }
    let Ok(req) = b.body(Empty::new()) else {
        return StatusCode::SERVICE_UNAVAILABLE;
    };
    match tokio::time::timeout(timeout, client.request(req)).await {
        Ok(Ok(resp)) => resp.status(),
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}

async fn tcp_probe(addr: SocketAddr, timeout: Duration) -> StatusCode {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => StatusCode::OK,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}

#[cfg(test)]
mod tests;

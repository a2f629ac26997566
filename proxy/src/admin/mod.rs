//! The admin listener (127.0.0.1:15000): `/live`, `/ready` (200 only with an unexpired
//! certificate and a snapshot), `/config` (JSON) and `/metrics` (Prometheus text),
//! `/log-level` (GET, and PUT to change it). What `/config` reports of the flags comes from
//! its [`Config`], made once at start-up.

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;

use http::{header, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::layers::body::{self, Body};
use crate::layers::rescue::text_response;
use crate::state::Shared;

/// What the admin listener reports besides the state: the flags as given, and what start-up
/// found.
#[derive(Debug, Clone)]
pub struct Config {
    /// `--control-plane`, the replicas' URLs comma-separated.
    pub control_plane: String,
    /// `--app`.
    pub app: SocketAddr,
    /// `--inbound`, as the flag says (it may name port 0).
    pub inbound: SocketAddr,
    /// `--outbound`, as the flag says.
    pub outbound: SocketAddr,
    /// `--admin`, as the flag says.
    pub admin: SocketAddr,
    /// The open-files limits after start-up raised the soft one (`None`: unknown).
    pub open_files: Option<crate::net::nofile::OpenFiles>,
}

/// Serves the admin endpoints until the process ends.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, config: Config) {
    let info = Arc::new(config);
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let shared = shared.clone();
        let info = info.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let put_log_level = req.method() == Method::PUT && req.uri().path() == "/log-level";
                let resp = (!put_log_level).then(|| handle(&shared, &info, &req));
                async move {
                    let resp = match resp {
                        Some(r) => r,
                        None => put_log_level_handler(req).await,
                    };
                    Ok::<_, std::convert::Infallible>(resp)
                }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

fn handle(shared: &Shared, info: &Config, req: &Request<Incoming>) -> Response<Body> {
    if req.method() != Method::GET {
        return text_response(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".into());
    }
    match req.uri().path() {
        "/live" => text_response(StatusCode::OK, "live\n".into()),
        "/log-level" => text_response(
            StatusCode::OK,
            format!(
                "{}\n",
                crate::observe::log_level::current().unwrap_or_default()
            ),
        ),
        "/ready" => match shared.readiness() {
            Ok(()) => text_response(StatusCode::OK, "ready\n".into()),
            Err(why) => text_response(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {why}\n"),
            ),
        },
        "/config" => json(&config(shared, info)),
        "/metrics" => {
            let mut resp = Response::new(body::full(shared.metrics.encode()));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            resp
        }
        _ => text_response(StatusCode::NOT_FOUND, "not found\n".into()),
    }
}

/// `PUT /log-level`: the body (at most 1 KiB) is the new filter.
async fn put_log_level_handler(req: Request<Incoming>) -> Response<Body> {
    use http_body_util::BodyExt as _;
    let body = match http_body_util::Limited::new(req.into_body(), 1024)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return text_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                "a log filter is at most 1 KiB\n".into(),
            )
        }
    };
    let text = String::from_utf8_lossy(&body);
    match crate::observe::log_level::set(&text) {
        Ok(now) => text_response(StatusCode::OK, format!("{now}\n")),
        Err(e) => text_response(StatusCode::BAD_REQUEST, format!("{e}\n")),
    }
}

fn config(shared: &Shared, info: &Config) -> serde_json::Value {
    let cert = shared.cert.load_full();
    let mesh = shared.mesh.load_full();
    serde_json::json!({
        "identity": shared.identity.as_str(),
        "certificate": cert.as_ref().map(|c| serde_json::json!({
            "serial": c.serial,
            "not_before": trustmesh_runtime::rfc3339(c.not_before),
            "expires_at": trustmesh_runtime::rfc3339(c.not_after),
        })),
        "policy_version": mesh.as_ref().map(|m| m.snapshot.policy_version().to_string()),
        "snapshot_version": mesh.as_ref().map(|m| m.snapshot.version.clone()),
        "services_known": mesh.as_ref().map(|m| m.snapshot.registry.entries().len()),
        "ready": shared.readiness().is_ok(),
        "control_plane": info.control_plane,
        "open_files_limit": info.open_files.map(|l| l.soft),
        "open_files_limit_hard": info.open_files.map(|l| l.hard),
        "app": info.app.to_string(),
        "listeners": {
            "inbound": info.inbound.to_string(),
            "outbound": info.outbound.to_string(),
            "admin": info.admin.to_string(),
        },
    })
}

fn json(v: &serde_json::Value) -> Response<Body> {
    let mut resp = Response::new(body::full(v.to_string()));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}

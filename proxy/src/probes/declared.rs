//! The app's original probes as `--app-probes` declares them (Istio's `ISTIO_KUBE_APP_PROBERS`
//! format), parsed and checked at start-up; [`super::serve`] serves them.

use std::collections::BTreeMap;

use http::Uri;
use serde::{Deserialize, Serialize};

/// The path prefix of rewritten probes.
pub const PREFIX: &str = "/app-health/";

/// The app's probes by rewritten path (`/app-health/<container>/<kind>`).
pub type AppProbes = BTreeMap<String, Prober>;

/// One original probe of the app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Prober {
    /// An HTTP GET against the app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_get: Option<HttpGet>,
    /// A TCP connect to the app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_socket: Option<TcpSocket>,
    /// Seconds before the probe counts as failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
}

/// Kubernetes' `httpGet` probe, with the port resolved to a number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpGet {
    /// The app's port.
    pub port: u16,
    /// The path (default `/`).
    #[serde(default = "root")]
    pub path: String,
    /// Only `HTTP` is rewritten; an HTTPS probe is left to the app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// Extra request headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_headers: Vec<HttpHeader>,
    /// Kubernetes' `host` field; ignored: the probe always goes to the app on loopback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// A header of an `httpGet` probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpHeader {
    /// Name.
    pub name: String,
    /// Value.
    pub value: String,
}

/// Kubernetes' `tcpSocket` probe, with the port resolved to a number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpSocket {
    /// The app's port.
    pub port: u16,
    /// Ignored, as for `httpGet`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

fn root() -> String {
    "/".to_string()
}

/// Parses and checks `--app-probes`: keys under `/app-health/`, exactly one probe kind each,
/// a path that is an origin-form path, scheme HTTP.
pub fn parse_app_probes(s: &str) -> Result<AppProbes, String> {
    let probes: AppProbes =
        serde_json::from_str(s).map_err(|e| format!("--app-probes is not valid JSON: {e}"))?;
    for (key, p) in &probes {
        if !key.starts_with(PREFIX) || key.len() == PREFIX.len() {
            return Err(format!(
                "--app-probes: {key:?} does not start with {PREFIX}"
            ));
        }
        match (&p.http_get, &p.tcp_socket) {
            (Some(h), None) => {
                if !h.path.starts_with('/') || h.path.parse::<Uri>().is_err() {
                    return Err(format!("--app-probes: {key:?}: bad path {:?}", h.path));
                }
                if h.scheme
                    .as_deref()
                    .is_some_and(|s| !s.eq_ignore_ascii_case("http"))
                {
                    return Err(format!(
                        "--app-probes: {key:?}: only HTTP probes can be rewritten"
                    ));
                }
            }
            (None, Some(_)) => {}
            _ => {
                return Err(format!(
                    "--app-probes: {key:?} needs exactly one of httpGet, tcpSocket"
                ))
            }
        }
    }
    Ok(probes)
}

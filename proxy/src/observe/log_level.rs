//! The log filter, changeable while the sidecar runs: `--log-level` (or `RUST_LOG`, which wins)
//! sets it at start, and `PUT /log-level` on the admin listener replaces it (body: an
//! `EnvFilter` directive such as `debug` or `info,trustmesh_proxy=trace`); `GET /log-level`
//! shows the one in force. Logs go to stderr; the access log (stdout) is not affected.

use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{reload, EnvFilter, Registry};

type Handle = reload::Handle<EnvFilter, Registry>;

/// Set once by [`init`]; the process has one subscriber.
static HANDLE: OnceLock<Handle> = OnceLock::new();

/// Installs the subscriber with a reloadable filter: `RUST_LOG` when set, else `level`.
pub fn init(level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let (layer, handle) = reload::Layer::new(filter);
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    if tracing_subscriber::registry()
        .with(layer)
        .with(fmt)
        .try_init()
        .is_ok()
    {
        let _ = HANDLE.set(handle);
    }
}

/// The filter in force, as text.
pub fn current() -> Option<String> {
    HANDLE.get()?.with_current(|f| f.to_string()).ok()
}

/// Replaces the filter; the error says why `directive` is not a filter.
pub fn set(directive: &str) -> Result<String, String> {
    let directive = directive.trim();
    if directive.is_empty() {
        return Err("an empty filter; send e.g. `debug` or `info,trustmesh_proxy=trace`".into());
    }
    let filter = EnvFilter::try_new(directive).map_err(|e| format!("{directive:?}: {e}"))?;
    let handle = HANDLE.get().ok_or("logging is not initialized")?;
    handle.reload(filter).map_err(|e| e.to_string())?;
    tracing::info!(filter = directive, "log level changed");
    Ok(directive.to_string())
}

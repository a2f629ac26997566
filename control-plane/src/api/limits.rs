//! API layer: the limits of the control plane's listener against clients that would hold it without
//! credentials (or with one identity's), each counted in
//! `trustmesh_cp_limits_exceeded_total{limit}` when hit:
//!
//! | limit | flag | default | what happens |
//! | --- | --- | --- | --- |
//! | `connections` | `--max-connections` | 10000 | a connection over it is closed at accept |
//! | `anonymous_connections` | `--max-anonymous-connections` | 1024 | a connection whose handshake ended without a client certificate, over it, is closed at once |
//! | `handshake_timeout` | `--handshake-timeout` | 10s | a TLS handshake slower than this is dropped |
//! | `header_timeout` | `--header-timeout` | 10s | a request head (or the next one on a kept-alive connection) not complete in time closes the connection (slowloris) |
//! | `body_timeout` | `--header-timeout` | 10s | a request body not complete in time gets `408 body_timeout` |
//! | `header_bytes` | | 64 KiB | a larger request head gets `431` |
//! | `protocol` | | | an HTTP/2 preface on the HTTP/1.1 connection ALPN chose closes it |
//! | `watches` | `--max-watches-per-identity` | 1024 | a snapshot long poll of an identity that has that many waiting gets `429 too_many_watches` |
//!
//! A connection is counted against `--max-connections` from accept to close, and against
//! `--max-anonymous-connections` from the end of its handshake when it presented no
//! certificate, so bootstrap and anonymous clients can never take the slots of proxies that
//! hold a mesh certificate. The per-identity cap is by identity, not by address: the identity
//! is what mTLS proved, an address is not (NAT, node proxies and IPv6 give one client many
//! addresses, or many clients one).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Args;
use trustmesh_certs::SpiffeId;

/// Largest request head (request line and headers). A bootstrap request with a Kubernetes
/// ServiceAccount JWT is a few KiB.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most header fields in a request head.
pub const MAX_HEADERS: usize = 64;

/// Flags of `trustmesh serve` that bound what one client can hold.
#[derive(Debug, Clone, Args)]
pub struct LimitArgs {
    /// Time a client has to send a whole request head (then the connection is closed), and
    /// then its body (then 408); also the longest idle time of a kept-alive connection.
    #[arg(long, env = "TRUSTMESH_HEADER_TIMEOUT", default_value = "10s", value_parser = trustmesh_runtime::parse_duration)]
    pub header_timeout: Duration,
    /// Time a client has to finish its TLS handshake.
    #[arg(long, env = "TRUSTMESH_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = trustmesh_runtime::parse_duration)]
    pub handshake_timeout: Duration,
    /// Open connections, handshakes included; one over it is closed at accept.
    #[arg(long, env = "TRUSTMESH_MAX_CONNECTIONS", default_value_t = 10000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// Of --max-connections, those whose client presented no certificate (bootstrap, the
    /// injection webhook, /healthz, /metrics); one over it is closed after its handshake.
    #[arg(long, env = "TRUSTMESH_MAX_ANONYMOUS_CONNECTIONS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_anonymous_connections: u32,
    /// Snapshot long polls waiting at once for one SPIFFE identity (its replicas share it);
    /// one more gets 429 too_many_watches.
    #[arg(long, env = "TRUSTMESH_MAX_WATCHES_PER_IDENTITY", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_watches_per_identity: u32,
}

/// A limit that was hit, as its `limit` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `--max-connections`.
    Connections,
    /// `--max-anonymous-connections`.
    AnonymousConnections,
    /// `--handshake-timeout`.
    HandshakeTimeout,
    /// `--header-timeout`.
    HeaderTimeout,
    /// A request body not complete within `--header-timeout`.
    BodyTimeout,
    /// [`MAX_HEAD_BYTES`] or [`MAX_HEADERS`].
    HeaderBytes,
    /// HTTP/2 on a connection that negotiated HTTP/1.1.
    Protocol,
    /// `--max-watches-per-identity`.
    Watches,
}

impl Limit {
    /// The `limit` label.
    pub fn label(self) -> &'static str {
        match self {
            Limit::Connections => "connections",
            Limit::AnonymousConnections => "anonymous_connections",
            Limit::HandshakeTimeout => "handshake_timeout",
            Limit::HeaderTimeout => "header_timeout",
            Limit::BodyTimeout => "body_timeout",
            Limit::HeaderBytes => "header_bytes",
            Limit::Protocol => "protocol",
            Limit::Watches => "watches",
        }
    }
}

/// The limits in force and what is held against them.
pub struct Limits {
    /// The flags.
    pub args: LimitArgs,
    open: AtomicUsize,
    anonymous: AtomicUsize,
    watches: Mutex<HashMap<SpiffeId, usize>>,
    exceeded: prometheus::IntCounterVec,
    connections_open: prometheus::IntGaugeVec,
    watches_open: prometheus::IntGauge,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("args", &self.args)
            .field("open", &self.open)
            .field("anonymous", &self.anonymous)
            .finish_non_exhaustive()
    }
}

impl Limits {
    /// Limits of `args` (register their metrics with [`Limits::collectors`]). Refuses an
    /// anonymous budget that is not below the whole: it must leave room for clients with a
    /// mesh certificate.
    pub fn new(args: LimitArgs) -> anyhow::Result<Arc<Self>> {
        if args.max_anonymous_connections >= args.max_connections {
            anyhow::bail!(
                "--max-anonymous-connections {} must be below --max-connections {}, so that \
                 clients with a mesh certificate always have room (lower both together)",
                args.max_anonymous_connections,
                args.max_connections
            );
        }
        let exceeded = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "trustmesh_cp_limits_exceeded_total",
                "Connections and requests refused or cut by a limit of the listener.",
            ),
            &["limit"],
        )?;
        let connections_open = prometheus::IntGaugeVec::new(
            prometheus::Opts::new(
                "trustmesh_cp_connections_open",
                "Open connections: in the TLS handshake, with a mesh certificate, or anonymous.",
            ),
            &["class"],
        )?;
        let watches_open = prometheus::IntGauge::new(
            "trustmesh_cp_watches_open",
            "Snapshot long polls waiting for a change.",
        )?;
        for class in [Class::Handshake, Class::Verified, Class::Anonymous] {
            connections_open.with_label_values(&[class.label()]).set(0);
        }
        Ok(Arc::new(Self {
            args,
            open: AtomicUsize::new(0),
            anonymous: AtomicUsize::new(0),
            watches: Mutex::new(HashMap::new()),
            exceeded,
            connections_open,
            watches_open,
        }))
    }

    /// The metrics, for the API's registry.
    pub fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.exceeded.clone()),
            Box::new(self.connections_open.clone()),
            Box::new(self.watches_open.clone()),
        ]
    }

    /// Counts one hit of `limit`.
    pub fn exceeded(&self, limit: Limit) {
        self.exceeded.with_label_values(&[limit.label()]).inc();
        tracing::debug!(limit = limit.label(), "limit exceeded");
    }

    /// A slot for a newly accepted connection (in its handshake), or `None` (counted) when
    /// `--max-connections` are open.
    pub fn accept(self: &Arc<Self>) -> Option<Connection> {
        if !take(&self.open, self.args.max_connections as usize) {
            self.exceeded(Limit::Connections);
            return None;
        }
        self.gauge(Class::Handshake).inc();
        Some(Connection {
            limits: self.clone(),
            class: Class::Handshake,
        })
    }

    /// The right of one long poll of `id` to wait, or `None` (counted) when
    /// `--max-watches-per-identity` of its polls are waiting.
    pub fn watch(self: &Arc<Self>, id: &SpiffeId) -> Option<Watch> {
        let mut watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        let held = watches.entry(id.clone()).or_insert(0);
        if *held >= self.args.max_watches_per_identity as usize {
            drop(watches);
            self.exceeded(Limit::Watches);
            return None;
        }
        *held += 1;
        self.watches_open.inc();
        Some(Watch {
            limits: self.clone(),
            id: id.clone(),
        })
    }

    fn gauge(&self, class: Class) -> prometheus::IntGauge {
        self.connections_open.with_label_values(&[class.label()])
    }
}

/// Increments `counter` unless it is at `max`.
fn take(counter: &AtomicUsize, max: usize) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .is_ok()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Handshake,
    Verified,
    Anonymous,
}

impl Class {
    fn label(self) -> &'static str {
        match self {
            Class::Handshake => "handshake",
            Class::Verified => "verified",
            Class::Anonymous => "anonymous",
        }
    }
}

/// One open connection's slot; dropping it frees the slot.
#[derive(Debug)]
pub struct Connection {
    limits: Arc<Limits>,
    class: Class,
}

impl Connection {
    /// The handshake ended with a mesh client certificate.
    pub fn verified(&mut self) {
        self.reclass(Class::Verified);
    }

    /// The handshake ended without a client certificate: takes an anonymous slot, or returns
    /// false (counted) when `--max-anonymous-connections` are open; close the connection then.
    pub fn anonymous(&mut self) -> bool {
        if self.class == Class::Anonymous {
            return true;
        }
        let limits = &self.limits;
        if !take(
            &limits.anonymous,
            limits.args.max_anonymous_connections as usize,
        ) {
            limits.exceeded(Limit::AnonymousConnections);
            return false;
        }
        self.reclass(Class::Anonymous);
        true
    }

    fn reclass(&mut self, to: Class) {
        if self.class == Class::Anonymous && to != Class::Anonymous {
            self.limits.anonymous.fetch_sub(1, Ordering::AcqRel);
        }
        self.limits.gauge(self.class).dec();
        self.limits.gauge(to).inc();
        self.class = to;
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if self.class == Class::Anonymous {
            self.limits.anonymous.fetch_sub(1, Ordering::AcqRel);
        }
        self.limits.gauge(self.class).dec();
        self.limits.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One waiting long poll of an identity; dropping it frees its place.
#[derive(Debug)]
pub struct Watch {
    limits: Arc<Limits>,
    id: SpiffeId,
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut watches = self
            .limits
            .watches
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(held) = watches.get_mut(&self.id) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                // Identities with nothing waiting are forgotten, so the map stays as small as
                // the set of identities watching now.
                watches.remove(&self.id);
            }
        }
        self.limits.watches_open.dec();
    }
}

#[cfg(test)]
mod tests;

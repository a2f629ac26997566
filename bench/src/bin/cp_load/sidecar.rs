//! One simulated sidecar: its own identity and client certificate, one mTLS HTTP/1.1
//! connection to the control plane at a time, and the snapshot watch the real proxy runs
//! (`proxy/src/watch.rs`): `GET /v1/snapshot?wait=0s` first, then
//! `GET /v1/snapshot?version=V&wait=W` over and over. As the proxy (`proxy/src/control/kept.rs`),
//! it keeps its connection until the control plane closes it (`Connection: close`, as a
//! draining one answers) or it fails; `--connection-per-poll` opens one per poll, as the
//! proxy did before it kept its connection. What it sees goes to the coordinator as
//! [`Event`]s, stamped when the response was read in full.
//!
//! After a lost connection it reconnects with the proxy watch's backoff (`proxy/src/watch.rs`:
//! 200 ms doubling to 30 s, or to 1 s while the connect is refused, each wait uniform in
//! [base/2, base], reset by an answer) and asks `?version=V&wait=0s` once, so that the coordinator learns when the
//! control plane serves it again even when nothing changed (the proxy would hold a long poll
//! there instead, which gives no answer to time). Its TLS configuration keeps its session
//! store across reconnects, as the proxy's control-plane client does, so a reconnect resumes
//! when the control plane sent it a ticket.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::sync::{mpsc, Semaphore};

/// First backoff after a failure; doubled per failure up to [`BACKOFF_MAX`] (the proxy's).
const BACKOFF_MIN: Duration = Duration::from_millis(200);
/// Longest backoff (the proxy's).
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Longest backoff while the connect is refused (the proxy watch's `REFUSED_BACKOFF_MAX`).
const REFUSED_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// TCP connect and TLS handshake together.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What a simulated sidecar reports.
#[derive(Debug)]
pub enum Event {
    /// A `200` with a snapshot of `version`, `bytes` long.
    Snapshot {
        /// Which sidecar.
        idx: usize,
        /// The snapshot's `version` field.
        version: String,
        /// Length of the JSON body.
        bytes: usize,
        /// When the body was read in full.
        at: Instant,
    },
    /// A `304` to the `wait=0s` poll after a reconnect: served again, nothing new.
    Served {
        /// Which sidecar.
        idx: usize,
        /// When the answer arrived.
        at: Instant,
    },
    /// A failed connect, handshake, request, or an answer other than 200/304.
    Error {
        /// Which sidecar.
        idx: usize,
        /// What failed.
        what: String,
        /// When it was seen.
        at: Instant,
        /// When the attempt that failed (the connect, or the request) began: one begun
        /// while nothing listened may be seen failing after a new control plane listens.
        began: Instant,
        /// When the connection it failed on was made (`None`: it failed connecting), so a
        /// failure on a connection to the control plane before a restart tells apart from
        /// one on a connection to the new process.
        conn: Option<Instant>,
    },
    /// A TLS handshake completed.
    Handshake {
        /// A resumed session (no certificate signed or verified), else a full handshake.
        resumed: bool,
    },
}

/// A poll that got no response head: the request may not have reached the control plane.
#[derive(Debug)]
struct NoAnswer(hyper::Error);

impl std::fmt::Display for NoAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no answer: {}", self.0)
    }
}

impl std::error::Error for NoAnswer {}

/// Whether `e` is a refused TCP connect (nothing listening).
fn connect_refused(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
    })
}

/// Everything one simulated sidecar needs.
pub struct Sidecar {
    /// Its index (also in its identity).
    pub idx: usize,
    /// mTLS client configuration with its own certificate.
    pub tls: Arc<ClientConfig>,
    /// The control plane's API.
    pub addr: SocketAddr,
    /// How long each long poll asks to be held.
    pub wait: Duration,
    /// A connection per poll (the proxy's control-plane client before it kept one), instead
    /// of one kept.
    pub per_poll: bool,
}

/// The `snapshot` fields the tool reads.
#[derive(serde::Deserialize)]
struct Versioned {
    version: String,
}

/// Percent-encodes a snapshot version for the query (`+` would read as a space).
fn encode(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 8);
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A small xorshift generator for backoff jitter (no cryptographic use).
struct Jitter(u64);

impl Jitter {
    fn below(&mut self, max: Duration) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX).max(1);
        Duration::from_nanos(self.0 % nanos)
    }

    /// The wait before reconnect number `failures` (1 or more): the proxy's base doubles from
    /// [`BACKOFF_MIN`] to `cap` and the wait is uniform in [base/2, base].
    fn backoff(&mut self, failures: u32, cap: Duration) -> Duration {
        let base = BACKOFF_MIN
            .saturating_mul(1 << failures.saturating_sub(1).min(16))
            .min(cap);
        base / 2 + self.below(base / 2)
    }
}

impl Sidecar {
    /// A connection ready for requests, and whether its TLS session was resumed.
    async fn connect(&self) -> Result<(SendRequest<Empty<Bytes>>, bool)> {
        let work = async {
            let tcp = tokio::net::TcpStream::connect(self.addr)
                .await
                .context("TCP connect")?;
            tcp.set_nodelay(true)?;
            let name = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into());
            let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
                .connect(name, tcp)
                .await
                .context("TLS handshake")?;
            let resumed = tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
            let (sender, conn) = http1::handshake(TokioIo::new(tls)).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Ok::<_, anyhow::Error>((sender, resumed))
        };
        tokio::time::timeout(CONNECT_TIMEOUT, work)
            .await
            .map_err(|_| anyhow!("connect timed out"))?
    }

    /// One poll: `None` is a 304, `Some((version, bytes))` a snapshot; and whether the
    /// control plane closes the connection after it (`Connection: close`, as a draining one
    /// answers its long polls).
    async fn poll(
        &self,
        sender: &mut SendRequest<Empty<Bytes>>,
        have: Option<&str>,
        wait: Duration,
    ) -> Result<(Option<(String, usize)>, bool)> {
        let path = match have {
            Some(v) => format!(
                "/v1/snapshot?version={}&wait={}ms",
                encode(v),
                wait.as_millis()
            ),
            None => "/v1/snapshot?wait=0s".to_owned(),
        };
        let req = http::Request::get(path)
            .header(http::header::HOST, "trustmesh-control-plane")
            .body(Empty::new())?;
        let work = async {
            // Before any response head: the proxy sends such a GET again on a new connection.
            sender.ready().await.map_err(NoAnswer)?;
            let resp = sender.send_request(req).await.map_err(NoAnswer)?;
            let status = resp.status();
            let last = closes(resp.headers());
            let body = resp.into_body().collect().await?.to_bytes();
            match status.as_u16() {
                304 => Ok((None, last)),
                200 => {
                    let v: Versioned =
                        serde_json::from_slice(&body).context("snapshot is not JSON")?;
                    Ok((Some((v.version, body.len())), last))
                }
                s => bail!("status {s}: {}", String::from_utf8_lossy(&body)),
            }
        };
        tokio::time::timeout(wait + Duration::from_secs(10), work)
            .await
            .map_err(|_| anyhow!("poll timed out"))?
    }

    /// Watches until the coordinator goes away; `ramp` bounds the concurrent first handshakes.
    pub async fn run(self, events: mpsc::UnboundedSender<Event>, ramp: Arc<Semaphore>) {
        let mut jitter = Jitter(
            0x9E37_79B9_7F4A_7C15 ^ (self.idx as u64 + 1).wrapping_mul(0x2545_F491_4F6C_DD1D),
        );
        let mut have: Option<String> = None;
        // As the proxy's watch: refused connects and other failures back off apart.
        let (mut failures, mut refused) = (0u32, 0u32);
        let mut pause = None;
        let mut first = true;
        // Whether the next connection's first poll asks `wait=0s` (after a failure or a
        // close by the server) to time when it is served again.
        let mut check = true;
        loop {
            if let Some(d) = pause.take() {
                tokio::time::sleep(d).await;
            }
            let permit = if first {
                ramp.acquire().await.ok()
            } else {
                None
            };
            let began = Instant::now();
            let conn = self.connect().await;
            drop(permit);
            let mut sender = match conn {
                Ok((s, resumed)) => {
                    if events.send(Event::Handshake { resumed }).is_err() {
                        return;
                    }
                    s
                }
                Err(e) => {
                    check = true;
                    pause = Some(if connect_refused(&e) {
                        refused = refused.saturating_add(1);
                        jitter.backoff(refused, REFUSED_BACKOFF_MAX)
                    } else {
                        failures = failures.saturating_add(1);
                        jitter.backoff(failures, BACKOFF_MAX)
                    });
                    let what = format!("{e:#}");
                    let at = Instant::now();
                    if events
                        .send(Event::Error {
                            idx: self.idx,
                            what,
                            at,
                            began,
                            conn: None,
                        })
                        .is_err()
                    {
                        return;
                    }
                    continue;
                }
            };
            first = false;
            let connected = Instant::now();
            // The first poll after a failure does not wait: served (or a new snapshot) at once.
            let mut wait = if check { Duration::ZERO } else { self.wait };
            // Polls this connection has answered: a kept one that gives no answer at all (the
            // server closed it while idle, as a draining control plane does) is left for a new
            // one at once, as the proxy sends its GET again (`proxy/src/control/kept.rs`).
            let mut answered = 0u32;
            loop {
                let began = Instant::now();
                let r = self.poll(&mut sender, have.as_deref(), wait).await;
                if answered > 0 && matches!(&r, Err(e) if e.is::<NoAnswer>()) {
                    check = true;
                    break;
                }
                answered += 1;
                let at = Instant::now();
                // A kept connection (as the proxy's): the next one is opened, at once, where the
                // server closes this (a draining control plane): no request on a closing one.
                let last = matches!(r, Ok((_, true)));
                let event = match r.map(|(answer, _)| answer) {
                    Ok(Some((version, bytes))) => {
                        have = Some(version.clone());
                        Event::Snapshot {
                            idx: self.idx,
                            version,
                            bytes,
                            at,
                        }
                    }
                    Ok(None) if wait.is_zero() => Event::Served { idx: self.idx, at },
                    Ok(None) if last || self.per_poll => {
                        check = last;
                        break;
                    }
                    Ok(None) => {
                        wait = self.wait;
                        continue;
                    }
                    Err(e) => Event::Error {
                        idx: self.idx,
                        what: format!("{e:#}"),
                        at,
                        began,
                        conn: Some(connected),
                    },
                };
                let failed = matches!(event, Event::Error { .. });
                if events.send(event).is_err() {
                    return;
                }
                if failed {
                    check = true;
                    failures = failures.saturating_add(1);
                    pause = Some(jitter.backoff(failures, BACKOFF_MAX));
                    break;
                }
                (failures, refused) = (0, 0);
                if last || self.per_poll {
                    check = last;
                    break;
                }
                wait = self.wait;
            }
        }
    }
}

/// Whether a response's `Connection` header says the server closes the connection after it
/// (RFC 9112 §9.6).
fn closes(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("close"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_close_is_read_among_other_tokens() {
        let mut h = http::HeaderMap::new();
        assert!(!closes(&h));
        h.append(http::header::CONNECTION, "keep-alive".parse().unwrap());
        assert!(!closes(&h));
        h.append(http::header::CONNECTION, "upgrade, Close".parse().unwrap());
        assert!(closes(&h));
    }

    #[test]
    fn versions_are_percent_encoded_for_the_query() {
        assert_eq!(encode("git:ab12+bcd"), "git%3Aab12%2Bbcd");
    }

    #[test]
    fn jitter_stays_below_its_cap() {
        let mut j = Jitter(42);
        for _ in 0..1000 {
            assert!(j.below(Duration::from_millis(5)) < Duration::from_millis(5));
        }
    }

    #[test]
    fn backoff_is_the_proxys() {
        let mut j = Jitter(7);
        let cases = [
            (1, 200, BACKOFF_MAX),
            (2, 400, BACKOFF_MAX),
            (8, 25_600, BACKOFF_MAX),
            (9, 30_000, BACKOFF_MAX),
            (40, 30_000, BACKOFF_MAX),
            (3, 800, REFUSED_BACKOFF_MAX),
            (4, 1_000, REFUSED_BACKOFF_MAX),
        ];
        for (failures, base_ms, cap) in cases {
            let base = Duration::from_millis(base_ms);
            for _ in 0..100 {
                let w = j.backoff(failures, cap);
                assert!(w >= base / 2 && w < base, "{failures}: {w:?}");
            }
        }
    }
}

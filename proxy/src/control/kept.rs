//! The kept connection to one control-plane replica, for calls with our certificate: one
//! HTTP/1.1 connection, reused while the TLS configuration it was made with is still the one
//! in force (the same `Arc`: a renewed certificate or a new trust bundle makes a new
//! configuration, so a new connection, and the certificate presented stays current) and the
//! connection is open. It is dropped when an answer says `Connection: close` or an exchange
//! fails. A call that finds it busy (another call holds it) makes a connection of its own, kept
//! afterwards only if the slot is free by then.
//!
//! A GET that gets no answer at all on a reused connection (closed or reset while it was idle:
//! a race with the control plane's idle close) is sent once more on a new connection; the
//! snapshot long poll is a GET and idempotent.

use std::sync::{Arc, Mutex};

use http::Method;
use trustmesh_runtime::client::{self, Answer, Connection, NoAnswer};

/// An idle connection and the configuration it was made with.
struct Idle {
    config: Arc<rustls::ClientConfig>,
    conn: Connection,
}

/// The slot of one replica's kept connection.
#[derive(Default)]
pub(super) struct Kept {
    idle: Mutex<Option<Idle>>,
}

impl Kept {
    /// The idle connection if it was made with `config` and can take a request; `None` when it
    /// is busy, stale, or there is none.
    fn take(&self, config: &Arc<rustls::ClientConfig>) -> Option<Connection> {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).take()?;
        (Arc::ptr_eq(&idle.config, config) && idle.conn.is_reusable()).then_some(idle.conn)
    }

    /// Keeps `conn` for the next call when it can take another request and the slot is free.
    fn put(&self, config: Arc<rustls::ClientConfig>, conn: Connection) {
        if !conn.is_reusable() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.is_none() {
            *idle = Some(Idle { config, conn });
        }
    }

    /// Sends `call` to `target` over the kept connection, or a new one made with `config`
    /// (see the module docs); the answer's body at most `limit` bytes.
    pub(super) async fn send(
        &self,
        config: Arc<rustls::ClientConfig>,
        target: &client::Target<'_>,
        call: client::Call<'_>,
        limit: usize,
    ) -> anyhow::Result<Answer> {
        if let Some(mut conn) = self.take(&config) {
            match conn.request(target, call.clone(), limit).await {
                Ok(answer) => {
                    self.put(config, conn);
                    return Ok(answer);
                }
                Err(e) if call.method == Method::GET && is_no_answer(&e) => {
                    tracing::debug!("the kept control-plane connection was closed ({e:#}); sending again on a new one");
                }
                Err(e) => return Err(e),
            }
        }
        let mut conn = Connection::open(config.clone(), target).await?;
        let answer = conn.request(target, call, limit).await?;
        self.put(config, conn);
        Ok(answer)
    }
}

fn is_no_answer(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<NoAnswer>().is_some())
}

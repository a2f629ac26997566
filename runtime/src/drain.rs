//! Graceful drain, for both binaries. On SIGTERM a binary begins the drain: its readiness
//! answers 503 (`/ready` of the sidecar, `/healthz` of the control plane), its listeners stop
//! accepting, every open HTTP connection is asked to finish (HTTP/1.1: close after the response
//! in flight; HTTP/2: GOAWAY, RFC 9113 §6.8, so that streams in flight complete and no new ones
//! start), and the process exits once they are done or `--drain-timeout` has passed, whichever
//! comes first.
//!
//! Each accepted connection holds a [`Watcher`] from the moment it is accepted (through the
//! TLS handshake) until it ends, so the drain also waits for connections that were still
//! shaking hands when it began.

use std::sync::Mutex;
use std::time::Duration;

use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::sync::watch;

/// The drain state shared by a binary's listeners, its readiness endpoint and its `main`.
pub struct Drain {
    draining: watch::Sender<bool>,
    graceful: Mutex<Option<GracefulShutdown>>,
}

impl Default for Drain {
    fn default() -> Self {
        Self {
            draining: watch::channel(false).0,
            graceful: Mutex::new(Some(GracefulShutdown::new())),
        }
    }
}

impl Drain {
    /// Whether the drain has begun (readiness answers 503 from then on).
    pub fn is_draining(&self) -> bool {
        *self.draining.borrow()
    }

    /// Resolves once the drain has begun; an accept loop selects on it to stop accepting.
    pub async fn started(&self) {
        let mut rx = self.draining.subscribe();
        let _ = rx.wait_for(|d| *d).await;
    }

    /// The watcher a newly accepted connection must hold; `None` once the drain has begun
    /// (the connection is then dropped unanswered).
    pub fn watcher(&self) -> Option<Watcher> {
        let graceful = self.graceful.lock().ok()?;
        graceful.as_ref().map(GracefulShutdown::watcher)
    }

    /// Begins the drain and waits up to `timeout` for every watched connection to end.
    /// Returns how many were still open when the wait ended (0 after a clean drain).
    pub async fn run(&self, timeout: Duration) -> usize {
        self.draining.send_replace(true);
        let graceful = self.graceful.lock().ok().and_then(|mut g| g.take());
        let Some(graceful) = graceful else {
            return 0;
        };
        let open = graceful.count();
        tracing::info!(
            connections = open,
            "draining: not ready, no new connections, waiting up to {timeout:?}"
        );
        // `count` is only known before `shutdown` consumes the handle; after a timeout the
        // exact number left is not, so report what was open when the drain began.
        match tokio::time::timeout(timeout, graceful.shutdown()).await {
            Ok(()) => 0,
            Err(_) => open.max(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drain_waits_for_watchers_up_to_the_timeout() {
        let drain = Drain::default();
        assert!(!drain.is_draining());
        let held = drain.watcher().unwrap();
        let left = drain.run(Duration::from_millis(50)).await;
        assert_eq!(left, 1, "a held watcher keeps the drain waiting");
        assert!(drain.is_draining());
        assert!(
            drain.watcher().is_none(),
            "no new connections once draining"
        );
        drop(held);

        let drain = Drain::default();
        let held = drain.watcher().unwrap();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            drop(held);
        });
        assert_eq!(drain.run(Duration::from_secs(5)).await, 0);
        drain.started().await;
    }
}

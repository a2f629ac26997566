//! Graceful drain of `trustmesh serve`. On SIGTERM the listener stops accepting, `/healthz`
//! answers 503 `draining`, snapshot long polls end at once with `304` (so a proxy polls
//! again, on another replica when it has several), every open connection is asked to finish
//! (HTTP/2 GOAWAY, RFC 9113 §6.8; HTTP/1.1 close after the response in flight), and the
//! process exits once they are done or `--drain-timeout` has passed.

use std::sync::Mutex;
use std::time::Duration;

use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::sync::watch;

/// The drain state shared by the listener and the API handlers.
pub struct Drain {
    timeout: Duration,
    draining: watch::Sender<bool>,
    graceful: Mutex<Option<GracefulShutdown>>,
}

impl Drain {
    /// A drain that waits at most `timeout` for open connections.
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            draining: watch::channel(false).0,
            graceful: Mutex::new(Some(GracefulShutdown::new())),
        }
    }

    /// Whether the drain has begun.
    pub fn is_draining(&self) -> bool {
        *self.draining.borrow()
    }

    /// Resolves once the drain has begun.
    pub async fn started(&self) {
        let mut rx = self.draining.subscribe();
        let _ = rx.wait_for(|d| *d).await;
    }

    /// The watcher a newly accepted connection holds until it ends; `None` once draining.
    pub fn watcher(&self) -> Option<Watcher> {
        let graceful = self.graceful.lock().ok()?;
        graceful.as_ref().map(GracefulShutdown::watcher)
    }

    /// Begins the drain and waits, up to the timeout, for every watched connection to end.
    /// Returns false when the timeout cut the wait short.
    pub async fn run(&self) -> bool {
        self.draining.send_replace(true);
        let graceful = self.graceful.lock().ok().and_then(|mut g| g.take());
        let Some(graceful) = graceful else {
            return true;
        };
        tracing::info!(
            connections = graceful.count(),
            "draining: not accepting, waiting up to {:?}",
            self.timeout
        );
        tokio::time::timeout(self.timeout, graceful.shutdown())
            .await
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drain_waits_for_open_connections_up_to_the_timeout() {
        let drain = Drain::new(Duration::from_millis(50));
        let held = drain.watcher().unwrap();
        assert!(!drain.run().await, "a held watcher outlasts the timeout");
        assert!(drain.is_draining() && drain.watcher().is_none());
        drop(held);
        let drain = Drain::new(Duration::from_secs(5));
        let held = drain.watcher().unwrap();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            drop(held);
        });
        assert!(drain.run().await);
    }
}

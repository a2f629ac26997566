//! The tunnels an upgrade leaves behind on a served connection. Once an HTTP/1.1 connection has
//! switched protocols hyper's connection ends and hands the bytes to the tunnel, but the
//! connection is still there: [`crate::layers::drive::serve`] waits for its tunnels to close
//! ([`Activity::tunnels_closed`]), so that everything the connection's task holds — its
//! `--max-connections` permit, its `--max-connections-per-identity` slot, its place in
//! `trustmesh_connections_open` — stays held until the last byte of the tunnel.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{Activity, InFlight};

/// An upgrade's tunnel, open on its connection until this drops: a request in flight (so no
/// timeout of the connection cuts it) that [`Activity::tunnels_closed`] waits for.
pub struct OpenTunnel {
    activity: Arc<Activity>,
    _in_flight: InFlight,
}

impl Activity {
    /// Marks a tunnel open on this connection until the guard drops.
    pub fn tunnel(self: &Arc<Self>) -> OpenTunnel {
        self.tunnels.fetch_add(1, Ordering::AcqRel);
        OpenTunnel {
            activity: self.clone(),
            _in_flight: self.request(),
        }
    }

    /// Resolves once no tunnel is open on this connection (at once when none ever was).
    pub async fn tunnels_closed(&self) {
        loop {
            let closed = self.tunnel_closed.notified();
            tokio::pin!(closed);
            // Registered before the count is read, so a close in between is not missed.
            closed.as_mut().enable();
            if self.tunnels.load(Ordering::Acquire) == 0 {
                return;
            }
            closed.await;
        }
    }
}

impl Drop for OpenTunnel {
    fn drop(&mut self) {
        if self.activity.tunnels.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.activity.tunnel_closed.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn waits_for_every_tunnel_to_close() {
        let a = Activity::new();
        tokio::time::timeout(Duration::from_secs(5), a.tunnels_closed())
            .await
            .unwrap();
        let (first, second) = (a.tunnel(), a.tunnel());
        let waiting = tokio::spawn({
            let a = a.clone();
            async move { a.tunnels_closed().await }
        });
        drop(first);
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "one tunnel is still open");
        drop(second);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .unwrap()
            .unwrap();
    }
}

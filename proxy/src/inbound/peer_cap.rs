//! The per-identity share of the inbound listener: one peer identity may hold at most
//! `--max-connections-per-identity` inbound connections at once (default a quarter of
//! `--max-connections`), so that one workload — or one stolen certificate — cannot take every
//! connection the listener has. Counted after the TLS handshake, the first moment the
//! identity is known; a connection over the cap is closed and counted as
//! `trustmesh_limits_exceeded_total{limit="connections_per_identity"}`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use trustmesh_certs::SpiffeId;

/// Open inbound connections by peer identity.
#[derive(Debug)]
pub struct PeerCap {
    cap: u32,
    open: Mutex<HashMap<SpiffeId, u32>>,
}

impl PeerCap {
    /// A cap of `cap` connections per identity.
    pub fn new(cap: u32) -> Arc<Self> {
        Arc::new(Self {
            cap,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// Takes a slot for `peer`, held until the permit drops; `None` when `peer` already
    /// holds the cap (or the count is unusable, which refuses rather than lets through).
    pub fn acquire(self: &Arc<Self>, peer: &SpiffeId) -> Option<PeerPermit> {
        let mut open = self.open.lock().ok()?;
        let n = open.entry(peer.clone()).or_insert(0);
        if *n >= self.cap {
            return None;
        }
        *n += 1;
        Some(PeerPermit {
            cap: self.clone(),
            peer: peer.clone(),
        })
    }

    #[cfg(test)]
    fn held(&self) -> usize {
        self.open.lock().map(|m| m.len()).unwrap_or(0)
    }
}

/// One connection's slot of its identity's share.
#[derive(Debug)]
pub struct PeerPermit {
    cap: Arc<PeerCap>,
    peer: SpiffeId,
}

impl Drop for PeerPermit {
    fn drop(&mut self) {
        let Ok(mut open) = self.cap.open.lock() else {
            return;
        };
        if let Some(n) = open.get_mut(&self.peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                // Forget identities with nothing open, so the map is bounded by what is open.
                open.remove(&self.peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_each_identity_on_its_own() {
        let cap = PeerCap::new(2);
        let a = SpiffeId::parse("spiffe://cluster.local/ns/t/sa/a").unwrap();
        let b = SpiffeId::parse("spiffe://cluster.local/ns/t/sa/b").unwrap();
        let a1 = cap.acquire(&a).unwrap();
        let _a2 = cap.acquire(&a).unwrap();
        assert!(cap.acquire(&a).is_none(), "a third connection of a");
        let b1 = cap.acquire(&b).unwrap();
        drop(a1);
        assert!(cap.acquire(&a).is_some(), "a slot of a is free again");
        drop(b1);
        assert_eq!(cap.held(), 1, "b is forgotten once it holds nothing");
    }
}

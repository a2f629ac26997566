//! Loopback ports for the tests' listeners, so that tests run in parallel without sharing one.
//!
//! Ports come from 20000-31999, below the kernel's ephemeral range (32768-60999 by default):
//! a port taken there by bind-and-release can be handed by the kernel to some test's outgoing
//! connection before the sidecar binds it ("Address already in use"); ports outside that
//! range never are. A counter shared by the test process hands each port out once.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::Context as _;

const FIRST: u32 = 20_000;
const SPAN: u32 = 12_000;

/// A loopback address whose port nobody listens on now and no other caller in this process
/// gets: the next port of the range that binds.
pub fn free_addr() -> anyhow::Result<SocketAddr> {
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    // Start each test process somewhere else, so that a process still shutting down from the
    // previous test binary is not in the way.
    let seed = std::process::id().wrapping_mul(7919) % SPAN;
    let _ = NEXT.compare_exchange(u32::MAX, seed, Ordering::Relaxed, Ordering::Relaxed);
    for _ in 0..SPAN {
        let port = FIRST + NEXT.fetch_add(1, Ordering::Relaxed) % SPAN;
        let Ok(port) = u16::try_from(port) else {
            continue;
        };
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
            return listener.local_addr().context("reading the bound address");
        }
    }
    anyhow::bail!("no free loopback port in {FIRST}..{}", FIRST + SPAN)
}

/// A loopback address on which nothing listens: bound once and released, so connecting to it is
/// refused.
pub fn closed_addr() -> anyhow::Result<SocketAddr> {
    free_addr()
}

/// The three listeners of one sidecar.
#[derive(Debug, Clone, Copy)]
pub struct ProxyPorts {
    /// mTLS from other sidecars.
    pub inbound: SocketAddr,
    /// Plain HTTP from the local app.
    pub outbound: SocketAddr,
    /// `/live`, `/ready`, `/config`, `/metrics`.
    pub admin: SocketAddr,
}

impl ProxyPorts {
    /// Three fresh loopback ports.
    pub fn allocate() -> anyhow::Result<Self> {
        Ok(Self {
            inbound: free_addr()?,
            outbound: free_addr()?,
            admin: free_addr()?,
        })
    }
}

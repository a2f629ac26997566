//! Ephemeral loopback ports, so that tests run in parallel without sharing a port.

use std::net::{SocketAddr, TcpListener};

use anyhow::Context as _;

/// A loopback address with a port that was free a moment ago: bind `127.0.0.1:0`, read the
/// port the kernel chose, release it. A race with another process is possible but unlikely
/// (the kernel hands ephemeral ports out in rotation).
pub fn free_addr() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    listener.local_addr().context("reading the bound address")
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

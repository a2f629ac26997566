//! IPv6 twins of the IPv4 listeners. `trustmesh-proxy init` redirects IPv6 traffic too, so the
//! sidecar also listens on `[::1]` beside `127.0.0.1` (outbound) and on `[::]` (IPv6 only)
//! beside `0.0.0.0` (inbound). A host without IPv6 gets no twin, and that is not an error.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;

/// The IPv6 listener matching `v4`, when `v4` is `127.0.0.1:P` or `0.0.0.0:P` with `P != 0`.
pub async fn ipv6_twin(v4: SocketAddr) -> Option<TcpListener> {
    let ip = match v4.ip() {
        IpAddr::V4(ip) if ip.is_loopback() => Ipv6Addr::LOCALHOST,
        IpAddr::V4(ip) if ip.is_unspecified() => Ipv6Addr::UNSPECIFIED,
        _ => return None,
    };
    if v4.port() == 0 {
        return None;
    }
    let addr = SocketAddr::new(ip.into(), v4.port());
    match bind_v6_only(addr) {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::debug!("no IPv6 listener on {addr}: {e}");
            None
        }
    }
}

fn bind_v6_only(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_only_v6(true)?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn twins_only_for_loopback_and_any_with_a_fixed_port() {
        assert!(ipv6_twin("127.0.0.1:0".parse().unwrap()).await.is_none());
        assert!(ipv6_twin("10.0.0.1:15006".parse().unwrap()).await.is_none());
        // Pick a port free on IPv4 loopback; its IPv6 twin binds when the host has IPv6.
        let v4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = v4.local_addr().unwrap();
        if let Some(l) = ipv6_twin(addr).await {
            let got = l.local_addr().unwrap();
            assert_eq!(
                got,
                SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port())
            );
        }
    }
}

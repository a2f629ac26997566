//! Where a connection was going before iptables redirected it to us.
//!
//! `trustmesh-proxy init` installs nat `REDIRECT` rules: the app's outbound TCP lands on the
//! outbound listener (15001) and the pod's inbound TCP on the inbound listener (15006). The
//! kernel's connection tracking keeps the address the peer dialled, which `SO_ORIGINAL_DST`
//! (IPv4) and `IP6T_SO_ORIGINAL_DST` (IPv6) read back. socket2 wraps both, so no `unsafe` here.
//!
//! A connection that reached the listener directly (the app dialled `127.0.0.1:15001`, a peer
//! sidecar dialled `POD_IP:15006`) either has no conntrack entry (`ENOENT`) or reports the
//! listener's own address; both mean "not redirected".

use std::io;
use std::net::{IpAddr, SocketAddr};

use socket2::SockRef;
use tokio::net::TcpStream;

/// The original destination of `stream` when iptables redirected it here, else `None`.
pub fn redirected(stream: &TcpStream) -> Option<SocketAddr> {
    let local = stream.local_addr().ok()?;
    match original_dst(stream, local) {
        Ok(orig) => redirected_from(local, orig),
        Err(e) => {
            // ENOENT: no NAT entry, the usual case without interception.
            if e.raw_os_error() != Some(2) {
                tracing::debug!("reading the original destination: {e}");
            }
            None
        }
    }
}

/// Reads the original destination, choosing the IPv4 or IPv6 option by the socket's family
/// (an IPv4 peer on a dual-stack IPv6 socket is IPv4 to netfilter).
fn original_dst(stream: &TcpStream, local: SocketAddr) -> io::Result<SocketAddr> {
    let sock = SockRef::from(stream);
    let ipv4 = match local.ip() {
        IpAddr::V4(_) => true,
        IpAddr::V6(v6) => v6.to_ipv4_mapped().is_some(),
    };
    let addr = if ipv4 {
        sock.original_dst_v4()?
    } else {
        sock.original_dst_v6()?
    };
    addr.as_socket()
        .ok_or_else(|| io::Error::other("the original destination is not an IP address"))
}

/// `orig` when it differs from the address the connection arrived on (`local`).
fn redirected_from(local: SocketAddr, orig: SocketAddr) -> Option<SocketAddr> {
    let canonical = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
    (canonical(local) != canonical(orig)).then(|| canonical(orig))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_address_is_not_a_redirect() {
        let local: SocketAddr = "10.1.0.5:15006".parse().unwrap();
        assert_eq!(redirected_from(local, local), None);
        let mapped: SocketAddr = "[::ffff:10.1.0.5]:15006".parse().unwrap();
        assert_eq!(redirected_from(mapped, local), None);
        let orig: SocketAddr = "10.1.0.5:8080".parse().unwrap();
        assert_eq!(redirected_from(local, orig), Some(orig));
        let orig6: SocketAddr = "[::ffff:10.1.0.9]:80".parse().unwrap();
        assert_eq!(
            redirected_from(mapped, orig6),
            Some("10.1.0.9:80".parse().unwrap())
        );
    }

    #[tokio::test]
    async fn a_direct_loopback_connection_is_not_redirected() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        assert_eq!(redirected(&server), None);
    }
}

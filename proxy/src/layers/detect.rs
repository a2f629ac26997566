//! Protocol detection, the step after accept (outbound) or TLS (inbound): what a connection
//! carries decides the stack it goes down. Inbound reads the ALPN the peer sidecar negotiated
//! (`trustmesh-tcp` is opaque TCP, anything else HTTP); outbound peeks at the first bytes of a
//! connection iptables redirected (an HTTP/1 method or the h2c preface is HTTP, anything else
//! opaque TCP).

use std::time::{Duration, Instant};

use tokio::net::TcpStream;

/// The ALPN protocol of opaque TCP between sidecars.
pub const OPAQUE_ALPN: &[u8] = b"trustmesh-tcp";

/// How long a redirected connection may stay silent before it is taken as non-HTTP (a
/// server-speaks-first protocol).
pub const SNIFF_TIMEOUT: Duration = Duration::from_millis(300);

/// What a connection carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1 or HTTP/2: served by hyper, authorized per request.
    Http,
    /// Bytes of another protocol: authorized once per connection and copied.
    Opaque,
}

/// The protocol of an inbound mTLS connection, by the ALPN it negotiated.
pub fn by_alpn(alpn: Option<&[u8]>) -> Protocol {
    if alpn == Some(OPAQUE_ALPN) {
        Protocol::Opaque
    } else {
        Protocol::Http
    }
}

/// Whether a redirected connection opens like HTTP/1 (`METHOD `) or h2c (`PRI * HTTP/2.0`).
/// Peeks without consuming; gives up after [`SNIFF_TIMEOUT`] of silence.
pub async fn sniff_http(tcp: &TcpStream) -> bool {
    let deadline = Instant::now() + SNIFF_TIMEOUT;
    let mut buf = [0u8; 16];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let n = match tokio::time::timeout(left, tcp.peek(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => return false,
        };
        if let Some(http) = classify(&buf[..n]) {
            return http;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `Some(true)` for an HTTP start, `Some(false)` for anything else, `None` when more bytes
/// are needed to tell.
fn classify(b: &[u8]) -> Option<bool> {
    // An upper-case token of 1 to 7 letters and a space: every HTTP/1 method, and the h2c
    // preface `PRI * HTTP/2.0`.
    let token = b.iter().take_while(|c| c.is_ascii_uppercase()).count();
    match b.get(token) {
        Some(b' ') => Some((1..=7).contains(&token)),
        Some(_) => Some(false),
        None if token < 8 => None,
        None => Some(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_opaque_alpn_alone_is_opaque() {
        assert_eq!(by_alpn(Some(OPAQUE_ALPN)), Protocol::Opaque);
        assert_eq!(by_alpn(Some(b"h2")), Protocol::Http);
        assert_eq!(by_alpn(Some(b"http/1.1")), Protocol::Http);
        assert_eq!(by_alpn(None), Protocol::Http);
    }

    #[tokio::test]
    async fn sniffing_a_socket_tells_http_from_tls() {
        for (first, http) in [
            (&b"GET / HTTP/1.1\r\n"[..], true),
            (b"\x16\x03\x01\x02\x00", false),
        ] {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (server, _) = listener.accept().await.unwrap();
            tokio::io::AsyncWriteExt::write_all(&mut client, first)
                .await
                .unwrap();
            assert_eq!(sniff_http(&server).await, http, "{first:?}");
        }
    }

    #[test]
    fn sniffing_tells_http_from_other_protocols() {
        for http in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"POST /x",
            b"OPTIONS ",
            b"PRI * HTTP/2.0",
        ] {
            assert_eq!(
                classify(http),
                Some(true),
                "{:?}",
                String::from_utf8_lossy(http)
            );
        }
        for other in [
            &b"\x16\x03\x01\x02\x00"[..],
            b"SSH-2.0-OpenSSH",
            b"get / HTTP/1.1",
            b" GET",
        ] {
            assert_eq!(
                classify(other),
                Some(false),
                "{:?}",
                String::from_utf8_lossy(other)
            );
        }
        for partial in [&b""[..], b"GE", b"DELETE"] {
            assert_eq!(
                classify(partial),
                None,
                "{:?}",
                String::from_utf8_lossy(partial)
            );
        }
        assert_eq!(classify(b"ABCDEFGHIJ"), Some(false));
    }
}

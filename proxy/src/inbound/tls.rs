//! The TLS layer of the inbound stack: the mTLS handshake (a client certificate that chains to
//! the trust bundle is required), held to `--handshake-timeout`, and the caller's verified
//! SPIFFE ID. A refused or slow handshake is counted in `trustmesh_handshake_errors_total`
//! by a bounded reason and the connection dropped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;
use trustmesh_certs::SpiffeId;

use crate::layers::limits;
use crate::observe::metrics::Metrics;

/// Runs the handshake on `io`; `None` when it failed or timed out (already counted and
/// logged), else the stream and the caller's verified identity.
pub async fn handshake<IO>(
    config: Arc<rustls::ServerConfig>,
    io: IO,
    timeout: Duration,
    metrics: &Metrics,
    addr: SocketAddr,
) -> Option<(TlsStream<IO>, SpiffeId)>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let tls = match tokio::time::timeout(timeout, acceptor.accept(io)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            let reason = handshake_reason(&e);
            metrics.handshake_errors.with_label_values(&[reason]).inc();
            tracing::info!(client.addr = %addr, reason, "TLS handshake refused: {e}");
            return None;
        }
        Err(_) => {
            metrics
                .handshake_errors
                .with_label_values(&["timeout"])
                .inc();
            limits::exceeded(metrics, "handshake_timeout", "inbound");
            return None;
        }
    };
    // The verifier only lets a valid SPIFFE certificate through, so this is always Some.
    let peer = trustmesh_certs::verify::peer_identity(tls.get_ref().1.peer_certificates())?;
    Some((tls, peer))
}

/// A bounded label for why an inbound handshake failed.
fn handshake_reason(e: &std::io::Error) -> &'static str {
    use rustls::{CertificateError, Error};
    match e.get_ref().and_then(|inner| inner.downcast_ref::<Error>()) {
        Some(Error::NoCertificatesPresented) => "no_client_certificate",
        Some(Error::InvalidCertificate(CertificateError::Expired))
        | Some(Error::InvalidCertificate(CertificateError::ExpiredContext { .. })) => "expired",
        Some(Error::InvalidCertificate(CertificateError::UnknownIssuer)) => "unknown_issuer",
        Some(Error::InvalidCertificate(_)) => "bad_certificate",
        Some(Error::PeerIncompatible(_)) => "incompatible",
        Some(_) => "protocol",
        None => "io",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io_error(e: rustls::Error) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }

    #[test]
    fn handshake_failures_get_bounded_reasons() {
        use rustls::{CertificateError, Error};
        let cases = [
            (Error::NoCertificatesPresented, "no_client_certificate"),
            (
                Error::InvalidCertificate(CertificateError::Expired),
                "expired",
            ),
            (
                Error::InvalidCertificate(CertificateError::UnknownIssuer),
                "unknown_issuer",
            ),
            (
                Error::InvalidCertificate(CertificateError::BadSignature),
                "bad_certificate",
            ),
            (Error::DecryptError, "protocol"),
        ];
        for (e, want) in cases {
            assert_eq!(handshake_reason(&io_error(e)), want);
        }
        let plain = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert_eq!(handshake_reason(&plain), "io");
    }
}

//! The rustls configurations of the mesh: TLS 1.3 only, one crypto provider ([`provider`]), certificates from our
//! CA checked by the SPIFFE verifiers. Sidecars use [`sidecar_server_config`] on inbound and
//! [`sidecar_client_config`] on outbound; the control plane serves with
//! [`control_plane_server_config`] and proxies call it with [`control_plane_client_config`].
//!
//! Client configurations ignore the TLS server name (identity is the SPIFFE ID), so callers
//! may pass any valid `ServerName`, such as the destination's host.
//!
//! Session resumption is off on both sides: every new connection verifies the certificates in
//! force now, so a rotated certificate is presented, and an expired one refused, on the very
//! next handshake. Connections between sidecars are pooled, so full handshakes are rare.

use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, ServerConfig};

use crate::bundle::TrustBundle;
use crate::error::CertError;
use crate::key::PrivateKey;
pub use crate::provider::provider;
use crate::resolver::RotatingResolver;
use crate::spiffe::{SpiffeId, TrustDomain};
use crate::verify::{SpiffeClientVerifier, SpiffeServerVerifier};

/// ALPN for HTTP/2.
const H2: &[u8] = b"h2";
/// ALPN for HTTP/1.1.
const HTTP11: &[u8] = b"http/1.1";

/// Turns resumption off (see the module docs).
fn no_server_resumption(mut cfg: ServerConfig) -> ServerConfig {
    cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    cfg.send_tls13_tickets = 0;
    cfg
}

/// Turns resumption off (see the module docs).
fn no_client_resumption(mut cfg: ClientConfig) -> ClientConfig {
    cfg.resumption = rustls::client::Resumption::disabled();
    cfg
}

fn server_builder() -> Result<rustls::ConfigBuilder<ServerConfig, rustls::WantsVerifier>, CertError>
{
    ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(CertError::rustls("TLS 1.3 server"))
}

fn client_builder() -> Result<rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier>, CertError>
{
    ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(CertError::rustls("TLS 1.3 client"))
}

/// A sidecar's inbound listener: TLS 1.3 only, a client certificate of trust domain `td`
/// chaining to `bundle` is mandatory, the server certificate comes from `resolver` (so it
/// rotates), ALPN `h2` then `http/1.1`.
pub fn sidecar_server_config(
    bundle: &TrustBundle,
    td: &TrustDomain,
    resolver: Arc<RotatingResolver>,
) -> Result<ServerConfig, CertError> {
    let verifier = Arc::new(SpiffeClientVerifier::new(bundle, td)?);
    let mut cfg = no_server_resumption(
        server_builder()?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(resolver),
    );
    cfg.alpn_protocols = vec![H2.to_vec(), HTTP11.to_vec()];
    Ok(cfg)
}

/// A sidecar's outbound connections to one destination: TLS 1.3 only, the server must be
/// exactly `expected` (chaining to `bundle`), the client certificate comes from `resolver`,
/// ALPN `h2`.
pub fn sidecar_client_config(
    bundle: &TrustBundle,
    resolver: Arc<RotatingResolver>,
    expected: SpiffeId,
) -> Result<ClientConfig, CertError> {
    let mut cfg = no_client_resumption(
        client_builder()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(SpiffeServerVerifier::new(bundle, expected)))
            .with_client_cert_resolver(resolver),
    );
    cfg.alpn_protocols = vec![H2.to_vec()];
    Ok(cfg)
}

/// The control plane's API listener: TLS 1.3 only, a client certificate of trust domain `td`
/// is verified when sent but optional (bootstrap clients have none yet), serves `chain` with
/// `key`, ALPN `http/1.1`.
pub fn control_plane_server_config(
    bundle: &TrustBundle,
    td: &TrustDomain,
    chain: Vec<CertificateDer<'static>>,
    key: &PrivateKey,
) -> Result<ServerConfig, CertError> {
    if chain.is_empty() {
        return Err(CertError::EmptyChain);
    }
    let verifier = Arc::new(SpiffeClientVerifier::optional(bundle, td)?);
    let mut cfg = no_server_resumption(
        server_builder()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key.to_der())
            .map_err(CertError::rustls("control plane certificate and key"))?,
    );
    cfg.alpn_protocols = vec![HTTP11.to_vec()];
    Ok(cfg)
}

/// A proxy's (or CLI's) connection to the control plane: TLS 1.3 only, the server must be
/// `expected` (usually [`crate::control_plane_identity`]), presents the certificate of
/// `client_cert` when given (renewal, snapshot watch) and none otherwise (bootstrap),
/// ALPN `http/1.1`.
pub fn control_plane_client_config(
    bundle: &TrustBundle,
    expected: SpiffeId,
    client_cert: Option<Arc<RotatingResolver>>,
) -> Result<ClientConfig, CertError> {
    let builder = client_builder()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SpiffeServerVerifier::new(bundle, expected)));
    let mut cfg = no_client_resumption(match client_cert {
        Some(resolver) => builder.with_client_cert_resolver(resolver),
        None => builder.with_no_client_auth(),
    });
    cfg.alpn_protocols = vec![HTTP11.to_vec()];
    Ok(cfg)
}

#[cfg(test)]
mod tests;

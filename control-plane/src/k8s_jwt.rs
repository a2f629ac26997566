//! Kubernetes bootstrap: a projected ServiceAccount token (a JWT the kubelet mounts into the
//! pod, audience `trustmesh`) stands in for a `trustmesh token create` token.
//!
//! The JWT is checked with `jsonwebtoken` (aws-lc-rs backend) against the cluster's JWKS
//! (`--k8s-jwks`, a file or a URL such as the API server's `/openid/v1/jwks`): the signature
//! with the key its `kid` names (asymmetric algorithms only, never HMAC or `none`), the issuer
//! (`--k8s-issuer`), the audience (`--k8s-audience`, default `trustmesh`), the expiry and the
//! not-before time. Its subject `system:serviceaccount:NS:SA` becomes
//! `spiffe://TRUST_DOMAIN/ns/NS/sa/SA` (RFC 7519 §4.1; Kubernetes service account tokens).
//!
//! The key set is read at start and read again when a token names a key it lacks (at most once
//! per [`REFRESH_MIN`], so garbage `kid`s cannot make us hammer the API server) and when it is
//! older than [`REFRESH_MAX`] (so a key the cluster dropped stops working).
//! Unlike `tm1` tokens, these JWTs are not single use: the kubelet hands the same token to
//! every start of the container until it rotates it, and it is bound to the pod's lifetime.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use arc_swap::ArcSwap;
use bytes::Bytes;
use clap::Args;
use http::{header, Request, Uri};
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_util::rt::TokioIo;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use trustmesh_certs::{SpiffeId, TrustDomain};

/// Least time between two key set reads caused by unknown `kid`s.
pub const REFRESH_MIN: Duration = Duration::from_secs(10);
/// Oldest a key set may get before it is read again.
pub const REFRESH_MAX: Duration = Duration::from_secs(300);
/// Clock skew allowed on `exp` and `nbf`.
const LEEWAY_SECS: u64 = 30;
/// Largest JWKS document accepted.
const MAX_JWKS: usize = 1024 * 1024;
/// Upper bound of one JWKS fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// The only algorithms accepted: asymmetric ones (RFC 8725 §3.1, §3.2).
const ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Flags of `trustmesh serve` for Kubernetes bootstrap.
#[derive(Debug, Clone, Args)]
pub struct K8sArgs {
    /// Accept projected ServiceAccount tokens as bootstrap tokens, checked against this JWKS:
    /// a file, or an https:// URL (e.g. https://kubernetes.default.svc/openid/v1/jwks).
    #[arg(long = "k8s-jwks", env = "TRUSTMESH_K8S_JWKS")]
    pub jwks: Option<String>,
    /// The issuer the tokens must name (`kubectl get --raw /.well-known/openid-configuration`).
    #[arg(long = "k8s-issuer", env = "TRUSTMESH_K8S_ISSUER")]
    pub issuer: Option<String>,
    /// The audience the tokens must carry.
    #[arg(
        long = "k8s-audience",
        env = "TRUSTMESH_K8S_AUDIENCE",
        default_value = "trustmesh"
    )]
    pub audience: String,
    /// CA certificates (PEM) that the JWKS URL's server must chain to (in a pod:
    /// /var/run/secrets/kubernetes.io/serviceaccount/ca.crt).
    #[arg(long = "k8s-jwks-ca", env = "TRUSTMESH_K8S_JWKS_CA")]
    pub jwks_ca: Option<PathBuf>,
    /// A file with a bearer token for the JWKS URL (in a pod, the control plane's own
    /// ServiceAccount token); read at each fetch.
    #[arg(long = "k8s-jwks-token-file", env = "TRUSTMESH_K8S_JWKS_TOKEN_FILE")]
    pub jwks_token_file: Option<PathBuf>,
}

/// Why a JWT was refused. Every variant but [`JwtError::KeysUnavailable`] is a 401.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwtError {
    /// Not a JWT, or a JWT we cannot read.
    #[error("the bootstrap token is neither a trustmesh token nor a readable JWT")]
    Malformed,
    /// Signed with HMAC, `none`, or an algorithm its key does not fit.
    #[error("the JWT's algorithm is not accepted (asymmetric signatures only)")]
    Algorithm,
    /// No key of the cluster's JWKS has the token's `kid`.
    #[error("the JWT is signed by a key that is not in the cluster's JWKS")]
    UnknownKey,
    /// The signature does not verify.
    #[error("the JWT's signature does not verify")]
    BadSignature,
    /// Past `exp`, or before `nbf`.
    #[error("the JWT has expired or is not valid yet")]
    Expired,
    /// Another audience.
    #[error("the JWT is not for audience {0:?}")]
    Audience(String),
    /// Another issuer.
    #[error("the JWT is not from issuer {0:?}")]
    Issuer(String),
    /// A subject that is not `system:serviceaccount:NS:SA`, or NS/SA that make no SPIFFE ID.
    #[error("the JWT's subject is not a Kubernetes service account: {0}")]
    Subject(String),
    /// The key set could not be read.
    #[error("the cluster's JWKS cannot be read right now")]
    KeysUnavailable,
}

impl JwtError {
    /// A stable code for the API's JSON error and the metrics label.
    pub fn code(&self) -> &'static str {
        match self {
            JwtError::Malformed => "jwt_malformed",
            JwtError::Algorithm => "jwt_algorithm",
            JwtError::UnknownKey => "jwt_unknown_key",
            JwtError::BadSignature => "jwt_invalid",
            JwtError::Expired => "jwt_expired",
            JwtError::Audience(_) => "jwt_audience",
            JwtError::Issuer(_) => "jwt_issuer",
            JwtError::Subject(_) => "jwt_subject",
            JwtError::KeysUnavailable => "jwks_unavailable",
        }
    }
}

enum Source {
    File(PathBuf),
    Url {
        uri: Uri,
        tls: Option<std::sync::Arc<rustls::ClientConfig>>,
        token_file: Option<PathBuf>,
    },
}

struct Keys {
    set: JwkSet,
    fetched: Instant,
}

/// Checks projected ServiceAccount tokens.
pub struct K8sVerifier {
    source: Source,
    issuer: String,
    audience: String,
    trust_domain: TrustDomain,
    keys: ArcSwap<Keys>,
    last_refresh: Mutex<Option<Instant>>,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
}

impl K8sVerifier {
    /// The verifier `args` ask for, or `None` without `--k8s-jwks`. A file must hold a valid
    /// JWKS at start; a URL that cannot be fetched at start is retried when a token arrives.
    pub async fn from_args(args: &K8sArgs, td: &TrustDomain) -> anyhow::Result<Option<Self>> {
        let Some(jwks) = &args.jwks else {
            return Ok(None);
        };
        let issuer = args
            .issuer
            .clone()
            .context("--k8s-jwks needs --k8s-issuer (the issuer the tokens must name)")?;
        let source = if jwks.starts_with("https://") || jwks.starts_with("http://") {
            let uri: Uri = jwks
                .parse()
                .with_context(|| format!("--k8s-jwks {jwks} is not a URL"))?;
            let host = uri.host().unwrap_or_default();
            let tls = if uri.scheme_str() == Some("https") {
                let ca = args
                    .jwks_ca
                    .as_ref()
                    .context("an https:// --k8s-jwks needs --k8s-jwks-ca")?;
                Some(std::sync::Arc::new(tls_config(ca)?))
            } else if host == "localhost"
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
            {
                // `kubectl proxy` on loopback is the one place plain HTTP is acceptable.
                None
            } else {
                anyhow::bail!("--k8s-jwks {jwks}: plain http:// is accepted on loopback only");
            };
            Source::Url {
                uri,
                tls,
                token_file: args.jwks_token_file.clone(),
            }
        } else {
            Source::File(PathBuf::from(jwks))
        };
        let initial = match fetch(&source).await {
            Ok(set) => set,
            Err(e) if matches!(source, Source::Url { .. }) => {
                tracing::warn!("reading the JWKS at {jwks} failed, will retry: {e:#}");
                JwkSet::default()
            }
            Err(e) => return Err(e),
        };
        tracing::info!(jwks = %jwks, issuer = %issuer, keys = initial.keys.len(), "Kubernetes bootstrap tokens accepted");
        Ok(Some(Self {
            source,
            issuer,
            audience: args.audience.clone(),
            trust_domain: td.clone(),
            keys: ArcSwap::from_pointee(Keys {
                set: initial,
                fetched: Instant::now(),
            }),
            last_refresh: Mutex::new(None),
        }))
    }

    /// Checks `token` and returns the SPIFFE ID of its service account.
    pub async fn verify(&self, token: &str) -> Result<SpiffeId, JwtError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| JwtError::Malformed)?;
        if !ALGORITHMS.contains(&header.alg) {
            return Err(JwtError::Algorithm);
        }
        if self.keys.load().fetched.elapsed() >= REFRESH_MAX {
            self.refresh(true).await;
        }
        let key = match self.key_for(header.kid.as_deref(), header.alg) {
            Some(k) => k,
            None => {
                self.refresh(false).await;
                if self.keys.load().set.keys.is_empty() {
                    return Err(JwtError::KeysUnavailable);
                }
                self.key_for(header.kid.as_deref(), header.alg)
                    .ok_or(JwtError::UnknownKey)?
            }
        };
        let mut v = Validation::new(header.alg);
        v.leeway = LEEWAY_SECS;
        v.validate_exp = true;
        v.validate_nbf = true;
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        v.set_audience(&[&self.audience]);
        v.set_issuer(&[&self.issuer]);
        let data = jsonwebtoken::decode::<Claims>(token, &key, &v).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            match e.kind() {
                K::ExpiredSignature | K::ImmatureSignature => JwtError::Expired,
                K::InvalidAudience => JwtError::Audience(self.audience.clone()),
                K::InvalidIssuer => JwtError::Issuer(self.issuer.clone()),
                K::InvalidSignature => JwtError::BadSignature,
                K::InvalidAlgorithm | K::InvalidEcdsaKey | K::InvalidRsaKey(_) => {
                    JwtError::Algorithm
                }
                K::MissingRequiredClaim(c) if c == "aud" => {
                    JwtError::Audience(self.audience.clone())
                }
                K::MissingRequiredClaim(c) if c == "iss" => JwtError::Issuer(self.issuer.clone()),
                K::MissingRequiredClaim(c) if c == "exp" => JwtError::Expired,
                _ => JwtError::Malformed,
            }
        })?;
        service_account_id(&self.trust_domain, &data.claims.sub)
    }

    /// The key with `kid` (or, for a token without `kid`, the only key) whose type fits `alg`.
    fn key_for(&self, kid: Option<&str>, alg: Algorithm) -> Option<DecodingKey> {
        let keys = self.keys.load();
        let candidates: Vec<_> = match kid {
            Some(kid) => keys.set.find(kid).into_iter().collect(),
            None if keys.set.keys.len() == 1 => keys.set.keys.iter().collect(),
            None => Vec::new(),
        };
        candidates.into_iter().find_map(|jwk| {
            if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
                return None;
            }
            if let Some(declared) = jwk.common.key_algorithm {
                if Algorithm::try_from(declared).ok() != Some(alg) {
                    return None;
                }
            }
            DecodingKey::from_jwk(jwk).ok()
        })
    }

    /// Reads the key set again, unless it was read less than [`REFRESH_MIN`] ago (`forced`
    /// skips that limit, for the age check). On failure the keys in hand stay.
    async fn refresh(&self, forced: bool) {
        {
            let Ok(mut last) = self.last_refresh.lock() else {
                return;
            };
            if !forced && last.is_some_and(|t| t.elapsed() < REFRESH_MIN) {
                return;
            }
            *last = Some(Instant::now());
        }
        match fetch(&self.source).await {
            Ok(set) => self.keys.store(std::sync::Arc::new(Keys {
                set,
                fetched: Instant::now(),
            })),
            Err(e) => {
                tracing::warn!("reading the cluster's JWKS failed; keeping the keys in hand: {e:#}")
            }
        }
    }
}

/// `system:serviceaccount:NS:SA` → `spiffe://TD/ns/NS/sa/SA`.
pub fn service_account_id(td: &TrustDomain, sub: &str) -> Result<SpiffeId, JwtError> {
    let rest = sub
        .strip_prefix("system:serviceaccount:")
        .ok_or_else(|| JwtError::Subject(format!("{sub:?}")))?;
    let (ns, sa) = rest
        .split_once(':')
        .filter(|(ns, sa)| dns_name(ns, false) && dns_name(sa, true))
        .ok_or_else(|| JwtError::Subject(format!("{sub:?}")))?;
    SpiffeId::from_service_account(td, ns, sa)
        .map_err(|e| JwtError::Subject(format!("{sub:?}: {e}")))
}

/// A Kubernetes namespace (an RFC 1123 label) or, with `dots`, a service account name (an
/// RFC 1123 subdomain): so neither can smuggle a `/` or `..` into the SPIFFE path.
fn dns_name(s: &str, dots: bool) -> bool {
    (1..=253).contains(&s.len())
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || (dots && b == b'.')
        })
        && !s.starts_with(['-', '.'])
        && !s.ends_with(['-', '.'])
}

fn tls_config(ca: &std::path::Path) -> anyhow::Result<rustls::ClientConfig> {
    use rustls::pki_types::{pem::PemObject as _, CertificateDer};
    let pem =
        std::fs::read(ca).with_context(|| format!("reading --k8s-jwks-ca {}", ca.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.with_context(|| format!("--k8s-jwks-ca {}", ca.display()))?;
        roots
            .add(cert)
            .with_context(|| format!("--k8s-jwks-ca {}", ca.display()))?;
    }
    if roots.is_empty() {
        anyhow::bail!("--k8s-jwks-ca {} holds no certificate", ca.display());
    }
    Ok(
        rustls::ClientConfig::builder_with_provider(trustmesh_certs::tls::provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

async fn fetch(source: &Source) -> anyhow::Result<JwkSet> {
    let bytes = match source {
        Source::File(path) => tokio::fs::read(path)
            .await
            .with_context(|| format!("reading --k8s-jwks {}", path.display()))?,
        Source::Url {
            uri,
            tls,
            token_file,
        } => tokio::time::timeout(FETCH_TIMEOUT, get(uri, tls.clone(), token_file.as_deref()))
            .await
            .with_context(|| format!("{uri} did not answer within {FETCH_TIMEOUT:?}"))??,
    };
    let set: JwkSet =
        serde_json::from_slice(&bytes).context("the JWKS is not a JSON Web Key Set")?;
    Ok(set)
}

async fn get(
    uri: &Uri,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    token_file: Option<&std::path::Path>,
) -> anyhow::Result<Vec<u8>> {
    let host = uri.host().context("the JWKS URL has no host")?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri
        .port_u16()
        .unwrap_or(if tls.is_some() { 443 } else { 80 });
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .with_context(|| format!("connecting to {uri}"))?;
    let mut req = Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(header::HOST, format!("{host}:{port}"))
        .header(header::ACCEPT, "application/json");
    if let Some(path) = token_file {
        let token = tokio::fs::read_to_string(path)
            .await
            .with_context(|| format!("reading --k8s-jwks-token-file {}", path.display()))?;
        req = req.header(header::AUTHORIZATION, format!("Bearer {}", token.trim()));
    }
    let req = req.body(Empty::<Bytes>::new())?;
    let resp = match tls {
        Some(cfg) => {
            let name = rustls::pki_types::ServerName::try_from(host.clone())
                .context("the JWKS host is not a valid TLS name")?;
            let stream = tokio_rustls::TlsConnector::from(cfg)
                .connect(name, tcp)
                .await
                .with_context(|| format!("TLS to {uri}"))?;
            send(TokioIo::new(stream), req).await?
        }
        None => send(TokioIo::new(tcp), req).await?,
    };
    Ok(resp)
}

async fn send<IO>(io: IO, req: Request<Empty<Bytes>>) -> anyhow::Result<Vec<u8>>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    let conn = tokio::spawn(conn);
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let body = Limited::new(resp.into_body(), MAX_JWKS)
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("reading the JWKS: {e}"))?
        .to_bytes();
    conn.abort();
    if !status.is_success() {
        anyhow::bail!("the JWKS URL answered {status}");
    }
    Ok(body.to_vec())
}

#[cfg(test)]
mod tests;

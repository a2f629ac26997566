//! Domain: kubernetes bootstrap: a projected ServiceAccount token (a JWT the kubelet mounts into the
//! pod, audience `trustmesh`) stands in for a `trustmesh token create` token.
//!
//! The JWT is checked with `jsonwebtoken` (aws-lc-rs backend) against the cluster's JWKS
//! (`--k8s-jwks`, a file or a URL such as the API server's `/openid/v1/jwks`): the signature
//! with the key its `kid` names (asymmetric algorithms only, never HMAC or `none`), the issuer
//! (`--k8s-issuer`), the audience (`--k8s-audience`, default `trustmesh`), the expiry and the
//! not-before time. Its subject `system:serviceaccount:NS:SA` becomes
//! `spiffe://TRUST_DOMAIN/ns/NS/sa/SA` (RFC 7519 §4.1; Kubernetes service account tokens).
//!
//! The key set is read at start and read again when a token names a key it lacks and when it is
//! older than [`REFRESH_MAX`] (so a key the cluster dropped stops working). Refreshes are
//! single-flight: requests that need one while a fetch is under way wait for that fetch and
//! use its keys. After a fetch that failed, or that a token's unknown `kid` caused and that
//! brought no new key, the next one waits [`REFRESH_MIN`] doubling up to [`BACKOFF_MAX`]; after
//! a useful one, [`REFRESH_MIN`]. So a flood of tokens with garbage `kid`s, or an API server
//! that does not answer, costs at most one fetch per backoff step, never one per request.
//! Unlike `tm1` tokens, these JWTs are not single use: the kubelet hands the same token to
//! every start of the container until it rotates it, and it is bound to the pod's lifetime.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use arc_swap::ArcSwap;
use clap::Args;
use http::Uri;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use trustmesh_certs::{SpiffeId, TrustDomain};

/// Least time between two key set reads, and the first backoff step.
pub const REFRESH_MIN: Duration = Duration::from_secs(10);
/// Longest wait after failed or useless key set reads.
pub const BACKOFF_MAX: Duration = Duration::from_secs(120);
/// Oldest a key set may get before it is read again.
pub const REFRESH_MAX: Duration = Duration::from_secs(300);
/// Clock skew allowed on `exp` and `nbf`.
const LEEWAY_SECS: u64 = 30;
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
    /// Kubernetes mode: the pod the token is bound to does not exist (any more), or is
    /// another pod of the same name (another UID), or runs as another ServiceAccount.
    #[error("the JWT is bound to pod {0}, which does not exist with that UID: a token of a deleted pod enrolls nothing")]
    PodGone(String),
}

impl JwtError {
    /// Every [`JwtError::code`], for metrics that start each at zero.
    pub const CODES: &'static [&'static str] = &[
        "jwt_malformed",
        "jwt_algorithm",
        "jwt_unknown_key",
        "jwt_invalid",
        "jwt_expired",
        "jwt_audience",
        "jwt_issuer",
        "jwt_subject",
        "jwks_unavailable",
        "jwt_pod_gone",
    ];

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
            JwtError::PodGone(_) => "jwt_pod_gone",
        }
    }
}

// The path is spelled out so that the fuzz target, which compiles this file through `#[path]`
// (`fuzz/fuzz_targets/k8s_jwt.rs`), finds the submodule too.
#[path = "k8s_jwt/fetch.rs"]
mod fetch;
use fetch::{fetch, tls_config, Source};

struct Keys {
    set: JwkSet,
    fetched: Instant,
}

/// When the next key set read may start, and how many in a row failed or brought nothing.
#[derive(Default)]
struct RefreshGate {
    not_before: Option<Instant>,
    fruitless: u32,
}

/// Why a key set read is wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Why {
    /// The keys in hand are older than [`REFRESH_MAX`].
    Stale,
    /// A token names a key we lack.
    UnknownKey,
}

/// Checks projected ServiceAccount tokens.
pub struct K8sVerifier {
    source: Source,
    issuer: String,
    audience: String,
    trust_domain: TrustDomain,
    keys: ArcSwap<Keys>,
    /// Held for the whole of a read, so concurrent refreshes share one.
    gate: tokio::sync::Mutex<RefreshGate>,
    /// Counts finished reads, so a waiter sees that one finished while it waited.
    reads: AtomicU64,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    #[serde(rename = "kubernetes.io", default)]
    kubernetes: Option<KubeClaims>,
}

/// The `kubernetes.io` claim of a projected token: what object the kubelet bound it to.
#[derive(Deserialize)]
struct KubeClaims {
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    pod: Option<ObjectClaim>,
}

#[derive(Deserialize)]
struct ObjectClaim {
    name: String,
    #[serde(default)]
    uid: String,
}

/// The pod a projected token is bound to (its `kubernetes.io` claim).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundPod {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its UID.
    pub uid: String,
}

impl std::fmt::Display for BoundPod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{} (uid {})", self.namespace, self.name, self.uid)
    }
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
            gate: tokio::sync::Mutex::new(RefreshGate::default()),
            reads: AtomicU64::new(0),
        }))
    }

    /// Checks `token` and returns the SPIFFE ID of its service account.
    #[allow(dead_code)] // The unit tests and the fuzz target call it; serve uses verify_bound.
    pub async fn verify(&self, token: &str) -> Result<SpiffeId, JwtError> {
        self.verify_bound(token).await.map(|(id, _)| id)
    }

    /// Checks `token` and returns the SPIFFE ID of its service account and the pod its
    /// `kubernetes.io` claim binds it to, if it names one.
    pub async fn verify_bound(
        &self,
        token: &str,
    ) -> Result<(SpiffeId, Option<BoundPod>), JwtError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| JwtError::Malformed)?;
        if !ALGORITHMS.contains(&header.alg) {
            return Err(JwtError::Algorithm);
        }
        let seen = self.reads.load(Ordering::Acquire);
        if self.keys.load().fetched.elapsed() >= REFRESH_MAX {
            self.refresh(seen, Why::Stale).await;
        }
        let key = match self.key_for(header.kid.as_deref(), header.alg) {
            Some(k) => k,
            None => {
                self.refresh(seen, Why::UnknownKey).await;
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
        let id = service_account_id(&self.trust_domain, &data.claims.sub)?;
        let pod = data.claims.kubernetes.and_then(|k| {
            let pod = k.pod?;
            Some(BoundPod {
                namespace: k.namespace.or_else(|| id.namespace().map(str::to_string))?,
                name: pod.name,
                uid: pod.uid,
            })
        });
        Ok((id, pod))
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

    /// Reads the key set again, unless a read finished since the caller looked (`seen`, a
    /// value of `reads`): then the caller uses that read's keys. A caller that arrives while a
    /// read is under way waits for it. Within the backoff after a fruitless read, nothing is
    /// read. On failure the keys in hand stay.
    async fn refresh(&self, seen: u64, why: Why) {
        let mut gate = self.gate.lock().await;
        if self.reads.load(Ordering::Acquire) != seen {
            return;
        }
        if gate.not_before.is_some_and(|t| Instant::now() < t) {
            return;
        }
        let fruitful = match fetch(&self.source).await {
            Ok(set) => {
                let new = set != self.keys.load().set;
                self.keys.store(std::sync::Arc::new(Keys {
                    set,
                    fetched: Instant::now(),
                }));
                new || why == Why::Stale
            }
            Err(e) => {
                tracing::warn!(
                    "reading the cluster's JWKS failed; keeping the keys in hand: {e:#}"
                );
                false
            }
        };
        gate.fruitless = if fruitful { 0 } else { gate.fruitless + 1 };
        gate.not_before = Some(Instant::now() + backoff(gate.fruitless));
        self.reads.fetch_add(1, Ordering::Release);
    }
}

/// The wait before the next read after `fruitless` fruitless reads in a row: [`REFRESH_MIN`]
/// after a useful one, then doubling up to [`BACKOFF_MAX`].
fn backoff(fruitless: u32) -> Duration {
    let factor = 1u32 << fruitless.saturating_sub(1).min(16);
    REFRESH_MIN.saturating_mul(factor).min(BACKOFF_MAX)
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

#[cfg(test)]
mod tests;

//! Our identity: the key pair is made here and never leaves this process; only a CSR goes to
//! the control plane. Bootstrap spends the single-use token; renewal, past a fraction of the
//! certificate's life, authenticates with the current certificate. A new certificate is
//! swapped into the resolver atomically: new handshakes use it, open connections carry on.
//! When the control plane is away we keep the certificate we have and retry with jittered,
//! capped exponential backoff. One enrolment keeps its key and CSR across its retries, so that
//! a retry after a timeout is the same enrolment (the control plane answers it with the
//! certificate it already issued for the token). A request that carries a token never
//! presents a certificate ([`ControlClient::call`]): an expired one would make the control
//! plane refuse the handshake before it reads the token. With `--state-dir` every installed
//! certificate is saved there with its key ([`persist`]).
//!
//! [`Identity`] is built once from its [`Config`] (what it needs of the flags), the state the
//! data path reads and the control-plane client. At start-up it restores the certificate
//! kept in `--state-dir` or gets the first one with the bootstrap token ([`bootstrap`]); then
//! it renews for as long as the process lives ([`renew`]). [`issue`] is the one certificate
//! request both make.

pub mod bootstrap;
pub mod issue;
pub mod persist;
pub mod renew;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::control::ControlClient;
use crate::state::Shared;

pub use bootstrap::NoCredential;

const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// What identity needs from the flags, made once at start-up.
#[derive(Debug, Clone)]
pub struct Config {
    /// `--token-file`: the bootstrap token, read again at every try (may be missing while a
    /// certificate in force can renew).
    pub token_file: PathBuf,
    /// `--state-dir`: where the certificate and its key are kept across restarts, if anywhere.
    pub state_dir: Option<PathBuf>,
    /// `--renew-fraction`: renew past this fraction of a certificate's life.
    pub renew_fraction: f64,
}

/// This sidecar's identity: gets its certificate from the control plane, keeps it in
/// `--state-dir` and renews it, for the [`Shared`] state the data path reads.
pub struct Identity {
    shared: Arc<Shared>,
    control: Arc<ControlClient>,
    config: Config,
}

impl Identity {
    /// The identity of `shared`, got and renewed through `control`.
    pub fn new(shared: Arc<Shared>, control: Arc<ControlClient>, config: Config) -> Arc<Self> {
        Arc::new(Self {
            shared,
            control,
            config,
        })
    }
}

/// Capped exponential backoff with jitter.
pub struct Backoff {
    next: Duration,
    cap: Duration,
}

impl Backoff {
    /// Starts at the minimum; capped at 30 s.
    pub fn new() -> Self {
        Self::with_cap(BACKOFF_MAX)
    }

    /// Starts at the minimum; capped at `cap`.
    pub fn with_cap(cap: Duration) -> Self {
        Self {
            next: BACKOFF_MIN,
            cap: cap.max(BACKOFF_MIN),
        }
    }

    /// The next wait: uniform in [base/2, base], base doubling up to the cap.
    pub fn next(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.cap);
        base.mul_f64(0.5 + 0.5 * random_fraction())
    }
}

/// A random number in [0, 1).
pub fn random_fraction() -> f64 {
    use ring::rand::SecureRandom as _;
    let mut b = [0u8; 4];
    if ring::rand::SystemRandom::new().fill(&mut b).is_err() {
        return 0.5;
    }
    f64::from(u32::from_le_bytes(b)) / (f64::from(u32::MAX) + 1.0)
}

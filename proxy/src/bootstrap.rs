//! The first certificate at start: the one kept in `--state-dir` ([`crate::persist`]) when it
//! is still valid, else one got with the bootstrap token of `--token-file`. A sidecar that
//! cannot get one for now (control plane away, a refusal that says "later") keeps trying; one
//! that has no certificate and no token that can get one exits with [`NoCredential`].

use std::time::SystemTime;

use anyhow::Context as _;
use trustmesh_certs::csr::generate_csr;

use crate::control::ControlClient;
use crate::identity::{self, Backoff};
use crate::state::Shared;

/// The sidecar has no certificate it may use and no token that can get one: the process
/// exits with [`NoCredential::EXIT_CODE`].
#[derive(Debug, thiserror::Error)]
#[error("no usable credential: {0}")]
pub struct NoCredential(pub String);

impl NoCredential {
    /// The exit code (1 is any other error, 2 a bad flag or config file).
    pub const EXIT_CODE: u8 = 3;
}

/// Gets our first certificate with the bootstrap token of `--token-file`, read again at every
/// try (a projected token is rotated in place). Retries with jittered, capped exponential
/// backoff while the control plane is away or refuses for now; fails with [`NoCredential`]
/// when the token file is missing or empty, or the token is refused for good. `why` says why
/// a token is needed (for the message).
pub async fn bootstrap(shared: &Shared, control: &ControlClient, why: &str) -> anyhow::Result<()> {
    let path = &shared.args.token_file;
    let kc = generate_csr(&shared.identity).context("making a CSR")?;
    let mut backoff = Backoff::new();
    loop {
        let Some(token) = identity::read_token(path) else {
            return Err(NoCredential(format!(
                "{why}, and --token-file {} is missing or empty",
                path.display()
            ))
            .into());
        };
        match identity::request(shared, control, Some(&token), &kc).await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_retryable() => {
                let wait = backoff.next();
                tracing::warn!(target: "identity", "bootstrap failed, retrying in {wait:?}: {e}");
                tokio::time::sleep(wait).await;
            }
            Err(e) => {
                return Err(NoCredential(format!(
                    "{why}, and the token in --token-file {} was refused: {e}",
                    path.display()
                ))
                .into())
            }
        }
    }
}

/// Puts the certificate kept in `--state-dir` in force. `Err(why)` when there is none that can
/// be used (no `--state-dir`, first start, expired, damaged): why a token is needed.
pub fn restore(shared: &Shared) -> anyhow::Result<Result<(), String>> {
    use crate::persist::{self, Saved};
    let Some(dir) = &shared.args.state_dir else {
        return Ok(Err("no certificate yet".into()));
    };
    persist::prepare(dir)?;
    let why = match persist::load(dir, &shared.identity, SystemTime::now()) {
        Saved::Nothing => format!("no certificate in --state-dir {} yet", dir.display()),
        Saved::Valid { chain, key } => match identity::install_chain(shared, chain, &key) {
            Ok(()) => {
                tracing::info!(target: "identity", state_dir = %dir.display(), "using the certificate kept in --state-dir");
                return Ok(Ok(()));
            }
            Err(e) => format!("the certificate in --state-dir cannot be used ({e:#})"),
        },
        Saved::Expired { not_after } => format!(
            "the certificate in --state-dir {} expired at {}",
            dir.display(),
            humantime::format_rfc3339_seconds(not_after)
        ),
        Saved::Unusable(e) => format!("the certificate in --state-dir cannot be used ({e})"),
    };
    tracing::info!(target: "identity", "{why}: bootstrapping with --token-file");
    Ok(Err(why))
}

//! Command line: `trustmesh ca rotate` and `trustmesh ca status`: the operator's side of a CA rotation
//! ([`crate::domain::ca::rotation`]). Both work on the shared state of the `serve` replicas (the
//! data folder, or with `--kubernetes` / `--kubeconfig` the Secrets in the Kubernetes API); the
//! replicas carry the rotation through on their own.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::{Args, Subcommand};
use trustmesh_certs::{CertificateAuthority, TrustBundle};

use crate::domain::ca::fingerprint;

use super::identity::{self, print_list};
use super::{Shared, StateArgs};
use crate::domain::ca::kube_api;
use crate::domain::ca::rotation::{self, Rotation};
use crate::domain::ca::store::{self as ca_store, ImportFrom};
use crate::storage::lock::DataDirLock;

/// `trustmesh ca ...`.
#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Rotate the mesh CA without restarts: the new root is added to the trust bundle and
    /// pushed to every proxy, the new CA starts issuing once proxies hold it, and the old root
    /// is dropped once no certificate it signed can still be valid.
    Rotate(RotateArgs),
    /// Show the CA in force, the trust bundle, a rotation under way and the blocked identities.
    Status(StateArgs),
}

/// Flags of `trustmesh ca rotate`.
#[derive(Debug, Args)]
pub struct RotateArgs {
    #[command(flatten)]
    state: StateArgs,
    /// Least time to leave proxies to receive the new trust bundle before the new CA issues
    /// (the switch also waits until every proxy a replica serves holds it).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    propagation: Duration,
    /// Rotate to this CA (an intermediate signed by an offline root, its chain up to the root)
    /// instead of a new self-signed root; with --ca-key.
    #[arg(long, requires = "ca_key")]
    ca_cert: Option<PathBuf>,
    /// The key of --ca-cert (PKCS#8 P-256 PEM, mode 0600).
    #[arg(long, requires = "ca_cert")]
    ca_key: Option<PathBuf>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?} is not a duration ({e})"))
}

/// Runs `trustmesh ca ...`.
pub fn run(command: CaCommand) -> anyhow::Result<ExitCode> {
    match command {
        CaCommand::Rotate(a) => {
            let import = match (&a.ca_cert, &a.ca_key) {
                (Some(cert), Some(key)) => Some(ImportFrom { cert, key }),
                _ => None,
            };
            let now = SystemTime::now();
            let (next, place) = match a.state.open()? {
                Shared::Dir(dir) => (
                    rotation::start(&dir, a.propagation, import, now)?,
                    dir.display().to_string(),
                ),
                Shared::Kube(kube, rt) => (
                    rt.block_on(kube_api::start(&kube, a.propagation, import, now))?,
                    format!("namespace {}", kube.namespace),
                ),
            };
            println!(
                "CA rotation started in {}: the new root {} is in the trust bundle.\n\
                 Control planes on this state push it to every proxy, switch issuing to the new \
                 CA after {} once every proxy holds it, and drop the old root once no \
                 certificate it signed can still be valid. Follow it with `trustmesh ca status`.",
                place,
                fingerprint(&next.trust_bundle().roots()[0]),
                humantime::format_duration(a.propagation),
            );
            Ok(ExitCode::SUCCESS)
        }
        CaCommand::Status(state) => {
            status(&state.open()?)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn status(shared: &Shared) -> anyhow::Result<()> {
    let (place, (ca, rotation, bundle, next)) = match shared {
        Shared::Dir(dir) => (format!("data folder     {}", dir.display()), read_dir(dir)?),
        Shared::Kube(kube, rt) => {
            let t = rt.block_on(kube_api::load(kube, None))?;
            (
                format!("kubernetes      namespace {}", kube.namespace),
                (t.signer, t.rotation, t.bundle, t.next),
            )
        }
    };
    println!("{place}");
    println!("trust domain    {}", ca.trust_domain());
    print_ca("issuing CA", &ca);
    if let Some(next) = &next {
        print_ca("next CA", next);
    }
    print_bundle(&bundle);
    print_rotation(rotation);
    println!();
    print_list(&identity::read(shared)?);
    Ok(())
}

type CaState = (
    CertificateAuthority,
    Option<Rotation>,
    TrustBundle,
    Option<CertificateAuthority>,
);

fn read_dir(dir: &std::path::Path) -> anyhow::Result<CaState> {
    let _lock = DataDirLock::acquire(dir)?;
    let ca = ca_store::load_locked(dir)?;
    let rotation = rotation::read(dir)?;
    let bundle = rotation::bundle_locked(dir, &ca, rotation.as_ref())?;
    let next = match rotation {
        Some(Rotation::Propagating { .. }) => Some(rotation::next_locked(dir)?),
        _ => None,
    };
    Ok((ca, rotation, bundle, next))
}

fn print_rotation(rotation: Option<Rotation>) {
    match rotation {
        None => println!("rotation        none"),
        Some(Rotation::Propagating {
            started_at,
            propagate_secs,
        }) => println!(
            "rotation        propagating the new root since {}; the new CA issues from {} at \
             the earliest, once every proxy holds the new bundle",
            at(started_at),
            at(started_at + propagate_secs)
        ),
        Some(Rotation::Issuing {
            switched_at,
            old_root_until,
            ..
        }) => println!(
            "rotation        the new CA issues since {}; the old root is dropped at {}",
            at(switched_at),
            at(old_root_until)
        ),
    }
}

fn print_ca(label: &str, ca: &CertificateAuthority) {
    println!(
        "{label:<15} serial {} ({}), expires {}, root {}",
        trustmesh_certs::cert_serial_hex(ca.cert_der()).unwrap_or_default(),
        if ca.is_intermediate() {
            "intermediate below an offline root"
        } else {
            "self-signed root"
        },
        trustmesh_runtime::rfc3339(ca.not_after()),
        fingerprint(&ca.trust_bundle().roots()[0]),
    );
}

fn print_bundle(bundle: &TrustBundle) {
    let roots: Vec<String> = bundle.roots().iter().map(fingerprint).collect();
    println!(
        "trust bundle    {} root(s): {}",
        roots.len(),
        roots.join(", ")
    );
}

fn at(unix: u64) -> String {
    trustmesh_runtime::rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(unix))
}

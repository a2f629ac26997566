//! Domain: the mesh CA and its rotation in the Kubernetes API (Kubernetes mode), the same states
//! as the data folder's ([`super::rotation`]) in two Secrets of the control plane's namespace.
//! Their keys are the data folder's file names:
//!
//! - `trustmesh-ca`: `ca-cert.pem` (the chain), `ca-key.pem`, `trust-domain`. The CA key lives
//!   where Kubernetes keeps keys (as Istio's `cacerts`); it is never logged.
//! - `trustmesh-ca-rotation`: empty (or absent) when no rotation is under way; else
//!   `ca-rotation.json` (the [`Rotation`] phase) with the next CA (`ca-next-cert.pem`,
//!   `ca-next-key.pem`) and, once it issues, the old root (`ca-prev-root.pem`).
//!
//! The first replica that finds no CA creates one; replicas racing to do so are ordered by the
//! API (one `create` wins, the others get `409 AlreadyExists` and read the winner's). Every
//! step is a write against the `resourceVersion` it was decided on, so two replicas (or a
//! replica and `trustmesh ca rotate`) never both take a step: the loser reads again. A switch
//! writes the rotation Secret first (phase `issuing`, the next CA kept in it), then the CA
//! Secret; whoever reads `issuing` with a CA Secret that is not yet the new CA completes it, so
//! a replica that dies between the two writes leaves nothing half done.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use trustmesh_certs::{CertificateAuthority, TrustBundle, TrustDomain};

use super::rotation::{unix, Rotation, DROP_MARGIN};
use super::store::{self as ca_store, ImportFrom};
use crate::storage::kube::Kube;
use crate::storage::kube_state::{self, Doc, Object, Written};
use crate::storage::paths::{
    CA_CERT, CA_KEY, NEXT_CERT, NEXT_KEY, PREV_ROOT, ROTATION_FILE, TRUST_DOMAIN,
};

/// How many times a create race is read again before giving up.
const MAX_TRIES: usize = 32;

/// The trust state as the API holds it now.
pub struct ApiTrust {
    /// The CA that issues.
    pub signer: CertificateAuthority,
    /// The roots proxies must trust (two during a rotation).
    pub bundle: TrustBundle,
    /// The rotation under way.
    pub rotation: Option<Rotation>,
    /// The next CA, while a rotation propagates.
    pub next: Option<CertificateAuthority>,
}

fn pair(
    doc: &Doc,
    cert: &str,
    key: &str,
    td: Option<&TrustDomain>,
    what: &str,
) -> anyhow::Result<Option<CertificateAuthority>> {
    let doc_td = doc
        .data
        .get(TRUST_DOMAIN)
        .and_then(|s| TrustDomain::parse(s.trim()).ok());
    match (doc.data.get(cert), doc.data.get(key)) {
        (None, None) => Ok(None),
        (Some(c), Some(k)) => {
            CertificateAuthority::from_pem_for_trust_domain(c, k, td.or(doc_td.as_ref()))
                .map(Some)
                .with_context(|| format!("loading the CA from {what} ({cert}, {key})"))
        }
        _ => anyhow::bail!("{what} holds only one of {cert} and {key}"),
    }
}

fn ca_data(ca: &CertificateAuthority) -> BTreeMap<String, String> {
    BTreeMap::from([
        (CA_CERT.to_string(), ca.chain_pem().to_string()),
        (CA_KEY.to_string(), ca.key_pem()),
        (TRUST_DOMAIN.to_string(), format!("{}\n", ca.trust_domain())),
    ])
}

fn rotation_of(doc: &Doc) -> anyhow::Result<Option<Rotation>> {
    doc.data
        .get(ROTATION_FILE)
        .map(|text| serde_json::from_str(text))
        .transpose()
        .with_context(|| {
            format!(
                "{} {ROTATION_FILE} is not a valid rotation state",
                Object::Rotation.describe()
            )
        })
}

fn next_of(doc: &Doc) -> anyhow::Result<Option<CertificateAuthority>> {
    pair(doc, NEXT_CERT, NEXT_KEY, None, &Object::Rotation.describe())
}

fn with_phase(doc: &Doc, r: &Rotation) -> anyhow::Result<BTreeMap<String, String>> {
    let mut data = doc.data.clone();
    data.insert(ROTATION_FILE.to_string(), serde_json::to_string_pretty(r)?);
    Ok(data)
}

/// The CA of the `trustmesh-ca` Secret, or, when there is none, `import` or a new one for
/// `td`, created there (one replica of several starting at once wins, the others take its
/// CA). Refuses a CA of another trust domain and an `import` other than the CA already there
/// (changing the CA of a running mesh is `trustmesh ca rotate`).
pub async fn load_or_create(
    kube: &Kube,
    td: &TrustDomain,
    import: Option<ImportFrom<'_>>,
) -> anyhow::Result<CertificateAuthority> {
    let what = Object::Ca.describe();
    // The CA to create when there is none: the import, or one made at the first need and
    // kept across conflicts.
    let mut candidate = import.map(|i| ca_store::read_import(i, td)).transpose()?;
    let how = match import {
        Some(_) => "imported the mesh CA",
        None => "created a new mesh CA",
    };
    for _ in 0..MAX_TRIES {
        let doc = kube_state::read(kube, Object::Ca).await?;
        if let Some(ca) = pair(&doc, CA_CERT, CA_KEY, Some(td), &what)? {
            if ca.trust_domain() != td {
                anyhow::bail!(
                    "the CA in {what} is for trust domain {}, but --trust-domain is {td}",
                    ca.trust_domain()
                );
            }
            if let (Some(_), Some(wanted)) = (import, &candidate) {
                if wanted.cert_der() != ca.cert_der() {
                    anyhow::bail!(
                        "{what} already holds another CA than --ca-cert; to change the CA of a \
                         running mesh use `trustmesh ca rotate --ca-cert ... --ca-key ...`"
                    );
                }
            }
            return Ok(ca);
        }
        let ca = match candidate.take() {
            Some(ca) => ca,
            None => CertificateAuthority::generate(td, SystemTime::now())
                .context("generating the CA")?,
        };
        match kube_state::write(kube, Object::Ca, ca_data(&ca), &doc).await? {
            Written::Done => {
                tracing::info!(object = %what, namespace = %kube.namespace, trust_domain = %td, "{how}");
                return Ok(ca);
            }
            // Another replica was first: its CA is read on the next turn.
            Written::Conflict => candidate = Some(ca),
        }
    }
    anyhow::bail!("{what} kept changing while this replica tried to create it")
}

/// Reads the trust state: the CA, the rotation and the bundle they call for. `td` checks the
/// CA (the command line passes none and takes the Secret's). Completes a switch that was
/// interrupted between its two writes.
pub async fn load(kube: &Kube, td: Option<&TrustDomain>) -> anyhow::Result<ApiTrust> {
    let what = Object::Ca.describe();
    let ca_doc = kube_state::read(kube, Object::Ca).await?;
    let active = pair(&ca_doc, CA_CERT, CA_KEY, td, &what)?.ok_or_else(|| {
        anyhow::anyhow!(
            "no CA in {what} (namespace {}): `trustmesh serve --kubernetes` creates it",
            kube.namespace
        )
    })?;
    let rot_doc = kube_state::read(kube, Object::Rotation).await?;
    let rotation = rotation_of(&rot_doc)?;
    let next = next_of(&rot_doc)?;
    let rot_what = Object::Rotation.describe();
    Ok(match rotation {
        None => ApiTrust {
            bundle: active.trust_bundle(),
            signer: active,
            rotation: None,
            next: None,
        },
        Some(r @ Rotation::Propagating { .. }) => {
            let next = next
                .ok_or_else(|| anyhow::anyhow!("{rot_what} is propagating but holds no next CA"))?;
            ApiTrust {
                bundle: active.trust_bundle().merge(&next.trust_bundle()),
                signer: active,
                rotation: Some(r),
                next: Some(next),
            }
        }
        Some(r @ Rotation::Issuing { .. }) => {
            let prev = rot_doc
                .data
                .get(PREV_ROOT)
                .ok_or_else(|| anyhow::anyhow!("{rot_what} is issuing but holds no old root"))?;
            let prev =
                TrustBundle::from_pem(prev).with_context(|| format!("{rot_what} {PREV_ROOT}"))?;
            let signer = match next {
                Some(new) if new.cert_der() != active.cert_der() => {
                    // The switch stopped between its writes: finish it.
                    tracing::warn!(object = %what, "completing a CA switch that was interrupted");
                    let _ = kube_state::write(kube, Object::Ca, ca_data(&new), &ca_doc).await?;
                    new
                }
                _ => active,
            };
            ApiTrust {
                bundle: signer.trust_bundle().merge(&prev),
                signer,
                rotation: Some(r),
                next: None,
            }
        }
    })
}

/// Starts a rotation (`trustmesh ca rotate --kubernetes`): the next CA is `import`ed or made
/// here and written with the phase [`Rotation::Propagating`]. Refuses when a rotation is under
/// way. Returns the next CA.
pub async fn start(
    kube: &Kube,
    propagate: Duration,
    import: Option<ImportFrom<'_>>,
    now: SystemTime,
) -> anyhow::Result<CertificateAuthority> {
    let active = load(kube, None).await?.signer;
    let next = match import {
        Some(import) => ca_store::read_import(import, active.trust_domain())?,
        None => CertificateAuthority::generate(active.trust_domain(), now)
            .context("generating the new CA")?,
    };
    if next.cert_der() == active.cert_der() {
        anyhow::bail!("the new CA is the CA in force");
    }
    let phase = Rotation::Propagating {
        started_at: unix(now),
        propagate_secs: propagate.as_secs(),
    };
    kube_state::update(kube, Object::Rotation, |doc| {
        if let Some(r) = rotation_of(doc)? {
            anyhow::bail!(
                "a CA rotation is already under way (phase {}); `trustmesh ca status` shows it",
                r.phase()
            );
        }
        let mut data = BTreeMap::from([
            (NEXT_CERT.to_string(), next.chain_pem().to_string()),
            (NEXT_KEY.to_string(), next.key_pem()),
        ]);
        data.insert(
            ROTATION_FILE.to_string(),
            serde_json::to_string_pretty(&phase)?,
        );
        Ok((Some(data), ()))
    })
    .await?;
    Ok(next)
}

/// Makes the next CA the one that issues (the caller checked that its proxies hold the new
/// bundle); `ttl` is this replica's certificate lifetime. Nothing when the phase is no longer
/// propagating (another replica switched first); whether this call switched.
pub async fn switch(kube: &Kube, now: SystemTime, ttl: Duration) -> anyhow::Result<bool> {
    let active = load(kube, None).await?.signer;
    let switched = kube_state::update(kube, Object::Rotation, |doc| {
        let Some(Rotation::Propagating { started_at, .. }) = rotation_of(doc)? else {
            return Ok((None, false));
        };
        let next = next_of(doc)?.ok_or_else(|| anyhow::anyhow!("no next CA to switch to"))?;
        if next.trust_domain() != active.trust_domain() {
            anyhow::bail!("the next CA is for another trust domain");
        }
        let phase = Rotation::Issuing {
            started_at,
            switched_at: unix(now),
            old_root_until: unix(now + ttl + DROP_MARGIN),
        };
        let mut data = with_phase(doc, &phase)?;
        data.insert(
            PREV_ROOT.to_string(),
            active.trust_bundle().pem().to_string(),
        );
        Ok((Some(data), true))
    })
    .await?;
    if switched {
        // The second write: the CA Secret becomes the new CA (load completes it).
        load(kube, None).await?;
    }
    Ok(switched)
}

/// Keeps the old root at least until `until` (a replica that noticed the switch late may have
/// signed with the old CA until then).
pub async fn extend(kube: &Kube, until: SystemTime) -> anyhow::Result<()> {
    kube_state::update(kube, Object::Rotation, |doc| match rotation_of(doc)? {
        Some(Rotation::Issuing {
            started_at,
            switched_at,
            old_root_until,
        }) if old_root_until < unix(until) => {
            let phase = Rotation::Issuing {
                started_at,
                switched_at,
                old_root_until: unix(until),
            };
            Ok((Some(with_phase(doc, &phase)?), ()))
        }
        _ => Ok((None, ())),
    })
    .await
}

/// Ends the rotation when `old_root_until` has passed: the rotation Secret is emptied and the
/// bundle is the new CA's root alone. Whether this call ended it.
pub async fn finish_if_due(kube: &Kube, now: SystemTime) -> anyhow::Result<bool> {
    // The CA Secret must hold the new CA before the state that names it goes.
    load(kube, None).await?;
    kube_state::update(kube, Object::Rotation, |doc| match rotation_of(doc)? {
        Some(Rotation::Issuing { old_root_until, .. }) if unix(now) >= old_root_until => {
            Ok((Some(BTreeMap::new()), true))
        }
        _ => Ok((None, false)),
    })
    .await
}

#[cfg(test)]
mod tests;

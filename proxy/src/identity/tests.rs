//! Identity built from its config, the state and a client of a stand-in control plane on
//! loopback: no process, no flags.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use trustmesh_certs::TrustBundle;

use super::persist::STATE_FILE;
use super::{Config, Identity, NoCredential};
use crate::testing::control_plane::{sign, FakeControlPlane};
use crate::testing::{self, id};

/// A sidecar `api` of `ca`'s mesh with no certificate in force yet, and its identity.
fn identity(
    ca: &trustmesh_certs::CertificateAuthority,
    cp: &FakeControlPlane,
    config: Config,
) -> Arc<Identity> {
    let app = "127.0.0.1:8080".parse().unwrap();
    let shared = testing::shared(
        ca,
        testing::args("api", app),
        Vec::new(),
        serde_json::json!([]),
    );
    let control = cp.client(ca, shared.resolver.clone());
    Identity::new(shared, control, config)
}

/// A control plane that signs every certificate request for `api`.
async fn signing(ca: &Arc<trustmesh_certs::CertificateAuthority>) -> FakeControlPlane {
    let signer = ca.clone();
    FakeControlPlane::start(ca, Arc::new(move |seen| sign(&signer, &id("api"), seen))).await
}

#[tokio::test]
async fn bootstrap_spends_the_token_of_its_config_and_a_restart_restores_the_kept_certificate() {
    let ca = Arc::new(testing::ca());
    let cp = signing(&ca).await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "tm1-first\n").unwrap();
    let config = Config {
        token_file,
        state_dir: Some(dir.path().join("state")),
        renew_fraction: 0.5,
    };
    let bundle = TrustBundle::from_pem(ca.cert_pem()).unwrap();

    let first = identity(&ca, &cp, config.clone());
    let why = first.restore(&bundle).unwrap().unwrap_err();
    assert!(why.contains("no certificate in --state-dir"), "{why}");
    first.bootstrap(&why).await.unwrap();
    let seen = cp.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, Method::POST);
    assert_eq!(seen[0].path, "/v1/certificates");
    assert_eq!(seen[0].bearer.as_deref(), Some("tm1-first"));
    assert_eq!(
        seen[0].client, None,
        "a token request presents no certificate"
    );
    let serial = first.shared.cert.load_full().unwrap().serial.clone();
    assert!(config
        .state_dir
        .as_ref()
        .unwrap()
        .join(STATE_FILE)
        .is_file());

    // Restarted: the certificate kept in --state-dir is put in force with no request.
    let second = identity(&ca, &cp, config);
    assert_eq!(second.restore(&bundle).unwrap(), Ok(()));
    assert_eq!(second.shared.cert.load_full().unwrap().serial, serial);
    assert_eq!(cp.seen().len(), 1);
}

#[tokio::test]
async fn no_token_file_or_a_refused_token_is_no_credential() {
    let ca = Arc::new(testing::ca());
    let refusing = FakeControlPlane::start(
        &ca,
        Arc::new(|_| {
            let body = r#"{"code":"token_invalid","message":"the token was already used"}"#;
            (StatusCode::UNAUTHORIZED, body.to_string())
        }),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-token");
    let config = Config {
        token_file: missing.clone(),
        state_dir: None,
        renew_fraction: 0.5,
    };
    let bundle = TrustBundle::from_pem(ca.cert_pem()).unwrap();
    let sidecar = identity(&ca, &refusing, config.clone());
    let why = sidecar.restore(&bundle).unwrap().unwrap_err();
    let err = sidecar.bootstrap(&why).await.unwrap_err();
    assert!(err.downcast_ref::<NoCredential>().is_some(), "{err:#}");
    let text = format!("{err:#}");
    assert!(text.contains(&missing.display().to_string()), "{text}");
    assert!(text.contains("missing or empty"), "{text}");
    assert!(refusing.seen().is_empty());

    std::fs::write(&missing, "tm1-spent").unwrap();
    let err = sidecar.bootstrap(&why).await.unwrap_err();
    assert!(err.downcast_ref::<NoCredential>().is_some(), "{err:#}");
    assert!(format!("{err:#}").contains("was refused"), "{err:#}");
    assert!(format!("{err:#}").contains("already used"), "{err:#}");
    // A refusal for good is not retried.
    assert_eq!(refusing.seen().len(), 1);
}

#[tokio::test]
async fn renewal_authenticates_with_the_certificate_in_force_not_the_token() {
    let ca = Arc::new(testing::ca());
    let cp = signing(&ca).await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "tm1-first").unwrap();
    let config = Config {
        token_file,
        state_dir: None,
        renew_fraction: 0.5,
    };
    let sidecar = identity(&ca, &cp, config);
    sidecar.bootstrap("no certificate yet").await.unwrap();
    let first = sidecar.shared.cert.load_full().unwrap().serial.clone();

    // As after a restore: the first renewal is at once.
    let shared = sidecar.shared.clone();
    let task = tokio::spawn(sidecar.renew_forever(true));
    let renewed = async {
        while shared
            .cert
            .load()
            .as_ref()
            .is_some_and(|c| c.serial == first)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), renewed)
        .await
        .expect("no renewal");
    task.abort();
    let seen = cp.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[1].path, "/v1/certificates");
    assert_eq!(seen[1].bearer, None);
    assert_eq!(seen[1].client, Some(id("api")));
}

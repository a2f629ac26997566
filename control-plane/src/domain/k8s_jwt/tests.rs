use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;

use super::*;

mod fetch;

const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

struct Signer {
    key: EncodingKey,
    kid: String,
}

impl Signer {
    fn new(kid: &str) -> Self {
        let pkcs8 = trustmesh_certs::PrivateKey::generate().unwrap().to_der();
        Self {
            key: EncodingKey::from_ec_der(pkcs8.secret_der()),
            kid: kid.to_string(),
        }
    }

    fn jwk(&self) -> Jwk {
        let mut jwk = Jwk::from_encoding_key(&self.key, Algorithm::ES256).unwrap();
        jwk.common.key_id = Some(self.kid.clone());
        jwk
    }

    fn sign(&self, claims: serde_json::Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.key).unwrap()
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(sub: &str, aud: &str, exp: u64) -> serde_json::Value {
    json!({
        "iss": ISSUER, "aud": [aud], "sub": sub, "exp": exp, "iat": now() - 10, "nbf": now() - 10,
        "kubernetes.io": {"namespace": "prod", "serviceaccount": {"name": "api"}},
    })
}

async fn verifier(dir: &std::path::Path, keys: &[&Signer]) -> K8sVerifier {
    let set = JwkSet {
        keys: keys.iter().map(|s| s.jwk()).collect(),
    };
    let path = dir.join("jwks.json");
    std::fs::write(&path, serde_json::to_vec(&set).unwrap()).unwrap();
    let args = K8sArgs {
        jwks: Some(path.display().to_string()),
        issuer: Some(ISSUER.to_string()),
        audience: "trustmesh".to_string(),
        jwks_ca: None,
        jwks_token_file: None,
    };
    let td = TrustDomain::parse("cluster.local").unwrap();
    K8sVerifier::from_args(&args, &td).await.unwrap().unwrap()
}

#[tokio::test]
async fn a_good_token_names_its_service_account() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Signer::new("k1");
    let v = verifier(dir.path(), &[&cluster]).await;
    let token = cluster.sign(claims(
        "system:serviceaccount:prod:api",
        "trustmesh",
        now() + 600,
    ));
    assert_eq!(
        v.verify(&token).await.unwrap().as_str(),
        "spiffe://cluster.local/ns/prod/sa/api"
    );
}

#[tokio::test]
async fn refuses_foreign_keys_audiences_issuers_and_expired_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Signer::new("k1");
    let v = verifier(dir.path(), &[&cluster]).await;
    let sub = "system:serviceaccount:prod:api";

    // Same kid, another key: the signature fails.
    let impostor = Signer::new("k1");
    let t = impostor.sign(claims(sub, "trustmesh", now() + 600));
    assert_eq!(v.verify(&t).await, Err(JwtError::BadSignature));
    // A kid the cluster never had.
    let stranger = Signer::new("k9");
    let t = stranger.sign(claims(sub, "trustmesh", now() + 600));
    assert_eq!(v.verify(&t).await, Err(JwtError::UnknownKey));

    let t = cluster.sign(claims(sub, "vault", now() + 600));
    assert!(matches!(v.verify(&t).await, Err(JwtError::Audience(_))));
    let t = cluster.sign(claims(sub, "trustmesh", now() - 3600));
    assert_eq!(v.verify(&t).await, Err(JwtError::Expired));
    let mut c = claims(sub, "trustmesh", now() + 600);
    c["iss"] = json!("https://evil.example");
    assert!(matches!(
        v.verify(&cluster.sign(c)).await,
        Err(JwtError::Issuer(_))
    ));
    let mut c = claims(sub, "trustmesh", now() + 600);
    c.as_object_mut().unwrap().remove("aud");
    assert!(matches!(
        v.verify(&cluster.sign(c)).await,
        Err(JwtError::Audience(_))
    ));

    for bad in [
        "system:serviceaccount:prod",
        "system:node:worker-1",
        "system:serviceaccount:prod:api:extra",
        "system:serviceaccount:pr/od:api",
        "system:serviceaccount:prod:..",
        "system:serviceaccount:Prod:api",
    ] {
        let t = cluster.sign(claims(bad, "trustmesh", now() + 600));
        assert!(
            matches!(v.verify(&t).await, Err(JwtError::Subject(_))),
            "{bad}"
        );
    }

    // HMAC with any secret, and garbage, are refused before any key is looked at.
    let hs = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(sub, "trustmesh", now() + 600),
        &EncodingKey::from_secret(b"secret"),
    )
    .unwrap();
    assert_eq!(v.verify(&hs).await, Err(JwtError::Algorithm));
    assert_eq!(v.verify("not.a.jwt").await, Err(JwtError::Malformed));
}

#[tokio::test]
async fn a_key_added_to_the_jwks_is_picked_up() {
    let dir = tempfile::tempdir().unwrap();
    let old = Signer::new("old");
    let v = verifier(dir.path(), &[&old]).await;
    let new = Signer::new("new");
    let set = JwkSet {
        keys: vec![old.jwk(), new.jwk()],
    };
    std::fs::write(
        dir.path().join("jwks.json"),
        serde_json::to_vec(&set).unwrap(),
    )
    .unwrap();
    let t = new.sign(claims(
        "system:serviceaccount:a:b",
        "trustmesh",
        now() + 600,
    ));
    assert_eq!(
        v.verify(&t).await.unwrap().as_str(),
        "spiffe://cluster.local/ns/a/sa/b"
    );
}

#[test]
fn needs_an_issuer_and_https_or_loopback() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let td = TrustDomain::parse("cluster.local").unwrap();
    let mut args = K8sArgs {
        jwks: Some("/nonexistent".into()),
        issuer: None,
        audience: "trustmesh".into(),
        jwks_ca: None,
        jwks_token_file: None,
    };
    assert!(rt.block_on(K8sVerifier::from_args(&args, &td)).is_err());
    args.issuer = Some(ISSUER.into());
    args.jwks = Some("http://10.0.0.1/openid/v1/jwks".into());
    assert!(rt.block_on(K8sVerifier::from_args(&args, &td)).is_err());
    args.jwks = Some("https://10.0.0.1/openid/v1/jwks".into());
    assert!(
        rt.block_on(K8sVerifier::from_args(&args, &td)).is_err(),
        "needs --k8s-jwks-ca"
    );
    args.jwks = None;
    assert!(rt
        .block_on(K8sVerifier::from_args(&args, &td))
        .unwrap()
        .is_none());
}

#[test]
fn the_backoff_doubles_from_the_minimum_to_the_cap() {
    assert_eq!(backoff(0), REFRESH_MIN);
    assert_eq!(backoff(1), REFRESH_MIN);
    assert_eq!(backoff(2), REFRESH_MIN * 2);
    assert_eq!(backoff(3), REFRESH_MIN * 4);
    assert_eq!(backoff(10), BACKOFF_MAX);
    assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
}

#[test]
fn every_error_code_is_listed_for_the_metrics() {
    let all = [
        JwtError::Malformed,
        JwtError::Algorithm,
        JwtError::UnknownKey,
        JwtError::BadSignature,
        JwtError::Expired,
        JwtError::Audience(String::new()),
        JwtError::Issuer(String::new()),
        JwtError::Subject(String::new()),
        JwtError::KeysUnavailable,
        JwtError::PodGone(String::new()),
    ];
    let codes: Vec<&str> = all.iter().map(JwtError::code).collect();
    assert_eq!(codes, JwtError::CODES);
}

#[tokio::test]
async fn a_token_names_the_pod_it_is_bound_to() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Signer::new("k1");
    let v = verifier(dir.path(), &[&cluster]).await;
    let mut c = claims("system:serviceaccount:prod:api", "trustmesh", now() + 600);
    c["kubernetes.io"]["pod"] = json!({"name": "api-7d9", "uid": "u-1"});
    let (id, pod) = v.verify_bound(&cluster.sign(c)).await.unwrap();
    assert_eq!(id.as_str(), "spiffe://cluster.local/ns/prod/sa/api");
    assert_eq!(
        pod,
        Some(BoundPod {
            namespace: "prod".into(),
            name: "api-7d9".into(),
            uid: "u-1".into()
        })
    );
    // A token bound to no pod (a TokenRequest for the ServiceAccount alone) names none.
    let plain = claims("system:serviceaccount:prod:api", "trustmesh", now() + 600);
    let (_, pod) = v.verify_bound(&cluster.sign(plain)).await.unwrap();
    assert_eq!(pod, None);
}

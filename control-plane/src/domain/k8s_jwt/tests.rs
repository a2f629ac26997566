use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;

use super::*;

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

#[tokio::test]
async fn keys_are_fetched_from_a_loopback_url() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let cluster = Signer::new("url-key");
    let body = serde_json::to_vec(&JwkSet {
        keys: vec![cluster.jwk()],
    })
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("sa-token");
    std::fs::write(&token_file, "the-cp-token\n").unwrap();
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut req = vec![0u8; 4096];
        let n = s.read(&mut req).await.unwrap();
        let req = String::from_utf8_lossy(&req[..n]).to_string();
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(&body).await.unwrap();
        req
    });
    let args = K8sArgs {
        jwks: Some(format!("http://{addr}/openid/v1/jwks")),
        issuer: Some(ISSUER.to_string()),
        audience: "trustmesh".to_string(),
        jwks_ca: None,
        jwks_token_file: Some(token_file),
    };
    let td = TrustDomain::parse("cluster.local").unwrap();
    let v = K8sVerifier::from_args(&args, &td).await.unwrap().unwrap();
    let request = server.await.unwrap();
    assert!(
        request.starts_with("GET /openid/v1/jwks HTTP/1.1"),
        "{request}"
    );
    assert!(
        request
            .to_ascii_lowercase()
            .contains("authorization: bearer the-cp-token"),
        "{request}"
    );
    let t = cluster.sign(claims("system:serviceaccount:a:b", "trustmesh", now() + 60));
    assert_eq!(
        v.verify(&t).await.unwrap().as_str(),
        "spiffe://cluster.local/ns/a/sa/b"
    );
}

/// A loopback JWKS server that counts the reads it answered: `body` as 200, or 500 when
/// `failing`.
struct CountingJwks {
    addr: std::net::SocketAddr,
    reads: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    body: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    failing: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl CountingJwks {
    async fn start(keys: &[&Signer]) -> Self {
        use std::sync::atomic::Ordering::SeqCst;
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = Self {
            addr: listener.local_addr().unwrap(),
            reads: Default::default(),
            body: Default::default(),
            failing: Default::default(),
        };
        server.serve(keys);
        let (reads, body, failing) = (
            server.reads.clone(),
            server.body.clone(),
            server.failing.clone(),
        );
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let (reads, body, failing) = (reads.clone(), body.clone(), failing.clone());
                tokio::spawn(async move {
                    let mut req = vec![0u8; 4096];
                    let _ = s.read(&mut req).await;
                    reads.fetch_add(1, SeqCst);
                    let (status, body) = if failing.load(SeqCst) {
                        ("500 Internal Server Error", Vec::new())
                    } else {
                        ("200 OK", body.lock().unwrap().clone())
                    };
                    let head = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\n\
                         content-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = s.write_all(head.as_bytes()).await;
                    let _ = s.write_all(&body).await;
                });
            }
        });
        server
    }

    fn serve(&self, keys: &[&Signer]) {
        *self.body.lock().unwrap() = serde_json::to_vec(&JwkSet {
            keys: keys.iter().map(|s| s.jwk()).collect(),
        })
        .unwrap();
    }

    fn reads(&self) -> usize {
        self.reads.load(std::sync::atomic::Ordering::SeqCst)
    }

    async fn verifier(&self) -> K8sVerifier {
        let args = K8sArgs {
            jwks: Some(format!("http://{}/openid/v1/jwks", self.addr)),
            issuer: Some(ISSUER.to_string()),
            audience: "trustmesh".to_string(),
            jwks_ca: None,
            jwks_token_file: None,
        };
        let td = TrustDomain::parse("cluster.local").unwrap();
        K8sVerifier::from_args(&args, &td).await.unwrap().unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_tokens_with_a_new_key_share_one_jwks_read() {
    let (old, new) = (Signer::new("old"), Signer::new("new"));
    let jwks = CountingJwks::start(&[&old]).await;
    let v = std::sync::Arc::new(jwks.verifier().await);
    assert_eq!(jwks.reads(), 1, "read once at start");
    // The cluster rotates in a new key; a burst of tokens signed with it arrives at once.
    jwks.serve(&[&old, &new]);
    let token = new.sign(claims(
        "system:serviceaccount:a:b",
        "trustmesh",
        now() + 600,
    ));
    let burst: Vec<_> = (0..20)
        .map(|_| {
            let (v, token) = (v.clone(), token.clone());
            tokio::spawn(async move { v.verify(&token).await })
        })
        .collect();
    for task in burst {
        assert_eq!(
            task.await.unwrap().unwrap().as_str(),
            "spiffe://cluster.local/ns/a/sa/b",
            "every request of the burst uses the one read's keys"
        );
    }
    assert_eq!(jwks.reads(), 2, "the burst shared one read");
    // Garbage `kid`s right after cause no read at all.
    let stranger = Signer::new("garbage");
    for _ in 0..20 {
        let t = stranger.sign(claims(
            "system:serviceaccount:a:b",
            "trustmesh",
            now() + 600,
        ));
        assert_eq!(v.verify(&t).await, Err(JwtError::UnknownKey));
    }
    assert_eq!(jwks.reads(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_jwks_is_not_read_once_per_request() {
    let cluster = Signer::new("cluster");
    let jwks = CountingJwks::start(&[&cluster]).await;
    let v = std::sync::Arc::new(jwks.verifier().await);
    assert_eq!(jwks.reads(), 1);
    // The keys in hand are past REFRESH_MAX, and the API server now fails every read.
    let set = v.keys.load().set.clone();
    v.keys.store(std::sync::Arc::new(Keys {
        set,
        fetched: Instant::now()
            .checked_sub(REFRESH_MAX + Duration::from_secs(1))
            .unwrap(),
    }));
    jwks.failing
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let good = cluster.sign(claims(
        "system:serviceaccount:a:b",
        "trustmesh",
        now() + 600,
    ));
    let stranger = Signer::new("garbage");
    let mut tasks = Vec::new();
    for i in 0..40 {
        let v = v.clone();
        let t = if i % 2 == 0 {
            good.clone()
        } else {
            stranger.sign(claims(
                "system:serviceaccount:a:b",
                "trustmesh",
                now() + 600,
            ))
        };
        tasks.push(tokio::spawn(
            async move { (i % 2 == 0, v.verify(&t).await) },
        ));
    }
    for task in tasks {
        match task.await.unwrap() {
            // The keys in hand keep working while the cluster's JWKS cannot be read.
            (true, r) => assert!(r.is_ok(), "{r:?}"),
            (false, r) => assert_eq!(r, Err(JwtError::UnknownKey)),
        }
    }
    assert_eq!(jwks.reads(), 2, "one failed read, then backoff");
    for _ in 0..20 {
        assert!(v.verify(&good).await.is_ok());
    }
    assert_eq!(jwks.reads(), 2, "still backing off");
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

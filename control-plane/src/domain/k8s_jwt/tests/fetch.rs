//! Keys fetched from a JWKS URL: the request the control plane makes, and how often it reads
//! the JWKS when tokens with new keys arrive together or the JWKS fails.

use super::*;

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

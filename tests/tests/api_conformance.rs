//! What the API-schema scan (`tests/scans/run.sh`, schemathesis) found, held in place against
//! the real control plane: a wrong method on a known path gets `405` with `Allow` (RFC 9110
//! §15.5.6), `/v1/inject` included; an unknown path gets `404`; every answer carries
//! `X-Content-Type-Options: nosniff`.

// Helpers outside #[test] functions fail the test by panicking, like the tests themselves.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use bytes::Bytes;
use http::{header, Method};
use trustmesh_e2e::control_plane::ControlPlane;
use trustmesh_e2e::policies::write_policies;
use trustmesh_e2e::workdir::WorkDir;

/// Every path of `control-plane/openapi.yaml` with the one method it answers.
const ROUTES: &[(&str, &str)] = &[
    ("/healthz", "GET"),
    ("/metrics", "GET"),
    ("/v1/trust-bundle", "GET"),
    ("/v1/certificates", "POST"),
    ("/v1/snapshot", "GET"),
    ("/v1/proxies", "GET"),
    ("/v1/inject", "POST"),
];

async fn start_cp(test: &str) -> (ControlPlane, WorkDir) {
    let dir = WorkDir::new(test).expect("work dir");
    let policies = write_policies(&dir.path().join("policies"), &[]).expect("policies");
    let cp = ControlPlane::start(dir.path(), &policies)
        .await
        .expect("control plane starts");
    (cp, dir)
}

#[tokio::test]
async fn a_wrong_method_on_a_known_path_gets_405_naming_the_allowed_one() {
    let (cp, _dir) = start_cp("api-405-allow").await;
    for (path, allowed) in ROUTES {
        for method in [Method::TRACE, Method::PUT, Method::DELETE, Method::PATCH] {
            let r = cp
                .request(method.clone(), path, None, Bytes::new())
                .await
                .expect("the control plane answers");
            assert_eq!(r.status, 405, "{method} {path}: {}", r.text());
            assert_eq!(
                r.headers.get(header::ALLOW).map(|v| v.to_str().unwrap()),
                Some(*allowed),
                "{method} {path}: Allow"
            );
            let v = r.json().expect("a JSON error");
            assert_eq!(v["error"], "method_not_allowed", "{method} {path}: {v}");
        }
    }
}

#[tokio::test]
async fn an_unknown_path_gets_404_without_allow() {
    let (cp, _dir) = start_cp("api-404").await;
    for path in ["/", "/v1", "/v1/inject/", "/v1/snapshots", "/healthz/x"] {
        let r = cp
            .request(Method::TRACE, path, None, Bytes::new())
            .await
            .expect("the control plane answers");
        assert_eq!(r.status, 404, "TRACE {path}: {}", r.text());
        assert!(r.headers.get(header::ALLOW).is_none(), "TRACE {path}");
    }
}

#[tokio::test]
async fn every_answer_says_nosniff() {
    let (cp, _dir) = start_cp("api-nosniff").await;
    for (method, path) in [
        (Method::GET, "/healthz"),
        (Method::GET, "/v1/trust-bundle"),
        (Method::GET, "/metrics"),
        (Method::GET, "/v1/snapshot"),
        (Method::POST, "/v1/inject"),
        (Method::GET, "/nowhere"),
    ] {
        let r = cp
            .request(method.clone(), path, None, Bytes::new())
            .await
            .expect("the control plane answers");
        assert_eq!(
            r.headers
                .get(header::X_CONTENT_TYPE_OPTIONS)
                .map(|v| v.to_str().unwrap()),
            Some("nosniff"),
            "{method} {path} ({})",
            r.status
        );
    }
}

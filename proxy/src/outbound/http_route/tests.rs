use http::{HeaderMap, HeaderName, HeaderValue};
use trustmesh_policies::route::HeaderEdits;

use super::{edit, host_port};

fn pair(n: &'static str, v: &'static str) -> (HeaderName, HeaderValue) {
    (HeaderName::from_static(n), HeaderValue::from_static(v))
}

#[test]
fn header_modifiers_set_add_and_remove_as_the_gateway_api_says() {
    let mut h = HeaderMap::new();
    h.append("x-env", HeaderValue::from_static("a"));
    h.append("x-env", HeaderValue::from_static("b"));
    h.insert("x-tag", HeaderValue::from_static("1"));
    h.insert("x-debug", HeaderValue::from_static("yes"));
    let edits = HeaderEdits {
        set: vec![pair("x-env", "canary"), pair("x-new", "n")],
        add: vec![pair("x-tag", "2")],
        remove: vec![HeaderName::from_static("x-debug")],
    };
    edit(&mut h, &edits);
    let all = |n: &str| -> Vec<&str> { h.get_all(n).iter().map(|v| v.to_str().unwrap()).collect() };
    assert_eq!(all("x-env"), ["canary"], "set replaces every value");
    assert_eq!(all("x-new"), ["n"], "set adds a missing header");
    assert_eq!(all("x-tag"), ["1", "2"], "add appends");
    assert!(all("x-debug").is_empty(), "remove drops it");
}

#[test]
fn the_route_port_is_the_one_host_names() {
    assert_eq!(host_port("orders"), None);
    assert_eq!(host_port("orders.shop:8080"), Some(8080));
    assert_eq!(host_port("10.0.0.1:80"), Some(80));
    assert_eq!(host_port("[::1]:81"), Some(81));
    assert_eq!(host_port("[::1]"), None);
    assert_eq!(host_port("orders:x"), None);
}

mod retry {
    use bytes::Bytes;
    use http::Request;
    use http_body::{Body as _, Frame};
    use http_body_util::{BodyExt as _, StreamBody};

    use super::super::retry::{buffer, replayable};
    use crate::layers::body::{self, Body, BoxError, Stalled};

    /// A body of `len` bytes whose length is not known in advance (chunked).
    fn streamed(len: usize) -> Body {
        let frames = [Ok::<_, BoxError>(Frame::data(Bytes::from(vec![b'x'; len])))];
        StreamBody::new(futures_util::stream::iter(frames)).boxed()
    }

    fn head(expect: bool) -> http::request::Parts {
        let mut b = Request::post("/x");
        if expect {
            b = b.header("expect", "100-continue");
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn only_empty_or_known_short_bodies_are_retried() {
        let limit = 64 * 1024;
        assert!(replayable(&head(false), &body::full(""), limit), "empty");
        let exact = body::full(vec![b'x'; 65_536]);
        assert_eq!(exact.size_hint().upper(), Some(65_536));
        assert!(
            replayable(&head(false), &exact, limit),
            "known, at the limit"
        );
        let long = body::full(vec![b'x'; 65_537]);
        assert!(!replayable(&head(false), &long, limit), "known, too long");
        assert!(
            !replayable(&head(false), &streamed(10), limit),
            "unknown length"
        );
        let short = body::full("abc");
        assert!(!replayable(&head(true), &short, limit), "100-continue");
        assert_eq!(
            streamed(10).size_hint().upper(),
            None,
            "the fixture has no length"
        );
    }

    #[tokio::test]
    async fn a_buffered_body_is_sent_again_whole_with_its_trailers() {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        let frames = [
            Ok::<_, BoxError>(Frame::data(Bytes::from_static(b"hello "))),
            Ok(Frame::data(Bytes::from_static(b"world"))),
            Ok(Frame::trailers(trailers.clone())),
        ];
        let body = StreamBody::new(futures_util::stream::iter(frames)).boxed();
        let timeout = std::time::Duration::from_secs(10);
        let replay = buffer(body, 1024, Stalled::default(), timeout)
            .await
            .unwrap();
        for _ in 0..2 {
            let all = replay.body().collect().await.unwrap();
            assert_eq!(all.trailers(), Some(&trailers));
            assert_eq!(all.to_bytes(), "hello world");
        }
        // A body longer than it claimed is refused rather than cut.
        let err = buffer(streamed(2000), 1024, Stalled::default(), timeout)
            .await
            .unwrap_err();
        assert_eq!(err.status(), 400, "{err}");
    }
}

#[test]
fn connection_errors_are_always_retried_and_a_cut_attempt_only_for_504() {
    use super::retry::retryable_error;
    use crate::layers::rescue::ProxyError;
    let target = || "orders.prod (10.0.0.7:15006)".to_string();
    let why = || "refused".to_string();
    let connection = [
        ProxyError::Connect {
            target: target(),
            reason: why(),
        },
        ProxyError::Tls {
            target: target(),
            reason: why(),
        },
        ProxyError::Upstream {
            target: target(),
            reason: why(),
        },
    ];
    for e in &connection {
        assert!(retryable_error(e, &[]), "{e}");
    }
    let cut = ProxyError::RouteTimeout {
        target: target(),
        timeout: "300ms".into(),
        which: "backendRequest",
    };
    assert!(retryable_error(&cut, &[503, 504]));
    assert!(!retryable_error(&cut, &[503]));
    let deadline = ProxyError::RouteTimeout {
        target: target(),
        timeout: "1s".into(),
        which: "request",
    };
    assert!(!retryable_error(&deadline, &[504]), "no time is left");
    for e in [
        ProxyError::NoEndpoints("orders.prod".into()),
        ProxyError::BodyTimeout { secs: 10 },
        ProxyError::NotReady("no policy snapshot yet"),
    ] {
        assert!(!retryable_error(&e, &[503, 504]), "{e}");
    }
}

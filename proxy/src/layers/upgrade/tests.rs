use super::*;

fn h1(method: &str, headers: &[(&str, &str)]) -> Request<()> {
    let mut b = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).unwrap())
        .uri("/chat")
        .version(Version::HTTP_11);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap()
}

fn protocol(req: &Request<()>) -> Option<String> {
    Upgrade::of(req).map(|u| {
        assert_eq!(u.form, Form::Http1);
        u.protocol
    })
}

#[test]
fn an_http1_upgrade_is_a_get_naming_upgrade_in_connection_and_one_protocol() {
    let ws = [("connection", "Upgrade"), ("upgrade", "websocket")];
    assert_eq!(protocol(&h1("GET", &ws)).as_deref(), Some("websocket"));
    // Any protocol name, with a version; `Connection` may list more tokens.
    let other = [("connection", "keep-alive, upgrade"), ("upgrade", "foo/2")];
    assert_eq!(protocol(&h1("GET", &other)).as_deref(), Some("foo/2"));
    let table: [(&str, &[(&str, &str)]); 8] = [
        // Not asked for in `Connection`: an `Upgrade` header alone is not a request to switch.
        ("GET", &[("upgrade", "websocket")]),
        ("GET", &[("connection", "upgrade")]),
        // h2c would carry HTTP requests past authorization.
        ("GET", &[("connection", "upgrade"), ("upgrade", "h2c")]),
        ("GET", &[("connection", "upgrade"), ("upgrade", "H2C")]),
        // A list of offers, or no token at all.
        (
            "GET",
            &[("connection", "upgrade"), ("upgrade", "websocket, foo")],
        ),
        (
            "GET",
            &[("connection", "upgrade"), ("upgrade", "web socket")],
        ),
        ("GET", &[("connection", "upgrade"), ("upgrade", "")]),
        // Only GET: what crosses the hop is authorized as GET.
        (
            "POST",
            &[("connection", "upgrade"), ("upgrade", "websocket")],
        ),
    ];
    for (method, headers) in table {
        assert_eq!(protocol(&h1(method, headers)), None, "{method} {headers:?}");
    }
    let two = h1(
        "GET",
        &[
            ("connection", "upgrade"),
            ("upgrade", "websocket"),
            ("upgrade", "foo"),
        ],
    );
    assert_eq!(protocol(&two), None);
    let mut old = h1("GET", &ws);
    *old.version_mut() = Version::HTTP_10;
    assert_eq!(Upgrade::of(&old), None, "HTTP/1.0 ignores Upgrade");
}

#[test]
fn an_h2_upgrade_is_a_connect_with_protocol() {
    let mut req = Request::builder()
        .method(Method::CONNECT)
        .uri("https://b.test/chat")
        .version(Version::HTTP_2)
        .body(())
        .unwrap();
    assert_eq!(Upgrade::of(&req), None, "a plain CONNECT is no upgrade");
    req.extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    let up = Upgrade::of(&req).unwrap();
    assert_eq!(up.form, Form::Connect);
    assert_eq!(up.protocol, "websocket");
    *req.method_mut() = Method::GET;
    assert_eq!(Upgrade::of(&req), None, ":protocol belongs to CONNECT only");
}

#[test]
fn the_forms_turn_into_each_other() {
    let req = h1(
        "GET",
        &[
            ("connection", "upgrade"),
            ("upgrade", "websocket"),
            ("host", "b.test"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("sec-websocket-protocol", "chat"),
        ],
    );
    let up = Upgrade::of(&req).unwrap();
    let (mut parts, ()) = req.into_parts();
    up.to_connect(&mut parts);
    assert_eq!(parts.method, Method::CONNECT);
    assert_eq!(parts.version, Version::HTTP_2);
    assert_eq!(
        parts
            .extensions
            .get::<hyper::ext::Protocol>()
            .map(|p| p.as_str()),
        Some("websocket")
    );
    for gone in ["connection", "upgrade", "host"] {
        assert!(!parts.headers.contains_key(gone), "{gone}");
    }
    assert_eq!(parts.headers["sec-websocket-protocol"], "chat");
    assert_eq!(
        parts.headers["sec-websocket-key"],
        "dGhlIHNhbXBsZSBub25jZQ=="
    );
    // And back, for an HTTP/1.1 app: the caller's key is kept.
    up.to_http1(&mut parts);
    assert_eq!(parts.method, Method::GET);
    assert_eq!(parts.version, Version::HTTP_11);
    assert!(parts.extensions.get::<hyper::ext::Protocol>().is_none());
    assert_eq!(parts.headers["connection"], "upgrade");
    assert_eq!(parts.headers["upgrade"], "websocket");
    assert_eq!(
        parts.headers["sec-websocket-key"],
        "dGhlIHNhbXBsZSBub25jZQ=="
    );
    // An HTTP/2 client sends no key (RFC 8441 §5): the HTTP/1.1 app is given one.
    let mut bare = Request::get("/chat").body(()).unwrap().into_parts().0;
    up.to_http1(&mut bare);
    assert!(bare.headers.contains_key("sec-websocket-key"));
    assert_eq!(bare.headers["sec-websocket-version"], "13");
}

#[test]
fn the_answer_completes_the_form_the_caller_used() {
    let mut callee = HeaderMap::new();
    callee.insert("sec-websocket-protocol", "chat".parse().unwrap());
    callee.insert("sec-websocket-accept", "for-another-key".parse().unwrap());
    callee.insert("connection", "upgrade".parse().unwrap());
    callee.insert("content-length", "0".parse().unwrap());
    let key = HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ==");
    let h1 = Upgrade {
        protocol: "websocket".into(),
        form: Form::Http1,
    };
    let resp = h1.answer(callee.clone(), Some(&key));
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    let h = resp.headers();
    assert_eq!(h["connection"], "upgrade");
    assert_eq!(h["upgrade"], "websocket");
    assert_eq!(h["sec-websocket-accept"], "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    assert_eq!(h["sec-websocket-protocol"], "chat");
    assert!(!h.contains_key("content-length"));
    let h2 = Upgrade {
        protocol: "websocket".into(),
        form: Form::Connect,
    };
    let resp = h2.answer(callee, Some(&key));
    assert_eq!(resp.status(), StatusCode::OK);
    let h = resp.headers();
    for gone in [
        "connection",
        "upgrade",
        "sec-websocket-accept",
        "content-length",
    ] {
        assert!(!h.contains_key(gone), "{gone}");
    }
    assert_eq!(h["sec-websocket-protocol"], "chat");
    // Another protocol gets no WebSocket fields.
    let other = Upgrade {
        protocol: "foo".into(),
        form: Form::Http1,
    };
    let resp = other.answer(HeaderMap::new(), Some(&key));
    assert_eq!(resp.headers()["upgrade"], "foo");
    assert!(!resp.headers().contains_key("sec-websocket-accept"));
}

#[test]
fn only_the_status_of_the_callee_form_switches() {
    assert!(Upgrade::switched(
        Form::Http1,
        StatusCode::SWITCHING_PROTOCOLS
    ));
    assert!(!Upgrade::switched(Form::Http1, StatusCode::OK));
    assert!(!Upgrade::switched(
        Form::Http1,
        StatusCode::UPGRADE_REQUIRED
    ));
    assert!(Upgrade::switched(Form::Connect, StatusCode::OK));
    assert!(!Upgrade::switched(Form::Connect, StatusCode::FORBIDDEN));
}

use super::*;

fn line_of(e: &Entry) -> String {
    let line = line::Line {
        time: SystemTime::UNIX_EPOCH,
        direction: "inbound",
        entry: e,
        status: 200,
        response_bytes: None,
        duration_ms: 1.0,
    };
    let mut out = Vec::new();
    line.encode(&mut out).unwrap();
    String::from_utf8(out).unwrap()
}

#[test]
fn entry_keeps_no_secrets() {
    let mut h = HeaderMap::new();
    h.insert(header::AUTHORIZATION, "Bearer s3cret".parse().unwrap());
    h.insert(header::HOST, "user:pw@b.test:80".parse().unwrap());
    h.insert(header::CONTENT_LENGTH, "12".parse().unwrap());
    let uri: http::Uri = "/a/../b?token=s3cret".parse().unwrap();
    let mut e = Entry::from_request(&Method::POST, &uri, &h, true);
    e.set_raw_path(uri.path_and_query().unwrap().as_str());
    assert_eq!(e.authority.as_deref(), Some("b.test:80"));
    assert_eq!(e.path.as_deref(), Some("/b"));
    assert_eq!(e.request_bytes, Some(12));
    let json = line_of(&e);
    assert!(!json.contains("s3cret") && !json.contains("pw"), "{json}");
}

#[test]
fn the_trace_id_is_read_and_the_parent_id_only_for_span_export() {
    let mut h = HeaderMap::new();
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    h.insert(trace::TRACEPARENT, tp.parse().unwrap());
    let uri: http::Uri = "/".parse().unwrap();
    let e = Entry::from_request(&Method::GET, &uri, &h, true);
    assert_eq!(
        e.trace_id.as_deref(),
        Some("4bf92f3577b34da6a3ce929d0e0e4736")
    );
    // No exporter in unit tests: nobody reads the parent id, so it is not copied.
    assert!(!crate::observe::otlp::enabled());
    assert_eq!(e.parent_id, None);
    let json: serde_json::Value = serde_json::from_str(&line_of(&e)).unwrap();
    assert_eq!(json["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
}

/// The shortcut for targets that are already normal gives what the normalizer gives, for
/// every target up to five characters over an alphabet of the characters normalization is
/// about, and for some longer ones.
#[test]
fn a_path_taken_as_it_is_is_the_one_the_normalizer_makes() {
    const ALPHABET: &[u8] = b"/a.%2F;?#~ \\";
    let mut targets = vec![String::new()];
    let mut all = Vec::new();
    for _ in 0..5 {
        let mut next = Vec::with_capacity(targets.len() * ALPHABET.len());
        for t in &targets {
            for &c in ALPHABET {
                let mut s = t.clone();
                s.push(char::from(c));
                next.push(s);
            }
        }
        all.extend(next.iter().cloned());
        targets = next;
    }
    all.extend(
        [
            "/orders/42",
            "/orders/42/",
            "/a/b/c?x=1&y=2",
            "/a/.../b",
            "/a/..b/.c",
            "/a/b/..",
            "/a/b/.",
            "/a//b",
            "/a/%7E",
            "/a?x y",
            "/a?x\u{7f}",
            "/a?é",
            "/é",
            "/a;b",
            "/a?b#c",
            "?x",
            "",
        ]
        .map(String::from),
    );
    let mut shortcut = 0;
    for raw in &all {
        let normal = normalize_path(raw).ok().map(|p| p.as_str().to_string());
        if let Some(p) = already_normal(raw) {
            shortcut += 1;
            assert_eq!(Some(p.to_string()), normal, "{raw:?}");
        }
        let mut e = Entry {
            detail: true,
            ..Entry::default()
        };
        e.set_raw_path(raw);
        assert_eq!(e.path, normal, "{raw:?}");
    }
    // The shortcut is taken (not everything falls through to the normalizer).
    assert!(shortcut > 1000, "{shortcut}");
    assert_eq!(already_normal("/orders/42?page=2"), Some("/orders/42"));
}

use proptest::prelude::*;

use super::*;

#[test]
fn normalizes_paths() {
    // (raw, normalized path, query)
    let cases: &[(&str, &str, Option<&str>)] = &[
        ("/", "/", None),
        ("/a/b", "/a/b", None),
        ("/a/b/", "/a/b/", None),
        ("//a///b", "/a/b", None),
        ("/a/./b", "/a/b", None),
        ("/a/../b", "/b", None),
        ("/a/b/..", "/a/", None),
        ("/a/b/.", "/a/b/", None),
        ("/a/..", "/", None),
        ("/public/%2E%2E/private", "/private", None),
        ("/public/%2e%2e/private", "/private", None),
        ("/public/.%2e/private", "/private", None),
        ("/%7Euser/%41%62c", "/~user/Abc", None),
        ("/a%20b", "/a%20b", None),
        ("/a%3fb", "/a%3Fb", None),
        ("/%25", "/%25", None),
        ("/%C3%A9t%C3%A9", "/%C3%A9t%C3%A9", None),
        ("/a%3Bb", "/a%3Bb", None),
        ("/allow/admin?x=1", "/allow/admin", Some("x=1")),
        ("/a/../b?q=/../..", "/b", Some("q=/../..")),
        ("/a?", "/a", Some("")),
        ("/./", "/", None),
    ];
    for (raw, path, query) in cases {
        let p = normalize_path(raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
        assert_eq!(p.as_str(), *path, "{raw}");
        assert_eq!(p.query(), *query, "{raw}");
    }
}

#[test]
fn refuses_ambiguous_paths() {
    let cases: &[(&str, PathError)] = &[
        ("", PathError::NotAbsolute),
        ("a/b", PathError::NotAbsolute),
        ("*", PathError::NotAbsolute),
        ("/a%2Fb", PathError::EncodedSlash),
        ("/a%2fb", PathError::EncodedSlash),
        ("/a%5Cb", PathError::EncodedSlash),
        ("/a%5cb", PathError::EncodedSlash),
        ("/a\\b", PathError::Backslash),
        ("/a%zz", PathError::MalformedEscape),
        ("/a%2", PathError::MalformedEscape),
        ("/a%", PathError::MalformedEscape),
        ("/..", PathError::AboveRoot),
        ("/a/../..", PathError::AboveRoot),
        ("/%2E%2E/etc/passwd", PathError::AboveRoot),
        ("/a b", PathError::BadCharacter),
        ("/a\tb", PathError::BadCharacter),
        ("/é", PathError::BadCharacter),
        ("/a#frag", PathError::Fragment),
        // Path parameters: Tomcat and Spring drop `;...` before routing.
        ("/public/..;/admin", PathError::PathParameter),
        ("/debug;x/pprof", PathError::PathParameter),
        ("/a;", PathError::PathParameter),
        ("/a%00b", PathError::EncodedNul),
        ("/%00", PathError::EncodedNul),
        // Double encoding, also when it appears only once the escapes are decoded.
        ("/%252E%252E/x", PathError::DoubleEncoding),
        ("/%252f", PathError::DoubleEncoding),
        ("/%25%34%31", PathError::DoubleEncoding),
        // Escapes that are not UTF-8.
        ("/%C3", PathError::InvalidUtf8),
        ("/%C3/x", PathError::InvalidUtf8),
        ("/%C3%28", PathError::InvalidUtf8),
        ("/%FF%FE", PathError::InvalidUtf8),
        ("/%C0%AE%C0%AE/x", PathError::InvalidUtf8),
        ("/%ED%A0%80", PathError::InvalidUtf8),
    ];
    for (raw, want) in cases {
        assert_eq!(normalize_path(raw).as_ref(), Err(want), "{raw:?}");
    }
}

#[test]
fn strip_matches_without_path_parameters_and_forwards_them() {
    // (raw, matched, forwarded)
    let cases: &[(&str, &str, &str)] = &[
        ("/a;x=1/b", "/a/b", "/a;x=1/b"),
        ("/admin;jsessionid=42", "/admin", "/admin;jsessionid=42"),
        ("/a;b/../c?q=;", "/c", "/c?q=;"),
        ("/a/b;v=1/", "/a/b/", "/a/b;v=1/"),
        ("/plain/path", "/plain/path", "/plain/path"),
    ];
    for (raw, matched, forwarded) in cases {
        let p = normalize_path_with(raw, PathParameters::Strip)
            .unwrap_or_else(|e| panic!("{raw}: {e}"));
        assert_eq!(p.as_str(), *matched, "{raw}");
        assert_eq!(p.path_and_query(), *forwarded, "{raw}");
    }
}

#[test]
fn strip_still_refuses_parameters_on_dot_and_empty_segments() {
    for raw in [
        "/..;/admin",
        "/public/..;/admin",
        "/public/..;x=1/admin",
        "/.;x/a",
        "/a/;x/b",
        "/%2E%2E;/x",
    ] {
        assert_eq!(
            normalize_path_with(raw, PathParameters::Strip),
            Err(PathError::DotSegmentParameter),
            "{raw}"
        );
    }
    // Everything the default refuses besides `;` stays refused.
    assert_eq!(
        normalize_path_with("/a%00;b", PathParameters::Strip),
        Err(PathError::EncodedNul)
    );
}

#[test]
fn keeps_the_query_for_forwarding() {
    let p = normalize_path("/x/./y?a=%2F&b").unwrap();
    assert_eq!(p.path_and_query(), "/x/y?a=%2F&b");
    assert_eq!(p.to_string(), "/x/y");
}

#[test]
fn round_trips_through_serde() {
    let p = normalize_path("/a/b?c").unwrap();
    let json = serde_json::to_string(&p).unwrap();
    assert_eq!(json, "\"/a/b?c\"");
    assert_eq!(serde_json::from_str::<RoutePath>(&json).unwrap(), p);
    assert!(serde_json::from_str::<RoutePath>("\"/../x\"").is_err());
}

fn raw_path() -> impl Strategy<Value = String> {
    let segment = prop_oneof![
        Just(String::new()),
        Just(".".to_string()),
        Just("..".to_string()),
        Just("%2E".to_string()),
        Just("%2e%2E".to_string()),
        Just("%41".to_string()),
        Just("%7e".to_string()),
        Just("%20".to_string()),
        Just("%25".to_string()),
        Just("%2541".to_string()),
        Just("%00".to_string()),
        Just("%C3".to_string()),
        Just("%C3%A9".to_string()),
        Just("%E2%82".to_string()),
        Just("..;".to_string()),
        Just(".;x".to_string()),
        Just(";x".to_string()),
        "[a-zA-Z0-9._~-]{1,6}",
        "[a-z]{1,3};[a-z=]{0,4}",
    ];
    (prop::collection::vec(segment, 0..8), any::<bool>()).prop_map(|(segs, trailing)| {
        let mut s = String::new();
        for seg in segs {
            s.push('/');
            s.push_str(&seg);
        }
        if trailing || s.is_empty() {
            s.push('/');
        }
        s
    })
}

proptest! {
    #[test]
    fn normalizing_twice_changes_nothing(raw in raw_path(), query in proptest::option::of("[a-z=&/.]{0,8}")) {
        let raw = match query { Some(q) => format!("{raw}?{q}"), None => raw };
        if let Ok(once) = normalize_path(&raw) {
            let twice = normalize_path(once.path_and_query()).unwrap();
            prop_assert_eq!(&twice, &once);
        }
    }

    #[test]
    fn output_has_no_dot_segments_or_double_slashes(raw in raw_path()) {
        if let Ok(p) = normalize_path(&raw) {
            let s = p.as_str();
            prop_assert!(s.starts_with('/'));
            prop_assert!(!s.contains("//"), "{}", s);
            for seg in s.split('/') {
                prop_assert!(seg != "." && seg != "..", "{}", s);
            }
        }
    }

    #[test]
    fn never_panics_on_arbitrary_input(raw in "\\PC{0,40}") {
        let _ = normalize_path(&raw);
        let _ = normalize_path_with(&raw, PathParameters::Strip);
    }

    #[test]
    fn output_carries_nothing_a_server_reads_differently(raw in raw_path()) {
        if let Ok(p) = normalize_path(&raw) {
            let s = p.path_and_query();
            prop_assert!(!s.contains(';'), "{}", s);
            prop_assert!(!s.contains("%00"), "{}", s);
            prop_assert!(!has_double_encoding(s), "{}", s);
            prop_assert!(percent_decoded_is_utf8(s), "{}", s);
        }
    }

    #[test]
    fn strip_is_idempotent_and_matches_no_parameters_or_dot_segments(raw in raw_path()) {
        if let Ok(once) = normalize_path_with(&raw, PathParameters::Strip) {
            let twice = normalize_path_with(once.path_and_query(), PathParameters::Strip).unwrap();
            prop_assert_eq!(&twice, &once);
            let m = once.as_str();
            prop_assert!(m.starts_with('/') && !m.contains("//") && !m.contains(';'), "{}", m);
            for seg in m.split('/') {
                prop_assert!(seg != "." && seg != "..", "{}", m);
            }
            // What a Tomcat-style server routes (parameters dropped, then normalized) is what
            // we matched.
            let path = once.path_and_query().split('?').next().unwrap_or_default();
            let dropped: Vec<&str> = path.split('/').map(|s| s.split(';').next().unwrap_or(s)).collect();
            let routed = normalize_path(&dropped.join("/")).unwrap();
            prop_assert_eq!(routed.as_str(), m);
        }
    }

    #[test]
    fn strip_agrees_with_reject_where_reject_accepts(raw in raw_path()) {
        if let Ok(reject) = normalize_path(&raw) {
            prop_assert_eq!(normalize_path_with(&raw, PathParameters::Strip), Ok(reject));
        }
    }
}

fn has_double_encoding(s: &str) -> bool {
    let b = s.as_bytes();
    (0..b.len().saturating_sub(4)).any(|i| {
        &b[i..i + 3] == b"%25" && b[i + 3].is_ascii_hexdigit() && b[i + 4].is_ascii_hexdigit()
    })
}

fn percent_decoded_is_utf8(s: &str) -> bool {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    std::str::from_utf8(&out).is_ok()
}

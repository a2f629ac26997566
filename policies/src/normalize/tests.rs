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
        ("/%252E%252E/x", "/%252E%252E/x", None),
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
    ];
    for (raw, want) in cases {
        assert_eq!(normalize_path(raw).as_ref(), Err(want), "{raw:?}");
    }
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
        "[a-zA-Z0-9._~-]{1,6}",
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
    }
}

//! Path normalization, the step before every authorization: a request target becomes a
//! `RoutePath` or a 400. Properties: the result is normalized (starts with `/`, no `//`, no
//! `.`/`..` segments, no escaped unreserved character, uppercase escapes), normalizing it
//! again changes nothing, the query is kept as sent, and the examples' policies authorize it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trustmesh_fuzz::{authorize_http, example_policies};
use trustmesh_policies::normalize_path;

fuzz_target!(|data: &[u8]| {
    // A request target reaches the proxy as text (hyper refuses a non-UTF-8 one earlier).
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(route) = normalize_path(raw) else {
        return;
    };
    let path = route.as_str();
    assert!(path.starts_with('/'), "{raw:?} -> {path:?}");
    for bad in ["//", "/./", "/../", "?", "#", "\\"] {
        assert!(!path.contains(bad), "{raw:?} -> {path:?} contains {bad:?}");
    }
    assert!(
        !path.ends_with("/.") && !path.ends_with("/.."),
        "{raw:?} -> {path:?} ends in a dot segment"
    );
    let bytes = path.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'%' {
            let Some(escape) = path.get(i..i + 3) else {
                panic!("{raw:?} -> {path:?} ends in a cut escape");
            };
            let value = u8::from_str_radix(&escape[1..], 16).unwrap_or(b'/');
            assert!(
                !(value.is_ascii_alphanumeric() || b"-._~/\\".contains(&value)),
                "{raw:?} -> {path:?} keeps the escape {escape}"
            );
            assert_eq!(escape, escape.to_ascii_uppercase(), "{raw:?} -> {path:?}");
        }
    }
    assert_eq!(
        route.query(),
        raw.split_once('?').map(|(_, q)| q),
        "{raw:?}: the query changed"
    );
    match normalize_path(route.path_and_query()) {
        Ok(again) => assert_eq!(again, route, "{raw:?}: normalizing twice changed it"),
        Err(e) => panic!("{raw:?} -> {route:?} is refused when normalized again: {e}"),
    }
    for compiled in example_policies() {
        authorize_http(compiled, &route);
    }
});

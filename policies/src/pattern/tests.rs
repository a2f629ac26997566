use super::*;

#[test]
fn string_patterns() {
    // (pattern, value, matches)
    let cases = [
        ("*", "", true),
        ("*", "anything", true),
        ("GET", "GET", true),
        ("GET", "get", false),
        ("/api/*", "/api/", true),
        ("/api/*", "/api/x/y", true),
        ("/api/*", "/api", false),
        ("*.png", "/a/b.png", true),
        ("*.png", "/a/b.png.txt", false),
        (
            "cluster.local/ns/prod/*",
            "cluster.local/ns/prod/sa/x",
            true,
        ),
    ];
    for (p, v, want) in cases {
        assert_eq!(StrMatch::parse(p).unwrap().matches(v), want, "{p} vs {v}");
    }
    for bad in ["", "/a/*/b", "**", "*a*"] {
        assert!(StrMatch::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn host_patterns_ignore_case() {
    let cases = [
        ("*.example.com", "API.Example.COM", true),
        ("*.example.com", "example.com", false),
        ("api.*", "API.internal", true),
        ("orders", "ORDERS", true),
        ("orders", "orders2", false),
    ];
    for (p, v, want) in cases {
        let m = StrMatch::parse(p).unwrap().to_lowercase();
        assert_eq!(m.matches_ignore_case(v), want, "{p} vs {v}");
    }
}

#[test]
fn path_patterns_and_templates() {
    let cases = [
        ("/allow*", "/allow/admin", true),
        ("/allow/admin", "/allow/admin", true),
        ("/a/{*}", "/a/b", true),
        ("/a/{*}", "/a/b/c", false),
        ("/a/{*}", "/a/", false),
        ("/a/{*}", "/a", false),
        ("/a/{*}/c", "/a/b/c", true),
        ("/a/{*}/c", "/a/b/d", false),
        ("/a/{**}", "/a/b/c/d", true),
        ("/a/{**}", "/a/", true),
        ("/a/{**}", "/a", false),
        ("/a/{**}/z", "/a/b/c/z", true),
        ("/a/{**}/z", "/a/z", false),
        ("/a/{**}/z", "/a/b/c/y", false),
        ("/{*}/{**}", "/x/y", true),
        ("/{*}/{**}", "/x", false),
    ];
    for (p, v, want) in cases {
        assert_eq!(
            PathPattern::parse(p).unwrap().matches(v),
            want,
            "{p} vs {v}"
        );
    }
}

#[test]
fn refuses_bad_path_patterns() {
    let cases = [
        ("", PatternError::Empty),
        ("/a/*/b", PatternError::InnerWildcard),
        ("api/*", PatternError::PathNotAbsolute),
        ("/a?x=1", PatternError::PathQuery),
        ("/a//b", PatternError::PathNotNormalized("`//`")),
        (
            "/a/../b",
            PatternError::PathNotNormalized("a `.` or `..` segment"),
        ),
        (
            "/a%2Fb",
            PatternError::PathNotNormalized("an encoded slash"),
        ),
        (
            "/%7Euser",
            PatternError::PathNotNormalized("an encoded unreserved character; write it plainly"),
        ),
        (
            "/a/{**}/{*}",
            PatternError::Template("no `{*}` after `{**}`"),
        ),
        (
            "/a/{**}/{**}",
            PatternError::Template("`{**}` may appear only once"),
        ),
        (
            "/a/{*}.png",
            PatternError::Template(
                "`{*}` and `{**}` must be whole segments, and templates take no other `*`",
            ),
        ),
        (
            "/a/{x}",
            PatternError::Template(
                "`{*}` and `{**}` must be whole segments, and templates take no other `*`",
            ),
        ),
    ];
    for (p, want) in cases {
        assert_eq!(PathPattern::parse(p), Err(want), "{p}");
    }
}

#[test]
fn ip_blocks() {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let cases = [
        ("10.0.0.0/8", "10.1.2.3", true),
        ("10.0.0.0/8", "11.0.0.1", false),
        ("10.0.0.7", "10.0.0.7", true),
        ("10.0.0.7", "10.0.0.8", false),
        ("0.0.0.0/0", "203.0.113.9", true),
        ("0.0.0.0/0", "::1", false),
        ("fd00::/8", "fd12::1", true),
        ("fd00::/8", "fe80::1", false),
        ("::/0", "2001:db8::1", true),
        ("10.0.0.0/8", "::ffff:10.0.0.1", true),
    ];
    for (block, addr, want) in cases {
        assert_eq!(
            IpBlock::parse(block).unwrap().contains(ip(addr)),
            want,
            "{block} {addr}"
        );
    }
    for bad in [
        "10.0.0.0/33",
        "10.0.0.1/8",
        "10.0.0/8",
        "fd00::/129",
        "x",
        "10.0.0.0/",
        "10.0.0.0/+8",
    ] {
        assert_eq!(IpBlock::parse(bad), Err(PatternError::IpBlock), "{bad}");
    }
}

#[test]
fn ports() {
    assert_eq!(parse_port("8080"), Ok(8080));
    for bad in ["0", "65536", "+80", "", "http"] {
        assert_eq!(parse_port(bad), Err(PatternError::Port), "{bad}");
    }
}

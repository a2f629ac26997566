use super::*;
use proptest::prelude::*;

#[test]
fn parses_valid_ids() {
    let cases = [
        (
            "spiffe://cluster.local/ns/prod/sa/api",
            "cluster.local",
            "/ns/prod/sa/api",
        ),
        ("spiffe://example.org/a", "example.org", "/a"),
        ("spiffe://a-b_c.9/x.y-z_A/B", "a-b_c.9", "/x.y-z_A/B"),
        ("spiffe://td/...x/..a", "td", "/...x/..a"),
    ];
    for (input, td, path) in cases {
        let id = SpiffeId::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(id.trust_domain_str(), td, "{input}");
        assert_eq!(id.path(), path, "{input}");
        assert_eq!(id.as_str(), input);
        assert_eq!(id.to_string(), input);
    }
}

#[test]
fn rejects_invalid_ids() {
    use SpiffeIdError::*;
    let long = format!("spiffe://td/{}", "a".repeat(2048));
    let cases: Vec<(&str, SpiffeIdError)> = vec![
        ("", Empty),
        ("http://td/a", WrongScheme),
        ("SPIFFE://td/a", WrongScheme),
        ("spiffe:/td/a", WrongScheme),
        ("spiffe:///a", MissingTrustDomain),
        ("spiffe://td", EmptySegment),
        ("spiffe://td/", EmptySegment),
        ("spiffe://td/a//b", EmptySegment),
        ("spiffe://td/a/", EmptySegment),
        ("spiffe://td/a/./b", DotSegment(".".into())),
        ("spiffe://td/a/../b", DotSegment("..".into())),
        ("spiffe://td/a b", BadPathChar(' ')),
        ("spiffe://td/a%2Fb", BadPathChar('%')),
        ("spiffe://td:8080/a", Port),
        ("spiffe://user@td/a", UserInfo),
        ("spiffe://td/a?x=1", Query),
        ("spiffe://td/a#frag", Fragment),
        (
            "spiffe://Cluster.local/a",
            BadTrustDomainChar {
                domain: "Cluster.local".into(),
                ch: 'C',
            },
        ),
        (
            "spiffe://td!/a",
            BadTrustDomainChar {
                domain: "td!".into(),
                ch: '!',
            },
        ),
        (long.as_str(), TooLong(long.len())),
    ];
    for (input, want) in cases {
        assert_eq!(SpiffeId::parse(input), Err(want), "{input:?}");
    }
}

#[test]
fn namespace_and_service_account() {
    let id = SpiffeId::parse("spiffe://cluster.local/ns/prod/sa/api").unwrap();
    assert_eq!(id.namespace(), Some("prod"));
    assert_eq!(id.service_account(), Some("api"));
    assert_eq!(id.principal(), "cluster.local/ns/prod/sa/api");
    let other = SpiffeId::parse("spiffe://cluster.local/workload/x").unwrap();
    assert_eq!(other.namespace(), None);
    assert_eq!(other.service_account(), None);
}

#[test]
fn namespace_is_the_segment_after_a_leading_ns_only() {
    for (id, want) in [
        ("spiffe://td/ns/prod/sa/api", Some("prod")),
        ("spiffe://td/ns/prod", Some("prod")),
        ("spiffe://td/ns/a.b-c_d/x/y/z", Some("a.b-c_d")),
        ("spiffe://td/ns", None),
        ("spiffe://td/nsx/prod", None),
        ("spiffe://td/NS/prod", None),
        ("spiffe://td/x/ns/prod", None),
        ("spiffe://td/n/s/prod", None),
    ] {
        assert_eq!(SpiffeId::parse(id).unwrap().namespace(), want, "{id}");
    }
}

/// Found by `fuzz/` (spiffe_id): `/ns/NS/sa/SA/more` is not of the service account form, so
/// it names no service account (it used to give `SA`, an ID that `from_service_account` does
/// not rebuild).
#[test]
fn service_account_needs_exactly_the_kubernetes_form() {
    let td = TrustDomain::parse("cluster.local").unwrap();
    let id = SpiffeId::parse("spiffe://cluster.local/ns/pr-gattion/sa/as/pgaetway").unwrap();
    assert_eq!(id.namespace(), Some("pr-gattion"));
    assert_eq!(id.service_account(), None);
    for s in [
        "spiffe://cluster.local/ns/prod/sa/api",
        "spiffe://cluster.local/ns/prod/sa/api/x/y",
        "spiffe://cluster.local/ns/prod/sa",
    ] {
        let id = SpiffeId::parse(s).unwrap();
        if let (Some(ns), Some(sa)) = (id.namespace(), id.service_account()) {
            assert_eq!(SpiffeId::from_service_account(&td, ns, sa).unwrap(), id);
        }
    }
}

#[test]
fn builds_from_service_account() {
    let td = TrustDomain::parse("cluster.local").unwrap();
    let id = SpiffeId::from_service_account(&td, "prod", "api").unwrap();
    assert_eq!(id.as_str(), "spiffe://cluster.local/ns/prod/sa/api");
    assert!(SpiffeId::from_service_account(&td, "p/x", "api").is_ok());
    assert!(SpiffeId::from_service_account(&td, "..", "api").is_err());
}

#[test]
fn serde_round_trip_validates() {
    let id: SpiffeId = serde_json::from_str("\"spiffe://td/a\"").unwrap();
    assert_eq!(id.as_str(), "spiffe://td/a");
    assert!(serde_json::from_str::<SpiffeId>("\"spiffe://td/a/../b\"").is_err());
}

proptest! {
    #[test]
    fn parse_never_panics(s in ".{0,300}") {
        let _ = SpiffeId::parse(&s);
    }

    #[test]
    fn valid_ids_round_trip(td in "[a-z0-9._-]{1,40}", segs in proptest::collection::vec("[A-Za-z0-9._-]{1,20}", 1..6)) {
        prop_assume!(segs.iter().all(|s| s != "." && s != ".."));
        let input = format!("spiffe://{td}/{}", segs.join("/"));
        let id = SpiffeId::parse(&input).unwrap();
        prop_assert_eq!(id.as_str(), input.as_str());
        prop_assert_eq!(&SpiffeId::parse(id.as_str()).unwrap(), &id);
        // The namespace is the second segment when the first is `ns`, as a split says.
        let split = (segs[0] == "ns").then(|| segs.get(1).map(String::as_str)).flatten();
        prop_assert_eq!(id.namespace(), split);
    }

    #[test]
    fn namespace_of_ns_ids_is_their_second_segment(ns in "[A-Za-z0-9._-]{1,20}", more in proptest::collection::vec("[A-Za-z0-9_-]{1,8}", 0..3)) {
        prop_assume!(ns != "." && ns != "..");
        let tail: String = more.iter().map(|m| format!("/{m}")).collect();
        let id = SpiffeId::parse(&format!("spiffe://td/ns/{ns}{tail}")).unwrap();
        prop_assert_eq!(id.namespace(), Some(ns.as_str()));
    }
}

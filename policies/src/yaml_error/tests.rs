use super::*;

#[test]
fn strips_positions() {
    let cases = [
        ("a at line 3 column 5", "a"),
        (
            "a at line 3 column 5, while parsing at line 1 column 1",
            "a, while parsing",
        ),
        ("look at this", "look at this"),
        ("x at position 12", "x"),
    ];
    for (input, want) in cases {
        assert_eq!(strip_positions(input), want);
    }
}

#[test]
fn rewords_unsupported_fields_and_custom() {
    let cases = [
        (
            "spec.rules[0].from[0].source: unknown field `requestPrincipals`, expected one of `principals`",
            "spec.rules[0].from[0].source: unsupported field `requestPrincipals`: JWT request principals are not supported (trustmesh does no request authentication)",
        ),
        (
            "spec.action: unknown variant `CUSTOM`, expected one of `ALLOW`, `DENY`, `AUDIT`",
            "spec.action: unsupported action CUSTOM: external authorizers are not supported; use ALLOW, DENY or AUDIT",
        ),
        ("spec: unknown field `bogus`, expected `x`", "spec: unknown field `bogus`, expected `x`"),
    ];
    for (input, want) in cases {
        assert_eq!(reword(input), want);
    }
}

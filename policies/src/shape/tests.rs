use super::*;
use crate::parsed::{PolicyDoc, ServiceDoc};

fn errors<T: DeserializeOwned>(text: &str) -> Vec<String> {
    parse::<T>(text)
        .errors
        .into_iter()
        .map(|(l, c, m)| format!("{l}:{c}: {m}"))
        .collect()
}

#[test]
fn reports_every_unknown_field_at_its_own_position() {
    let text = "\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: p, colour: red}
spec:
  actoin: DENY
  rules:
  - from:
    - source:
        principals: [\"*\"]
        requestPrincipals: [\"*\"]
  - to:
    - operation: {paths: [\"/a\"], verbs: [GET]}
    when:
    - {key: source.ip, values: [10.0.0.1], vals: [x]}
";
    assert_eq!(
        errors::<PolicyDoc>(text),
        [
            "3:21: metadata: unknown field `colour`, expected one of `name`, `namespace`, `labels`, `annotations`",
            "5:3: spec: unknown field `actoin`, expected one of `selector`, `action`, `mode`, `rules`",
            "10:9: spec.rules[0].from[0].source: unsupported field `requestPrincipals`: JWT request principals are not supported (trustmesh does no request authentication)",
            "12:34: spec.rules[1].to[0].operation: unknown field `verbs`, expected one of `hosts`, `notHosts`, `ports`, `notPorts`, `methods`, `notMethods`, `paths`, `notPaths`",
            "14:44: spec.rules[1].when[0]: unknown field `vals`, expected one of `key`, `values`, `notValues`",
        ]
    );
    // Only unknown keys were taken out: the rest is kept, so its values can still be checked.
    let doc = parse::<PolicyDoc>(text).doc.unwrap();
    assert_eq!(doc.spec.unwrap().rules.len(), 2);
}

#[test]
fn reports_every_bad_value_at_its_own_position() {
    let text = "\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: p}
spec:
  action: ALOW
  mode: dryrun
  rules:
  - to:
    - operation: {ports: [{a: 1}]}
  - from: {source: {}}
";
    let got = errors::<PolicyDoc>(text);
    assert_eq!(got.len(), 4, "{got:#?}");
    assert!(
        got[0].starts_with("5:11: spec.action: unknown variant `ALOW`"),
        "{got:#?}"
    );
    assert!(
        got[1].starts_with("6:9: spec.mode: unknown variant `dryrun`"),
        "{got:#?}"
    );
    assert!(
        got[2].starts_with("9:26: spec.rules[0].to[0].operation.ports"),
        "{got:#?}"
    );
    assert!(
        got[3].starts_with("10:11: spec.rules[1].from: invalid type: map"),
        "{got:#?}"
    );
    assert!(parse::<PolicyDoc>(text).doc.is_none());
}

#[test]
fn a_missing_required_field_does_not_hide_the_next_error() {
    let text = "\
apiVersion: trustmesh.io/v1
kind: Service
metadata: {namespace: x}
spec:
  identity: [not, a, string]
  endpoint: [\"10.0.0.1:80\"]
";
    let got = errors::<ServiceDoc>(text);
    assert_eq!(got.len(), 3, "{got:#?}");
    assert!(
        got[0].contains("metadata: missing field `name`"),
        "{got:#?}"
    );
    assert!(
        got[1].starts_with("5:13: spec.identity: invalid type: sequence"),
        "{got:#?}"
    );
    assert!(
        got[2].starts_with("6:3: spec: unknown field `endpoint`"),
        "{got:#?}"
    );
}

#[test]
fn a_syntax_error_is_reported_once() {
    let got = errors::<ServiceDoc>("kind: Service\nspec: [\n");
    assert_eq!(got.len(), 1, "{got:?}");
}

#[test]
fn a_valid_document_reads_without_errors() {
    let r = parse::<ServiceDoc>(
        "apiVersion: trustmesh.io/v1\nkind: Service\nmetadata: {name: a}\nspec: {identity: spiffe://cluster.local/ns/a/sa/b}\n",
    );
    assert!(r.errors.is_empty() && r.doc.is_some());
}

#[test]
fn paths_parse_as_serde_yaml_prints_them() {
    assert_eq!(
        parse_path("spec.rules[1].from[0].source"),
        [
            Seg::Key("spec".into()),
            Seg::Key("rules".into()),
            Seg::Index(1),
            Seg::Key("from".into()),
            Seg::Index(0),
            Seg::Key("source".into()),
        ]
    );
}

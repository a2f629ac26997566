//! Validation of policy values, through the loader so that positions are checked too.

use std::path::Path;

use crate::load::load_dir;

/// The diagnostics for a folder holding only `p.yaml` = `yaml`, as `line:col: message`.
fn diagnostics(yaml: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.yaml"), yaml).unwrap();
    match load_dir(dir.path()) {
        Ok(set) => panic!("expected errors, got {:?}", set.policies),
        Err(d) => d
            .iter()
            .map(|d| {
                assert_eq!(d.file, dir.path().join("p.yaml"));
                format!("{}:{}: {}", d.line, d.col, d.message)
            })
            .collect(),
    }
}

fn policy(spec: &str) -> String {
    format!("apiVersion: trustmesh.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: p, namespace: production}}\nspec:\n{spec}")
}

#[test]
fn bad_values_are_errors_that_name_field_and_position() {
    let cases: &[(&str, &[&str])] = &[
        (
            "  rules:\n  - to:\n    - operation:\n        paths: [\"/a/*/b\", \"/ok/*\", \"/x?y\"]\n",
            &[
                "8:17: paths \"/a/*/b\": `*` is only allowed alone, at the start (`*suffix`) or at the end (`prefix*`)",
                "8:36: paths \"/x?y\": the query is not part of the path; remove `?...` from the pattern",
            ],
        ),
        (
            "  rules:\n  - from:\n    - source:\n        principals: [\"cluster.local/ns/a/sa/b c\"]\n        ipBlocks: [10.0.0.0/33]\n",
            &[
                "8:22: principals \"cluster.local/ns/a/sa/b c\": bad principal: SPIFFE ID path has the character ' '; only letters, digits, '.', '-' and '_' are allowed",
                "9:20: ipBlocks \"10.0.0.0/33\": not an IP address or CIDR block",
            ],
        ),
        (
            "  rules:\n  - when:\n    - key: request.auth.claims[iss]\n      values: [x]\n    - key: destination.ip\n      values: [x]\n    - key: source.ip\n",
            &[
                "7:12: key \"request.auth.claims[iss]\": JWT conditions (request.auth.*) are not supported: trustmesh does no request authentication",
                "9:12: key \"destination.ip\": unsupported condition key; supported: request.headers[NAME], source.ip, source.namespace, source.principal, destination.port, connection.sni",
                "11:12: key \"source.ip\": a condition needs `values` or `notValues`",
            ],
        ),
        (
            "  rules:\n  - to:\n    - operation: {ports: [\"0\", 70000], hosts: [\"a.example.com:443\"], methods: [\"GE T\"]}\n",
            &[
                "7:27: ports \"0\": not a port number (1 to 65535)",
                "7:32: ports \"70000\": not a port number (1 to 65535)",
                "7:48: hosts \"a.example.com:443\": hosts match without the port; use `ports` for the port",
                "7:80: methods \"GE T\": bad method: an HTTP method is a token such as GET",
            ],
        ),
        (
            "  rules:\n  - to:\n    - operation:\n        paths: [\"/a/../b\", \"/{**}/{*}\"]\n",
            &[
                "8:17: paths \"/a/../b\": path pattern is not normalized (a `.` or `..` segment); requests are matched after normalization, so it could never match",
                "8:28: paths \"/{**}/{*}\": bad path template: no `{*}` after `{**}`",
            ],
        ),
        (
            "  action: CUSTOM\n  provider: {name: opa}\n",
            &[
                "5:11: spec.action: unsupported action CUSTOM: external authorizers are not supported; use ALLOW, DENY or AUDIT",
                "6:3: spec: unsupported field `provider`: CUSTOM authorization providers are not supported",
            ],
        ),
        (
            "  action: MAYBE\n",
            &["5:11: spec.action: unknown variant `MAYBE`, expected one of `ALLOW`, `DENY`, `AUDIT`"],
        ),
        (
            "  provider: {name: opa}\n",
            &["5:3: spec: unsupported field `provider`: CUSTOM authorization providers are not supported"],
        ),
        (
            "  rules:\n  - from:\n    - source: {notRequestPrincipals: [\"*\"]}\n",
            &["7:16: spec.rules[0].from[0].source: unsupported field `notRequestPrincipals`: JWT request principals are not supported (trustmesh does no request authentication)"],
        ),
        (
            "  rules:\n  - to:\n    - operation: {paths: [/a], sourceIp: x}\n",
            &["7:32: spec.rules[0].to[0].operation: unknown field `sourceIp`, expected one of `hosts`, `notHosts`, `ports`, `notPorts`, `methods`, `notMethods`, `paths`, `notPaths`"],
        ),
    ];
    for (spec, want) in cases {
        assert_eq!(diagnostics(&policy(spec)), *want, "spec:\n{spec}");
    }
}

#[test]
fn a_value_written_with_escapes_is_placed_at_its_key() {
    // "GE\tT" is not in the source as written, so the error points at `methods`.
    let got = diagnostics(&policy(
        "  rules:\n  - to:\n    - operation: {methods: [\"GE\\tT\", \"P@ST\"]}\n",
    ));
    assert_eq!(
        got,
        [
            "7:19: methods \"GE\\tT\": bad method: an HTTP method is a token such as GET",
            "7:38: methods \"P@ST\": bad method: an HTTP method is a token such as GET",
        ]
    );
}

#[test]
fn every_example_folder_is_valid() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(examples).unwrap() {
        let dir = entry.unwrap().path();
        let set = load_dir(&dir).unwrap_or_else(|e| {
            panic!(
                "{}: {}",
                dir.display(),
                e.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        });
        assert!(
            set.warnings.is_empty(),
            "{}: {:?}",
            dir.display(),
            set.warnings
        );
        crate::CompiledPolicies::from_set(&set).unwrap();
        seen += 1;
    }
    assert!(seen >= 2);
}

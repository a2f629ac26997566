//! Checks of a policy that compiles but may not mean what its author thinks: run by the
//! loader (so by `trustmesh policy validate` and the control plane), never on the data path.
//!
//! - A principal of a trust domain that is neither the mesh's nor `cluster.local` (which
//!   stands for the mesh's, see `compile`) names no caller this mesh can have: in a DENY
//!   policy that would deny nobody without a word, so it is an error there; elsewhere (it only
//!   ever allows less) a warning.
//! - A DENY path `/x/*` does not match `/x` itself (Istio's prefix pattern keeps the slash):
//!   a warning unless the same operation also names `/x`.

use crate::compile::LOCAL_TRUST_DOMAIN_ALIAS;
use crate::model::{Action, AuthorizationPolicy};

/// One finding: the YAML key and value it is about, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Finding {
    /// The key the value is under (`principals`, `paths`, ...).
    pub field: &'static str,
    /// The value as written.
    pub value: String,
    /// The message.
    pub message: String,
    /// An error (the set is refused) rather than a warning.
    pub is_error: bool,
}

/// Every finding in `policy`, for a mesh of trust domain `trust_domain`.
pub(crate) fn lint(policy: &AuthorizationPolicy, trust_domain: &str) -> Vec<Finding> {
    let deny = policy.spec.action == Action::Deny;
    let mut out = Vec::new();
    let mut principal = |field: &'static str, p: &String| {
        if let Some(td) = foreign_trust_domain(p, trust_domain) {
            let effect = if deny {
                "this DENY would deny nobody"
            } else {
                "it matches no caller"
            };
            out.push(Finding {
                field,
                value: p.clone(),
                message: format!(
                    "{field} {p:?} is in trust domain {td}, not the mesh's ({trust_domain}; `cluster.local/...` also names it): {effect}"
                ),
                is_error: deny,
            });
        }
    };
    for rule in &policy.spec.rules {
        for from in &rule.from {
            let s = &from.source;
            s.principals.iter().for_each(|p| principal("principals", p));
            s.not_principals
                .iter()
                .for_each(|p| principal("notPrincipals", p));
        }
        for c in rule.when.iter().filter(|c| c.key == "source.principal") {
            c.values.iter().for_each(|p| principal("values", p));
            c.not_values.iter().for_each(|p| principal("notValues", p));
        }
    }
    if deny {
        for to in policy.spec.rules.iter().flat_map(|r| &r.to) {
            let paths = &to.operation.paths;
            for p in paths {
                let Some(base) = p.strip_suffix("/*").filter(|b| !b.is_empty()) else {
                    continue;
                };
                if !paths.iter().any(|q| q == base) {
                    out.push(Finding {
                        field: "paths",
                        value: p.clone(),
                        message: format!(
                            "DENY path {p:?} does not match {base:?} itself; add {base:?} to deny it too"
                        ),
                        is_error: false,
                    });
                }
            }
        }
    }
    out
}

/// The trust domain a principal pattern names when it is fixed (no `*` in it) and neither the
/// mesh's nor the `cluster.local` alias.
fn foreign_trust_domain<'a>(p: &'a str, trust_domain: &str) -> Option<&'a str> {
    let bare = p.strip_prefix("spiffe://").unwrap_or(p);
    let (td, _) = bare.split_once('/')?;
    (!td.contains('*') && td != trust_domain && td != LOCAL_TRUST_DOMAIN_ALIAS).then_some(td)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Operation, PolicySpec, Rule, RuleFrom, RuleTo, Source};

    fn policy(action: Action, principals: &[&str], paths: &[&str]) -> AuthorizationPolicy {
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        AuthorizationPolicy {
            name: "p".into(),
            namespace: "default".into(),
            spec: PolicySpec {
                action,
                rules: vec![Rule {
                    from: vec![RuleFrom {
                        source: Source {
                            principals: strings(principals),
                            ..Source::default()
                        },
                    }],
                    to: vec![RuleTo {
                        operation: Operation {
                            paths: strings(paths),
                            ..Operation::default()
                        },
                    }],
                    when: vec![],
                }],
                ..PolicySpec::default()
            },
        }
    }

    #[test]
    fn a_foreign_trust_domain_is_an_error_in_a_deny_and_a_warning_elsewhere() {
        let p = ["other.org/ns/a/sa/b"];
        let deny = lint(&policy(Action::Deny, &p, &[]), "example.org");
        assert_eq!(deny.len(), 1, "{deny:?}");
        assert!(deny[0].is_error && deny[0].message.contains("deny nobody"));
        let allow = lint(&policy(Action::Allow, &p, &[]), "example.org");
        assert!(allow.len() == 1 && !allow[0].is_error, "{allow:?}");
        // The mesh's own, the cluster.local alias and patterns over the domain are fine.
        for ok in [
            "example.org/ns/a/sa/b",
            "spiffe://example.org/ns/a/sa/b",
            "cluster.local/ns/a/sa/b",
            "*/ns/a/sa/b",
            "*",
        ] {
            assert_eq!(
                lint(&policy(Action::Deny, &[ok], &[]), "example.org"),
                vec![],
                "{ok}"
            );
        }
    }

    #[test]
    fn a_deny_prefix_without_its_base_path_is_a_warning() {
        let found = lint(&policy(Action::Deny, &[], &["/admin/*"]), "cluster.local");
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(!found[0].is_error && found[0].value == "/admin/*");
        let both = lint(
            &policy(Action::Deny, &[], &["/admin/*", "/admin"]),
            "cluster.local",
        );
        assert_eq!(both, vec![]);
        assert_eq!(
            lint(&policy(Action::Deny, &[], &["/*"]), "cluster.local"),
            vec![]
        );
        assert_eq!(
            lint(&policy(Action::Allow, &[], &["/admin/*"]), "cluster.local"),
            vec![]
        );
    }
}

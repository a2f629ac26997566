//! Which callers could reach a workload at all, and which policies concern it: what the
//! control plane uses to send each proxy only the registry entries and policies it needs
//! (least privilege), from the same compiled policies the decision uses.

use trustmesh_certs::SpiffeId;

use super::WorkloadPolicies;
use crate::mesh::{DefaultAction, Enforcement};
use crate::model::AuthorizationPolicy;
use crate::service::ServiceEntry;

impl AuthorizationPolicy {
    /// Whether this policy applies to `workload` in a mesh whose root namespace is
    /// `root_namespace` (for sending each proxy only the policies that concern it).
    pub fn applies_to(&self, workload: &ServiceEntry, root_namespace: &str) -> bool {
        (self.namespace == workload.namespace || self.namespace == root_namespace)
            && self.spec.selector.as_ref().is_none_or(|s| {
                s.match_labels
                    .iter()
                    .all(|(k, v)| workload.labels.get(k) == Some(v))
            })
    }
}

impl WorkloadPolicies {
    /// Whether `source` could be allowed any request to this workload at all: what decides
    /// which registry entries a proxy is sent (least privilege). An over-approximation: IP
    /// blocks, operations and conditions are taken as "could match"; dry-run ALLOW policies
    /// are left out, as in [`WorkloadPolicies::authorize`]; `false` only when every request from `source` is certainly denied (no ALLOW
    /// rule's `from` can match it, or no ALLOW policy and `default_action: deny`).
    pub fn may_be_called_by(&self, source: &SpiffeId) -> bool {
        let i = &self.inner;
        if i.enforcement == Enforcement::Audit {
            return true;
        }
        // Dry-run ALLOW policies never allow, so they cannot make a caller reach a service.
        let mut allows = i.allow.iter().filter(|p| !p.dry_run).peekable();
        if allows.peek().is_none() {
            return i.default_action == DefaultAction::Allow;
        }
        let principal = source.principal();
        let namespace = source.namespace();
        let any =
            |patterns: &[crate::pattern::StrMatch], v: &str| patterns.iter().any(|p| p.matches(v));
        allows.any(|p| {
            p.rules.iter().any(|r| {
                r.from.is_empty()
                    || r.from.iter().any(|s| {
                        (s.principals.is_empty() || any(&s.principals, principal))
                            && (s.not_principals.is_empty() || !any(&s.not_principals, principal))
                            && match namespace {
                                Some(ns) => {
                                    (s.namespaces.is_empty() || any(&s.namespaces, ns))
                                        && (s.not_namespaces.is_empty()
                                            || !any(&s.not_namespaces, ns))
                                }
                                None => s.namespaces.is_empty() && s.not_namespaces.is_empty(),
                            }
                    })
            })
        })
    }
}

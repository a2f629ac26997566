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

impl WorkloadPolicies {
    /// The principals (SPIFFE IDs without `spiffe://`) that could reach this workload, when
    /// that is all that decides it: `Some(list)` exactly when [`Self::may_be_called_by`] is
    /// true for a caller if and only if its principal is in `list` (every enforced ALLOW rule
    /// names its callers by exact principals alone). `None` when the answer depends on more
    /// (wildcards, namespaces, exclusions, a rule open to everyone, the mesh in dry run, no
    /// enforced ALLOW policy under `default_action: allow`): then ask
    /// [`Self::may_be_called_by`] per caller. An empty list: nobody may call it (no enforced
    /// ALLOW policy under `default_action: deny`). Lets the control plane find, for each
    /// caller, the services it may call without asking every service.
    pub fn exact_callers(&self) -> Option<Vec<&str>> {
        let i = &self.inner;
        if i.enforcement == Enforcement::Audit {
            return None;
        }
        let mut out = Vec::new();
        let mut enforced = false;
        for p in i.allow.iter().filter(|p| !p.dry_run) {
            enforced = true;
            for r in p.rules.iter() {
                if r.from.is_empty() {
                    return None;
                }
                for s in r.from.iter() {
                    let only_principals = !s.principals.is_empty()
                        && s.not_principals.is_empty()
                        && s.namespaces.is_empty()
                        && s.not_namespaces.is_empty();
                    if !only_principals {
                        return None;
                    }
                    for m in s.principals.iter() {
                        match m {
                            crate::pattern::StrMatch::Exact(v) => out.push(&**v),
                            _ => return None,
                        }
                    }
                }
            }
        }
        // No enforced ALLOW policy: the default action decides, for every caller alike.
        if !enforced {
            return (i.default_action == DefaultAction::Deny).then(Vec::new);
        }
        out.sort_unstable();
        out.dedup();
        Some(out)
    }
}

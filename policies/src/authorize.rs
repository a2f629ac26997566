//! The authorization decision, the step the inbound sidecar runs on every request after path
//! normalization and before anything reaches the app (and the one `trustmesh authz check`
//! runs, so the CLI and the proxy cannot disagree).
//!
//! Order, as Istio's: DENY policies first (any match denies); then, if the workload has no
//! ALLOW policy, the mesh's `default_action`; otherwise the request is allowed only if an
//! ALLOW policy matches. AUDIT policies change nothing; the first one that matches is named in
//! the decision for the log. A policy applies to a workload when it is in the workload's
//! namespace or in the mesh's root namespace, and its selector (if any) matches the labels of
//! the workload's `Service` entry.
//!
//! Dry run (`mode: audit`, or Istio's `istio.io/dry-run: "true"` annotation): the decision is
//! made with dry-run policies left out, exactly as if they were not there (so a dry-run ALLOW
//! never allows, and a workload whose only ALLOW policies are dry-run falls to
//! `default_action`, as Istio's shadow rules do). A second pass with them in force only reports
//! the difference: `would_deny` when enforcing them would deny a request that passes,
//! `would_allow` when it would allow a request that is denied. With `enforcement: audit` in
//! `mesh.yaml` every denial becomes a `would_deny`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use trustmesh_certs::SpiffeId;

use crate::compile::{compile_policy, CompileError, CompiledPolicy};
use crate::evaluate::Attrs;
use crate::load::PolicySet;
use crate::mesh::{DefaultAction, Enforcement, MeshConfig};
use crate::model::{Action, AuthorizationPolicy};
use crate::normalize::PathParameters;
use crate::registry::Registry;
use crate::request::Request;
use crate::selector::LabelIndex;
use crate::service::ServiceEntry;

/// Why a decision came out the way it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// A DENY policy matched.
    DenyPolicy,
    /// An ALLOW policy matched.
    AllowPolicy,
    /// The workload has ALLOW policies and none matched.
    NoAllowMatched,
    /// No ALLOW policy applies to the workload; `default_action: allow`.
    DefaultAllow,
    /// No ALLOW policy applies to the workload; `default_action: deny`.
    DefaultDeny,
}

impl Reason {
    /// A stable snake_case name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::DenyPolicy => "deny_policy",
            Reason::AllowPolicy => "allow_policy",
            Reason::NoAllowMatched => "no_allow_matched",
            Reason::DefaultAllow => "default_allow",
            Reason::DefaultDeny => "default_deny",
        }
    }
}

/// The outcome of [`CompiledPolicies::authorize`].
///
/// Cloning is cheap (policy names are shared `Arc<str>`s, not copies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may pass.
    pub allowed: bool,
    /// Dry run: the request passes (`allowed`) but enforcing every policy would deny it.
    pub would_deny: bool,
    /// Dry run: the request is denied, and enforcing the dry-run policies too would allow it.
    /// Reported only; it never lets the request through.
    pub would_allow: bool,
    /// The deciding policy, `namespace/name` (for a `would_deny`, the one that would deny).
    pub policy: Option<Arc<str>>,
    /// The 0-based index of the deciding rule in that policy's `rules`.
    pub rule: Option<usize>,
    /// The deciding rule as a route name, `namespace/name#index`: bounded by the policy set,
    /// so fit for a metric label (unlike the request path).
    pub route: Option<Arc<str>>,
    /// Why.
    pub reason: Reason,
    /// The first AUDIT policy that matched, if any (`namespace/name`), for the log.
    pub audit: Option<Arc<str>>,
}

impl Decision {
    /// `allow`, `deny` or `would_deny`: the `decision` label of `trustmesh_authz_decisions_total`.
    pub fn label(&self) -> &'static str {
        match (self.allowed, self.would_deny) {
            (true, true) => "would_deny",
            (true, false) => "allow",
            (false, _) => "deny",
        }
    }
}

/// A validated, compiled policy set: the only thing an enforcement point authorizes with.
/// Cheap to clone (one `Arc`).
#[derive(Debug, Clone)]
pub struct CompiledPolicies {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    mesh: MeshConfig,
    registry: Registry,
    policies: Vec<Arc<CompiledPolicy>>,
    /// The policies of every registry entry, computed once.
    by_identity: HashMap<SpiffeId, WorkloadPolicies>,
}

impl CompiledPolicies {
    /// Compiles a loaded policy set. A set from [`crate::load_dir`] always compiles; one that
    /// came over the wire may not, and then every error is returned.
    pub fn from_set(set: &PolicySet) -> Result<Self, Vec<CompileError>> {
        Self::compile(&set.mesh, &set.registry, &set.policies)
    }

    /// Compiles `policies` for the mesh `mesh` with the registry `registry` (for a proxy, the
    /// parts of its snapshot).
    pub fn compile(
        mesh: &MeshConfig,
        registry: &Registry,
        policies: &[AuthorizationPolicy],
    ) -> Result<Self, Vec<CompileError>> {
        let mut compiled = Vec::with_capacity(policies.len());
        let mut errors = Vec::new();
        for p in policies {
            match compile_policy(p, &mesh.trust_domain) {
                Ok(c) => compiled.push(Arc::new(c)),
                Err(e) => errors.extend(e),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Self::assemble(mesh, registry, compiled))
    }

    /// The set `set` from its policies compiled already (by the loader's checks), in
    /// `set.policies` order.
    pub(crate) fn from_compiled(set: &PolicySet, compiled: Vec<Arc<CompiledPolicy>>) -> Self {
        Self::assemble(&set.mesh, &set.registry, compiled)
    }

    fn assemble(
        mesh: &MeshConfig,
        registry: &Registry,
        compiled: Vec<Arc<CompiledPolicy>>,
    ) -> Self {
        // Each entry is offered only the policies filed under its namespace (or the root
        // namespace) and one of its labels, not all of them: the same selection, without
        // trying every (entry, policy) pair.
        let mut by_identity = HashMap::new();
        {
            let empty = BTreeMap::new();
            let mut index = LabelIndex::default();
            for (i, p) in compiled.iter().enumerate() {
                index.file_first(i, &p.namespace, p.selector.as_ref().unwrap_or(&empty));
            }
            for entry in registry.entries() {
                let mut offered = index.candidates(&entry.namespace, &entry.labels);
                if entry.namespace != mesh.root_namespace {
                    offered.extend(index.candidates(&mesh.root_namespace, &entry.labels));
                    offered.sort_unstable();
                    offered.dedup();
                }
                let offered: Vec<Arc<CompiledPolicy>> =
                    offered.iter().map(|&i| compiled[i].clone()).collect();
                by_identity.insert(entry.identity.clone(), select(mesh, &offered, entry));
            }
        }
        Self {
            inner: Arc::new(Inner {
                mesh: mesh.clone(),
                registry: registry.clone(),
                policies: compiled,
                by_identity,
            }),
        }
    }

    /// The mesh settings the set was compiled with.
    pub fn mesh(&self) -> &MeshConfig {
        &self.inner.mesh
    }

    /// The registry the set was compiled with.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// The policies that apply to `workload`, ready to evaluate. For an entry of the registry
    /// this is a cheap clone of a precomputed value.
    pub fn policies_for(&self, workload: &ServiceEntry) -> WorkloadPolicies {
        match self.inner.by_identity.get(&workload.identity) {
            Some(wp) if wp.inner.matches_entry(workload) => wp.clone(),
            _ => select(&self.inner.mesh, &self.inner.policies, workload),
        }
    }

    /// Decides whether `request` to `workload` may pass. Allocates nothing for a workload of
    /// the registry.
    pub fn authorize(&self, workload: &ServiceEntry, request: &Request<'_>) -> Decision {
        match self.inner.by_identity.get(&workload.identity) {
            Some(wp) if wp.inner.matches_entry(workload) => wp.authorize(request),
            _ => select(&self.inner.mesh, &self.inner.policies, workload).authorize(request),
        }
    }
}

/// The policies that apply to one workload, split by action: a per-workload evaluator that
/// a sidecar can hold and call directly. Cheap to clone.
#[derive(Debug, Clone)]
pub struct WorkloadPolicies {
    inner: Arc<WorkloadInner>,
}

#[derive(Debug)]
struct WorkloadInner {
    namespace: String,
    labels: std::collections::BTreeMap<String, String>,
    default_action: DefaultAction,
    enforcement: Enforcement,
    path_parameters: PathParameters,
    deny: Vec<Arc<CompiledPolicy>>,
    allow: Vec<Arc<CompiledPolicy>>,
    audit: Vec<Arc<CompiledPolicy>>,
    has_dry_run: bool,
}

impl WorkloadInner {
    fn matches_entry(&self, e: &ServiceEntry) -> bool {
        self.namespace == e.namespace && self.labels == e.labels
    }
}

fn select(
    mesh: &MeshConfig,
    policies: &[Arc<CompiledPolicy>],
    w: &ServiceEntry,
) -> WorkloadPolicies {
    let mut inner = WorkloadInner {
        namespace: w.namespace.clone(),
        labels: w.labels.clone(),
        default_action: mesh.default_action,
        enforcement: mesh.enforcement,
        path_parameters: mesh.path_parameters,
        deny: Vec::new(),
        allow: Vec::new(),
        audit: Vec::new(),
        has_dry_run: false,
    };
    for p in policies.iter().filter(|p| applies_to(p, mesh, w)) {
        inner.has_dry_run |= p.dry_run;
        match p.action {
            Action::Deny => inner.deny.push(p.clone()),
            Action::Allow => inner.allow.push(p.clone()),
            Action::Audit => inner.audit.push(p.clone()),
        }
    }
    WorkloadPolicies {
        inner: Arc::new(inner),
    }
}

fn applies_to(p: &CompiledPolicy, mesh: &MeshConfig, w: &ServiceEntry) -> bool {
    (p.namespace == w.namespace || p.namespace == mesh.root_namespace)
        && p.selector
            .as_ref()
            .is_none_or(|labels| labels.iter().all(|(k, v)| w.labels.get(k) == Some(v)))
}

/// What one pass over the policies found.
struct Outcome<'a> {
    allowed: bool,
    policy: Option<&'a CompiledPolicy>,
    rule: Option<usize>,
    reason: Reason,
}

impl WorkloadPolicies {
    /// The `namespace/name` of every policy that applies, DENY first, then ALLOW, then AUDIT.
    pub fn policy_names(&self) -> impl Iterator<Item = &str> + '_ {
        let i = &self.inner;
        i.deny
            .iter()
            .chain(&i.allow)
            .chain(&i.audit)
            .map(|p| &*p.key)
    }

    /// How the path of a request to this workload is normalized (`mesh.yaml`
    /// `path_parameters`): pass it to [`crate::normalize_path_with`] before [`Self::authorize`].
    pub fn path_parameters(&self) -> PathParameters {
        self.inner.path_parameters
    }

    /// Decides whether `request` may pass; see the module docs. Allocates nothing.
    pub fn authorize(&self, request: &Request<'_>) -> Decision {
        let i = &self.inner;
        let attrs = Attrs::new(request);
        let full = self.evaluate(&attrs, true);
        let audit = i
            .audit
            .iter()
            .find(|p| p.first_matching_rule(&attrs).is_some())
            .map(|p| p.key.clone());
        let decision = |o: &Outcome<'_>, allowed: bool, would_deny: bool| Decision {
            allowed,
            would_deny,
            would_allow: false,
            policy: o.policy.map(|p| p.key.clone()),
            rule: o.rule,
            route: o
                .policy
                .zip(o.rule)
                .and_then(|(p, r)| p.routes.get(r).cloned()),
            reason: o.reason,
            audit: audit.clone(),
        };
        if i.enforcement == Enforcement::Audit {
            return decision(&full, true, !full.allowed);
        }
        if !i.has_dry_run {
            return decision(&full, full.allowed, false);
        }
        // The decision never depends on a dry-run policy; `full` only tells what would change.
        let enforced = self.evaluate(&attrs, false);
        match (enforced.allowed, full.allowed) {
            (true, false) => decision(&full, true, true),
            (false, true) => Decision {
                would_allow: true,
                ..decision(&enforced, false, false)
            },
            _ => decision(&enforced, enforced.allowed, false),
        }
    }

    /// One pass: DENY, then ALLOW, then the default. `with_dry_run` includes `mode: audit`
    /// policies as if they were enforced.
    fn evaluate(&self, req: &Attrs<'_>, with_dry_run: bool) -> Outcome<'_> {
        let i = &self.inner;
        let in_force = |p: &&Arc<CompiledPolicy>| with_dry_run || !p.dry_run;
        for p in i.deny.iter().filter(in_force) {
            if let Some(rule) = p.first_matching_rule(req) {
                return Outcome {
                    allowed: false,
                    policy: Some(p),
                    rule: Some(rule),
                    reason: Reason::DenyPolicy,
                };
            }
        }
        let mut allows = i.allow.iter().filter(in_force).peekable();
        if allows.peek().is_none() {
            let allowed = i.default_action == DefaultAction::Allow;
            let reason = if allowed {
                Reason::DefaultAllow
            } else {
                Reason::DefaultDeny
            };
            return Outcome {
                allowed,
                policy: None,
                rule: None,
                reason,
            };
        }
        for p in allows {
            if let Some(rule) = p.first_matching_rule(req) {
                return Outcome {
                    allowed: true,
                    policy: Some(p),
                    rule: Some(rule),
                    reason: Reason::AllowPolicy,
                };
            }
        }
        Outcome {
            allowed: false,
            policy: None,
            rule: None,
            reason: Reason::NoAllowMatched,
        }
    }
}

mod reach;

#[cfg(test)]
mod select_tests;
#[cfg(test)]
mod tests;

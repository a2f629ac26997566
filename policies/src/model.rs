//! The `AuthorizationPolicy` model, as written in YAML: trustmesh's `trustmesh.io/v1` and
//! Istio's `security.istio.io/v1` / `v1beta1` forms, which share one schema. Field names are
//! Istio's (camelCase). Every struct refuses unknown keys, so a field trustmesh does not
//! implement (`requestPrincipals`, `provider`, ...) is an error rather than silently ignored.
//!
//! Patterns and principals are kept as written here; `compile` checks and compiles them.
//! An empty list means "no constraint", as in Istio (its protobuf cannot tell an empty list
//! from an absent one).

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

/// The `apiVersion`s an `AuthorizationPolicy` may have.
pub const POLICY_API_VERSIONS: [&str; 3] = [
    "trustmesh.io/v1",
    "security.istio.io/v1",
    "security.istio.io/v1beta1",
];

/// One `kind: AuthorizationPolicy` document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizationPolicy {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace` (default `default`). In the mesh's root namespace the policy applies
    /// to every workload.
    pub namespace: String,
    /// `spec`.
    pub spec: PolicySpec,
}

impl AuthorizationPolicy {
    /// `namespace/name`, as decisions, logs and metrics name the policy.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// What a policy does with a request its rules match.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Action {
    /// Allow matching requests (default).
    #[default]
    Allow,
    /// Deny matching requests; checked before any ALLOW policy.
    Deny,
    /// Log matching requests; changes no decision.
    Audit,
}

/// Whether a policy's denials are enforced (trustmesh extension, `spec.mode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Denials are enforced (default).
    #[default]
    #[serde(alias = "ENFORCE")]
    Enforce,
    /// Dry run: what the policy would deny passes and is reported as `would_deny`.
    #[serde(alias = "AUDIT")]
    Audit,
}

/// `spec` of an `AuthorizationPolicy`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicySpec {
    /// Which workloads (by their `Service` labels) the policy applies to; none means every
    /// workload of the policy's namespace (or of the mesh, in the root namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<Selector>,
    /// ALLOW (default), DENY or AUDIT. CUSTOM is refused.
    #[serde(default)]
    pub action: Action,
    /// enforce (default) or audit (dry run).
    #[serde(default)]
    pub mode: Mode,
    /// The rules; the policy matches when any rule matches. No rules match nothing, so
    /// `spec: {}` allows nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
}

/// `spec.selector`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Selector {
    /// Labels a workload's `Service` entry must all carry.
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

/// One rule: every present field must match (`from`, `to` and `when` are ANDed; the entries
/// of each list are ORed).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Who the request comes from; any entry may match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<RuleFrom>,
    /// What the request does; any entry may match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<RuleTo>,
    /// Extra conditions; all must match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub when: Vec<Condition>,
}

/// An entry of `rules[].from`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFrom {
    /// The source constraints.
    pub source: Source,
}

/// `rules[].from[].source`. Within a source every non-empty field must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Source {
    /// Peer SPIFFE IDs, with or without `spiffe://`; `*`, `prefix*` and `*suffix` allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub principals: Vec<String>,
    /// Peer SPIFFE IDs that must not match. A request without a verified peer never satisfies it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_principals: Vec<String>,
    /// The peer's namespace (the `ns` segment of its SPIFFE ID).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Namespaces the peer must not be in. A request without a verified peer never satisfies it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_namespaces: Vec<String>,
    /// Source IP addresses or CIDR blocks (the connection's peer address).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_blocks: Vec<String>,
    /// Source IP addresses or CIDR blocks that must not match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ip_blocks: Vec<String>,
}

/// An entry of `rules[].to`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleTo {
    /// The operation constraints.
    pub operation: Operation,
}

/// `rules[].to[].operation`. Within an operation every non-empty field must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Operation {
    /// `Host`/`:authority` patterns, case-insensitive, port ignored (HTTP only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Hosts that must not match (HTTP only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_hosts: Vec<String>,
    /// Destination ports (numbers, written as strings or integers).
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "scalar_list"
    )]
    pub ports: Vec<String>,
    /// Destination ports that must not match.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "scalar_list"
    )]
    pub not_ports: Vec<String>,
    /// HTTP methods (HTTP only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// HTTP methods that must not match (HTTP only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_methods: Vec<String>,
    /// Path patterns, matched against the normalized path without its query (HTTP only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// Path patterns that must not match (HTTP only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_paths: Vec<String>,
}

/// An entry of `rules[].when`: a condition on one attribute of the request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Condition {
    /// `request.headers[NAME]`, `source.ip`, `source.namespace`, `source.principal`,
    /// `destination.port` or `connection.sni`.
    pub key: String,
    /// The attribute must match one of these.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "scalar_list"
    )]
    pub values: Vec<String>,
    /// The attribute must match none of these.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "scalar_list"
    )]
    pub not_values: Vec<String>,
}

/// A list of scalars read as strings, so that `ports: [8080]` and `ports: ["8080"]` both work.
fn scalar_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        Str(String),
        Int(i64),
        Bool(bool),
    }
    let items = Vec::<Scalar>::deserialize(d)?;
    Ok(items
        .into_iter()
        .map(|s| match s {
            Scalar::Str(s) => s,
            Scalar::Int(i) => i.to_string(),
            Scalar::Bool(b) => b.to_string(),
        })
        .collect())
}

//! Compiling the `AuthorizationPolicy` model into matchers: every principal, namespace,
//! host, port, method, path, IP block and condition is parsed once, here, so that the
//! per-request evaluation (`evaluate`) only compares. Every value that cannot be compiled is
//! an error that names its field and value; the loader turns those into `FILE:LINE:COL`
//! diagnostics, and only a policy set without any becomes a `CompiledPolicies`.
//!
//! Principals follow Istio's trust-domain handling (`pilot/pkg/security/trustdomain`): a
//! principal in `cluster.local` names the mesh's own trust domain whatever `mesh.yaml` calls
//! it, so `cluster.local/ns/a/sa/b` is compiled as `TD/ns/a/sa/b` (in `principals`,
//! `notPrincipals` and `source.principal` conditions; prefix patterns too, where Istio rewrites
//! only five-segment principals). Principals of any other trust domain are kept as written
//! (the loader reports them, see `lint`).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use trustmesh_certs::{SpiffeId, TrustDomain};

use crate::model::{Action, AuthorizationPolicy, Condition, Mode, Operation, Rule, Source};
use crate::pattern::{parse_port, IpBlock, PathPattern, PatternError, StrMatch};

/// A policy value that cannot be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct CompileError {
    /// `namespace/name` of the policy.
    pub policy: String,
    /// The YAML key the value is under (`principals`, `paths`, `key`, ...).
    pub field: &'static str,
    /// The offending value as written.
    pub value: String,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for CompileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} {:?}: {}",
            self.policy, self.field, self.value, self.message
        )
    }
}

/// A compiled policy.
#[derive(Debug)]
pub(crate) struct CompiledPolicy {
    /// `namespace/name`.
    pub key: Arc<str>,
    pub namespace: String,
    pub selector: Option<BTreeMap<String, String>>,
    pub action: Action,
    /// `mode: audit`: evaluated, reported, not enforced.
    pub dry_run: bool,
    pub rules: Box<[CompiledRule]>,
    /// The route name of each rule, `namespace/name#index`, made once here so that a
    /// decision carries it without allocating.
    pub routes: Box<[Arc<str>]>,
}

#[derive(Debug, Default)]
pub(crate) struct CompiledRule {
    pub from: Box<[CompiledSource]>,
    pub to: Box<[CompiledOperation]>,
    pub when: Box<[CompiledCondition]>,
}

#[derive(Debug, Default)]
pub(crate) struct CompiledSource {
    /// Matched against the peer ID without `spiffe://`.
    pub principals: Box<[StrMatch]>,
    pub not_principals: Box<[StrMatch]>,
    pub namespaces: Box<[StrMatch]>,
    pub not_namespaces: Box<[StrMatch]>,
    pub ip_blocks: Box<[IpBlock]>,
    pub not_ip_blocks: Box<[IpBlock]>,
}

#[derive(Debug, Default)]
pub(crate) struct CompiledOperation {
    /// Lowercase; matched ignoring case against the host without its port.
    pub hosts: Box<[StrMatch]>,
    pub not_hosts: Box<[StrMatch]>,
    pub ports: Box<[u16]>,
    pub not_ports: Box<[u16]>,
    pub methods: Box<[StrMatch]>,
    pub not_methods: Box<[StrMatch]>,
    pub paths: Box<[PathPattern]>,
    pub not_paths: Box<[PathPattern]>,
}

impl CompiledOperation {
    /// Whether the operation names a field only HTTP requests have.
    pub fn has_http_fields(&self) -> bool {
        !(self.hosts.is_empty()
            && self.not_hosts.is_empty()
            && self.methods.is_empty()
            && self.not_methods.is_empty()
            && self.paths.is_empty()
            && self.not_paths.is_empty())
    }
}

/// A `when` condition: the attribute, then `values` and `notValues`.
#[derive(Debug)]
pub(crate) enum CompiledCondition {
    /// `request.headers[NAME]` (name lowercase; HTTP only).
    Header(Box<str>, Box<[StrMatch]>, Box<[StrMatch]>),
    /// `request.headers[host]`: the request's authority (`:authority` or `Host`, as the
    /// request holds it), matched as `hosts` match it: ignoring case, without the port.
    Authority(Box<[StrMatch]>, Box<[StrMatch]>),
    /// `source.ip`.
    SourceIp(Box<[IpBlock]>, Box<[IpBlock]>),
    /// `source.namespace`.
    SourceNamespace(Box<[StrMatch]>, Box<[StrMatch]>),
    /// `source.principal`.
    SourcePrincipal(Box<[StrMatch]>, Box<[StrMatch]>),
    /// `destination.port`.
    DestinationPort(Box<[u16]>, Box<[u16]>),
    /// `connection.sni`.
    Sni(Box<[StrMatch]>, Box<[StrMatch]>),
}

/// Collects errors while compiling one policy.
struct Compiler<'a> {
    policy: &'a str,
    trust_domain: &'a str,
    errors: Vec<CompileError>,
}

impl Compiler<'_> {
    fn error(&mut self, field: &'static str, value: &str, message: impl fmt::Display) {
        self.errors.push(CompileError {
            policy: self.policy.to_string(),
            field,
            value: value.to_string(),
            message: message.to_string(),
        });
    }

    /// Compiles principals, `cluster.local` standing for the mesh's trust domain.
    fn principals(&mut self, field: &'static str, values: &[String]) -> Box<[StrMatch]> {
        let td = self.trust_domain;
        self.list(field, values, |p| principal(&alias_trust_domain(p, td)))
    }

    /// Compiles every value of a list with `f`, recording failures.
    fn list<T>(
        &mut self,
        field: &'static str,
        values: &[String],
        f: impl Fn(&str) -> Result<T, String>,
    ) -> Box<[T]> {
        let mut out = Vec::with_capacity(values.len());
        for v in values {
            match f(v) {
                Ok(t) => out.push(t),
                Err(e) => self.error(field, v, e),
            }
        }
        out.into()
    }

    fn rule(&mut self, rule: &Rule) -> CompiledRule {
        CompiledRule {
            from: rule.from.iter().map(|f| self.source(&f.source)).collect(),
            to: rule
                .to
                .iter()
                .map(|t| self.operation(&t.operation))
                .collect(),
            when: rule.when.iter().filter_map(|c| self.condition(c)).collect(),
        }
    }

    fn source(&mut self, s: &Source) -> CompiledSource {
        CompiledSource {
            principals: self.principals("principals", &s.principals),
            not_principals: self.principals("notPrincipals", &s.not_principals),
            namespaces: self.list("namespaces", &s.namespaces, namespace),
            not_namespaces: self.list("notNamespaces", &s.not_namespaces, namespace),
            ip_blocks: self.list("ipBlocks", &s.ip_blocks, ip_block),
            not_ip_blocks: self.list("notIpBlocks", &s.not_ip_blocks, ip_block),
        }
    }

    fn operation(&mut self, o: &Operation) -> CompiledOperation {
        CompiledOperation {
            hosts: self.list("hosts", &o.hosts, host),
            not_hosts: self.list("notHosts", &o.not_hosts, host),
            ports: self.list("ports", &o.ports, port),
            not_ports: self.list("notPorts", &o.not_ports, port),
            methods: self.list("methods", &o.methods, method),
            not_methods: self.list("notMethods", &o.not_methods, method),
            paths: self.list("paths", &o.paths, path),
            not_paths: self.list("notPaths", &o.not_paths, path),
        }
    }

    fn condition(&mut self, c: &Condition) -> Option<CompiledCondition> {
        if c.values.is_empty() && c.not_values.is_empty() {
            self.error("key", &c.key, "a condition needs `values` or `notValues`");
            return None;
        }
        let (v, n) = (&c.values, &c.not_values);
        let compiled = match c.key.as_str() {
            "source.ip" => CompiledCondition::SourceIp(
                self.list("values", v, ip_block),
                self.list("notValues", n, ip_block),
            ),
            "source.namespace" => CompiledCondition::SourceNamespace(
                self.list("values", v, namespace),
                self.list("notValues", n, namespace),
            ),
            "source.principal" => CompiledCondition::SourcePrincipal(
                self.principals("values", v),
                self.principals("notValues", n),
            ),
            "destination.port" => CompiledCondition::DestinationPort(
                self.list("values", v, port),
                self.list("notValues", n, port),
            ),
            "connection.sni" => CompiledCondition::Sni(
                self.list("values", v, host),
                self.list("notValues", n, host),
            ),
            key => {
                if let Some(name) = key
                    .strip_prefix("request.headers[")
                    .and_then(|r| r.strip_suffix(']'))
                {
                    if name.is_empty() || !name.bytes().all(is_tchar) {
                        self.error("key", key, "bad header name");
                        return None;
                    }
                    let lower = name.to_ascii_lowercase();
                    if lower.starts_with(RESERVED_HEADER_PREFIX) {
                        self.error("key", key, "conditions on x-trustmesh-* headers are refused: the sidecars set and replace them, so a condition on one says nothing about the caller; use source.principal or source.namespace");
                        return None;
                    }
                    if lower == "host" {
                        return Some(CompiledCondition::Authority(
                            self.list("values", v, host),
                            self.list("notValues", n, host),
                        ));
                    }
                    CompiledCondition::Header(
                        name.to_ascii_lowercase().into(),
                        self.list("values", v, plain),
                        self.list("notValues", n, plain),
                    )
                } else if key.starts_with("request.auth.") {
                    self.error("key", key, "JWT conditions (request.auth.*) are not supported: trustmesh does no request authentication");
                    return None;
                } else {
                    self.error("key", key, "unsupported condition key; supported: request.headers[NAME], source.ip, source.namespace, source.principal, destination.port, connection.sni");
                    return None;
                }
            }
        };
        Some(compiled)
    }
}

/// Headers the sidecars own (`x-trustmesh-peer-identity`, `x-trustmesh-orig-proto`): a
/// condition on one is refused.
pub(crate) const RESERVED_HEADER_PREFIX: &str = "x-trustmesh-";

/// Istio's alias: the trust domain `cluster.local` in a principal means the mesh's own.
pub(crate) const LOCAL_TRUST_DOMAIN_ALIAS: &str = "cluster.local";

/// `p` with a leading `cluster.local/` (after an optional `spiffe://`) replaced by
/// `trust_domain/`; any other principal unchanged.
pub(crate) fn alias_trust_domain(p: &str, trust_domain: &str) -> String {
    let bare = p.strip_prefix("spiffe://").unwrap_or(p);
    match bare
        .strip_prefix(LOCAL_TRUST_DOMAIN_ALIAS)
        .and_then(|rest| rest.strip_prefix('/'))
    {
        Some(rest) => format!("{trust_domain}/{rest}"),
        None => bare.to_string(),
    }
}

/// Compiles one policy for a mesh of trust domain `trust_domain`, or returns every error in it.
pub(crate) fn compile_policy(
    policy: &AuthorizationPolicy,
    trust_domain: &TrustDomain,
) -> Result<CompiledPolicy, Vec<CompileError>> {
    let key = policy.key();
    let mut c = Compiler {
        policy: &key,
        trust_domain: trust_domain.as_str(),
        errors: Vec::new(),
    };
    let rules: Box<[CompiledRule]> = policy.spec.rules.iter().map(|r| c.rule(r)).collect();
    if !c.errors.is_empty() {
        return Err(c.errors);
    }
    let routes = (0..rules.len())
        .map(|i| Arc::from(format!("{key}#{i}")))
        .collect();
    Ok(CompiledPolicy {
        key: key.as_str().into(),
        namespace: policy.namespace.clone(),
        selector: policy
            .spec
            .selector
            .as_ref()
            .map(|s| s.match_labels.clone()),
        action: policy.spec.action,
        dry_run: policy.spec.mode == Mode::Audit,
        rules,
        routes,
    })
}

fn describe(e: PatternError) -> String {
    e.to_string()
}

/// A principal: a SPIFFE ID with or without `spiffe://`, or a `*` pattern over one.
fn principal(p: &str) -> Result<StrMatch, String> {
    let bare = p.strip_prefix("spiffe://").unwrap_or(p);
    let m = StrMatch::parse(bare).map_err(describe)?;
    if let StrMatch::Exact(id) = &m {
        SpiffeId::parse(&format!("spiffe://{id}")).map_err(|e| format!("bad principal: {e}"))?;
    }
    if bare.chars().any(|c| c.is_whitespace()) {
        return Err("bad principal: contains whitespace".to_string());
    }
    Ok(m)
}

fn namespace(p: &str) -> Result<StrMatch, String> {
    let m = StrMatch::parse(p).map_err(describe)?;
    if let StrMatch::Exact(ns) = &m {
        if !crate::names::is_dns_label(ns) {
            return Err(
                "bad namespace: lowercase letters, digits and '-', at most 63 characters"
                    .to_string(),
            );
        }
    }
    Ok(m)
}

fn host(p: &str) -> Result<StrMatch, String> {
    let m = StrMatch::parse(p).map_err(describe)?;
    let body = p.trim_start_matches('*').trim_end_matches('*');
    let host_and_port = body.matches(':').count() == 1 && !body.contains(']');
    if host_and_port || body.contains("]:") {
        return Err(describe(PatternError::HostPort));
    }
    Ok(m.to_lowercase())
}

fn port(p: &str) -> Result<u16, String> {
    parse_port(p).map_err(describe)
}

fn method(p: &str) -> Result<StrMatch, String> {
    let m = StrMatch::parse(p).map_err(describe)?;
    if !p.bytes().all(|b| b == b'*' || is_tchar(b)) {
        return Err("bad method: an HTTP method is a token such as GET".to_string());
    }
    Ok(m)
}

fn path(p: &str) -> Result<PathPattern, String> {
    PathPattern::parse(p).map_err(describe)
}

fn ip_block(p: &str) -> Result<IpBlock, String> {
    IpBlock::parse(p).map_err(describe)
}

fn plain(p: &str) -> Result<StrMatch, String> {
    StrMatch::parse(p).map_err(describe)
}

/// RFC 9110 §5.6.2 token characters.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests;

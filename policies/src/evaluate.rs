//! Matching one compiled policy against one request: Istio's semantics (within a rule every
//! present field must match, entries of a list are ORed, any rule matching makes the policy
//! match), with two deliberate differences that make trustmesh fail closed:
//!
//! - **No verified peer fails closed on negative fields.** Istio's `notPrincipals` /
//!   `notNamespaces` match a request without a peer identity ("not in the list"), so an ALLOW
//!   rule "anyone but X" lets anonymous traffic in. Here, when the peer attribute is unknown,
//!   `notPrincipals`, `notNamespaces`, `notIpBlocks` and the `notValues` of `source.*`
//!   conditions never match in an ALLOW or AUDIT policy, and always match in a DENY policy:
//!   either way the request is denied.
//! - **TCP and HTTP-only fields.** `hosts`, `methods`, `paths` (and their `not` forms) and
//!   `request.headers[...]` conditions mean nothing for an opaque TCP connection. For ALLOW
//!   and AUDIT policies, an operation or condition naming them never matches a TCP
//!   connection. For DENY policies they are treated as matching, so a DENY rule with an
//!   HTTP-only field denies the TCP connection when its other fields match: when in doubt,
//!   deny.

use crate::compile::{
    CompiledCondition, CompiledOperation, CompiledPolicy, CompiledRule, CompiledSource,
};
use crate::model::Action;
use crate::pattern::{IpBlock, StrMatch};
use crate::registry::strip_port;
use crate::request::Request;

/// The request's attributes that every rule may look at, derived once per request rather
/// than once per rule.
pub(crate) struct Attrs<'a> {
    pub req: &'a Request<'a>,
    /// The peer ID without `spiffe://`.
    pub principal: Option<&'a str>,
    /// The peer's `ns` segment.
    pub namespace: Option<&'a str>,
    /// The host without its port or a trailing dot.
    pub host: Option<&'a str>,
    /// The normalized path without the query.
    pub path: Option<&'a str>,
}

impl<'a> Attrs<'a> {
    pub(crate) fn new(req: &'a Request<'a>) -> Self {
        Self {
            req,
            principal: req.source.map(|id| id.principal()),
            namespace: req.source.and_then(|id| id.namespace()),
            host: req.host.map(|h| {
                let h = strip_port(h);
                h.strip_suffix('.').unwrap_or(h)
            }),
            path: req.path.map(|p| p.as_str()),
        }
    }
}

impl CompiledPolicy {
    /// The index of the first rule that matches the request, if any.
    pub(crate) fn first_matching_rule(&self, a: &Attrs<'_>) -> Option<usize> {
        let deny = self.action == Action::Deny;
        self.rules.iter().position(|r| rule_matches(r, a, deny))
    }
}

fn rule_matches(rule: &CompiledRule, req: &Attrs<'_>, deny: bool) -> bool {
    (rule.from.is_empty() || rule.from.iter().any(|s| source_matches(s, req, deny)))
        && (rule.to.is_empty() || rule.to.iter().any(|o| operation_matches(o, req, deny)))
        && rule.when.iter().all(|c| condition_matches(c, req, deny))
}

fn any_str(patterns: &[StrMatch], v: &str) -> bool {
    patterns.iter().any(|p| p.matches(v))
}

fn any_ip(blocks: &[IpBlock], ip: std::net::IpAddr) -> bool {
    blocks.iter().any(|b| b.contains(ip))
}

/// `values` / `notValues` of a peer attribute (identity, namespace, address). When it is
/// unknown, a positive list never matches, and a negative list fails closed: it does not match
/// in an ALLOW or AUDIT policy and matches in a DENY policy (`deny`).
fn peer_attr<T: Copy>(
    v: Option<T>,
    pos_empty: bool,
    neg_empty: bool,
    deny: bool,
    pos: impl Fn(T) -> bool,
    neg: impl Fn(T) -> bool,
) -> bool {
    match v {
        Some(v) => (pos_empty || pos(v)) && (neg_empty || !neg(v)),
        None => pos_empty && (neg_empty || deny),
    }
}

/// `values` / `notValues` of an attribute that may be absent: absent satisfies only `notValues`.
fn absent_ok<T: Copy>(
    v: Option<T>,
    pos_empty: bool,
    neg_empty: bool,
    pos: impl Fn(T) -> bool,
    neg: impl Fn(T) -> bool,
) -> bool {
    match v {
        None => pos_empty,
        Some(v) => (pos_empty || pos(v)) && (neg_empty || !neg(v)),
    }
}

fn source_matches(s: &CompiledSource, a: &Attrs<'_>, deny: bool) -> bool {
    peer_attr(
        a.principal,
        s.principals.is_empty(),
        s.not_principals.is_empty(),
        deny,
        |p| any_str(&s.principals, p),
        |p| any_str(&s.not_principals, p),
    ) && peer_attr(
        a.namespace,
        s.namespaces.is_empty(),
        s.not_namespaces.is_empty(),
        deny,
        |n| any_str(&s.namespaces, n),
        |n| any_str(&s.not_namespaces, n),
    ) && peer_attr(
        a.req.source_ip,
        s.ip_blocks.is_empty(),
        s.not_ip_blocks.is_empty(),
        deny,
        |ip| any_ip(&s.ip_blocks, ip),
        |ip| any_ip(&s.not_ip_blocks, ip),
    )
}

fn operation_matches(o: &CompiledOperation, a: &Attrs<'_>, deny: bool) -> bool {
    let req = a.req;
    let ports_ok =
        (o.ports.is_empty() || o.ports.contains(&req.port)) && !o.not_ports.contains(&req.port);
    if !ports_ok {
        return false;
    }
    if req.is_tcp && o.has_http_fields() {
        return deny;
    }
    absent_ok(
        a.host,
        o.hosts.is_empty(),
        o.not_hosts.is_empty(),
        |h| o.hosts.iter().any(|p| p.matches_ignore_case(h)),
        |h| o.not_hosts.iter().any(|p| p.matches_ignore_case(h)),
    ) && absent_ok(
        req.method,
        o.methods.is_empty(),
        o.not_methods.is_empty(),
        |m| any_str(&o.methods, m),
        |m| any_str(&o.not_methods, m),
    ) && absent_ok(
        a.path,
        o.paths.is_empty(),
        o.not_paths.is_empty(),
        |p| o.paths.iter().any(|pat| pat.matches(p)),
        |p| o.not_paths.iter().any(|pat| pat.matches(p)),
    )
}

fn condition_matches(c: &CompiledCondition, a: &Attrs<'_>, deny: bool) -> bool {
    let req = a.req;
    match c {
        CompiledCondition::Header(name, v, n) => {
            if req.is_tcp {
                return deny;
            }
            if !req.headers.contains(name) {
                return v.is_empty();
            }
            // One value at a time; a value that is not text matches no pattern. With several
            // values (which an app may read first, last or joined), a DENY condition holds if
            // any value satisfies it, an ALLOW condition only if every value does: a second
            // header line never slips a request past a DENY or into an ALLOW.
            let sat = |h: Option<&str>| {
                let pos = h.is_some_and(|h| any_str(v, h));
                let neg = h.is_some_and(|h| any_str(n, h));
                (v.is_empty() || pos) && (n.is_empty() || !neg)
            };
            if deny {
                req.headers.any_value(name, &mut |h| sat(h))
            } else {
                !req.headers.any_value(name, &mut |h| !sat(h))
            }
        }
        CompiledCondition::Authority(v, n) => {
            if req.is_tcp {
                return deny;
            }
            absent_ok(
                a.host,
                v.is_empty(),
                n.is_empty(),
                |h| v.iter().any(|p| p.matches_ignore_case(h)),
                |h| n.iter().any(|p| p.matches_ignore_case(h)),
            )
        }
        CompiledCondition::SourceIp(v, n) => peer_attr(
            req.source_ip,
            v.is_empty(),
            n.is_empty(),
            deny,
            |ip| any_ip(v, ip),
            |ip| any_ip(n, ip),
        ),
        CompiledCondition::SourceNamespace(v, n) => peer_attr(
            a.namespace,
            v.is_empty(),
            n.is_empty(),
            deny,
            |ns| any_str(v, ns),
            |ns| any_str(n, ns),
        ),
        CompiledCondition::SourcePrincipal(v, n) => peer_attr(
            a.principal,
            v.is_empty(),
            n.is_empty(),
            deny,
            |p| any_str(v, p),
            |p| any_str(n, p),
        ),
        CompiledCondition::DestinationPort(v, n) => {
            (v.is_empty() || v.contains(&req.port)) && !n.contains(&req.port)
        }
        CompiledCondition::Sni(v, n) => absent_ok(
            req.sni,
            v.is_empty(),
            n.is_empty(),
            |s| v.iter().any(|p| p.matches_ignore_case(s)),
            |s| n.iter().any(|p| p.matches_ignore_case(s)),
        ),
    }
}

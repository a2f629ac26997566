//! Choosing the rule a request takes, and the backend it goes to. Pure: the caller supplies
//! the request and, for the weighted pick, a random number, so the proxy and
//! `trustmesh route check` make the same choice and tests are deterministic.
//!
//! Precedence (Gateway API `HTTPRouteRule` "matching precedence"), across every rule of every
//! route of the parent Service: an `Exact` path, then a `RegularExpression` path (its place is
//! implementation-specific in the spec; trustmesh ranks it after `Exact` and before any
//! prefix, as Envoy Gateway does, longer pattern first), then a `PathPrefix` with more
//! characters, then a match with a method, then more header matches, then more query param
//! matches. Ties between routes go to the first by `namespace/name` (the spec's oldest route
//! first cannot apply: git has no creation timestamps), then to the first rule and match in
//! list order.

use super::action::{Backend, CompiledRule};
use super::matchers::{Matcher, PathMatcher, ValueMatcher};
use super::table::CompiledRoutes;
use crate::normalize::RoutePath;
use crate::request::Headers;

/// What a route lookup needs of a request: the registry Service and port it is for, and the
/// request line and headers.
pub struct RouteRequest<'a> {
    /// The destination Service's namespace.
    pub namespace: &'a str,
    /// The destination Service's name.
    pub service: &'a str,
    /// The destination port.
    pub port: u16,
    /// The request method.
    pub method: &'a str,
    /// The normalized path (its query is not looked at; see `query`).
    pub path: &'a RoutePath,
    /// The request headers.
    pub headers: &'a dyn Headers,
    /// The query parameters, decoded, in order ([`query_pairs`]).
    pub query: &'a [(String, String)],
}

/// The rule a request takes.
#[derive(Debug, Clone, Copy)]
pub struct Routed<'a> {
    /// `namespace/name` of the route.
    pub route: &'a str,
    /// 0-based index of the rule in the route's `rules`.
    pub rule: usize,
    /// 0-based index of the match in the rule's `matches` (0 for a rule without matches).
    pub matched: usize,
    /// What the rule does.
    pub action: &'a CompiledRule,
}

impl CompiledRoutes {
    /// The rule `req` takes, or `None` when no route of its Service matches (the request is
    /// routed by default, to the Service it named).
    pub fn route(&self, req: &RouteRequest<'_>) -> Option<Routed<'_>> {
        let list = self
            .parents
            .get(&(req.namespace.to_string(), req.service.to_string()))?;
        list.iter()
            .filter(|e| e.port.is_none_or(|p| p == req.port))
            .find(|e| matches(&e.matcher, req))
            .map(|e| Routed {
                route: &e.route,
                rule: e.rule_index,
                matched: e.match_index,
                action: &e.rule,
            })
    }

    /// Whether any route has `namespace/name` as its parent.
    pub fn has_routes_for(&self, namespace: &str, name: &str) -> bool {
        self.parents
            .contains_key(&(namespace.to_string(), name.to_string()))
    }
}

impl CompiledRule {
    /// The backend for a request, chosen by weight with `random` (uniform over `u64`): a
    /// backend of weight `w` out of a total `W` is chosen for a share `w / W` of the random
    /// numbers. `None` only when every weight is 0 (which validation refuses).
    pub fn pick(&self, random: u64) -> Option<&Backend> {
        let total: u64 = self.backends.iter().map(|b| u64::from(b.weight)).sum();
        if total == 0 {
            return None;
        }
        // Scale into [0, total) by multiplication: unbiased to 2^-64 per value, no modulo.
        let mut at = ((u128::from(random) * u128::from(total)) >> 64) as u64;
        for b in &self.backends {
            let w = u64::from(b.weight);
            if at < w {
                return Some(b);
            }
            at -= w;
        }
        None
    }
}

fn matches(m: &Matcher, req: &RouteRequest<'_>) -> bool {
    let path = req.path.as_str();
    let path_ok = match &m.path {
        PathMatcher::Exact(p) => path == p,
        PathMatcher::Prefix(p) => {
            p == "/"
                || path
                    .strip_prefix(p.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        }
        PathMatcher::Regex(r) => r.is_match(path),
    };
    path_ok
        && m.method.is_none_or(|want| want.as_str() == req.method)
        && m.headers.iter().all(|(name, v)| {
            req.headers.any_value(name, &mut |got| {
                got.is_some_and(|got| value_matches(v, got))
            })
        })
        && m.query.iter().all(|(name, v)| {
            // The first parameter of that name decides, as the Gateway API asks.
            req.query
                .iter()
                .find(|(n, _)| n == name)
                .is_some_and(|(_, got)| value_matches(v, got))
        })
}

fn value_matches(m: &ValueMatcher, got: &str) -> bool {
    match m {
        ValueMatcher::Exact(v) => v == got,
        ValueMatcher::Regex(r) => r.is_match(got),
    }
}

/// The parameters of a raw query string (`a=1&b=%20x`), percent-decoded, in order; a
/// parameter without `=` has an empty value. `+` stays `+` (RFC 3986 has no form encoding).
pub fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests;

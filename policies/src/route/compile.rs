//! Compiling `HTTPRoute`s once into what each request is matched against: regular
//! expressions built, paths checked against the normalizer, durations parsed, every match of
//! every rule of every route of a parent Service flattened into one list in Gateway API
//! precedence order (see [`super::matching`]). Every value that cannot be compiled is a
//! [`RouteError`] naming its field and value; the loader places those at `FILE:LINE:COL`.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use regex::{Regex, RegexBuilder};

use super::duration::parse_duration;
use super::model::{
    BackendRef, HttpMatch, HttpRoute, Method, ParentRef,
    PathMatchType, RouteRule, ValueMatch, ValueMatchType,
};
use crate::normalize::normalize_path;

/// Largest `weight` (the Gateway API's bound).
pub const MAX_WEIGHT: u32 = 1_000_000;
/// Most retries one rule may ask for (each is also paid from the retry budget).
pub const MAX_RETRY_ATTEMPTS: u32 = 10;
/// Compiled size bound of one regular expression, so that a route cannot make a sidecar build
/// a huge automaton.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// An `HTTPRoute` value that cannot be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct RouteError {
    /// `namespace/name` of the route.
    pub route: String,
    /// The YAML key the value is under (`value`, `weight`, `backendRequest`, ...).
    pub field: &'static str,
    /// The offending value as written.
    pub value: String,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "HTTPRoute {}: {} {:?}: {}",
            self.route, self.field, self.value, self.message
        )
    }
}

/// Every route of a policy set, compiled, by parent Service.
#[derive(Debug, Clone, Default)]
pub struct CompiledRoutes {
    /// (namespace, name) of the parent → its entries, highest precedence first.
    pub(super) parents: BTreeMap<(String, String), Vec<Entry>>,
}

/// One match of one rule, for one parent.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    /// The parent port it applies to; every port when `None`.
    pub port: Option<u16>,
    pub matcher: Arc<Matcher>,
    pub route: Arc<str>,
    pub rule_index: usize,
    pub match_index: usize,
    pub rule: Arc<CompiledRule>,
}

/// The conditions of one `matches[]` entry.
#[derive(Debug)]
pub(super) struct Matcher {
    pub path: PathMatcher,
    pub method: Option<Method>,
    /// Lowercase names.
    pub headers: Vec<(String, ValueMatcher)>,
    pub query: Vec<(String, ValueMatcher)>,
}

#[derive(Debug)]
pub(super) enum PathMatcher {
    Exact(String),
    /// Without a trailing `/` (except `/` itself).
    Prefix(String),
    Regex(Regex),
}

#[derive(Debug)]
pub(super) enum ValueMatcher {
    Exact(String),
    Regex(Regex),
}

/// What a matched rule does with the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledRule {
    /// Where requests go, with their weights (in the order written).
    pub backends: Vec<Backend>,
    /// `RequestHeaderModifier`.
    pub request_headers: HeaderEdits,
    /// `ResponseHeaderModifier`.
    pub response_headers: HeaderEdits,
    /// The request and per-attempt timeouts; `None` is no timeout (absent or `0s`).
    pub request_timeout: Option<Duration>,
    /// The timeout of one attempt to a backend.
    pub backend_request_timeout: Option<Duration>,
    /// Retries, when the rule asks for them.
    pub retry: Option<RetryPolicy>,
}

/// One backend of a rule: a registry Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's name.
    pub name: String,
    /// The Service port; the request's port when `None` (the parent itself as backend).
    pub port: Option<u16>,
    /// Relative share of requests.
    pub weight: u32,
}

/// Header changes of one modifier filter, already valid HTTP names and values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderEdits {
    /// Replace (or add) these.
    pub set: Vec<(HeaderName, HeaderValue)>,
    /// Append these.
    pub add: Vec<(HeaderName, HeaderValue)>,
    /// Remove these.
    pub remove: Vec<HeaderName>,
}

impl HeaderEdits {
    /// Whether there is nothing to change.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

/// A rule's retries (GEP-1731).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub attempts: u32,
    /// Response codes that are retried (a connection error always is).
    pub codes: Vec<u16>,
    /// Wait before each retry.
    pub backoff: Option<Duration>,
}

impl CompiledRoutes {
    /// Compiles `routes`; every value that cannot be compiled is reported.
    pub fn compile(routes: &[HttpRoute]) -> Result<Self, Vec<RouteError>> {
        let mut errors = Vec::new();
        let mut parents: BTreeMap<(String, String), Vec<Entry>> = BTreeMap::new();
        for route in routes {
            let mut e = Errors { route, errors: &mut errors };
            let key: Arc<str> = route.key().into();
            let parent_refs = check_parents(route, &mut e);
            for (rule_index, rule) in route.spec.rules.iter().enumerate() {
                let matchers = compile_matches(rule, &mut e);
                let template = compile_rule(rule, &route.namespace, &mut e);
                let (Some(matchers), Some(template)) = (matchers, template) else {
                    continue;
                };
                for parent in &parent_refs {
                    let mut action = template.clone();
                    if action.backends.is_empty() {
                        action.backends.push(Backend {
                            namespace: route.namespace.clone(),
                            name: parent.name.clone(),
                            port: parent.port,
                            weight: 1,
                        });
                    }
                    let action = Arc::new(action);
                    let list = parents
                        .entry((route.namespace.clone(), parent.name.clone()))
                        .or_default();
                    for (match_index, m) in matchers.iter().enumerate() {
                        list.push(Entry {
                            port: parent.port,
                            matcher: m.clone(),
                            route: key.clone(),
                            rule_index,
                            match_index,
                            rule: action.clone(),
                        });
                    }
                }
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        for list in parents.values_mut() {
            list.sort_by(|a, b| super::matching::precedence(a, b));
        }
        Ok(Self { parents })
    }
}

pub(super) struct Errors<'a> {
    route: &'a HttpRoute,
    pub(super) errors: &'a mut Vec<RouteError>,
}

impl Errors<'_> {
    pub(super) fn push(&mut self, field: &'static str, value: impl Into<String>, message: impl Into<String>) {
        self.errors.push(RouteError {
            route: self.route.key(),
            field,
            value: value.into(),
            message: message.into(),
        });
    }
}

fn core_group(group: Option<&str>) -> bool {
    matches!(group, None | Some("" | "core"))
}

fn check_parents<'r>(route: &'r HttpRoute, e: &mut Errors<'_>) -> Vec<&'r ParentRef> {
    let spec = &route.spec;
    if let Some(h) = spec.hostnames.first() {
        e.push("hostnames", h, "hostnames are not supported on mesh routes (GAMMA ignores them; the parentRef Service is what the route applies to): remove them");
    }
    if spec.parent_refs.is_empty() {
        e.push("parentRefs", "", "an HTTPRoute needs at least one parentRef (kind: Service)");
    }
    let mut ok = Vec::new();
    for (i, p) in spec.parent_refs.iter().enumerate() {
        let before = e.errors.len();
        if !core_group(p.group.as_deref()) {
            e.push("group", p.group.clone().unwrap_or_default(), "a parentRef's group must be \"\" or core (a Service)");
        }
        if p.kind != "Service" {
            e.push("kind", &p.kind, "only parentRefs of kind Service are supported (mesh routes, GAMMA)");
        }
        if let Some(ns) = p.namespace.as_deref().filter(|ns| *ns != route.namespace) {
            e.push("namespace", ns, format!("a parentRef names a Service in the route's own namespace {}", route.namespace));
        }
        if p.port == Some(0) {
            e.push("port", "0", "port 0 is not a valid port");
        }
        if spec.parent_refs[..i].iter().any(|q| q.name == p.name && q.port == p.port) {
            e.push("name", &p.name, "this parentRef is listed twice");
        }
        if e.errors.len() == before {
            ok.push(p);
        }
    }
    ok
}

fn compile_matches(rule: &RouteRule, e: &mut Errors<'_>) -> Option<Vec<Arc<Matcher>>> {
    let default = [HttpMatch::default()];
    let matches = if rule.matches.is_empty() { &default[..] } else { &rule.matches };
    let before = e.errors.len();
    let out: Vec<_> = matches.iter().filter_map(|m| compile_match(m, e)).map(Arc::new).collect();
    (e.errors.len() == before).then_some(out)
}

fn compile_match(m: &HttpMatch, e: &mut Errors<'_>) -> Option<Matcher> {
    let path = match &m.path {
        None => PathMatcher::Prefix("/".into()),
        Some(p) => match p.kind {
            PathMatchType::RegularExpression => PathMatcher::Regex(regex(&p.value, e)?),
            kind => {
                let v = p.value.as_str();
                let normal = normalize_path(v).ok().filter(|n| n.as_str() == v && n.query().is_none());
                if !v.starts_with('/') || normal.is_none() {
                    e.push("value", v, "a path must start with / and be in normalized form (no query, no . or .. segments, no //, no %-encoded unreserved characters), as the sidecar compares normalized paths");
                    return None;
                }
                match kind {
                    PathMatchType::Exact => PathMatcher::Exact(v.to_string()),
                    _ if v == "/" => PathMatcher::Prefix(v.to_string()),
                    _ => PathMatcher::Prefix(v.trim_end_matches('/').to_string()),
                }
            }
        },
    };
    let headers = values(&m.headers, true, e)?;
    let query = values(&m.query_params, false, e)?;
    Some(Matcher { path, method: m.method, headers, query })
}

fn values(list: &[ValueMatch], header: bool, e: &mut Errors<'_>) -> Option<Vec<(String, ValueMatcher)>> {
    let before = e.errors.len();
    let mut out: Vec<(String, ValueMatcher)> = Vec::new();
    for v in list {
        let name = if header { v.name.to_ascii_lowercase() } else { v.name.clone() };
        if name.is_empty() || (header && HeaderName::from_bytes(name.as_bytes()).is_err()) {
            e.push("name", &v.name, "not a valid header or parameter name");
            continue;
        }
        if out.iter().any(|(n, _)| *n == name) {
            e.push("name", &v.name, "this name is matched twice in one match; write one condition per name");
            continue;
        }
        let matcher = match v.kind {
            ValueMatchType::Exact => ValueMatcher::Exact(v.value.clone()),
            ValueMatchType::RegularExpression => match regex(&v.value, e) {
                Some(r) => ValueMatcher::Regex(r),
                None => continue,
            },
        };
        out.push((name, matcher));
    }
    (e.errors.len() == before).then_some(out)
}

/// A regular expression anchored at both ends: the whole value must match.
fn regex(pattern: &str, e: &mut Errors<'_>) -> Option<Regex> {
    match RegexBuilder::new(&format!("^(?:{pattern})$")).size_limit(REGEX_SIZE_LIMIT).build() {
        Ok(r) => Some(r),
        Err(err) => {
            let why = err.to_string();
            let why = why.lines().last().unwrap_or("bad regular expression").trim();
            e.push("value", pattern, format!("bad regular expression: {why}"));
            None
        }
    }
}

fn compile_rule(rule: &RouteRule, namespace: &str, e: &mut Errors<'_>) -> Option<CompiledRule> {
    let before = e.errors.len();
    let backends: Vec<Backend> = rule.backend_refs.iter().filter_map(|b| backend(b, namespace, e)).collect();
    if !rule.backend_refs.is_empty() && rule.backend_refs.iter().all(|b| b.weight == 0) {
        e.push("weight", "0", "every backendRef of this rule has weight 0; at least one must carry traffic");
    }
    let (mut request_headers, mut response_headers) = (None, None);
    for f in &rule.filters {
        super::filters::filter(f, &mut request_headers, &mut response_headers, e);
    }
    let (mut request_timeout, mut backend_request_timeout) = (None, None);
    if let Some(t) = &rule.timeouts {
        request_timeout = t.request.as_deref().and_then(|v| duration("request", v, e));
        backend_request_timeout = t.backend_request.as_deref().and_then(|v| duration("backendRequest", v, e));
        if let (Some(r), Some(b), Some(v)) = (request_timeout, backend_request_timeout, &t.backend_request) {
            if b > r {
                e.push("backendRequest", v, "timeouts.backendRequest must not be longer than timeouts.request");
            }
        }
    }
    let retry = rule.retry.as_ref().map(|r| {
        let attempts = r.attempts.unwrap_or(1);
        if attempts > MAX_RETRY_ATTEMPTS {
            e.push("attempts", attempts.to_string(), format!("at most {MAX_RETRY_ATTEMPTS} retries per request"));
        }
        for c in &r.codes {
            if !(400..=599).contains(c) {
                e.push("codes", c.to_string(), "retry codes are HTTP status codes from 400 to 599");
            }
        }
        let backoff = r.backoff.as_deref().and_then(|v| duration("backoff", v, e));
        RetryPolicy { attempts, codes: r.codes.clone(), backoff }
    });
    (e.errors.len() == before).then(|| CompiledRule {
        backends,
        request_headers: request_headers.unwrap_or_default(),
        response_headers: response_headers.unwrap_or_default(),
        request_timeout,
        backend_request_timeout,
        retry,
    })
}

fn duration(field: &'static str, v: &str, e: &mut Errors<'_>) -> Option<Duration> {
    match parse_duration(v) {
        Ok(d) => Some(d).filter(|d| !d.is_zero()),
        Err(why) => {
            e.push(field, v, why);
            None
        }
    }
}

fn backend(b: &BackendRef, namespace: &str, e: &mut Errors<'_>) -> Option<Backend> {
    let before = e.errors.len();
    if !core_group(b.group.as_deref()) {
        e.push("group", b.group.clone().unwrap_or_default(), "a backendRef's group must be \"\" or core (a Service)");
    }
    if let Some(k) = b.kind.as_deref().filter(|k| *k != "Service") {
        e.push("kind", k, "only backendRefs of kind Service are supported");
    }
    match b.port {
        None => e.push("name", &b.name, "a backendRef to a Service needs a port"),
        Some(0) => e.push("port", "0", "port 0 is not a valid port"),
        Some(_) => {}
    }
    if b.weight > MAX_WEIGHT {
        e.push("weight", b.weight.to_string(), format!("a weight is at most {MAX_WEIGHT}"));
    }
    (e.errors.len() == before).then(|| Backend {
        namespace: b.namespace.clone().unwrap_or_else(|| namespace.to_string()),
        name: b.name.clone(),
        port: b.port,
        weight: b.weight,
    })
}


//! Compiling `HTTPRoute`s once into what each request is matched against: regular
//! expressions built, paths checked against the normalizer, durations parsed, every match of
//! every rule of every route of a parent Service flattened into one list in Gateway API
//! precedence order (see [`super::table`]). Every value that cannot be compiled is a
//! [`RouteError`] naming its field and value; the loader places those at `FILE:LINE:COL`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::action::{Backend, CompiledRule, RetryPolicy};
use super::duration::parse_duration;
use super::errors::Errors;
use super::errors::RouteError;
use super::matchers::compile_matches;
use super::model::{BackendRef, HttpRoute, ParentRef, RouteRule};
use super::table::{CompiledRoutes, Entry};

/// Largest `weight` (the Gateway API's bound).
pub const MAX_WEIGHT: u32 = 1_000_000;
/// Most retries one rule may ask for (each is also paid from the retry budget).
pub const MAX_RETRY_ATTEMPTS: u32 = 10;

impl CompiledRoutes {
    /// Compiles `routes`; every value that cannot be compiled is reported.
    pub fn compile(routes: &[HttpRoute]) -> Result<Self, Vec<RouteError>> {
        let mut errors = Vec::new();
        let mut parents: BTreeMap<(String, String), Vec<Entry>> = BTreeMap::new();
        for route in routes {
            let mut e = Errors {
                route,
                errors: &mut errors,
            };
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
            list.sort_by(super::table::precedence);
        }
        Ok(Self { parents })
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
        e.push(
            "parentRefs",
            "",
            "an HTTPRoute needs at least one parentRef (kind: Service)",
        );
    }
    let mut ok = Vec::new();
    for (i, p) in spec.parent_refs.iter().enumerate() {
        let before = e.errors.len();
        if !core_group(p.group.as_deref()) {
            e.push(
                "group",
                p.group.clone().unwrap_or_default(),
                "a parentRef's group must be \"\" or core (a Service)",
            );
        }
        if p.kind != "Service" {
            e.push(
                "kind",
                &p.kind,
                "only parentRefs of kind Service are supported (mesh routes, GAMMA)",
            );
        }
        if let Some(ns) = p.namespace.as_deref().filter(|ns| *ns != route.namespace) {
            e.push(
                "namespace",
                ns,
                format!(
                    "a parentRef names a Service in the route's own namespace {}",
                    route.namespace
                ),
            );
        }
        if p.port == Some(0) {
            e.push("port", "0", "port 0 is not a valid port");
        }
        if spec.parent_refs[..i]
            .iter()
            .any(|q| q.name == p.name && q.port == p.port)
        {
            e.push("name", &p.name, "this parentRef is listed twice");
        }
        if e.errors.len() == before {
            ok.push(p);
        }
    }
    ok
}

fn compile_rule(rule: &RouteRule, namespace: &str, e: &mut Errors<'_>) -> Option<CompiledRule> {
    let before = e.errors.len();
    let backends: Vec<Backend> = rule
        .backend_refs
        .iter()
        .filter_map(|b| backend(b, namespace, e))
        .collect();
    if !rule.backend_refs.is_empty() && rule.backend_refs.iter().all(|b| b.weight == 0) {
        e.push(
            "weight",
            "0",
            "every backendRef of this rule has weight 0; at least one must carry traffic",
        );
    }
    let (mut request_headers, mut response_headers) = (None, None);
    for f in &rule.filters {
        super::filters::filter(f, &mut request_headers, &mut response_headers, e);
    }
    let (mut request_timeout, mut backend_request_timeout) = (None, None);
    if let Some(t) = &rule.timeouts {
        request_timeout = t.request.as_deref().and_then(|v| duration("request", v, e));
        backend_request_timeout = t
            .backend_request
            .as_deref()
            .and_then(|v| duration("backendRequest", v, e));
        if let (Some(r), Some(b), Some(v)) =
            (request_timeout, backend_request_timeout, &t.backend_request)
        {
            if b > r {
                e.push(
                    "backendRequest",
                    v,
                    "timeouts.backendRequest must not be longer than timeouts.request",
                );
            }
        }
    }
    let retry = rule.retry.as_ref().map(|r| {
        let attempts = r.attempts.unwrap_or(1);
        if attempts > MAX_RETRY_ATTEMPTS {
            e.push(
                "attempts",
                attempts.to_string(),
                format!("at most {MAX_RETRY_ATTEMPTS} retries per request"),
            );
        }
        for c in &r.codes {
            if !(400..=599).contains(c) {
                e.push(
                    "codes",
                    c.to_string(),
                    "retry codes are HTTP status codes from 400 to 599",
                );
            }
        }
        let backoff = r.backoff.as_deref().and_then(|v| duration("backoff", v, e));
        RetryPolicy {
            attempts,
            codes: r.codes.clone(),
            backoff,
        }
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
        e.push(
            "group",
            b.group.clone().unwrap_or_default(),
            "a backendRef's group must be \"\" or core (a Service)",
        );
    }
    if let Some(k) = b.kind.as_deref().filter(|k| *k != "Service") {
        e.push("kind", k, "only backendRefs of kind Service are supported");
    }
    if b.port == 0 {
        e.push("port", "0", "port 0 is not a valid port");
    }
    if b.weight > MAX_WEIGHT {
        e.push(
            "weight",
            b.weight.to_string(),
            format!("a weight is at most {MAX_WEIGHT}"),
        );
    }
    (e.errors.len() == before).then(|| Backend {
        namespace: b.namespace.clone().unwrap_or_else(|| namespace.to_string()),
        name: b.name.clone(),
        port: Some(b.port),
        weight: b.weight,
    })
}

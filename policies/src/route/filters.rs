//! Compiling a rule's `RequestHeaderModifier` and `ResponseHeaderModifier` filters into valid
//! HTTP names and values, refusing the headers a route must not touch.

use http::{HeaderName, HeaderValue};

use super::action::HeaderEdits;
use super::errors::Errors;
use super::model::{Filter, FilterType, HeaderModifier};

/// Headers a route filter may not touch: trustmesh's own (`x-trustmesh-*`, checked apart), the
/// message framing and hop-by-hop fields (RFC 9110 §7.6.1), and `host`, which chose the route.
const PROTECTED_HEADERS: [&str; 9] = [
    "host",
    "connection",
    "content-length",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "keep-alive",
    "proxy-connection",
];

/// Compiles filter `f` into the request or response slot, once per kind and rule.
pub(super) fn filter(
    f: &Filter,
    req: &mut Option<HeaderEdits>,
    resp: &mut Option<HeaderEdits>,
    e: &mut Errors<'_>,
) {
    let (config, other, slot, key) = match f.kind {
        FilterType::RequestHeaderModifier => (
            &f.request_header_modifier,
            &f.response_header_modifier,
            req,
            "requestHeaderModifier",
        ),
        FilterType::ResponseHeaderModifier => (
            &f.response_header_modifier,
            &f.request_header_modifier,
            resp,
            "responseHeaderModifier",
        ),
    };
    let kind = format!("{:?}", f.kind);
    if other.is_some() {
        e.push("type", &kind, format!("a {kind} filter takes {key} only"));
    }
    let Some(config) = config else {
        e.push("type", &kind, format!("a {kind} filter needs {key}"));
        return;
    };
    if slot.is_some() {
        e.push(
            "type",
            &kind,
            format!("{kind} is given twice in this rule; merge them"),
        );
        return;
    }
    *slot = modifier(config, e);
}

fn modifier(m: &HeaderModifier, e: &mut Errors<'_>) -> Option<HeaderEdits> {
    let before = e.errors.len();
    let mut seen: Vec<HeaderName> = Vec::new();
    let mut name = |n: &str, e: &mut Errors<'_>| -> Option<HeaderName> {
        let Ok(h) = HeaderName::from_bytes(n.as_bytes()) else {
            e.push("name", n, "not a valid header name");
            return None;
        };
        if h.as_str().starts_with("x-trustmesh-") || PROTECTED_HEADERS.contains(&h.as_str()) {
            e.push(
                "name",
                n,
                "a route may not change trustmesh's own, framing or hop-by-hop headers",
            );
            return None;
        }
        if seen.contains(&h) {
            e.push("name", n, "this header is named twice in one modifier");
            return None;
        }
        seen.push(h.clone());
        Some(h)
    };
    let mut pairs = |list: &[super::model::HeaderValue],
                     e: &mut Errors<'_>|
     -> Vec<(HeaderName, HeaderValue)> {
        list.iter()
            .filter_map(|hv| {
                let n = name(&hv.name, e)?;
                match HeaderValue::from_str(&hv.value) {
                    Ok(v) => Some((n, v)),
                    Err(_) => {
                        e.push("value", &hv.value, "not a valid header value");
                        None
                    }
                }
            })
            .collect()
    };
    let set = pairs(&m.set, e);
    let add = pairs(&m.add, e);
    let remove = m.remove.iter().filter_map(|n| name(n, e)).collect();
    (e.errors.len() == before).then_some(HeaderEdits { set, add, remove })
}

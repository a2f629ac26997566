//! Compiling a rule's `matches` into the conditions a request is compared with: paths checked
//! against the normalizer (a path that is not in normalized form could never match), regular
//! expressions anchored and size-bounded, header names lowercased, repeated names refused.

use std::sync::Arc;

use http::HeaderName;
use regex::{Regex, RegexBuilder};

use super::errors::Errors;
use super::model::{HttpMatch, Method, PathMatchType, RouteRule, ValueMatch, ValueMatchType};
use crate::normalize::normalize_path;

/// Compiled size bound of one regular expression, so that a route cannot make a sidecar build
/// a huge automaton.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

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

pub(super) fn compile_matches(rule: &RouteRule, e: &mut Errors<'_>) -> Option<Vec<Arc<Matcher>>> {
    let default = [HttpMatch::default()];
    let matches = if rule.matches.is_empty() {
        &default[..]
    } else {
        &rule.matches
    };
    let before = e.errors.len();
    let out: Vec<_> = matches
        .iter()
        .filter_map(|m| compile_match(m, e))
        .map(Arc::new)
        .collect();
    (e.errors.len() == before).then_some(out)
}

fn compile_match(m: &HttpMatch, e: &mut Errors<'_>) -> Option<Matcher> {
    let path = match &m.path {
        None => PathMatcher::Prefix("/".into()),
        Some(p) => match p.kind {
            PathMatchType::RegularExpression => PathMatcher::Regex(regex(&p.value, e)?),
            kind => {
                let v = p.value.as_str();
                let normal = normalize_path(v)
                    .ok()
                    .filter(|n| n.as_str() == v && n.query().is_none());
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
    Some(Matcher {
        path,
        method: m.method,
        headers,
        query,
    })
}

fn values(
    list: &[ValueMatch],
    header: bool,
    e: &mut Errors<'_>,
) -> Option<Vec<(String, ValueMatcher)>> {
    let before = e.errors.len();
    let mut out: Vec<(String, ValueMatcher)> = Vec::new();
    for v in list {
        let name = if header {
            v.name.to_ascii_lowercase()
        } else {
            v.name.clone()
        };
        if name.is_empty() || (header && HeaderName::from_bytes(name.as_bytes()).is_err()) {
            e.push("name", &v.name, "not a valid header or parameter name");
            continue;
        }
        if out.iter().any(|(n, _)| *n == name) {
            e.push(
                "name",
                &v.name,
                "this name is matched twice in one match; write one condition per name",
            );
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
    match RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
    {
        Ok(r) => Some(r),
        Err(err) => {
            let why = err.to_string();
            let why = why
                .lines()
                .last()
                .unwrap_or("bad regular expression")
                .trim();
            e.push("value", pattern, format!("bad regular expression: {why}"));
            None
        }
    }
}

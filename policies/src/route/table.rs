//! The compiled route table: every match of every rule of every route of a parent Service in
//! one list, ordered by Gateway API precedence ([`precedence`]: see [`super::matching`] for
//! the order in words).

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;

use super::action::CompiledRule;
use super::matchers::{Matcher, PathMatcher};

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

/// The order of two entries of one parent: the one that wins first.
pub(super) fn precedence(a: &Entry, b: &Entry) -> Ordering {
    rank(&b.matcher)
        .cmp(&rank(&a.matcher))
        .then_with(|| a.route.cmp(&b.route))
        .then_with(|| a.rule_index.cmp(&b.rule_index))
        .then_with(|| a.match_index.cmp(&b.match_index))
}

/// Higher wins: path kind, path length, method, header count, query count.
fn rank(m: &Matcher) -> (u8, usize, bool, usize, usize) {
    let (kind, len) = match &m.path {
        PathMatcher::Exact(p) => (3, p.len()),
        PathMatcher::Regex(r) => (2, r.as_str().len()),
        PathMatcher::Prefix(p) => (1, p.len()),
    };
    (
        kind,
        len,
        m.method.is_some(),
        m.headers.len(),
        m.query.len(),
    )
}

//! `GET` of a collection: the selected objects at the current version, or — for a page after
//! the first (`continue`) or `resourceVersionMatch=Exact` — at an older version rebuilt from the
//! history (`410 Expired` once that is compacted), paged by `limit` in `(namespace, name)` order.

use std::collections::BTreeMap;
use std::ops::Bound;

use base64::Engine as _;
use serde_json::{json, Value};

use super::status::ApiError;
use super::store::{Filter, Key, Store};

/// How a list was asked for.
#[derive(Clone, Debug, Default)]
pub struct ListOptions {
    /// `limit`: at most this many items per page.
    pub limit: Option<usize>,
    /// `continue`: the token of the previous page.
    pub continue_token: Option<String>,
    /// `resourceVersion` with `resourceVersionMatch=Exact`: the state at that version.
    pub exact: Option<u64>,
}

/// What a `continue` token holds: the list's version and the last key returned.
fn encode_token(rv: u64, key: &Key) -> String {
    let raw = json!({"rv": rv, "ns": key.0, "name": key.1}).to_string();
    base64::engine::general_purpose::STANDARD.encode(raw)
}

fn decode_token(token: &str) -> Result<(u64, Key), ApiError> {
    let bad = || ApiError::BadRequest(format!("invalid continue token {token:?}"));
    let raw = base64::engine::general_purpose::STANDARD
        .decode(token)
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let rv = v.get("rv").and_then(Value::as_u64).ok_or_else(bad)?;
    let ns = v.get("ns").and_then(Value::as_str).ok_or_else(bad)?;
    let name = v.get("name").and_then(Value::as_str).ok_or_else(bad)?;
    Ok((rv, (ns.to_owned(), name.to_owned())))
}

/// The list object (`kind: PodList`, `metadata.resourceVersion`, `metadata.continue`, `items`).
pub fn list(store: &Store, filter: &Filter, opts: &ListOptions) -> Result<Value, ApiError> {
    let (rv, after) = match (&opts.continue_token, opts.exact) {
        (Some(token), _) => {
            let (rv, key) = decode_token(token)?;
            (rv, Some(key))
        }
        (None, Some(rv)) => (rv, None),
        (None, None) => (store.resource_version(), None),
    };
    if rv > store.resource_version() {
        return Err(ApiError::BadRequest(format!(
            "resourceVersion {rv} is newer than the server's"
        )));
    }
    store.check_retained(rv)?;
    // The objects as they were at `rv`: the current map, with every key written since then
    // put back to its value before the first such write.
    let mut overlay: BTreeMap<&Key, Option<&Value>> = BTreeMap::new();
    for write in store.history.iter().rev().take_while(|w| w.rv > rv) {
        if write.resource == filter.resource {
            overlay.insert(&write.key, write.prev.as_ref());
        }
    }
    let empty = BTreeMap::new();
    let current = store.objects.get(&filter.resource).unwrap_or(&empty);
    let lower = after.as_ref().map_or(Bound::Unbounded, Bound::Excluded);
    let mut cur = current.range((lower, Bound::Unbounded)).peekable();
    let mut old = overlay
        .range::<Key, _>((lower, Bound::Unbounded))
        .peekable();
    let limit = opts.limit.filter(|l| *l > 0).unwrap_or(usize::MAX);
    let mut items = Vec::new();
    let mut last: Option<&Key> = None;
    let mut more = false;
    loop {
        let next = match (cur.peek(), old.peek()) {
            (None, None) => break,
            (Some((ck, _)), Some((ok, _))) if ck == *ok => {
                cur.next();
                old.next().map(|(k, v)| (*k, *v))
            }
            (Some((ck, _)), Some((ok, _))) if **ok < *ck => old.next().map(|(k, v)| (*k, *v)),
            (Some(_), _) => cur.next().map(|(k, v)| (k, Some(v))),
            (None, Some(_)) => old.next().map(|(k, v)| (*k, *v)),
        };
        let Some((key, value)) = next else { break };
        let Some(value) = value else { continue };
        if !filter.matches(key, value) {
            continue;
        }
        if items.len() == limit {
            more = true;
            break;
        }
        items.push(value.clone());
        last = Some(key);
    }
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if let (true, Some(key)) = (more, last) {
        metadata["continue"] = Value::String(encode_token(rv, key));
    }
    Ok(json!({
        "kind": format!("{}List", filter.resource.kind()),
        "apiVersion": filter.resource.api_version(),
        "metadata": metadata,
        "items": items,
    }))
}

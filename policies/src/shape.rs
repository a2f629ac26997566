//! Reading one YAML document into its typed model while reporting *every* shape error (unknown
//! keys, wrong types, bad enum values, missing fields), each at its own position. serde stops at
//! the first error, so the document is read again and again: after each error the offending
//! entry is taken out of (or, for a required field, put into) a [`Value`] copy of the document,
//! and the copy is read again, until it reads or nothing more can be repaired.
//!
//! The first error's position is serde_yaml's own. Later errors come from the repaired copy, so
//! their position is found in the original text by the path serde_yaml names (`spec.rules[1]`):
//! [`Locate`] walks the original document and fails on purpose at the node (or key) the path
//! names, and serde_yaml places that failure at the node's exact line and column, flow style
//! (`{source: {principals: [...]}}`) included.

use serde::de::{self, DeserializeOwned, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess};
use serde_yaml::{Mapping, Value};

use crate::yaml_error;

/// At most this many errors are reported per document (a file that is not a policy at all
/// would otherwise list one per line).
const MAX_ERRORS: usize = 50;

/// A shape error: 1-based line and column relative to the document, and the message.
pub(crate) type ShapeError = (usize, usize, String);

/// The outcome of [`parse`].
pub(crate) struct Parsed<T> {
    /// The document, read after every error was taken out, when only unknown keys had to be
    /// removed (its other values are as written, so they can still be checked).
    pub doc: Option<T>,
    /// Every shape error; empty when the document read as written.
    pub errors: Vec<ShapeError>,
}

/// Reads `text` (one YAML document) as `T`, collecting every shape error.
pub(crate) fn parse<T: DeserializeOwned>(text: &str) -> Parsed<T> {
    let first = match serde_yaml::from_str::<T>(text) {
        Ok(doc) => {
            return Parsed {
                doc: Some(doc),
                errors: Vec::new(),
            }
        }
        Err(e) => e,
    };
    let mut errors = vec![yaml_error::describe(&first)];
    // A syntax error leaves nothing to repair.
    let Ok(mut value) = serde_yaml::from_str::<Value>(text) else {
        return Parsed { doc: None, errors };
    };
    let mut only_unknown_keys = true;
    let mut removed = Vec::new();
    let mut err = first;
    let mut doc = None;
    for _ in 0..MAX_ERRORS * 2 {
        let (path, message) = split_path(&yaml_error::describe(&err).2);
        let next = repair(
            &mut value,
            &path,
            &message,
            &mut only_unknown_keys,
            &mut removed,
        );
        match next {
            None => break,
            Some(Ok(d)) => {
                doc = only_unknown_keys.then_some(d);
                break;
            }
            Some(Err(e)) => {
                let (_, _, full) = yaml_error::describe(&e);
                let (p, m) = split_path(&full);
                let ours = missing_field(&m)
                    .is_some_and(|f| removed.iter().any(|(mp, k)| *mp == p && k == f));
                if !ours {
                    // Positions in the repaired copy mean nothing in the file: find the node
                    // in the original, or the nearest enclosing one.
                    let (l, c) = (0..=p.len())
                        .rev()
                        .find_map(|n| {
                            locate(text, &p[..n], unknown_field(&m).filter(|_| n == p.len()))
                        })
                        .unwrap_or((1, 1));
                    errors.push((l, c, full));
                    if errors.len() >= MAX_ERRORS {
                        break;
                    }
                }
                err = e;
            }
        }
    }
    errors.sort_by_key(|(line, col, _)| (*line, *col));
    Parsed { doc, errors }
}

/// One step of a serde_yaml path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

/// Splits `spec.rules[0].from: message` into the path and the message (a message without a
/// path prefix is at the document's root).
fn split_path(full: &str) -> (Vec<Seg>, String) {
    match full.split_once(": ") {
        Some((p, m)) if !p.contains(' ') && !p.is_empty() => (parse_path(p), m.to_string()),
        _ => (Vec::new(), full.to_string()),
    }
}

fn parse_path(p: &str) -> Vec<Seg> {
    let mut segs = Vec::new();
    for part in p.split('.') {
        let (key, mut rest) = part.split_once('[').map_or((part, ""), |(k, r)| (k, r));
        if !key.is_empty() {
            segs.push(Seg::Key(key.to_string()));
        }
        while let Some((n, r)) = rest.split_once(']') {
            if let Ok(i) = n.parse() {
                segs.push(Seg::Index(i));
            }
            rest = r.strip_prefix('[').unwrap_or(r);
        }
    }
    segs
}

/// The field an "unknown field `X`" (or "unsupported field `X`") message names.
fn unknown_field(message: &str) -> Option<&str> {
    ["unknown field `", "unsupported field `"]
        .iter()
        .find_map(|start| {
            let rest = message.strip_prefix(start)?;
            rest.split_once('`').map(|(f, _)| f)
        })
}

/// The field a "missing field `X`" message names.
fn missing_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("missing field `")?;
    rest.split_once('`').map(|(f, _)| f)
}

/// Values tried in place of a bad or missing one, so that reading goes on past it.
fn stand_ins() -> [Value; 6] {
    [
        Value::String(String::new()),
        Value::Null,
        Value::Sequence(Vec::new()),
        Value::Mapping(Mapping::new()),
        Value::Number(0.into()),
        Value::Bool(false),
    ]
}

/// Whether `r` is an error at `path`.
fn fails_at<T>(r: &Result<T, serde_yaml::Error>, path: &[Seg]) -> bool {
    r.as_ref()
        .err()
        .is_some_and(|e| split_path(&yaml_error::describe(e).2).0 == path)
}

/// Whether `r` is the error "missing field `key`" in the mapping at `map_path`.
fn fails_missing<T>(r: &Result<T, serde_yaml::Error>, map_path: &[Seg], key: &str) -> bool {
    r.as_ref().err().is_some_and(|e| {
        let (p, m) = split_path(&yaml_error::describe(e).2);
        p == map_path && missing_field(&m) == Some(key)
    })
}

/// Takes the error at `path` out of `value` and reads it again: `None` when it cannot be
/// repaired, else the next outcome (an error elsewhere, or the document). A bad value is
/// replaced by the first stand-in its field accepts, else removed (an optional field);
/// a missing field gets a stand-in. Keys removed that way go to `removed`, so that a later
/// "missing field" for one of them is not reported as a second error.
fn repair<T: DeserializeOwned>(
    value: &mut Value,
    path: &[Seg],
    message: &str,
    only_unknown_keys: &mut bool,
    removed: &mut Vec<(Vec<Seg>, String)>,
) -> Option<Result<T, serde_yaml::Error>> {
    let read = |v: &Value| -> Option<Result<T, serde_yaml::Error>> {
        serde_yaml::to_string(v)
            .ok()
            .map(|t| serde_yaml::from_str::<T>(&t))
    };
    if let Some(field) = unknown_field(message) {
        node(value, path)?
            .as_mapping_mut()?
            .remove(Value::String(field.to_string()))?;
        return read(value);
    }
    *only_unknown_keys = false;
    let (map_path, key) = match (missing_field(message), path.split_last()) {
        (Some(field), _) => (path.to_vec(), field.to_string()),
        (None, Some((Seg::Key(k), parent))) => (parent.to_vec(), k.clone()),
        (None, Some((Seg::Index(i), parent))) => {
            let i = *i;
            for stand_in in stand_ins() {
                *node(value, parent)?.as_sequence_mut()?.get_mut(i)? = stand_in;
                let r = read(value)?;
                if !fails_at(&r, path) {
                    return Some(r);
                }
            }
            return None;
        }
        (None, None) => return None,
    };
    let mut value_path = map_path.clone();
    value_path.push(Seg::Key(key.clone()));
    let k = Value::String(key.clone());
    for stand_in in stand_ins() {
        node(value, &map_path)?
            .as_mapping_mut()?
            .insert(k.clone(), stand_in);
        let r = read(value)?;
        if !fails_at(&r, &value_path) && !fails_missing(&r, &map_path, &key) {
            return Some(r);
        }
    }
    node(value, &map_path)?.as_mapping_mut()?.remove(&k);
    let r = read(value)?;
    if fails_missing(&r, &map_path, &key) {
        return None;
    }
    removed.push((map_path, key));
    Some(r)
}

/// The node at `path`.
fn node<'v>(value: &'v mut Value, path: &[Seg]) -> Option<&'v mut Value> {
    path.iter().try_fold(value, |v, seg| match seg {
        Seg::Key(k) => v.as_mapping_mut()?.get_mut(Value::String(k.clone())),
        Seg::Index(i) => v.as_sequence_mut()?.get_mut(*i),
    })
}

/// The 1-based (line, column) in `text` of the node at `path` (of its key `key`, when given).
fn locate(text: &str, path: &[Seg], key: Option<&str>) -> Option<(usize, usize)> {
    let de = serde_yaml::Deserializer::from_str(text);
    let err = Locate { path, key }.deserialize(de).err()?;
    if !err.to_string().contains(FOUND) {
        return None;
    }
    err.location().map(|l| (l.line(), l.column()))
}

/// The marker error [`Locate`] fails with where the path ends.
const FOUND: &str = "trustmesh-located";

/// Walks a document along `path` and fails with [`FOUND`] at its end (see the module docs).
struct Locate<'p> {
    path: &'p [Seg],
    key: Option<&'p str>,
}

impl<'de> DeserializeSeed<'de> for Locate<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl Locate<'_> {
    fn here<E: de::Error>(&self) -> Result<(), E> {
        if self.path.is_empty() && self.key.is_none() {
            Err(E::custom(FOUND))
        } else {
            Ok(())
        }
    }
}

impl<'de> de::Visitor<'de> for Locate<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any YAML node")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let (target, at_key) = match (self.path.first(), self.key) {
            (Some(Seg::Key(k)), _) => (k.as_str(), false),
            (None, Some(k)) => (k, true),
            (None, None) => return Err(de::Error::custom(FOUND)),
            (Some(Seg::Index(_)), _) => return Ok(()),
        };
        while let Some(hit) = map.next_key_seed(Key { target, at_key })? {
            if hit {
                return map.next_value_seed(Locate {
                    path: &self.path[1..],
                    key: self.key,
                });
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let i = match self.path.first() {
            Some(Seg::Index(i)) => *i,
            None => return self.here(),
            Some(Seg::Key(_)) => return Ok(()),
        };
        for _ in 0..i {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(());
            }
        }
        seq.next_element_seed(Locate {
            path: &self.path[1..],
            key: self.key,
        })?;
        Ok(())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.here()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.here()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.here()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.here()
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.here()
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.here()
    }
}

/// A mapping key: whether it is `target`; with `at_key`, fails with [`FOUND`] on it instead.
struct Key<'t> {
    target: &'t str,
    at_key: bool,
}

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = bool;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> de::Visitor<'de> for Key<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a mapping key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        match (v == self.target, self.at_key) {
            (true, true) => Err(E::custom(FOUND)),
            (hit, _) => Ok(hit),
        }
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(false)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(false)
    }
}

#[cfg(test)]
mod tests;

//! `labelSelector` and `fieldSelector` as the Kubernetes API server parses and applies them.
//!
//! Labels: `k`, `!k`, `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, joined by commas
//! (what kube-rs' `Selector` renders and `kubectl -l` accepts). Fields: `f=v`, `f==v`, `f!=v`
//! for `metadata.name`, `metadata.namespace` and the few per-type fields the real server knows;
//! any other field is refused with `400`, as the real server refuses it.

use serde_json::Value;

use super::resources::Resource;

/// One requirement of a label selector.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    Exists(String),
    NotExists(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector(Vec<Requirement>);

impl LabelSelector {
    /// Parses `labelSelector`; the error says what is wrong (answered `400`).
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        for part in split_top_level(s)? {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            reqs.push(parse_requirement(part)?);
        }
        Ok(Self(reqs))
    }

    /// Whether an object's `metadata.labels` satisfy every requirement.
    pub fn matches(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels");
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::NotExists(k) => get(k).is_none(),
            Requirement::In(k, vs) => get(k).is_some_and(|v| vs.iter().any(|x| x == v)),
            Requirement::NotIn(k, vs) => get(k).is_none_or(|v| vs.iter().all(|x| x != v)),
        })
    }
}

/// Splits on commas outside parentheses.
fn split_top_level(s: &str) -> Result<Vec<&str>, String> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| format!("unbalanced ')' in {s:?}"))?
            }
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(format!("unbalanced '(' in {s:?}"));
    }
    parts.push(&s[start..]);
    Ok(parts)
}

fn parse_requirement(part: &str) -> Result<Requirement, String> {
    if let Some(key) = part.strip_prefix('!') {
        return Ok(Requirement::NotExists(valid_key(key.trim())?));
    }
    if let Some((k, v)) = part.split_once("!=") {
        return Ok(Requirement::NotIn(
            valid_key(k.trim())?,
            vec![valid_value(v.trim())?],
        ));
    }
    if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
        return Ok(Requirement::In(
            valid_key(k.trim())?,
            vec![valid_value(v.trim())?],
        ));
    }
    let words: Vec<&str> = part.splitn(2, char::is_whitespace).collect();
    if let [key, rest] = words.as_slice() {
        let rest = rest.trim();
        let (op, set) = rest
            .split_once(char::is_whitespace)
            .or_else(|| rest.find('(').map(|i| (&rest[..i], &rest[i..])))
            .ok_or_else(|| format!("unable to parse requirement {part:?}"))?;
        let set = set.trim();
        let inner = set
            .strip_prefix('(')
            .and_then(|s| s.strip_suffix(')'))
            .ok_or_else(|| format!("found {set:?}, expected: '('"))?;
        let values = inner
            .split(',')
            .map(|v| valid_value(v.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        let key = valid_key(key)?;
        return match op.trim() {
            "in" => Ok(Requirement::In(key, values)),
            "notin" => Ok(Requirement::NotIn(key, values)),
            other => Err(format!("unknown operator {other:?} in {part:?}")),
        };
    }
    Ok(Requirement::Exists(valid_key(part)?))
}

fn valid_key(k: &str) -> Result<String, String> {
    let (prefix, name) = k.rsplit_once('/').unwrap_or(("", k));
    let ok_name = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    let ok_prefix = prefix.len() <= 253
        && prefix
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-.".contains(c));
    if ok_name && ok_prefix && !(k.contains('/') && prefix.is_empty()) {
        Ok(k.to_owned())
    } else {
        Err(format!("invalid label key {k:?}"))
    }
}

fn valid_value(v: &str) -> Result<String, String> {
    let ok = v.is_empty()
        || (v.len() <= 63
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && v.starts_with(|c: char| c.is_ascii_alphanumeric())
            && v.ends_with(|c: char| c.is_ascii_alphanumeric()));
    if ok {
        Ok(v.to_owned())
    } else {
        Err(format!("invalid label value {v:?}"))
    }
}

/// A parsed field selector; the empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    /// Parses `fieldSelector` for a resource type; unknown fields are refused (answered `400`).
    pub fn parse(s: &str, resource: Resource) -> Result<Self, String> {
        let mut terms = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, eq, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                (f, true, v)
            } else {
                return Err(format!(
                    "invalid selector: '{part}'; can't understand '{part}'"
                ));
            };
            let field = field.trim();
            let known = ["metadata.name", "metadata.namespace"].contains(&field)
                || resource.extra_fields().contains(&field);
            if !known {
                return Err(format!("field label not supported: {field}"));
            }
            terms.push((field.to_owned(), eq, value.trim().to_owned()));
        }
        Ok(Self(terms))
    }

    /// Whether an object's fields satisfy every term (a missing field reads as `""`).
    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(field, eq, value)| {
            let pointer = format!("/{}", field.replace('.', "/"));
            let actual = obj.pointer(&pointer).and_then(Value::as_str).unwrap_or("");
            (actual == value) == *eq
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selectors_match_as_the_api_server_does() {
        let obj = json!({"metadata": {"labels": {"app": "web", "tier": "front"}}});
        let m = |s: &str| LabelSelector::parse(s).unwrap().matches(&obj);
        assert!(m(""));
        assert!(m("app=web") && m("app==web") && m("app") && m("!db"));
        assert!(m("app in (web, api),tier notin (back)"));
        assert!(m("app in(web)"));
        assert!(!m("app!=web") && !m("!app") && !m("app in (api)") && !m("db=x"));
        assert!(m("db notin (x)"));
        assert!(!m("app=web,tier=back"));
        assert!(LabelSelector::parse("app in (web").is_err());
        assert!(LabelSelector::parse("app gt (1)").is_err());
        assert!(LabelSelector::parse("a b").is_err());
        assert!(LabelSelector::parse("app=-bad").is_err());
    }

    #[test]
    fn field_selectors_know_only_the_supported_fields() {
        let obj =
            json!({"metadata": {"name": "p1", "namespace": "a"}, "status": {"phase": "Running"}});
        let f = |s: &str| {
            FieldSelector::parse(s, Resource::Pods)
                .unwrap()
                .matches(&obj)
        };
        assert!(f("metadata.name=p1") && f("metadata.name==p1,metadata.namespace=a"));
        assert!(f("status.phase!=Pending") && !f("metadata.name=p2"));
        assert!(FieldSelector::parse("spec.replicas=1", Resource::Pods).is_err());
        assert!(FieldSelector::parse("status.phase=x", Resource::Services).is_err());
    }
}

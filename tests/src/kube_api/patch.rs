//! The `PATCH` bodies the stub applies: RFC 7386 merge patches and RFC 6902 JSON patches.

use serde_json::{Map, Value};

use super::status::ApiError;

/// RFC 7386 JSON merge patch (`application/merge-patch+json`; also what the stub does for
/// `strategic-merge-patch+json` on the maps these types hold).
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Some(patch_map) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Some(map) = target.as_object_mut() {
        for (k, v) in patch_map {
            if v.is_null() {
                map.remove(k);
            } else {
                merge_patch(map.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// RFC 6902 JSON patch (`application/json-patch+json`): `add`, `remove`, `replace`, `test`,
/// `move`, `copy`. A failed operation or `test` is answered `422`, as the real server does.
pub fn json_patch(target: &mut Value, ops: &Value) -> Result<(), ApiError> {
    let ops = ops
        .as_array()
        .ok_or_else(|| ApiError::BadRequest("a JSON patch is an array of operations".into()))?;
    for op in ops {
        let field = |name: &str| op.get(name).and_then(Value::as_str);
        let path =
            field("path").ok_or_else(|| ApiError::BadRequest("operation without path".into()))?;
        let value = || {
            op.get("value")
                .cloned()
                .ok_or_else(|| ApiError::BadRequest("operation without value".into()))
        };
        let from =
            || field("from").ok_or_else(|| ApiError::BadRequest("operation without from".into()));
        match field("op") {
            Some("add") => add(target, path, value()?)?,
            Some("remove") => drop(remove(target, path)?),
            Some("replace") => {
                remove(target, path)?;
                add(target, path, value()?)?;
            }
            Some("test") => {
                if target.pointer(path) != Some(&value()?) {
                    return Err(ApiError::Invalid(format!("testing value {path} failed")));
                }
            }
            Some("move") => {
                let v = remove(target, from()?)?;
                add(target, path, v)?;
            }
            Some("copy") => {
                let v = target
                    .pointer(from()?)
                    .cloned()
                    .ok_or_else(|| missing(path))?;
                add(target, path, v)?;
            }
            other => {
                return Err(ApiError::BadRequest(format!(
                    "unknown patch operation {other:?}"
                )))
            }
        }
    }
    Ok(())
}

fn missing(path: &str) -> ApiError {
    ApiError::Invalid(format!("the path {path:?} does not exist"))
}

fn split_pointer(path: &str) -> Result<(&str, String), ApiError> {
    let (parent, last) = path.rsplit_once('/').ok_or_else(|| missing(path))?;
    Ok((parent, last.replace("~1", "/").replace("~0", "~")))
}

fn add(target: &mut Value, path: &str, value: Value) -> Result<(), ApiError> {
    if path.is_empty() {
        *target = value;
        return Ok(());
    }
    let (parent, last) = split_pointer(path)?;
    match target.pointer_mut(parent) {
        Some(Value::Object(map)) => {
            map.insert(last, value);
            Ok(())
        }
        Some(Value::Array(items)) => {
            let index = if last == "-" {
                items.len()
            } else {
                last.parse().map_err(|_| missing(path))?
            };
            if index > items.len() {
                return Err(missing(path));
            }
            items.insert(index, value);
            Ok(())
        }
        _ => Err(missing(path)),
    }
}

fn remove(target: &mut Value, path: &str) -> Result<Value, ApiError> {
    let (parent, last) = split_pointer(path)?;
    match target.pointer_mut(parent) {
        Some(Value::Object(map)) => map.remove(&last).ok_or_else(|| missing(path)),
        Some(Value::Array(items)) => {
            let index: usize = last.parse().map_err(|_| missing(path))?;
            if index >= items.len() {
                return Err(missing(path));
            }
            Ok(items.remove(index))
        }
        _ => Err(missing(path)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut t = json!({"a": "b", "c": {"d": "e", "f": "g"}, "l": [1, 2]});
        merge_patch(&mut t, &json!({"a": "z", "c": {"f": null}, "l": [3]}));
        assert_eq!(t, json!({"a": "z", "c": {"d": "e"}, "l": [3]}));
    }

    #[test]
    fn json_patch_follows_rfc_6902() {
        let mut t = json!({"metadata": {"labels": {"a": "1"}}, "l": [1, 2]});
        let ops = json!([
            {"op": "add", "path": "/metadata/labels/b~1c", "value": "2"},
            {"op": "remove", "path": "/metadata/labels/a"},
            {"op": "add", "path": "/l/-", "value": 3},
            {"op": "replace", "path": "/l/0", "value": 0},
            {"op": "test", "path": "/l/2", "value": 3},
        ]);
        json_patch(&mut t, &ops).unwrap();
        assert_eq!(
            t,
            json!({"metadata": {"labels": {"b/c": "2"}}, "l": [0, 2, 3]})
        );
        let err =
            json_patch(&mut t, &json!([{"op": "test", "path": "/l/0", "value": 9}])).unwrap_err();
        assert_eq!(err.code(), 422);
        assert_eq!(
            json_patch(&mut t, &json!([{"op": "remove", "path": "/nope"}]))
                .unwrap_err()
                .code(),
            422
        );
    }
}

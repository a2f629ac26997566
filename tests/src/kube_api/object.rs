//! What the API server does to an object's body on a write: checks its name and namespace,
//! stamps `kind`/`apiVersion`, `uid`, `creationTimestamp` and `resourceVersion`, keeps the
//! server-owned fields across an update, and applies merge and JSON patches.

use serde_json::{Map, Value};

use super::resources::Resource;
use super::status::ApiError;

/// `metadata.name`, if it is a string.
pub fn name_of(obj: &Value) -> Option<&str> {
    obj.pointer("/metadata/name").and_then(Value::as_str)
}

/// `metadata.resourceVersion`, if it is a non-empty string.
pub fn resource_version_of(obj: &Value) -> Option<&str> {
    obj.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// The object's `metadata` map, created if missing; `400` if the body is not an object or its
/// `metadata` is not one.
pub fn metadata_mut(obj: &mut Value) -> Result<&mut Map<String, Value>, ApiError> {
    let map = obj
        .as_object_mut()
        .ok_or_else(|| ApiError::BadRequest("the body is not a JSON object".into()))?;
    map.entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    map.get_mut("metadata")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| ApiError::BadRequest("metadata is not an object".into()))
}

/// Checks a body for `resource` in `namespace` (the path's) and sets its type and namespace:
/// `kind`/`apiVersion` must be absent or right, `metadata.namespace` absent or equal to the
/// path's, and the name (or `generateName`, resolved with `suffix`) a DNS-1123 subdomain.
pub fn admit(
    obj: &mut Value,
    resource: Resource,
    namespace: Option<&str>,
    suffix: u64,
) -> Result<String, ApiError> {
    for (field, want) in [
        ("kind", resource.kind()),
        ("apiVersion", resource.api_version()),
    ] {
        if obj.get(field).is_some_and(|got| got.as_str() != Some(want)) {
            return Err(ApiError::BadRequest(format!(
                "the body's {field} does not match {want}"
            )));
        }
    }
    let meta = metadata_mut(obj)?;
    if let Some(ns) = meta
        .get("namespace")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        if Some(ns) != namespace {
            return Err(ApiError::BadRequest(
                "the namespace of the provided object does not match the namespace sent on the request".into(),
            ));
        }
    }
    let name = match meta
        .get("name")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        Some(n) => n.to_owned(),
        None => match meta.get("generateName").and_then(Value::as_str) {
            Some(prefix) if !prefix.is_empty() => format!("{prefix}{suffix:05x}"),
            _ => {
                return Err(ApiError::Invalid(
                    "metadata.name: Required value: name or generateName is required".into(),
                ))
            }
        },
    };
    if !is_dns_subdomain(&name) {
        return Err(ApiError::Invalid(format!(
            "metadata.name: Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.'"
        )));
    }
    meta.insert("name".into(), Value::String(name.clone()));
    match namespace {
        Some(ns) => meta.insert("namespace".into(), Value::String(ns.to_owned())),
        None => meta.remove("namespace"),
    };
    if let Some(map) = obj.as_object_mut() {
        map.insert("kind".into(), Value::String(resource.kind().into()));
        map.insert(
            "apiVersion".into(),
            Value::String(resource.api_version().into()),
        );
    }
    if resource == Resource::Secrets {
        fold_string_data(obj)?;
    }
    Ok(name)
}

/// A Secret's `stringData` written into `data` (base64), as the real server stores it (it
/// never returns `stringData`); `data` values that are not base64 are `400`.
fn fold_string_data(obj: &mut Value) -> Result<(), ApiError> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let Some(map) = obj.as_object_mut() else {
        return Ok(());
    };
    let string_data = map.remove("stringData");
    let data = map
        .entry("data")
        .or_insert_with(|| Value::Object(Map::new()));
    if data.is_null() {
        *data = Value::Object(Map::new());
    }
    let data = data
        .as_object_mut()
        .ok_or_else(|| ApiError::BadRequest("data is not an object".into()))?;
    for (k, v) in data.iter() {
        if v.as_str().is_none_or(|s| b64.decode(s).is_err()) {
            return Err(ApiError::BadRequest(format!(
                "data[{k}]: illegal base64 data"
            )));
        }
    }
    if let Some(Value::Object(plain)) = string_data {
        for (k, v) in plain {
            let v = v
                .as_str()
                .ok_or_else(|| ApiError::BadRequest(format!("stringData[{k}] is not a string")))?;
            data.insert(k, Value::String(b64.encode(v)));
        }
    }
    if data.is_empty() {
        map.remove("data");
    }
    Ok(())
}

/// Sets the server-owned metadata of a new object.
pub fn stamp_new(obj: &mut Value, uid: &str, now: &str) -> Result<(), ApiError> {
    let meta = metadata_mut(obj)?;
    meta.insert("uid".into(), Value::String(uid.to_owned()));
    meta.insert("creationTimestamp".into(), Value::String(now.to_owned()));
    meta.remove("resourceVersion");
    Ok(())
}

/// Carries the server-owned metadata of `old` over to its replacement `new`.
pub fn keep_server_fields(new: &mut Value, old: &Value) -> Result<(), ApiError> {
    let meta = metadata_mut(new)?;
    for field in ["uid", "creationTimestamp"] {
        match old.pointer(&format!("/metadata/{field}")) {
            Some(v) => meta.insert(field.into(), v.clone()),
            None => meta.remove(field),
        };
    }
    meta.remove("resourceVersion");
    Ok(())
}

/// Sets `metadata.resourceVersion`.
pub fn set_resource_version(obj: &mut Value, rv: u64) {
    if let Ok(meta) = metadata_mut(obj) {
        meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
    }
}

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

/// Whether `name` is a DNS-1123 subdomain (what most object names must be).
pub fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
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

    #[test]
    fn admit_checks_names_and_namespaces() {
        let mut o = json!({"metadata": {"name": "x", "namespace": "b"}});
        assert_eq!(
            admit(&mut o, Resource::Pods, Some("a"), 1)
                .unwrap_err()
                .code(),
            400
        );
        let mut o = json!({"metadata": {"name": "Bad_Name"}});
        assert_eq!(
            admit(&mut o, Resource::Pods, Some("a"), 1)
                .unwrap_err()
                .code(),
            422
        );
        let mut o = json!({"metadata": {"generateName": "web-"}});
        assert_eq!(
            admit(&mut o, Resource::Pods, Some("a"), 0x1f).unwrap(),
            "web-0001f"
        );
        assert_eq!(o["kind"], "Pod");
        assert_eq!(o["metadata"]["namespace"], "a");
        let mut o =
            json!({"metadata": {"name": "s"}, "data": {"a": "eA=="}, "stringData": {"b": "y"}});
        admit(&mut o, Resource::Secrets, Some("a"), 1).unwrap();
        assert_eq!(o["data"], json!({"a": "eA==", "b": "eQ=="}));
        assert_eq!(o.get("stringData"), None);
        let mut o = json!({"metadata": {"name": "s"}, "data": {"a": "not base64!"}});
        assert_eq!(
            admit(&mut o, Resource::Secrets, Some("a"), 1)
                .unwrap_err()
                .code(),
            400
        );
        let mut o = json!({"kind": "Service", "metadata": {"name": "x"}});
        assert_eq!(
            admit(&mut o, Resource::Pods, Some("a"), 1)
                .unwrap_err()
                .code(),
            400
        );
    }
}

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

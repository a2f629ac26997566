//! The writes and single-object reads: `GET`, `POST`, `PUT`, `PATCH` and `DELETE` of one
//! object, with the real server's checks (names, namespaces, optimistic concurrency,
//! preconditions) and its errors.

use bytes::Bytes;
use serde_json::Value;

use super::object;
use super::patch;
use super::resources::{Resource, Target};
use super::status::ApiError;
use super::store::{Key, Store};

/// `415` unless `content_type` is a patch type the stub applies: merge, strategic merge (as a
/// merge patch) or JSON patch.
pub fn patch_type_supported(content_type: &str) -> Result<(), ApiError> {
    match content_type.split(';').next().map(str::trim) {
        Some(
            "application/merge-patch+json"
            | "application/strategic-merge-patch+json"
            | "application/json-patch+json",
        ) => Ok(()),
        _ => Err(ApiError::UnsupportedMediaType),
    }
}

/// Parses a JSON request body (`400` if it is not JSON).
pub fn parse_body(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("the body is not valid JSON: {e}")))
}

fn key_of(target: &Target, name: &str) -> Key {
    (
        target.namespace.clone().unwrap_or_default(),
        name.to_owned(),
    )
}

fn not_found(target: &Target, name: &str) -> ApiError {
    ApiError::NotFound {
        resource: target.resource.plural().into(),
        name: name.into(),
    }
}

fn object_name(target: &Target) -> Result<&str, ApiError> {
    let name = target.name.as_deref().ok_or(ApiError::MethodNotAllowed)?;
    if target.resource.namespaced() && target.namespace.is_none() {
        return Err(ApiError::NotFound {
            resource: "path".into(),
            name: target.path(),
        });
    }
    Ok(name)
}

/// `GET` of one object.
pub fn get(store: &Store, target: &Target) -> Result<Value, ApiError> {
    let name = object_name(target)?;
    store
        .get(target.resource, &key_of(target, name))
        .cloned()
        .ok_or_else(|| not_found(target, name))
}

/// `POST`: a new object, refused `409 AlreadyExists` for a name in use and `404` in a namespace
/// that does not exist (the real server's `NamespaceLifecycle` admission).
pub fn create(store: &mut Store, target: &Target, mut body: Value) -> Result<Value, ApiError> {
    if target.name.is_some() || (target.resource.namespaced() && target.namespace.is_none()) {
        return Err(ApiError::MethodNotAllowed);
    }
    let suffix = store.next_id();
    let name = object::admit(
        &mut body,
        target.resource,
        target.namespace.as_deref(),
        suffix,
    )?;
    if let Some(ns) = &target.namespace {
        if store
            .get(Resource::Namespaces, &(String::new(), ns.clone()))
            .is_none()
        {
            return Err(ApiError::NotFound {
                resource: "namespaces".into(),
                name: ns.clone(),
            });
        }
    }
    let key = key_of(target, &name);
    if store.get(target.resource, &key).is_some() {
        return Err(ApiError::AlreadyExists {
            resource: target.resource,
            name,
        });
    }
    let uid = format!("00000000-0000-4000-8000-{suffix:012x}");
    object::stamp_new(&mut body, &uid, &super::now())?;
    store
        .write(target.resource, key, Some(body))
        .ok_or_else(|| not_found(target, &name))
}

/// `PUT`: replaces an object; a `metadata.resourceVersion` that is not the current one is
/// refused `409 Conflict` (no version: an unconditional update, as these types allow).
pub fn replace(store: &mut Store, target: &Target, mut body: Value) -> Result<Value, ApiError> {
    let name = object_name(target)?.to_owned();
    let key = key_of(target, &name);
    let old = store
        .get(target.resource, &key)
        .cloned()
        .ok_or_else(|| not_found(target, &name))?;
    if object::name_of(&body).is_some_and(|n| n != name) {
        return Err(ApiError::BadRequest(
            "the name of the object does not match the name on the URL".into(),
        ));
    }
    if let Some(rv) = object::resource_version_of(&body) {
        if Some(rv) != object::resource_version_of(&old) {
            return Err(ApiError::Conflict {
                resource: target.resource,
                name,
            });
        }
    }
    if let Ok(meta) = object::metadata_mut(&mut body) {
        meta.insert("name".into(), Value::String(name.clone()));
    }
    object::admit(&mut body, target.resource, target.namespace.as_deref(), 0)?;
    object::keep_server_fields(&mut body, &old)?;
    store
        .write(target.resource, key, Some(body))
        .ok_or_else(|| not_found(target, &name))
}

/// `PATCH`: `application/merge-patch+json` and `strategic-merge-patch+json` (merged as a
/// merge patch) and `application/json-patch+json`; `415` for others (server-side apply). A
/// `metadata.resourceVersion` in the result that is not the current one is `409 Conflict`.
pub fn patch(
    store: &mut Store,
    target: &Target,
    content_type: &str,
    patch: &Value,
) -> Result<Value, ApiError> {
    let name = object_name(target)?.to_owned();
    let key = key_of(target, &name);
    let old = store
        .get(target.resource, &key)
        .cloned()
        .ok_or_else(|| not_found(target, &name))?;
    let mut new = old.clone();
    patch_type_supported(content_type)?;
    if content_type.starts_with("application/json-patch+json") {
        patch::json_patch(&mut new, patch)?;
    } else {
        patch::merge_patch(&mut new, patch);
    }
    // A patch that names a version is conditional on it; one that drops it is not.
    if object::resource_version_of(&new)
        .is_some_and(|rv| Some(rv) != object::resource_version_of(&old))
    {
        return Err(ApiError::Conflict {
            resource: target.resource,
            name,
        });
    }
    replace(store, target, new)
}

/// `DELETE`: removes an object and answers with its last state; `DeleteOptions.preconditions`
/// (`uid`, `resourceVersion`) that do not hold are `409 Conflict`.
pub fn delete(store: &mut Store, target: &Target, body: &Bytes) -> Result<Value, ApiError> {
    let name = object_name(target)?.to_owned();
    let key = key_of(target, &name);
    let old = store
        .get(target.resource, &key)
        .cloned()
        .ok_or_else(|| not_found(target, &name))?;
    if !body.is_empty() {
        let opts = parse_body(body)?;
        for field in ["uid", "resourceVersion"] {
            if let Some(want) = opts
                .pointer(&format!("/preconditions/{field}"))
                .and_then(Value::as_str)
            {
                if old
                    .pointer(&format!("/metadata/{field}"))
                    .and_then(Value::as_str)
                    != Some(want)
                {
                    return Err(ApiError::Conflict {
                        resource: target.resource,
                        name,
                    });
                }
            }
        }
    }
    store
        .write(target.resource, key, None)
        .ok_or_else(|| not_found(target, &name))
}

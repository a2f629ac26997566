use std::collections::BTreeMap;

use bytes::Bytes;
use http::{header, Response, StatusCode};

use super::{add_allow, allowed, ROUTES};

/// The spec's paths with their methods, upper case.
fn spec_routes() -> BTreeMap<String, Vec<String>> {
    let spec: serde_yaml::Value = serde_yaml::from_str(include_str!("../../../openapi.yaml"))
        .expect("control-plane/openapi.yaml is valid YAML");
    let paths = spec["paths"].as_mapping().expect("openapi.yaml has paths");
    paths
        .iter()
        .map(|(path, ops)| {
            let path = path.as_str().expect("a path is a string").to_string();
            let methods = ops
                .as_mapping()
                .expect("a path holds operations")
                .keys()
                .filter_map(|k| k.as_str())
                .filter(|k| !matches!(*k, "parameters" | "summary" | "description"))
                .map(str::to_uppercase)
                .collect();
            (path, methods)
        })
        .collect()
}

#[test]
fn openapi_spec_describes_exactly_the_routes_the_router_answers() {
    let spec = spec_routes();
    let router: BTreeMap<String, Vec<String>> = ROUTES
        .iter()
        .map(|(p, m)| (p.to_string(), vec![m.to_string()]))
        .collect();
    assert_eq!(spec, router);
}

#[test]
fn allowed_names_the_method_of_known_paths_only() {
    assert_eq!(allowed("/v1/inject"), Some("POST"));
    assert_eq!(allowed("/v1/snapshot"), Some("GET"));
    assert_eq!(allowed("/v1/snapshot/"), None);
    assert_eq!(allowed("/"), None);
}

fn with_status(status: StatusCode) -> Response<Bytes> {
    let mut resp = Response::new(Bytes::new());
    *resp.status_mut() = status;
    resp
}

#[test]
fn a_405_carries_allow_with_the_paths_method() {
    let mut resp = with_status(StatusCode::METHOD_NOT_ALLOWED);
    add_allow("/v1/certificates", &mut resp);
    assert_eq!(resp.headers()[header::ALLOW], "POST");
}

#[test]
fn other_statuses_get_no_allow() {
    for status in [
        StatusCode::OK,
        StatusCode::NOT_FOUND,
        StatusCode::BAD_REQUEST,
    ] {
        let mut resp = with_status(status);
        add_allow("/healthz", &mut resp);
        assert!(resp.headers().get(header::ALLOW).is_none(), "{status}");
    }
}

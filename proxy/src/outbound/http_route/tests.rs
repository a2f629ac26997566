use http::{HeaderMap, HeaderName, HeaderValue};
use trustmesh_policies::route::HeaderEdits;

use super::{edit, host_port};

fn pair(n: &'static str, v: &'static str) -> (HeaderName, HeaderValue) {
    (HeaderName::from_static(n), HeaderValue::from_static(v))
}

#[test]
fn header_modifiers_set_add_and_remove_as_the_gateway_api_says() {
    let mut h = HeaderMap::new();
    h.append("x-env", HeaderValue::from_static("a"));
    h.append("x-env", HeaderValue::from_static("b"));
    h.insert("x-tag", HeaderValue::from_static("1"));
    h.insert("x-debug", HeaderValue::from_static("yes"));
    let edits = HeaderEdits {
        set: vec![pair("x-env", "canary"), pair("x-new", "n")],
        add: vec![pair("x-tag", "2")],
        remove: vec![HeaderName::from_static("x-debug")],
    };
    edit(&mut h, &edits);
    let all = |n: &str| -> Vec<&str> { h.get_all(n).iter().map(|v| v.to_str().unwrap()).collect() };
    assert_eq!(all("x-env"), ["canary"], "set replaces every value");
    assert_eq!(all("x-new"), ["n"], "set adds a missing header");
    assert_eq!(all("x-tag"), ["1", "2"], "add appends");
    assert!(all("x-debug").is_empty(), "remove drops it");
}

#[test]
fn the_route_port_is_the_one_host_names() {
    assert_eq!(host_port("orders"), None);
    assert_eq!(host_port("orders.shop:8080"), Some(8080));
    assert_eq!(host_port("10.0.0.1:80"), Some(80));
    assert_eq!(host_port("[::1]:81"), Some(81));
    assert_eq!(host_port("[::1]"), None);
    assert_eq!(host_port("orders:x"), None);
}

//! The `HTTPRoute` model as written in YAML (Gateway API `gateway.networking.k8s.io/v1`, mesh
//! form, GAMMA). Field names are the Gateway API's (camelCase). Every struct refuses unknown
//! keys and every enum unknown variants, so a field or filter trustmesh does not implement
//! (`sectionName`, `RequestRedirect`, `sessionPersistence`, ...) is an error at its position,
//! never silently ignored. Values are kept as written; [`super::compile`] checks and compiles
//! them.

use serde::{Deserialize, Serialize};

/// The one `apiVersion` an `HTTPRoute` may have.
pub const ROUTE_API_VERSION: &str = "gateway.networking.k8s.io/v1";

/// One `kind: HTTPRoute` document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpRoute {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace` (default `default`); the parent Service is in it.
    pub namespace: String,
    /// `spec`.
    pub spec: HttpRouteSpec,
}

impl HttpRoute {
    /// `namespace/name`: how output and ties name the route (Gateway API breaks ties between
    /// routes by this, alphabetically, once creation times are equal; git has none).
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// `spec` of an `HTTPRoute`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpRouteSpec {
    /// The registry Services the route applies to (at least one).
    #[serde(default)]
    pub parent_refs: Vec<ParentRef>,
    /// Refused when not empty: GAMMA ignores hostnames on mesh routes, and a route author who
    /// wrote some would expect them to restrict it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    /// The rules; a route with none matches nothing.
    #[serde(default)]
    pub rules: Vec<RouteRule>,
}

/// `parentRefs[]`: a registry `Service` in the route's namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParentRef {
    /// `""` or `core` (the core API group), the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Must be `Service` (no Gateways in the mesh form).
    pub kind: String,
    /// The Service's name.
    pub name: String,
    /// Must be the route's own namespace when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The Service port the route applies to; every port when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

/// `rules[]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RouteRule {
    /// ORed; none means one match of path prefix `/`.
    #[serde(default)]
    pub matches: Vec<HttpMatch>,
    /// Applied in order to the request and the response.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<Filter>,
    /// Where matching requests go; none means the parent Service itself (the request goes
    /// where it was going, with this rule's filters, timeouts and retry).
    #[serde(default)]
    pub backend_refs: Vec<BackendRef>,
    /// `timeouts.request` and `timeouts.backendRequest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,
    /// Retries (GEP-1731).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
}

/// `matches[]`: every condition given must hold (AND).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpMatch {
    /// Default: `PathPrefix` `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathMatch>,
    /// Header conditions (names compared case-insensitively).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<ValueMatch>,
    /// Query parameter conditions (names compared exactly).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query_params: Vec<ValueMatch>,
    /// The request method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<Method>,
}

/// `path`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathMatch {
    /// How `value` is compared.
    #[serde(rename = "type", default)]
    pub kind: PathMatchType,
    /// The path, or a regular expression for `RegularExpression`.
    #[serde(default = "root")]
    pub value: String,
}

fn root() -> String {
    "/".to_string()
}

/// `path.type`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum PathMatchType {
    /// The whole normalized path.
    Exact,
    /// Whole path segments: `/api` matches `/api` and `/api/x`, never `/apix`.
    #[default]
    PathPrefix,
    /// A regular expression (`regex` crate syntax) the whole path must match.
    RegularExpression,
}

/// A header or query parameter condition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValueMatch {
    /// How `value` is compared.
    #[serde(rename = "type", default)]
    pub kind: ValueMatchType,
    /// The header or parameter name.
    pub name: String,
    /// The value, or a regular expression the whole value must match.
    pub value: String,
}

/// `headers[].type`, `queryParams[].type`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ValueMatchType {
    /// Byte-for-byte equal.
    #[default]
    Exact,
    /// A regular expression the whole value must match.
    RegularExpression,
}

/// `method` (the Gateway API's `HTTPMethod` enum).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs, clippy::upper_case_acronyms)]
pub enum Method {
    GET,
    HEAD,
    POST,
    PUT,
    DELETE,
    CONNECT,
    OPTIONS,
    TRACE,
    PATCH,
}

impl Method {
    /// The method as it appears on the request line.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::GET => "GET",
            Method::HEAD => "HEAD",
            Method::POST => "POST",
            Method::PUT => "PUT",
            Method::DELETE => "DELETE",
            Method::CONNECT => "CONNECT",
            Method::OPTIONS => "OPTIONS",
            Method::TRACE => "TRACE",
            Method::PATCH => "PATCH",
        }
    }
}

/// `filters[]`: the one configuration its `type` names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Filter {
    /// Which filter.
    #[serde(rename = "type")]
    pub kind: FilterType,
    /// With `type: RequestHeaderModifier`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_header_modifier: Option<HeaderModifier>,
    /// With `type: ResponseHeaderModifier`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_header_modifier: Option<HeaderModifier>,
}

/// `filters[].type`: the supported filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FilterType {
    /// Change the request's headers before it is sent.
    RequestHeaderModifier,
    /// Change the response's headers before the app gets it.
    ResponseHeaderModifier,
}

/// `requestHeaderModifier`, `responseHeaderModifier`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderModifier {
    /// Replace (or add) these headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<HeaderValue>,
    /// Append these values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<HeaderValue>,
    /// Remove these headers (names).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

/// A header name and value of a modifier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderValue {
    /// The header name.
    pub name: String,
    /// Its value.
    pub value: String,
}

/// `backendRefs[]`: a registry `Service`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendRef {
    /// `""` or `core`, the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// `Service`, the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The Service's name.
    pub name: String,
    /// The Service's namespace; the route's by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The Service port (required for a Service, as in the Gateway API).
    pub port: u16,
    /// Relative share of the rule's requests (default 1, at most 1 000 000; 0 sends none).
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

/// `timeouts`: Gateway API durations (`10s`, `1m30s`, `500ms`); `0s` turns one off.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Timeouts {
    /// The whole request, retries included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    /// One attempt to the backend; at most `request`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_request: Option<String>,
}

/// `retry` (GEP-1731).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    /// Response codes (400 to 599) that are retried; a connection error always is.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub codes: Vec<u16>,
    /// Retries after the first attempt (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// Wait before each retry (a Gateway API duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<String>,
}

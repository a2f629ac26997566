//! The HTTP side: routes each request to the store by method and path, parses the query
//! (`labelSelector`, `fieldSelector`, `limit`, `continue`, `resourceVersion`,
//! `resourceVersionMatch`, `watch`, `allowWatchBookmarks`, `sendInitialEvents`,
//! `timeoutSeconds`) and answers with objects, lists, chunked watch streams or `Status` errors.

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{combinators::BoxBody, BodyExt as _, Full};
use hyper::body::Incoming;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::crud::{self, create, delete, get, parse_body, patch, replace};
use super::list::{self, ListOptions};

use super::resources::{Resource, Target};
use super::selector::{FieldSelector, LabelSelector};
use super::status::ApiError;
use super::store::{event_line, Filter, Store};

/// The response body: a whole JSON document, or a watch stream.
pub type ApiBody = BoxBody<Bytes, Infallible>;

/// What the server shares with the test's controls.
pub struct Shared {
    /// The objects.
    pub store: Mutex<Store>,
    /// Requests seen, by verb (`list`, `watch`, `get`, `create`, `update`, `patch`, `delete`,
    /// `other`) and resource (`None`: a path that names none).
    pub requests: Mutex<HashMap<(&'static str, Option<Resource>), u64>>,
    /// Failures still to inject: how many, and with which status code.
    pub fail: Mutex<(u32, u16)>,
    /// Whether a watch from a compacted version is refused with HTTP `410` (instead of a `200`
    /// stream whose one event is an `ERROR` with a `410` `Status`, as the real server does).
    pub gone_as_http: Mutex<bool>,
}

impl Shared {
    /// Locks the store (a poisoned lock is still usable: the store has no invariants a panic
    /// in a test could break halfway).
    pub fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn json_response(code: u16, value: &Value) -> Response<ApiBody> {
    let mut resp = Response::new(Full::new(Bytes::from(value.to_string())).boxed());
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}

fn error_response(err: &ApiError) -> Response<ApiBody> {
    json_response(err.code(), &err.to_status())
}

/// Answers one request.
pub async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<ApiBody>, Infallible> {
    let (parts, body) = req.into_parts();
    let query = parse_query(parts.uri.query().unwrap_or(""));
    let watch = query.get("watch").is_some_and(|v| v == "true" || v == "1");
    let target = Target::parse(parts.uri.path());
    let verb = match (&parts.method, &target) {
        (&Method::GET, Some(t)) if t.name.is_none() && watch => "watch",
        (&Method::GET, Some(t)) if t.name.is_none() => "list",
        (&Method::GET, _) => "get",
        (&Method::POST, _) => "create",
        (&Method::PUT, _) => "update",
        (&Method::PATCH, _) => "patch",
        (&Method::DELETE, _) => "delete",
        _ => "other",
    };
    if let Ok(mut counts) = shared.requests.lock() {
        *counts
            .entry((verb, target.as_ref().map(|t| t.resource)))
            .or_default() += 1;
    }
    if let Ok(mut fail) = shared.fail.lock() {
        if fail.0 > 0 {
            fail.0 -= 1;
            return Ok(error_response(&ApiError::Injected(fail.1)));
        }
    }
    if parts.uri.path() == "/version" {
        return Ok(json_response(
            200,
            &json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-trustmesh-stub", "platform": "linux/amd64"}),
        ));
    }
    let Some(target) = target else {
        return Ok(error_response(&ApiError::NotFound {
            resource: "path".into(),
            name: parts.uri.path().into(),
        }));
    };
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return Ok(error_response(&ApiError::BadRequest(
                "unreadable body".into(),
            )))
        }
    };
    if query.contains_key("dryRun") {
        // Refused rather than ignored: a dry run the stub carried out would be a real write.
        return Ok(error_response(&ApiError::BadRequest(
            "the stand-in API server does not implement dryRun".into(),
        )));
    }
    let result = match verb {
        "watch" => {
            return Ok(start_watch(&shared, &target, &query).unwrap_or_else(|e| error_response(&e)))
        }
        "list" => filter(&target, &query)
            .and_then(|f| {
                let opts = list_options(&query)?;
                list::list(&shared.store(), &f, &opts)
            })
            .map(|v| (200, v)),
        "get" => get(&shared.store(), &target).map(|v| (200, v)),
        "create" => parse_body(&body)
            .and_then(|b| create(&mut shared.store(), &target, b))
            .map(|v| (201, v)),
        "update" => parse_body(&body)
            .and_then(|b| replace(&mut shared.store(), &target, b))
            .map(|v| (200, v)),
        // The media type first: a server-side apply body (YAML) is 415, not a JSON error.
        "patch" => crud::patch_type_supported(&content_type)
            .and_then(|()| parse_body(&body))
            .and_then(|b| patch(&mut shared.store(), &target, &content_type, &b))
            .map(|v| (200, v)),
        "delete" => delete(&mut shared.store(), &target, &body).map(|v| (200, v)),
        _ => Err(ApiError::MethodNotAllowed),
    };
    Ok(match result {
        Ok((code, v)) => json_response(code, &v),
        Err(e) => error_response(&e),
    })
}

fn parse_query(q: &str) -> HashMap<String, String> {
    form_urlencoded::parse(q.as_bytes()).into_owned().collect()
}

fn parse_rv(s: &str) -> Result<u64, ApiError> {
    s.parse()
        .map_err(|_| ApiError::BadRequest(format!("invalid resource version {s:?}")))
}

fn filter(target: &Target, query: &HashMap<String, String>) -> Result<Filter, ApiError> {
    let get = |k: &str| query.get(k).map_or("", String::as_str);
    Ok(Filter {
        resource: target.resource,
        namespace: target.namespace.clone(),
        labels: LabelSelector::parse(get("labelSelector")).map_err(ApiError::BadRequest)?,
        fields: FieldSelector::parse(get("fieldSelector"), target.resource)
            .map_err(ApiError::BadRequest)?,
    })
}

fn list_options(query: &HashMap<String, String>) -> Result<ListOptions, ApiError> {
    let limit = match query.get("limit") {
        Some(l) => Some(
            l.parse()
                .map_err(|_| ApiError::BadRequest(format!("invalid limit {l:?}")))?,
        ),
        None => None,
    };
    let exact = match (
        query.get("resourceVersion"),
        query.get("resourceVersionMatch").map(String::as_str),
    ) {
        (Some(rv), Some("Exact")) => Some(parse_rv(rv)?),
        (None, Some(_)) => {
            return Err(ApiError::BadRequest(
                "resourceVersionMatch requires resourceVersion".into(),
            ))
        }
        (Some(rv), _) => {
            parse_rv(rv)?;
            None
        }
        (None, None) => None,
    };
    let continue_token = query.get("continue").filter(|c| !c.is_empty()).cloned();
    Ok(ListOptions {
        limit,
        continue_token,
        exact,
    })
}

/// A watch stream: the lines the store sends, until the store drops the sender.
struct WatchBody {
    rx: mpsc::UnboundedReceiver<Bytes>,
}

impl Body for WatchBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx
            .poll_recv(cx)
            .map(|line| line.map(|l| Ok(Frame::data(l))))
    }
}

fn start_watch(
    shared: &Arc<Shared>,
    target: &Target,
    query: &HashMap<String, String>,
) -> Result<Response<ApiBody>, ApiError> {
    if target.name.is_some() {
        return Err(ApiError::MethodNotAllowed);
    }
    let filter = filter(target, query)?;
    let flag = |k: &str| query.get(k).is_some_and(|v| v == "true" || v == "1");
    let from = match query.get("resourceVersion").map(String::as_str) {
        None | Some("") | Some("0") => None,
        Some(rv) => Some(parse_rv(rv)?),
    };
    let timeout = match query.get("timeoutSeconds") {
        Some(t) => t
            .parse::<u64>()
            .map_err(|_| ApiError::BadRequest(format!("invalid timeoutSeconds {t:?}")))?,
        None => 0,
    };
    // Unset or 0: the server's own limit (the real one picks 30 to 60 minutes).
    let timeout = if timeout == 0 { 1800 } else { timeout };
    let (tx, rx) = mpsc::unbounded_channel();
    let mut store = shared.store();
    let id = match store.watch(
        filter,
        from,
        flag("allowWatchBookmarks"),
        flag("sendInitialEvents"),
        tx.clone(),
    ) {
        Ok(id) => id,
        Err(gone @ ApiError::Gone { .. }) => {
            if *shared
                .gone_as_http
                .lock()
                .unwrap_or_else(|e| e.into_inner())
            {
                return Err(gone);
            }
            // The real server answers 200 and sends the 410 as the stream's only event.
            let _ = tx.send(event_line("ERROR", &gone.to_status()));
            drop(tx);
            return Ok(stream_response(rx));
        }
        Err(e) => return Err(e),
    };
    drop(tx);
    drop(store);
    let weak = Arc::downgrade(shared);
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(timeout)).await;
        if let Some(shared) = weak.upgrade() {
            shared.store().unwatch(id);
        }
    });
    Ok(stream_response(rx))
}

fn stream_response(rx: mpsc::UnboundedReceiver<Bytes>) -> Response<ApiBody> {
    let mut resp = Response::new(WatchBody { rx }.boxed());
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}

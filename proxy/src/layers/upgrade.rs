//! Upgrades, shared by both stacks: which requests ask to switch protocols, the two forms such a
//! request takes, and the answer that completes one.
//!
//! - HTTP/1.1 `Upgrade` (RFC 9110 §7.8): `GET` with `Connection: upgrade` and `Upgrade: P`,
//!   answered `101 Switching Protocols`.
//! - HTTP/2 extended CONNECT (RFC 8441 §4): `CONNECT` with `:protocol P`, answered `200`.
//!
//! Between sidecars an upgrade is always an extended-CONNECT stream on the pooled h2
//! connection; each end speaks to its app in the app's own form. Once the answer is out, the
//! connection (or stream) is a byte tunnel ([`tunnel`]). `Upgrade: h2c` is never an upgrade
//! here (its requests would cross the tunnel unauthorized): it goes on as a plain request
//! without the header, as any other request loses its hop-by-hop fields.
//!
//! Data path: outbound `forward` → [`crate::outbound::upgrade`] → the h2 hop → inbound
//! `request` → [`crate::inbound::upgrade`] → [`dial`] the app → [`tunnel::run`].

pub mod dial;
pub mod tunnel;
pub mod websocket;

#[cfg(test)]
mod tests;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};

use crate::layers::body::{self, Body};
use crate::layers::headers;

/// How a request asks for an upgrade, and how it must be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// HTTP/1.1 `GET` with `Upgrade`; answered `101`.
    Http1,
    /// HTTP/2 extended CONNECT with `:protocol`; answered `200`.
    Connect,
}

/// An upgrade a request asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgrade {
    /// The protocol to switch to: the `Upgrade` value, or `:protocol` (`websocket`).
    pub protocol: String,
    /// How it was asked for.
    pub form: Form,
}

impl Upgrade {
    /// The upgrade `req` asks for, if any (see [`Upgrade::of_head`]).
    pub fn of<B>(req: &Request<B>) -> Option<Self> {
        Self::of_head(req.method(), req.version(), req.headers(), req.extensions())
    }

    /// The upgrade a request head asks for: an HTTP/2 `CONNECT` with `:protocol`, or an
    /// HTTP/1.1 `GET` whose `Connection` names `upgrade` and whose one `Upgrade` value is one
    /// protocol (`name` or `name/version`, RFC 9110 §7.8), other than `h2c`. Anything else is
    /// not an upgrade (HTTP/1.0 ignores `Upgrade`, RFC 9110 §7.8; a list of offers is not
    /// something one `:protocol` can carry).
    pub fn of_head(
        method: &Method,
        version: Version,
        headers: &HeaderMap,
        extensions: &http::Extensions,
    ) -> Option<Self> {
        if version == Version::HTTP_2 {
            if method != Method::CONNECT {
                return None;
            }
            let protocol = extensions.get::<hyper::ext::Protocol>()?.as_str();
            return valid_protocol(protocol).then(|| Self {
                protocol: protocol.to_string(),
                form: Form::Connect,
            });
        }
        if version != Version::HTTP_11 || method != Method::GET {
            return None;
        }
        // `Upgrade` first: nearly every request has none, and then `Connection` is not read.
        let mut values = headers.get_all(header::UPGRADE).iter();
        let (value, more) = (values.next()?, values.next());
        let asks = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
        let protocol = value.to_str().ok()?.trim();
        if !asks || more.is_some() || !valid_protocol(protocol) {
            return None;
        }
        if protocol.eq_ignore_ascii_case("h2c") {
            return None;
        }
        Some(Self {
            protocol: protocol.to_string(),
            form: Form::Http1,
        })
    }

    /// Whether the protocol is WebSocket (RFC 6455 §11.2; case-insensitive, RFC 9110 §7.8).
    pub fn is_websocket(&self) -> bool {
        self.protocol.eq_ignore_ascii_case("websocket")
    }

    /// The `Connection` and `Upgrade` fields of the HTTP/1.1 form, in place of whatever was
    /// there (after [`headers::strip_hop_by_hop`] removed the caller's).
    pub fn set_http1_fields(&self, headers: &mut HeaderMap) {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        if let Ok(v) = HeaderValue::from_str(&self.protocol) {
            headers.insert(header::UPGRADE, v);
        }
    }

    /// Makes a request head the extended CONNECT for this protocol (RFC 8441 §4): method
    /// `CONNECT`, `:protocol`, HTTP/2, without the HTTP/1.1 fields HTTP/2 forbids
    /// (`Connection`, `Upgrade`; RFC 9113 §8.2.2) and without `Host` (`:authority` says it).
    pub fn to_connect(&self, parts: &mut http::request::Parts) {
        parts.method = Method::CONNECT;
        parts.version = Version::HTTP_2;
        parts
            .extensions
            .insert(hyper::ext::Protocol::from(self.protocol.as_str()));
        headers::strip_hop_by_hop(&mut parts.headers);
        parts.headers.remove(header::HOST);
    }

    /// Makes a request head the HTTP/1.1 `GET` upgrade for this protocol. A WebSocket opened
    /// as an extended CONNECT carries no `Sec-WebSocket-Key` (RFC 8441 §5); an HTTP/1.1 server
    /// needs one, so one is made (and `Sec-WebSocket-Version: 13`).
    pub fn to_http1(&self, parts: &mut http::request::Parts) {
        parts.method = Method::GET;
        parts.version = Version::HTTP_11;
        parts.extensions.remove::<hyper::ext::Protocol>();
        self.set_http1_fields(&mut parts.headers);
        if self.is_websocket() {
            websocket::ensure_key(&mut parts.headers);
        }
    }

    /// Whether `status` from a callee spoken to in `form` completes the upgrade.
    pub fn switched(form: Form, status: StatusCode) -> bool {
        match form {
            Form::Http1 => status == StatusCode::SWITCHING_PROTOCOLS,
            // RFC 8441 §5 / RFC 9113 §8.5: any 2xx opens the tunnel.
            Form::Connect => status.is_success(),
        }
    }

    /// What the side that asked gets once the far side (in `far_form`) has answered: a
    /// refusal (403, 426, ...) as it was said, or the switch, with the tunnel that `open`
    /// makes (given the status answered) spawned between `caller` and the far side.
    pub fn complete(
        &self,
        far_form: Form,
        mut resp: Response<hyper::body::Incoming>,
        key: Option<&HeaderValue>,
        caller: hyper::upgrade::OnUpgrade,
        open: impl FnOnce(StatusCode) -> tunnel::Tunnel,
    ) -> Response<Body> {
        if !Self::switched(far_form, resp.status()) {
            let (mut parts, b) = resp.into_parts();
            headers::strip_hop_by_hop(&mut parts.headers);
            return Response::from_parts(parts, body::stream(b));
        }
        let callee = hyper::upgrade::on(&mut resp);
        let answer = self.answer(resp.headers().clone(), key);
        open(answer.status()).spawn(caller, callee);
        answer
    }

    /// The answer that completes this upgrade for its caller, from the callee's answer
    /// `headers`: `101` with `Connection`/`Upgrade` (and for a WebSocket the
    /// `Sec-WebSocket-Accept` made from the caller's `key`, RFC 6455 §4.2.2) or `200`; either
    /// way without a body, hop-by-hop fields or a `Content-Length` (RFC 9113 §8.5).
    pub fn answer(&self, mut headers: HeaderMap, key: Option<&HeaderValue>) -> Response<Body> {
        headers::strip_hop_by_hop(&mut headers);
        headers.remove(header::CONTENT_LENGTH);
        // Made for the caller's own key below; HTTP/2 never carries it (RFC 8441 §5).
        headers.remove(header::SEC_WEBSOCKET_ACCEPT);
        let status = match self.form {
            Form::Http1 => {
                self.set_http1_fields(&mut headers);
                if let Some(accept) = key.filter(|_| self.is_websocket()).map(websocket::accept) {
                    headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
                }
                StatusCode::SWITCHING_PROTOCOLS
            }
            Form::Connect => StatusCode::OK,
        };
        let mut resp = Response::new(body::full(bytes::Bytes::new()));
        *resp.status_mut() = status;
        *resp.headers_mut() = headers;
        resp
    }
}

/// RFC 9110 §7.8: `protocol-name ["/" protocol-version]`, each a token (§5.6.2).
fn valid_protocol(p: &str) -> bool {
    let token = |t: &str| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    match p.split_once('/') {
        Some((name, version)) => token(name) && token(version),
        None => token(p),
    }
}

//! The inbound side of an upgrade ([`crate::layers::upgrade`]). The caller's sidecar sends it
//! as an extended CONNECT; [`super::request`] authorizes it as the HTTP/1.1 `GET` upgrade it
//! stands for (method `GET`, the normalized path the app receives, the headers with
//! `Connection: upgrade` and `Upgrade`, the verified identity), exactly like any request, so
//! one policy covers a WebSocket whichever HTTP version either app speaks. Then the app is
//! asked on a connection of its own, in its own form: HTTP/1.1 `Upgrade` (`Sec-WebSocket-*`
//! kept; a key made when an HTTP/2 client sent none) or, for an h2c app, extended CONNECT.
//! The app's refusal goes back as it was; its `101` (or `200`) opens the tunnel.

use std::sync::Arc;
use std::time::Instant;

use http::request::Parts;
use http::{header, Request, Response, Version};
use hyper::upgrade::OnUpgrade;

use super::{ConnInfo, Inbound};
use crate::layers::body::{self, Body};
use crate::layers::limits::Activity;
use crate::layers::rescue::ProxyError;
use crate::layers::upgrade::tunnel::Tunnel;
use crate::layers::upgrade::{dial, Form, Upgrade};
use crate::observe::access_log::Entry;

impl Inbound {
    /// Asks the app to switch to `up` with the authorized head `parts` (in the version the
    /// app speaks) and, once it has, tunnels the caller's stream to it.
    pub(super) async fn upgrade(
        &self,
        mut parts: Parts,
        up: Upgrade,
        conn: &ConnInfo,
        log: &mut Entry,
    ) -> Result<Response<Body>, ProxyError> {
        let start = Instant::now();
        let caller = parts
            .extensions
            .remove::<OnUpgrade>()
            .ok_or_else(|| ProxyError::BadRequest("this connection cannot be upgraded".into()))?;
        let busy = parts.extensions.remove::<Arc<Activity>>();
        let key = parts.headers.get(header::SEC_WEBSOCKET_KEY).cloned();
        let app_form = if parts.version == Version::HTTP_2 {
            up.to_connect(&mut parts);
            Form::Connect
        } else {
            up.to_http1(&mut parts);
            Form::Http1
        };
        let req = Request::from_parts(parts, body::full(bytes::Bytes::new()));
        let target = &conn.app_target;
        let (connect, timeout) = (self.config.connect_timeout, self.config.upstream_timeout);
        let resp = dial::send(&conn.app, req, target, connect, timeout).await?;
        // The app may refuse (426, 400, ...): its answer goes back as it was.
        Ok(up.complete(app_form, resp, key.as_ref(), caller, |status| {
            Tunnel::new(
                &self.shared.metrics,
                "inbound",
                self.config.serve.idle_timeout,
                busy,
                self.config.access_log,
                log,
                &up.protocol,
                status,
                start,
            )
        }))
    }
}

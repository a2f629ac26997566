//! The seam between routing and the connections: one request, already rewritten for the hop
//! between sidecars, sent to one endpoint of a registry service over the mTLS h2 pool
//! ([`super::pool`]), verified as that service's identity. Route rules
//! ([`super::http_route`]) call it once per attempt.
//!
//! Today it picks the endpoint round robin; load balancing and failover across endpoints
//! (`outbound/balance/`) replace this body behind the same signature.

use std::sync::atomic::Ordering;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use trustmesh_policies::ServiceEntry;

use super::Outbound;
use crate::layers::body::Body;
use crate::layers::rescue::ProxyError;

impl Outbound {
    /// Sends `req` to an endpoint of `service` and waits at most `timeout` for the response
    /// head (the connection itself is bounded by `--connect-timeout`). The peer must present
    /// `service`'s identity. `503` when the service has no endpoint, `502` when the connection
    /// or the request fails, `504` when no response head came in time.
    pub(crate) async fn send_to_service(
        &self,
        service: &ServiceEntry,
        req: Request<Body>,
        timeout: Duration,
    ) -> Result<Response<Incoming>, ProxyError> {
        let name = || format!("{}.{}", service.name, service.namespace);
        if service.endpoints.is_empty() {
            return Err(ProxyError::NoEndpoints(name()));
        }
        let rr = self.send_next.fetch_add(1, Ordering::Relaxed);
        let endpoint = &service.endpoints[rr % service.endpoints.len()];
        let target = || format!("{} ({endpoint})", name());
        let mesh = self
            .shared
            .mesh
            .load_full()
            .ok_or(ProxyError::NotReady("no policy snapshot yet"))?;
        let config = mesh
            .client_config(&self.shared.resolver, &service.identity)
            .map_err(|e| ProxyError::Tls {
                target: name(),
                reason: e.to_string(),
            })?;
        drop(mesh);
        let mut sender = self
            .pool
            .get(
                endpoint,
                service,
                config,
                self.config.connect_timeout,
                &target,
            )
            .await?;
        tokio::time::timeout(timeout, async {
            sender.ready().await?;
            sender.send_request(req).await
        })
        .await
        .map_err(|_| ProxyError::Timeout {
            target: target(),
            secs: timeout.as_secs(),
        })?
        .map_err(|e| ProxyError::Upstream {
            target: target(),
            reason: e.to_string(),
        })
    }
}

//! One try at one endpoint over the HTTP/1.1 hop ([`crate::outbound::hop`]): a connection
//! from [`crate::outbound::pool::http1`], the exchange, and the connection given back once the
//! response head is in.
//!
//! A pooled connection the peer closed while it was idle is no failure of the endpoint's and
//! never reaches the app: the request goes on another connection to the same endpoint (hyper
//! hands back a request it wrote nothing of; a bodiless idempotent request that was written
//! and got no answer is sent again when its head was kept). A fresh connection that fails is
//! the endpoint's failure, answered as on HTTP/2 (failover while the request reached no app).

use http::Request;

use super::{no_client_config, Attempt, Finisher, Head, Outbound, Outcome, Reason};
use crate::layers::body::Body;
use crate::outbound::balance::endpoint_identity;
use crate::state::MeshView;
use trustmesh_policies::ServiceEntry;

impl Outbound {
    /// [`Outbound::try_endpoint`] for a request rewritten for the HTTP/1.1 hop.
    pub(super) async fn try_http1(
        &self,
        service: &ServiceEntry,
        mesh: &MeshView,
        addr: &str,
        req: Request<Body>,
        sent: &mut Finisher<'_>,
        replay: &Option<Head>,
    ) -> Attempt {
        let target = || format!("{}.{} ({addr})", service.name, service.namespace);
        let identity = endpoint_identity(service, addr);
        let config = match mesh.http1_client_config(&self.shared.resolver, identity) {
            Ok(c) => c,
            Err(e) => return no_client_config(service, e, sent),
        };
        let sni = || service.fqdn();
        let connect = self.config.connect_timeout;
        let mut req = req;
        // Each pass either takes an idle connection (dropped if it fails) or makes a new one
        // (the last pass), so this ends.
        loop {
            let taken = self
                .http1_pool
                .take(addr, identity, &sni, config.clone(), connect, &target)
                .await;
            let mut taken = match taken {
                Ok(t) => t,
                Err(e) => {
                    sent.finish(Outcome::Failed(Reason::Connect));
                    return Attempt::Again(req, e);
                }
            };
            // Timing out from here on is a timeout of the endpoint's.
            sent.on_drop = Some(Outcome::Failed(Reason::Timeout));
            match taken.sender().try_send_request(req).await {
                Ok(resp) => {
                    self.http1_pool.give_back(addr, identity, taken);
                    return super::answered(resp, identity, sent);
                }
                Err(mut e) if taken.reused() => {
                    if let Some(again) = e.take_message() {
                        tracing::debug!(endpoint = %addr, "pooled HTTP/1.1 connection closed while idle; another one");
                        req = again;
                        continue;
                    }
                    match replay.as_ref().filter(|h| super::may_resend(h, e.error())) {
                        Some(head) => {
                            tracing::debug!(endpoint = %addr, "pooled HTTP/1.1 connection lost before an answer; sent again: {}", e.error());
                            req = head.request();
                        }
                        None => return self.failed(e, replay, &target, sent),
                    }
                }
                Err(e) => return self.failed(e, replay, &target, sent),
            }
        }
    }
}

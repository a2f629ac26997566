//! API layer: `POST /v1/inject`, the sidecar-injection webhook. Only the API server's client
//! certificate may call it (401 without one, 403 for another, both before the body is read);
//! the pod rewrite itself is [`crate::domain::inject`].

use http::{Request, StatusCode};
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;
use serde_json::Value;
use trustmesh_certs::{SpiffeId, TrustDomain};

use super::error::{ApiError, Code};
use super::respond::{json, Resp};
use crate::domain::inject::{caller_identity, review_response, InjectConfig};
use crate::domain::trust::TrustView;

/// Largest AdmissionReview accepted (the API server's own limit is 3 MiB).
const MAX_BODY: usize = 3 * 1024 * 1024;

/// Refuses any caller but the API server's certificate: 401 without one, 403 for another.
fn check_caller(caller: Option<&SpiffeId>, td: &TrustDomain) -> Result<(), ApiError> {
    let expected = caller_identity(td).map_err(|e| ApiError::new(Code::Forbidden, e))?;
    match caller {
        None => Err(ApiError::new(
            Code::Unauthenticated,
            format!("the injection webhook needs the API server's client certificate ({expected})"),
        )),
        Some(id) if *id != expected => Err(ApiError::new(
            Code::Forbidden,
            format!("only {expected} may call the injection webhook"),
        )),
        Some(_) => Ok(()),
    }
}

/// `POST /v1/inject`: an AdmissionReview in, an AdmissionReview out, for the API server only
/// (`caller`, the client certificate's identity). A body that is not an AdmissionReview gets
/// `400` with a JSON error; a pod that cannot be read is refused in the AdmissionReview (so the
/// API server shows the reason) rather than let through uninjected.
pub async fn handle(
    req: Request<Incoming>,
    caller: Option<&SpiffeId>,
    trust: &TrustView,
) -> Result<Resp, ApiError> {
    let td = trust.signer.trust_domain();
    check_caller(caller, td)?;
    let body = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| ApiError::new(Code::BadBody, e.to_string()))?
        .to_bytes();
    let review: Value =
        serde_json::from_slice(&body).map_err(|e| ApiError::new(Code::BadJson, e.to_string()))?;
    let config = InjectConfig::new(td.as_str(), trust.bundle.pem());
    review_response(&review, &config)
        .map(|out| json(StatusCode::OK, &out))
        .map_err(|e| ApiError::new(Code::BadAdmissionReview, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_api_servers_certificate_may_call() {
        let td = TrustDomain::parse("cluster.local").unwrap();
        let status = |id: Option<&str>| {
            let id = id.map(|s| SpiffeId::parse(s).unwrap());
            check_caller(id.as_ref(), &td).map_err(|e| e.code().status())
        };
        assert_eq!(status(None), Err(StatusCode::UNAUTHORIZED));
        for other in [
            "spiffe://cluster.local/ns/trustmesh-system/sa/admin",
            "spiffe://cluster.local/ns/shop/sa/kube-apiserver",
            "spiffe://other.domain/ns/trustmesh-system/sa/kube-apiserver",
        ] {
            assert_eq!(status(Some(other)), Err(StatusCode::FORBIDDEN), "{other}");
        }
        assert_eq!(
            status(Some(
                "spiffe://cluster.local/ns/trustmesh-system/sa/kube-apiserver"
            )),
            Ok(())
        );
    }
}

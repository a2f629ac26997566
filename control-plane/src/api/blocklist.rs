//! API layer: `GET /v1/blocklist`, for peer replicas and the admin.

use http::StatusCode;

use super::error::{ApiError, Code};
use super::respond::{json, Resp};
use super::state::{AppState, Caller};
use crate::domain::{blocklist, reserved};

/// `GET /v1/blocklist`: the blocked identities with the dated unblocks, for peer replicas
/// (the control plane's identity) and operators (the admin identity) only.
pub fn blocklist(state: &AppState, caller: &Caller) -> Result<Resp, ApiError> {
    let td = state.trust.current().signer.trust_domain().clone();
    let Some(id) = caller.identity.as_ref() else {
        return Err(ApiError::new(
            Code::Unauthenticated,
            "a control-plane or admin client certificate is required",
        ));
    };
    let allowed = *id == trustmesh_certs::control_plane_identity(&td)
        || reserved::admin_identity(&td).is_ok_and(|admin| admin == *id);
    if !allowed {
        return Err(ApiError::new(
            Code::Forbidden,
            "only the control plane's replicas and the admin identity may read the blocklist",
        ));
    }
    let list = blocklist::read_state(state.trust.dir())
        .map_err(|e| ApiError::new(Code::BlocklistUnreadable, format!("{e:#}")))?;
    Ok(json(StatusCode::OK, &list.to_form()))
}

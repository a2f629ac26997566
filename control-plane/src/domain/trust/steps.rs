//! Domain: the CA rotation's next step for this replica, decided from the trust state in force
//! ([`due`]), the same whether the state lives in the data folder or in the Kubernetes API;
//! each backend then takes the step its own way.

use std::time::{Duration, SystemTime};

use super::TrustView;
use crate::domain::ca::rotation::{self, Rotation};

/// How often a rotation that waits for proxies says so.
const WAIT_LOG_EVERY: Duration = Duration::from_secs(10);

/// What a rotation needs from this replica now.
pub(super) enum Due {
    /// Nothing (no rotation, or not yet time).
    Nothing,
    /// The propagation time is over, but these proxies of this replica lack the new bundle.
    Waiting(Vec<String>),
    /// Switch to the new CA: the propagation time is over and every proxy holds the bundle.
    Switch,
    /// The switch (at this time) is new to this replica: keep the old root long enough for
    /// the certificates it signed with the old CA until now.
    Extend(u64),
    /// The old root may be dropped.
    Finish,
}

/// The next rotation step, from the state in force; the same on both backends.
pub(super) fn due(
    view: &TrustView,
    now: SystemTime,
    noticed_switch: Option<u64>,
    lagging: &dyn Fn(&str) -> Vec<String>,
) -> Due {
    match &view.rotation {
        None => Due::Nothing,
        Some(Rotation::Propagating {
            started_at,
            propagate_secs,
        }) => {
            if rotation::unix(now) < started_at + propagate_secs {
                return Due::Nothing;
            }
            let behind = lagging(&view.generation);
            if behind.is_empty() {
                Due::Switch
            } else {
                Due::Waiting(behind)
            }
        }
        Some(Rotation::Issuing {
            switched_at,
            old_root_until,
            ..
        }) => {
            if noticed_switch != Some(*switched_at) {
                Due::Extend(*switched_at)
            } else if rotation::unix(now) >= *old_root_until {
                Due::Finish
            } else {
                Due::Nothing
            }
        }
    }
}

pub(super) fn log_switch() {
    tracing::info!(
        target: "ca",
        "CA rotation: every proxy holds the new trust bundle; the new CA issues from now on"
    );
}

pub(super) fn log_finish() {
    tracing::info!(
        target: "ca",
        "CA rotation done: no certificate of the old CA can still be valid; the old root is dropped"
    );
}

/// Logs, at most every [`WAIT_LOG_EVERY`], the proxies a rotation waits for.
pub(super) fn log_waiting(waiting: &[String], last: &mut Option<tokio::time::Instant>) {
    if last.is_some_and(|t| t.elapsed() < WAIT_LOG_EVERY) {
        return;
    }
    tracing::info!(
        target: "ca",
        proxies = %waiting.join(", "),
        "CA rotation: waiting for proxies to hold the new trust bundle"
    );
    *last = Some(tokio::time::Instant::now());
}

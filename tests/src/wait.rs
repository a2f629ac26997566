//! Bounded polling: the only waiting the tests do. Every loop has a deadline and a step.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often [`poll_until`] retries.
pub const POLL_STEP: Duration = Duration::from_millis(50);

/// Calls `check` until it returns `Ok(Some(v))`, an `Err` (which aborts), or `timeout` passes.
/// On timeout the error names `what` and the last `Ok(None)` reason is lost; callers add logs.
pub async fn poll_until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(POLL_STEP).await;
    }
}

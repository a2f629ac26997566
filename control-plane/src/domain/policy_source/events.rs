//! Watching the policy folder: which file events can change it, and when to look again.
//!
//! Only events that can change content wake the watcher: create, modify (data or name),
//! close after write, move and delete. Opens, reads and closes without a write do not, so
//! the watcher's own scans and loads (and `git status`) never wake it. A burst of events (a
//! git checkout writes many files) is debounced into one scan, made [`QUIET`] after its last
//! event. In a git checkout an edit is usually followed by its commit (write, `git add`,
//! `git commit`): while the checkout has uncommitted changes the load waits for the commit
//! (at most [`COMMIT_HOLD`]), so that the change is one load with the commit's version rather
//! than two (the content hash, then the commit). A slow periodic scan stays as
//! the safety net for what inotify misses (network filesystems); it is fast only when file
//! events could not start.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
use tokio::sync::Notify;

use super::{fingerprint, git, PolicySource};

/// The periodic scan while file events work (a safety net only).
const RESCAN_WITH_EVENTS: Duration = Duration::from_secs(10);
/// The periodic scan when file events could not start.
const RESCAN_WITHOUT_EVENTS: Duration = Duration::from_millis(500);
/// A burst of events is over once none came for this long (the events of one git command
/// come within a millisecond or two of each other)...
const QUIET: Duration = Duration::from_millis(20);
/// ...or, for a burst that does not end, after this long.
const MAX_DELAY: Duration = Duration::from_secs(1);
/// Longest wait for the commit of uncommitted changes in a git checkout; an edit nobody
/// commits is put in force (as its content hash) after it.
const COMMIT_HOLD: Duration = Duration::from_secs(1);

/// Whether a file event can change what the folder holds.
fn changes_content(kind: &EventKind) -> bool {
    match kind {
        EventKind::Create(_) | EventKind::Remove(_) => true,
        // A change of mode or times leaves the content as it is.
        EventKind::Modify(ModifyKind::Metadata(_)) => false,
        EventKind::Modify(_) => true,
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        // Opens and reads: our own scans and loads cause these.
        EventKind::Access(_) => false,
        EventKind::Any | EventKind::Other => true,
    }
}

/// Events that passed [`changes_content`]: a wake, and when the burst began and last grew.
#[derive(Default)]
struct Events {
    wake: Notify,
    /// When the first and the last event of the burst not yet scanned came.
    burst: std::sync::Mutex<Burst>,
}

/// The times of a burst's first and last events.
#[derive(Default)]
struct Burst {
    first: Option<Instant>,
    last: Option<Instant>,
}

impl Events {
    fn last(&self) -> Option<Instant> {
        self.burst.lock().ok().and_then(|b| b.last)
    }

    /// The first event's time, forgetting the burst.
    fn take_first(&self) -> Option<Instant> {
        self.burst
            .lock()
            .ok()
            .and_then(|mut b| std::mem::take(&mut *b).first)
    }
}

impl PolicySource {
    /// Watches the folder until the process ends: a file event that can change content
    /// triggers a scan once its burst is over, and a periodic scan catches whatever events
    /// miss. A scan that finds the folder as it was (names, sizes, times) loads nothing; every
    /// scan counts in `trustmesh_cp_policy_scans_total`.
    pub async fn watch(self: Arc<Self>) {
        let events = Arc::new(Events::default());
        let mut link = std::fs::read_link(&self.dir).ok();
        let mut watcher = file_events(&self.dir, events.clone());
        let period = |w: &Option<notify::RecommendedWatcher>| {
            if w.is_some() {
                RESCAN_WITH_EVENTS
            } else {
                RESCAN_WITHOUT_EVENTS
            }
        };
        let mut ticker = tokio::time::interval(period(&watcher));
        // The fingerprint `load` took before reading the folder: the first pass loads again
        // only when the folder changed since (during or after `load`), so nothing is missed
        // and an unchanged folder is not read twice.
        let mut last_fp = self
            .loaded_fp
            .lock()
            .map(|mut fp| std::mem::take(&mut *fp))
            .unwrap_or_default();
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                () = events.wake.notified() => settle(&events).await,
            }
            self.scans.inc();
            if fingerprint(&self.dir) == last_fp {
                events.take_first();
                continue;
            }
            let held = self.hold_for_commit(&events).await;
            let first_event = events.take_first();
            let scan_at = Instant::now();
            last_fp = fingerprint(&self.dir);
            // A folder swapped through a symlink (git-sync): watch the new target's files.
            let now_link = std::fs::read_link(&self.dir).ok();
            if now_link != link {
                link = now_link;
                drop(watcher.take());
                watcher = file_events(&self.dir, events.clone());
            }
            let me = self.clone();
            match tokio::task::spawn_blocking(move || me.load_now()).await {
                Ok(loaded) => {
                    tracing::debug!(
                        target: "policy",
                        since_first_event = ?first_event.map(|f| scan_at.saturating_duration_since(f)),
                        held_for_commit = held,
                        load = ?scan_at.elapsed(),
                        "folder changed: scanned and loaded"
                    );
                    self.put_in_force(loaded);
                }
                Err(e) => tracing::warn!(target: "policy", "policy load task failed: {e}"),
            }
        }
    }
}

impl PolicySource {
    /// While the folder is a git checkout with uncommitted changes, waits for more events
    /// (their burst settled) until it is clean or [`COMMIT_HOLD`] has passed; whether it
    /// waited at all.
    async fn hold_for_commit(&self, events: &Events) -> bool {
        let until = tokio::time::Instant::now() + COMMIT_HOLD;
        let mut held = false;
        loop {
            let dir = self.dir.clone();
            let uncommitted = tokio::task::spawn_blocking(move || git::uncommitted(&dir))
                .await
                .unwrap_or(false);
            if !uncommitted {
                return held;
            }
            held = true;
            match tokio::time::timeout_at(until, events.wake.notified()).await {
                Ok(()) => settle(events).await,
                Err(_) => return held,
            }
        }
    }
}

/// Waits until no event came for [`QUIET`] after the last one (at most [`MAX_DELAY`]), then
/// forgets the wake that the events of the burst left behind.
async fn settle(events: &Events) {
    let start = Instant::now();
    loop {
        let quiet_at = events.last().unwrap_or(start) + QUIET;
        let until = quiet_at.min(start + MAX_DELAY);
        if Instant::now() >= until {
            break;
        }
        tokio::time::sleep_until(until.into()).await;
    }
    // Events until here are covered by the scan that follows; a later one wakes again.
    let _ = tokio::time::timeout(Duration::ZERO, events.wake.notified()).await;
}

/// Starts an inotify watcher on the folder and on its parent (so that a folder swapped
/// through a symlink, as git-sync does, is seen). `None` when it cannot start; the periodic
/// scan then runs often.
fn file_events(dir: &Path, events: Arc<Events>) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher as _;
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // An error (an overflowed queue) may hide a change: look.
        if event.is_ok_and(|e| !changes_content(&e.kind)) {
            return;
        }
        if let Ok(mut burst) = events.burst.lock() {
            let now = Instant::now();
            burst.first.get_or_insert(now);
            burst.last = Some(now);
        }
        events.wake.notify_one();
    })
    .map_err(|e| tracing::warn!(target: "policy", "file events unavailable, rescanning only: {e}"))
    .ok()?;
    if let Err(e) = watcher.watch(dir, notify::RecursiveMode::Recursive) {
        tracing::warn!(target: "policy", "cannot watch {}: {e}", dir.display());
    }
    let parent: Option<PathBuf> = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf);
    if let Some(parent) = parent {
        let _ = watcher.watch(&parent, notify::RecursiveMode::NonRecursive);
    }
    Some(watcher)
}

#[cfg(test)]
mod tests;

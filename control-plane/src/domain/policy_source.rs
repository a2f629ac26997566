//! Domain: the policy source: the policy folder (usually a git checkout) is loaded at start and then
//! watched. A new version is put in force only when the whole folder validates; otherwise the
//! errors are logged, kept for the admin's `GET /v1/proxies`, and the last good set stays in
//! force.
//!
//! The version is `git:<HEAD commit>` for a clean git checkout, else `sha256:<content hash>`;
//! a git-ignored policy file is an error ([`git`]).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::sync::watch;
use trustmesh_policies::{CompiledPolicies, LoadCache, PolicySet};

use crate::domain::discovery::Discovered;

mod events;
pub mod follow;
pub mod git;
mod merge;

pub use merge::merge;

/// A policy set in force, with its version.
#[derive(Debug)]
pub struct PolicyState {
    /// `git:<commit>` or `sha256:<hash>`; in Kubernetes mode followed by `+k` and the hash of
    /// the discovered registry ([`merge`]).
    pub version: String,
    /// The validated set.
    pub set: PolicySet,
    /// The same set compiled once (for deciding which registry entries each proxy may call).
    pub compiled: CompiledPolicies,
    /// What discovery found (Kubernetes mode), merged into `set.registry`.
    pub discovered: Option<Arc<Discovered>>,
}

/// Watches the policy folder and publishes every valid version.
pub struct PolicySource {
    dir: PathBuf,
    tx: watch::Sender<Arc<PolicyState>>,
    /// The policy folder's set alone (what `tx` carries outside Kubernetes mode).
    git: Mutex<Arc<PolicyState>>,
    /// The last discovered registry (Kubernetes mode), merged into what `tx` carries.
    discovered: Mutex<Option<Arc<Discovered>>>,
    last_error: Mutex<Option<String>>,
    /// Each file's parse from the last load, so that a new version parses only what changed.
    cache: Mutex<LoadCache>,
    /// The folder's fingerprint taken just before `load` read it: the watcher's first pass
    /// starts from it (taken once), so an unchanged folder is not loaded a second time.
    loaded_fp: Mutex<Fingerprint>,
    /// `trustmesh_cp_policy_reload_total{result}`: `ok` (a new version in force), `unchanged`
    /// (valid, same version) or `error` (rejected; the last good version stays).
    pub reloads: prometheus::IntCounterVec,
    /// `trustmesh_cp_policy_scans_total`: looks at the folder (a listing of names, sizes and
    /// times; only a difference loads it), on a file event or the periodic safety net.
    pub scans: prometheus::IntCounter,
}

impl PolicySource {
    /// Loads the folder once; fails (with every error) when it is not valid, since there is no
    /// last good set to fall back on at start.
    pub fn load(dir: &Path) -> anyhow::Result<Arc<Self>> {
        let mut cache = LoadCache::default();
        // Before the files are read: a change while they are makes the watcher's first pass
        // see a difference and load again.
        let loaded_fp = fingerprint(dir);
        let state = load_state(dir, &mut cache).map_err(|errors| {
            anyhow::anyhow!(
                "the policy folder {} is not valid:\n{}",
                dir.display(),
                errors.join("\n")
            )
        })?;
        for w in &state.set.warnings {
            tracing::warn!(target: "policy", "{w}");
        }
        tracing::info!(target: "policy", version = %state.version, dir = %dir.display(), "policies loaded");
        let state = Arc::new(state);
        let (tx, _) = watch::channel(state.clone());
        let reloads = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "trustmesh_cp_policy_reload_total",
                "Reads of the policy folder by result (ok: new version in force, unchanged, error: rejected).",
            ),
            &["result"],
        )?;
        // Every result from the start (at zero), so an alert on errors works before the first.
        for result in ["unchanged", "error"] {
            reloads.with_label_values(&[result]);
        }
        reloads.with_label_values(&["ok"]).inc();
        let scans = prometheus::IntCounter::new(
            "trustmesh_cp_policy_scans_total",
            "Looks at the policy folder (on a file event or the periodic check); only a difference loads it.",
        )?;
        Ok(Arc::new(Self {
            dir: dir.to_path_buf(),
            tx,
            git: Mutex::new(state),
            discovered: Mutex::new(None),
            last_error: Mutex::new(None),
            cache: Mutex::new(cache),
            loaded_fp: Mutex::new(loaded_fp),
            reloads,
            scans,
        }))
    }

    /// A receiver that sees every new version.
    pub fn subscribe(&self) -> watch::Receiver<Arc<PolicyState>> {
        self.tx.subscribe()
    }

    /// The set in force.
    pub fn current(&self) -> Arc<PolicyState> {
        self.tx.borrow().clone()
    }

    /// The policy folder's set alone, without what discovery found.
    fn git_state(&self) -> Arc<PolicyState> {
        self.git
            .lock()
            .map(|g| g.clone())
            .unwrap_or_else(|_| self.current())
    }

    /// Puts a newly discovered registry in force (Kubernetes mode): merged with the policy
    /// folder's, it is a new version that wakes every waiting snapshot poll. The same registry
    /// again changes nothing.
    pub fn set_discovered(&self, discovered: Discovered) {
        let Ok(mut d) = self.discovered.lock() else {
            return;
        };
        if d.as_ref().is_some_and(|old| old.hash == discovered.hash) {
            return;
        }
        *d = Some(Arc::new(discovered));
        drop(d);
        self.publish();
    }

    /// Sends the policy folder's set merged with the discovered registry.
    fn publish(&self) {
        let git = self.git_state();
        let discovered = self.discovered.lock().ok().and_then(|d| d.clone());
        let state = match discovered {
            Some(d) => merge(&git, d),
            None => git,
        };
        self.tx.send_replace(state);
    }

    /// The errors of the last rejected version, if the newest version on disk is bad.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    /// Puts a loaded folder in force (a new version), counts an unchanged one, or reports and
    /// keeps the last good set when it has errors.
    fn put_in_force(&self, loaded: Result<PolicyState, Vec<String>>) {
        match loaded {
            Ok(state) => {
                if let Ok(mut e) = self.last_error.lock() {
                    *e = None;
                }
                if state.version == self.git_state().version {
                    self.reloads.with_label_values(&["unchanged"]).inc();
                    return;
                }
                self.reloads.with_label_values(&["ok"]).inc();
                for w in &state.set.warnings {
                    tracing::warn!(target: "policy", "{w}");
                }
                tracing::info!(target: "policy", version = %state.version, "new policy version in force");
                if let Ok(mut git) = self.git.lock() {
                    *git = Arc::new(state);
                }
                self.publish();
            }
            Err(errors) => {
                self.reloads.with_label_values(&["error"]).inc();
                for e in &errors {
                    tracing::warn!(target: "policy", "{e}");
                }
                tracing::warn!(
                    target: "policy",
                    kept = %self.current().version,
                    "the policy folder has errors; the last good version stays in force"
                );
                if let Ok(mut last) = self.last_error.lock() {
                    *last = Some(errors.join("\n"));
                }
            }
        }
    }
}

impl PolicySource {
    /// Loads the folder as it is now, parsing only the files changed since the last load.
    fn load_now(&self) -> Result<PolicyState, Vec<String>> {
        match self.cache.lock() {
            Ok(mut cache) => load_state(&self.dir, &mut cache),
            Err(_) => load_state(&self.dir, &mut LoadCache::default()),
        }
    }
}

/// Loads, validates and compiles `dir` (taking unchanged files' parses from `cache`) and
/// finds its version.
fn load_state(dir: &Path, cache: &mut LoadCache) -> Result<PolicyState, Vec<String>> {
    let started = std::time::Instant::now();
    let parsed_before = cache.files_parsed();
    let (set, compiled) = trustmesh_policies::load_dir_compiled(dir, cache)
        .map_err(|diags| diags.iter().map(|d| d.to_string()).collect::<Vec<_>>())?;
    let loaded = started.elapsed();
    let version = git::version(dir)?.unwrap_or_else(|| format!("sha256:{}", set.content_hash));
    tracing::debug!(
        target: "policy",
        files_parsed = cache.files_parsed() - parsed_before,
        files = cache.len(),
        ?loaded,
        total = ?started.elapsed(),
        "policy folder loaded"
    );
    Ok(PolicyState {
        version,
        set,
        compiled,
        discovered: None,
    })
}

/// What [`fingerprint`] gives: each file's path, size and modification time, sorted.
type Fingerprint = Vec<(PathBuf, u64, Option<SystemTime>)>;

/// A cheap summary of the folder (names, sizes, modification times, link targets) to decide
/// whether it must be loaded again.
fn fingerprint(dir: &Path) -> Fingerprint {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    if let Ok(target) = std::fs::read_link(dir) {
        out.push((target, 0, None));
    }
    let mut budget = 10_000usize;
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            budget = budget.saturating_sub(1);
            if budget == 0 {
                return out;
            }
            let path = entry.path();
            let name = entry.file_name();
            if name.to_string_lossy().starts_with('.') && name != ".git" {
                continue;
            }
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if name == ".git" {
                // HEAD moves on a commit even when no policy file changes.
                if let Ok(m) = std::fs::metadata(path.join("HEAD")) {
                    out.push((path.join("HEAD"), m.len(), m.modified().ok()));
                }
                if let Ok(m) = std::fs::metadata(path.join("refs/heads")) {
                    out.push((path.join("refs/heads"), m.len(), m.modified().ok()));
                }
                continue;
            }
            if meta.is_dir() {
                stack.push(path);
            } else {
                out.push((path, meta.len(), meta.modified().ok()));
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn write_set(dir: &Path, extra_service: bool) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("mesh.yaml"), "trust_domain: cluster.local\n").unwrap();
        let mut services = String::from(
            "apiVersion: trustmesh.io/v1\nkind: Service\nmetadata: {name: a, namespace: t}\n\
             spec: {identity: spiffe://cluster.local/ns/t/sa/a, endpoints: [\"127.0.0.1:1\"]}\n",
        );
        if extra_service {
            services.push_str(
                "---\napiVersion: trustmesh.io/v1\nkind: Service\nmetadata: {name: b, namespace: t}\n\
                 spec: {identity: spiffe://cluster.local/ns/t/sa/b, endpoints: [\"127.0.0.1:2\"]}\n",
            );
        }
        std::fs::write(dir.join("services.yaml"), services).unwrap();
    }

    /// git-sync publishes a new revision by atomically replacing a symlink.
    #[tokio::test]
    async fn picks_up_a_folder_swapped_through_a_symlink_and_keeps_the_last_good_set() {
        let tmp = tempfile::tempdir().unwrap();
        write_set(&tmp.path().join("rev1"), false);
        write_set(&tmp.path().join("rev2"), true);
        let current = tmp.path().join("current");
        std::os::unix::fs::symlink(tmp.path().join("rev1"), &current).unwrap();
        let source = PolicySource::load(&current).unwrap();
        let first = source.current().version.clone();
        assert_eq!(source.current().set.registry.entries().len(), 1);
        tokio::spawn(source.clone().watch());

        let swap = |target: &str| {
            let tmp_link = tmp.path().join("current.tmp");
            let _ = std::fs::remove_file(&tmp_link);
            std::os::unix::fs::symlink(tmp.path().join(target), &tmp_link).unwrap();
            std::fs::rename(&tmp_link, &current).unwrap();
        };
        swap("rev2");
        let mut rx = source.subscribe();
        tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|s| s.version != first))
            .await
            .expect("the swapped folder is picked up within 5 s")
            .unwrap();
        assert_eq!(source.current().set.registry.entries().len(), 2);

        // A bad revision keeps the last good set in force and is reported.
        let bad = tmp.path().join("rev3");
        write_set(&bad, true);
        std::fs::write(bad.join("broken.yaml"), "kind: Nonsense\n").unwrap();
        let good = source.current().version.clone();
        swap("rev3");
        for _ in 0..100 {
            if source.last_error().is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let err = source.last_error().expect("the bad revision is reported");
        assert!(err.contains("broken.yaml:"), "{err}");
        assert_eq!(source.current().version, good);
    }

    /// Reading the version must never write to the checkout: `git status` refreshes a stale
    /// index under `.git/index.lock` unless told not to, and a commit racing it then fails.
    #[test]
    fn reading_the_git_version_leaves_the_index_alone() {
        use std::os::unix::fs::MetadataExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        write_set(dir, false);
        let git = |args: &[&str]| {
            let out = std::process::Command::new("git")
                .arg("-C")
                .arg(dir)
                .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
                .args(args)
                .output()
                .unwrap();
            assert!(out.status.success(), "git {args:?}");
        };
        git(&["init", "-q"]);
        git(&["add", "-A"]);
        git(&["commit", "-q", "-m", "one"]);
        // Same content, new modification time: the index's stat data is now stale.
        std::thread::sleep(Duration::from_millis(1100));
        let services = std::fs::read(dir.join("services.yaml")).unwrap();
        std::fs::write(dir.join("services.yaml"), services).unwrap();
        let index = dir.join(".git/index");
        let before = std::fs::metadata(&index).unwrap();

        let version = git::version(dir)
            .unwrap()
            .expect("a clean checkout has a git version");
        assert!(version.starts_with("git:"), "{version}");

        let after = std::fs::metadata(&index).unwrap();
        assert_eq!(
            (before.ino(), before.mtime_nsec(), before.mtime()),
            (after.ino(), after.mtime_nsec(), after.mtime()),
            "git_head rewrote .git/index"
        );
    }
}

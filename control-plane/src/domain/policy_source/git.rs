//! Domain: the version of a policy folder that is a git checkout: `git:<HEAD>` only when what is loaded
//! is exactly what HEAD holds.
//!
//! A file git does not track is loaded like any other, so the version must not claim HEAD:
//! a modified or untracked file (what `git status` shows) makes the folder a work in progress,
//! versioned by its content hash like a plain folder. A **git-ignored** policy file is refused
//! outright, naming the file: it is declared never to be part of the history, so nobody who
//! reviews the repository would ever see the rule it enforces, and a content hash would only
//! say that something differs, not what. Refused, it keeps the last good set in force (and
//! stops a start) like any invalid file until it is committed or moved out of the folder.

use std::path::Path;
use std::process::{Command, Stdio};

/// The version of `dir` when it is a git checkout: `Ok(Some("git:<HEAD>"))` when clean,
/// `Ok(None)` when it is no checkout or has modified or untracked files (the caller then uses
/// the content hash), `Err` with one `FILE:1:1: message` per git-ignored policy file.
pub(super) fn version(dir: &Path) -> Result<Option<String>, Vec<String>> {
    let Some(head) = git(dir, &["rev-parse", "HEAD"]).filter(|h| !h.is_empty()) else {
        return Ok(None);
    };
    let ignored = ignored_policy_files(dir);
    if !ignored.is_empty() {
        return Err(ignored);
    }
    let Some(dirty) = git(dir, &["status", "--porcelain", "--", "."]) else {
        return Ok(None);
    };
    Ok(dirty.is_empty().then(|| format!("git:{head}")))
}

/// Whether `dir` is a git checkout with changes not committed (what `git status` shows:
/// modified, staged or untracked files); `false` for a folder that is no checkout.
pub(super) fn uncommitted(dir: &Path) -> bool {
    git(dir, &["rev-parse", "HEAD"]).is_some_and(|h| !h.is_empty())
        && git(dir, &["status", "--porcelain", "--", "."]).is_some_and(|s| !s.is_empty())
}

/// One error per git-ignored file under `dir` that the loader would read (a `*.yaml` or
/// `*.yml` with no hidden path component); none when `dir` is no git checkout.
pub fn ignored_policy_files(dir: &Path) -> Vec<String> {
    // Without `--directory`, files inside an ignored folder are listed one by one.
    let Some(listed) = git(
        dir,
        &[
            "ls-files",
            "-z",
            "--others",
            "--ignored",
            "--exclude-standard",
            "--",
            ".",
        ],
    ) else {
        return Vec::new();
    };
    listed
        .split('\0')
        .filter(|rel| loaded_by_the_policy_loader(rel))
        .map(|rel| {
            format!(
                "{}:1:1: this policy file is git-ignored, so the version in force would not \
                 show it: commit it, or move it out of the policy folder",
                dir.join(rel).display()
            )
        })
        .collect()
}

/// What `trustmesh_policies::load_dir` reads: YAML files, no component hidden.
fn loaded_by_the_policy_loader(rel: &str) -> bool {
    !rel.is_empty()
        && rel.split('/').all(|c| !c.is_empty() && !c.starts_with('.'))
        && (rel.ends_with(".yaml") || rel.ends_with(".yml"))
}

/// Runs `git -C dir ARGS`; its standard output, trimmed, when it succeeds.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    // `--no-optional-locks`: `git status` would otherwise refresh the index under
    // `.git/index.lock`, and a `git add` or `git pull` running at that moment in the
    // checkout (an operator's, or git-sync's) would fail.
    Command::new("git")
        .arg("--no-optional-locks")
        .arg("-C")
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_files_the_loader_reads_count() {
        assert!(loaded_by_the_policy_loader("local.yaml"));
        assert!(loaded_by_the_policy_loader("ns/extra.yml"));
        assert!(!loaded_by_the_policy_loader("notes.txt"));
        assert!(!loaded_by_the_policy_loader(".hidden.yaml"));
        assert!(!loaded_by_the_policy_loader(".worktrees/x/a.yaml"));
        assert!(!loaded_by_the_policy_loader(""));
    }
}

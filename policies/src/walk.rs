//! Finding the policy files: every `*.yaml` / `*.yml` file under the folder, recursively, in
//! a stable sorted order, skipping hidden entries (`.git`, git-sync's `.worktrees`). The folder
//! itself may be a symlink (git-sync swaps one atomically); inside it, symlinks to files are
//! followed and symlinks to directories are not (so that a link cannot make a loop).

use std::fs;
use std::path::{Path, PathBuf};

use crate::diagnostic::Diagnostic;

/// A policy file found in the folder.
#[derive(Debug, Clone)]
pub(crate) struct FoundFile {
    /// The path relative to the folder, `/`-separated (what the content hash covers).
    pub rel: String,
    /// The path to open and to report, the folder joined with `rel`.
    pub path: PathBuf,
}

/// The YAML files under `dir`, sorted by relative path, and a diagnostic per entry that could
/// not be read.
pub(crate) fn yaml_files(dir: &Path) -> (Vec<FoundFile>, Vec<Diagnostic>) {
    let mut files = Vec::new();
    let mut problems = Vec::new();
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => visit(dir, "", &mut files, &mut problems),
        Ok(_) => problems.push(Diagnostic::error(dir, 1, 1, "not a directory")),
        Err(e) => problems.push(Diagnostic::error(
            dir,
            1,
            1,
            format!("cannot read the policy folder: {e}"),
        )),
    }
    files.sort_by(|a, b| a.rel.cmp(&b.rel));
    (files, problems)
}

fn visit(dir: &Path, rel: &str, files: &mut Vec<FoundFile>, problems: &mut Vec<Diagnostic>) {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            problems.push(Diagnostic::error(
                dir,
                1,
                1,
                format!("cannot list directory: {e}"),
            ));
            return;
        }
    };
    let mut names = Vec::new();
    for entry in entries {
        match entry {
            Ok(entry) => names.push(entry.file_name()),
            Err(e) => problems.push(Diagnostic::error(
                dir,
                1,
                1,
                format!("cannot list directory: {e}"),
            )),
        }
    }
    names.sort();
    for name in names {
        let path = dir.join(&name);
        let Some(name) = name.to_str() else {
            problems.push(Diagnostic::error(&path, 1, 1, "file name is not UTF-8"));
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        let child_rel = if rel.is_empty() {
            name.to_string()
        } else {
            format!("{rel}/{name}")
        };
        let link = fs::symlink_metadata(&path)
            .map(|m| m.file_type().is_symlink())
            .unwrap_or(false);
        match fs::metadata(&path) {
            Ok(m) if m.is_dir() && !link => visit(&path, &child_rel, files, problems),
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.is_file() && is_yaml(name) => files.push(FoundFile {
                rel: child_rel,
                path,
            }),
            Ok(_) => {}
            Err(e) if is_yaml(name) => {
                problems.push(Diagnostic::error(&path, 1, 1, format!("cannot read: {e}")));
            }
            Err(_) => {}
        }
    }
}

fn is_yaml(name: &str) -> bool {
    name.ends_with(".yaml") || name.ends_with(".yml")
}

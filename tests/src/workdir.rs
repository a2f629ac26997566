//! A test's own temporary folder: policies, the control plane's data, tokens and every log.
//! It is removed when the test passes and kept (its path printed) when the test panics, so the
//! logs of a failure can be read afterwards.

use std::path::Path;

use anyhow::Context as _;
use tempfile::TempDir;

/// A temporary folder that survives a failing test.
#[derive(Debug)]
pub struct WorkDir {
    dir: Option<TempDir>,
}

impl WorkDir {
    /// A fresh folder under the system temp dir, named after `test`.
    pub fn new(test: &str) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("trustmesh-e2e-{test}-"))
            .tempdir()
            .context("creating a temporary folder")?;
        Ok(Self { dir: Some(dir) })
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        self.dir
            .as_ref()
            .map_or(Path::new("/nonexistent"), |d| d.path())
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(dir) = self.dir.take() {
                let kept = dir.keep();
                eprintln!("test files and logs kept in {}", kept.display());
            }
        }
    }
}

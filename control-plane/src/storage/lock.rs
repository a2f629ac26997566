//! Storage: the data folder's lock. Every `trustmesh` process that works on one `--data-dir` (two
//! `serve` replicas, and the CLI's `token create`, `ca rotate`, `identity block`) takes it
//! around each read-modify-write of shared state: the used-token list, the blocklist, the CA
//! files and the rotation state. So a token is spent once across replicas, two replicas never
//! both create a CA on first start, and nobody reads half of a CA switch.
//!
//! The lock is `flock(2)` on `<data-dir>/.lock` (through `fs4`): advisory, released by the
//! kernel when the holder exits or dies, so a crashed replica never leaves it held. It works on
//! a local filesystem and on NFSv4; it is held for milliseconds at a time.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use anyhow::Context as _;

pub use super::paths::LOCK_FILE;

/// The data folder's exclusive lock, held until dropped.
#[derive(Debug)]
pub struct DataDirLock {
    // Closing the file releases the flock.
    _file: File,
}

impl DataDirLock {
    /// Blocks until this process holds the lock of `dir`.
    pub fn acquire(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("opening the lock file {}", path.display()))?;
        fs4::FileExt::lock(&file).with_context(|| format!("locking {}", path.display()))?;
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn a_second_holder_waits_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path()).unwrap();
        let got = Arc::new(AtomicBool::new(false));
        let (path, flag) = (dir.path().to_path_buf(), got.clone());
        // flock locks belong to the open file, so a second open in this process contends
        // exactly as another replica would.
        let t = std::thread::spawn(move || {
            let _second = DataDirLock::acquire(&path).unwrap();
            flag.store(true, Ordering::SeqCst);
        });
        std::thread::sleep(Duration::from_millis(100));
        assert!(!got.load(Ordering::SeqCst), "the lock must be exclusive");
        drop(first);
        t.join().unwrap();
        assert!(got.load(Ordering::SeqCst));
    }
}

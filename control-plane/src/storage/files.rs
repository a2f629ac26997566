//! Storage: writing state files safely: secrets are created with mode 0600 inside a 0700 folder, and
//! every file is replaced atomically (write a temporary file, fsync, rename) so that a crash
//! never leaves half a key or half a trust bundle behind.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::Context as _;

/// Creates `dir` (and parents) with mode 0700 if it does not exist.
pub fn ensure_private_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating the data folder {}", dir.display()))
}

/// Atomically writes `contents` to `path` with the given mode.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    // The mode given to open() is filtered by the umask; set it explicitly.
    f.set_permissions(fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", tmp.display()))?;
    f.write_all(contents)
        .and_then(|_| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

/// Refuses a secret file that group or others may read or write.
pub fn check_private(path: &Path) -> anyhow::Result<()> {
    let meta = fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        anyhow::bail!(
            "{} has mode {:04o}: a private key must not be readable by group or others; \
             run `chmod 600 {}`",
            path.display(),
            mode,
            path.display()
        );
    }
    Ok(())
}

/// Reads a key the operator brings (`--ca-key`), refusing one that others may read or that
/// anyone but its owner may write. Read access for the file's group is allowed here, and only
/// here: Kubernetes hands a Secret to a non-root container as mode 0440 owned by the pod's
/// `fsGroup`. The copy the control plane keeps in its data folder is always 0600.
pub fn read_operator_key(path: &Path) -> anyhow::Result<String> {
    let meta = fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o037 != 0 {
        anyhow::bail!(
            "{} has mode {:04o}: a private key must not be readable by others nor writable by \
             its group; run `chmod 600 {}` (0440 from a Kubernetes Secret is accepted)",
            path.display(),
            mode,
            path.display()
        );
    }
    fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// Reads a secret file after checking its mode.
pub fn read_private(path: &Path) -> anyhow::Result<String> {
    check_private(path)?;
    fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_files_are_0600_and_loose_modes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.pem");
        write_atomic(&p, b"secret", 0o600).unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(read_private(&p).unwrap(), "secret");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_private(&p).unwrap_err().to_string();
        assert!(err.contains("0644") && err.contains("chmod 600"), "{err}");
    }

    #[test]
    fn an_operator_key_may_be_group_readable_but_never_world_readable() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.pem");
        write_atomic(&p, b"secret", 0o440).unwrap();
        assert_eq!(read_operator_key(&p).unwrap(), "secret");
        assert!(
            read_private(&p).is_err(),
            "the data folder's own key stays 0600 only"
        );
        for mode in [0o444, 0o460, 0o604] {
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
            assert!(read_operator_key(&p).is_err(), "{mode:o}");
        }
    }
}

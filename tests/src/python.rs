//! The Python interpreter of the real-client suite: a virtualenv with grpcio, websockets,
//! requests and aiohttp, made by `.ci/pyenv.sh`. `TRUSTMESH_PYTHON` names it when set (`.ci/run`
//! sets it); otherwise the script is run once per test process, so README's test command works
//! on its own. A missing interpreter fails the test with the reason; it never skips it.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The venv's `python`, made on first use.
pub fn python() -> Result<PathBuf, String> {
    static PY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PY.get_or_init(|| {
        if let Some(p) = std::env::var_os("TRUSTMESH_PYTHON") {
            return Ok(PathBuf::from(p));
        }
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.ci/pyenv.sh");
        let out = Command::new("bash")
            .arg(&script)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        if !out.status.success() {
            return Err(format!(
                "{} failed: {}",
                script.display(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
        Ok(PathBuf::from(path))
    })
    .clone()
}

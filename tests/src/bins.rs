//! Where the binaries under test live, and building them once per test process.
//!
//! The end-to-end tests run the real `trustmesh` and `trustmesh-proxy` executables. Cargo only
//! builds a package's own binaries for its integration tests, so this crate asks cargo to build
//! the other two packages the first time a test needs them. Cargo releases its build-directory
//! lock before it runs test executables, so a nested `cargo build` from inside `cargo test` does
//! not deadlock; when it is up to date it costs well under a second.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{bail, Context as _};

/// The control plane and operator CLI.
pub const CONTROL_PLANE_BIN: &str = "trustmesh";
/// The sidecar.
pub const PROXY_BIN: &str = "trustmesh-proxy";

/// Set to `1` to use the binaries already in the target folder without running cargo.
pub const NO_BUILD_ENV: &str = "TRUSTMESH_E2E_NO_BUILD";

/// The command that builds everything the end-to-end tests need, for error messages.
pub const BUILD_COMMAND: &str = "cargo build -p trustmesh-control-plane -p trustmesh-proxy";

/// Paths of the two binaries, built (or found) once per test process.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `trustmesh`.
    pub control_plane: PathBuf,
    /// `trustmesh-proxy`.
    pub proxy: PathBuf,
}

static BINARIES: OnceLock<Result<Binaries, String>> = OnceLock::new();

/// Returns the binaries, building them with cargo on the first call in this process.
///
/// They are looked up in the profile folder of the running test executable
/// (`target/<profile>/deps/<test>` → `target/<profile>/`), so `cargo test --release` tests
/// release binaries. Fails with a message that names the build command when cargo is not
/// available or the build fails; a failed build is never papered over with stale binaries.
pub fn binaries() -> anyhow::Result<Binaries> {
    BINARIES
        .get_or_init(|| locate_and_build().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn locate_and_build() -> anyhow::Result<Binaries> {
    let profile_dir = profile_dir()?;
    let bins = Binaries {
        control_plane: profile_dir.join(CONTROL_PLANE_BIN),
        proxy: profile_dir.join(PROXY_BIN),
    };
    if !matches!(std::env::var(NO_BUILD_ENV).as_deref(), Ok("1")) {
        build(&profile_dir)?;
    }
    for bin in [&bins.control_plane, &bins.proxy] {
        if !bin.is_file() {
            bail!(
                "{} does not exist; build it first with `{BUILD_COMMAND}` (or `cargo build \
                 --workspace && cargo test --workspace`)",
                bin.display()
            );
        }
    }
    Ok(bins)
}

/// `target/<profile>` of the running test executable.
fn profile_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("finding the test executable")?;
    let deps = exe
        .parent()
        .with_context(|| format!("{} has no parent folder", exe.display()))?;
    // Test executables live in target/<profile>/deps; anything else (a copied binary) is taken
    // to sit in the profile folder itself.
    let dir = if deps.file_name().is_some_and(|n| n == "deps") {
        deps.parent().unwrap_or(deps)
    } else {
        deps
    };
    Ok(dir.to_path_buf())
}

fn build(profile_dir: &Path) -> anyhow::Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.args([
        "build",
        "-p",
        "trustmesh-control-plane",
        "-p",
        "trustmesh-proxy",
    ]);
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => {}
        Some("release") => {
            cmd.arg("--release");
        }
        Some(other) => {
            cmd.args(["--profile", other]);
        }
    }
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
    let out = cmd
        .output()
        .with_context(|| format!("running {:?}; build first with `{BUILD_COMMAND}`", cargo))?;
    if !out.status.success() {
        bail!(
            "`{BUILD_COMMAND}` failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

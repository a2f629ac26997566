//! `trustmesh policy validate DIR`: every error in the folder as `FILE:LINE:COL: message`.

use std::path::Path;
use std::process::ExitCode;

/// Validates `dir`; exit 0 when valid (warnings printed), 1 with every error otherwise.
pub fn run(dir: &Path) -> ExitCode {
    match trustmesh_policies::load_dir(dir) {
        Ok(set) => {
            for w in &set.warnings {
                eprintln!("{w}");
            }
            println!(
                "{}: valid ({} services, {} policies)",
                dir.display(),
                set.registry.entries().len(),
                set.policies.len()
            );
            ExitCode::SUCCESS
        }
        Err(diags) => {
            for d in &diags {
                eprintln!("{d}");
            }
            ExitCode::from(1)
        }
    }
}

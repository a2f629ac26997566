//! `trustmesh policy validate DIR`: every error in the folder as `FILE:LINE:COL: message`,
//! git-ignored policy files included.

use std::path::Path;
use std::process::ExitCode;

/// Validates `dir`; exit 0 when valid (warnings printed), 1 with every error otherwise.
pub fn run(dir: &Path) -> ExitCode {
    // A git-ignored policy file is refused as `serve` refuses it.
    let ignored = crate::policy_source::git::ignored_policy_files(dir);
    match trustmesh_policies::load_dir(dir) {
        Ok(_) if !ignored.is_empty() => {
            for e in &ignored {
                eprintln!("{e}");
            }
            ExitCode::from(1)
        }
        Ok(set) => {
            for w in &set.warnings {
                eprintln!("{w}");
            }
            println!(
                "{}: valid ({} services, {} policies, {} routes)",
                dir.display(),
                set.registry.entries().len(),
                set.policies.len(),
                set.routes.len()
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

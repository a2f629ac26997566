//! Command line: `trustmesh policy validate DIR`: every error in the folder as `FILE:LINE:COL: message`,
//! git-ignored policy files included.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;

/// `trustmesh policy ...`.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate a policy folder: exit 0, or 1 with every error as FILE:LINE:COL: message.
    Validate {
        /// The policy folder.
        dir: PathBuf,
    },
}

/// Runs `trustmesh policy ...`.
pub fn run(command: PolicyCommand) -> ExitCode {
    match command {
        PolicyCommand::Validate { dir } => validate(&dir),
    }
}

/// Validates `dir`; exit 0 when valid (warnings printed), 1 with every error otherwise.
fn validate(dir: &Path) -> ExitCode {
    // A git-ignored policy file is refused as `serve` refuses it.
    let ignored = crate::domain::policy_source::git::ignored_policy_files(dir);
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

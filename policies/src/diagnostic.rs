//! Diagnostics: one problem found while loading the policy folder, with the file, line and
//! column it is at, printed the way compilers print them (`FILE:LINE:COL: message`) so that
//! editors and CI logs can jump to it.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// How bad a [`Diagnostic`] is. Any error keeps the whole folder out of force; a warning does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// The folder is invalid; the last good policy set stays in force.
    Error,
    /// Suspicious but valid (for example a selector that selects no Service).
    Warning,
}

/// One problem in the policy folder.
///
/// `line` and `col` are 1-based and point at the offending key or value. Shape errors (YAML
/// syntax, unknown or unsupported keys, wrong types) come with serde_yaml's exact position;
/// semantic errors found after parsing (a bad SPIFFE ID, a bad pattern, a duplicate name) are
/// placed by searching the offending value or key within its YAML document, falling back to the
/// document's first line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostic {
    /// The file, as the folder path given to [`crate::load_dir`] joined with the file's relative path.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub col: usize,
    /// What is wrong, in one line.
    pub message: String,
    /// Error or warning.
    pub severity: Severity,
}

impl Diagnostic {
    /// An error at `file:line:col`.
    pub fn error(
        file: impl Into<PathBuf>,
        line: usize,
        col: usize,
        message: impl Into<String>,
    ) -> Self {
        Self {
            file: file.into(),
            line,
            col,
            message: message.into(),
            severity: Severity::Error,
        }
    }

    /// A warning at `file:line:col`.
    pub fn warning(
        file: impl Into<PathBuf>,
        line: usize,
        col: usize,
        message: impl Into<String>,
    ) -> Self {
        Self {
            severity: Severity::Warning,
            ..Self::error(file, line, col, message)
        }
    }

    /// Whether this is an error (as opposed to a warning).
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file.display(), self.line, self.col)?;
        if self.severity == Severity::Warning {
            f.write_str("warning: ")?;
        }
        f.write_str(&self.message)
    }
}

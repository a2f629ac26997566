//! The open-files limit (`RLIMIT_NOFILE`): every connection costs one or two descriptors, and
//! a soft limit of 1024 (the usual default) would refuse connections long before
//! `--max-connections`. At start the soft limit is raised to the hard limit.

/// The open-files limits in force after [`raise`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFiles {
    /// The soft limit (what applies).
    pub soft: u64,
    /// The hard limit (the most the soft one may be raised to).
    pub hard: u64,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and returns both; on failure the limits
/// stay as they were (logged).
pub fn raise() -> Option<OpenFiles> {
    use rlimit::Resource;
    let (soft, hard) = match Resource::NOFILE.get() {
        Ok(limits) => limits,
        Err(e) => {
            tracing::warn!("reading RLIMIT_NOFILE: {e}");
            return None;
        }
    };
    if soft < hard {
        if let Err(e) = Resource::NOFILE.set(hard, hard) {
            tracing::warn!("raising RLIMIT_NOFILE from {soft} to {hard}: {e}");
            return Some(OpenFiles { soft, hard });
        }
    }
    match Resource::NOFILE.get() {
        Ok((soft, hard)) => Some(OpenFiles { soft, hard }),
        Err(e) => {
            tracing::warn!("reading RLIMIT_NOFILE: {e}");
            None
        }
    }
}

//! What each policy file parsed into, kept between loads of one folder ([`LoadCache`]), so
//! that a new version of a large folder re-parses only the files that changed.
//!
//! A file's parse depends on nothing but its path and its bytes (the checks across files run
//! on the whole set at every load), so it is kept with the bytes it came from and taken again
//! only when the file holds exactly those bytes: an edit that keeps the size and the
//! modification time is still seen. (The bytes are compared rather than hashed: the loader
//! reads them anyway for the folder's content hash, and a second SHA-256 of every file costs
//! more than the comparison; the copy costs the folder's size in memory.) Files gone from the
//! folder are dropped at the end of each load.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::diagnostic::Diagnostic;
use crate::mesh::MeshConfig;
use crate::parsed::{Located, Parsed, PolicyDoc, RouteDoc, ServiceDoc};

/// The parse of one file: its documents and the diagnostics the parse found.
#[derive(Debug, Default)]
pub(super) struct FileParse {
    /// `Some` for the folder's `mesh.yaml` (`Some(None)`: it did not parse).
    pub mesh: Option<Option<MeshConfig>>,
    pub services: Vec<Arc<Located<ServiceDoc>>>,
    pub policies: Vec<Arc<Located<PolicyDoc>>>,
    pub routes: Vec<Arc<Located<RouteDoc>>>,
    pub diagnostics: Vec<Diagnostic>,
}

impl FileParse {
    /// Adds this file's documents and diagnostics to the folder's.
    pub fn add_to(&self, parsed: &mut Parsed, diagnostics: &mut Vec<Diagnostic>) {
        if let Some(mesh) = &self.mesh {
            parsed.mesh.clone_from(mesh);
        }
        parsed.services.extend(self.services.iter().cloned());
        parsed.policies.extend(self.policies.iter().cloned());
        parsed.routes.extend(self.routes.iter().cloned());
        diagnostics.extend(self.diagnostics.iter().cloned());
    }
}

/// A kept parse and the bytes it came from.
#[derive(Debug)]
struct Kept {
    bytes: Vec<u8>,
    parse: Arc<FileParse>,
}

/// The parses of a folder's files from its last load; give the same cache to every
/// [`crate::load::load_dir_cached`] of one folder. The result of a load is the same with
/// or without it.
#[derive(Debug, Default)]
pub struct LoadCache {
    files: HashMap<PathBuf, Kept>,
    /// Files parsed (not taken from the cache) since the cache was made.
    parsed: u64,
}

impl LoadCache {
    /// How many files were parsed (rather than taken from the cache) since it was made.
    pub fn files_parsed(&self) -> u64 {
        self.parsed
    }

    /// How many files' parses are kept.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether no parse is kept.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The parse of `path` holding `bytes`: the kept one when the bytes are the same, else
    /// made by `parse` (and kept).
    pub(super) fn get_or_parse(
        &mut self,
        path: &Path,
        bytes: &[u8],
        parse: impl FnOnce() -> FileParse,
    ) -> Arc<FileParse> {
        if let Some(kept) = self.files.get(path).filter(|k| k.bytes == bytes) {
            return kept.parse.clone();
        }
        self.parsed += 1;
        let parse = Arc::new(parse());
        self.files.insert(
            path.to_path_buf(),
            Kept {
                bytes: bytes.to_vec(),
                parse: parse.clone(),
            },
        );
        parse
    }

    /// Drops `path`'s parse (a file that could not be read or decoded this time).
    pub(super) fn forget(&mut self, path: &Path) {
        self.files.remove(path);
    }

    /// Keeps only the parses of `present` (the files of this load).
    pub(super) fn retain(&mut self, present: &[&Path]) {
        let present: std::collections::HashSet<&Path> = present.iter().copied().collect();
        self.files.retain(|p, _| present.contains(p.as_path()));
    }
}

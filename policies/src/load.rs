//! Loading the policy folder: find the files, parse every YAML document into the model, check
//! everything that can be checked, and hand back either a [`PolicySet`] or every problem found.
//!
//! A folder is all or nothing: one error anywhere and no `PolicySet` is made, so the last good
//! set stays in force (see ARCHITECTURE.md, "Policy source"). Every shape error of a document
//! (unknown keys, wrong types, bad values) is reported, each at its own position (see
//! `shape`); a YAML syntax error stops its own document only. Every other document, and every
//! semantic check of the documents that parsed (or had only unknown keys), still runs.

use std::path::Path;
use std::sync::Arc;

use ring::digest;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use trustmesh_certs::TrustDomain;

use crate::authorize::CompiledPolicies;
use crate::check;
use crate::diagnostic::Diagnostic;
use crate::document::{split_documents, Document};
use crate::mesh::{DefaultAction, Enforcement, MeshConfig, OutboundPolicy, MESH_FILE};
use crate::model::AuthorizationPolicy;
use crate::normalize::PathParameters;
use crate::parsed::{Located, Parsed, PolicyDoc, RouteDoc, ServiceDoc};
use crate::registry::Registry;
use crate::route::HttpRoute;
use crate::shape;
use crate::walk::yaml_files;
use crate::yaml_error;

mod cache;

use cache::FileParse;
pub use cache::LoadCache;

/// A fully valid policy folder: the only input from which policies are put in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicySet {
    /// `mesh.yaml` (defaults when the file is absent).
    pub mesh: MeshConfig,
    /// Every `Service` entry.
    pub registry: Registry,
    /// Every `AuthorizationPolicy`, sorted by (namespace, name).
    pub policies: Vec<AuthorizationPolicy>,
    /// Every `HTTPRoute`, sorted by (namespace, name).
    #[serde(default)]
    pub routes: Vec<HttpRoute>,
    /// Warnings found while loading (the set is valid despite them).
    pub warnings: Vec<Diagnostic>,
    /// Hex SHA-256 over every YAML file's relative path and bytes, in sorted order: the
    /// version of a folder that is not a git checkout.
    pub content_hash: String,
}

/// Loads and validates the policy folder `dir`.
///
/// Reads every `*.yaml`/`*.yml` file under `dir` (sorted; hidden entries such as `.git` are
/// skipped; `dir` itself may be a symlink). `mesh.yaml` at the root is the [`MeshConfig`];
/// every other file holds YAML documents of kind `Service`, `AuthorizationPolicy` or
/// `HTTPRoute`.
/// Returns every diagnostic, errors and warnings, sorted by file and position, when any error
/// was found; otherwise the set, with its warnings inside.
pub fn load_dir(dir: &Path) -> Result<PolicySet, Vec<Diagnostic>> {
    load_dir_cached(dir, &mut LoadCache::default())
}

/// [`load_dir`] with the parses of an earlier load of the same folder: a file whose bytes are
/// unchanged is not parsed again (its documents and diagnostics are taken from `cache`), files
/// gone are dropped from it. Every check across files runs on the whole set as in
/// [`load_dir`], and the result is the same.
pub fn load_dir_cached(dir: &Path, cache: &mut LoadCache) -> Result<PolicySet, Vec<Diagnostic>> {
    load_dir_compiled(dir, cache).map(|(set, _)| set)
}

/// [`load_dir_cached`], and the set compiled with the policies the checks compiled (rather
/// than compiling every policy a second time with [`CompiledPolicies::from_set`], which gives
/// the same).
pub fn load_dir_compiled(
    dir: &Path,
    cache: &mut LoadCache,
) -> Result<(PolicySet, CompiledPolicies), Vec<Diagnostic>> {
    let (files, mut diagnostics) = yaml_files(dir);
    let mut hasher = digest::Context::new(&digest::SHA256);
    let mut parsed = Parsed::default();
    for file in &files {
        let bytes = match std::fs::read(&file.path) {
            Ok(b) => b,
            Err(e) => {
                cache.forget(&file.path);
                diagnostics.push(Diagnostic::error(
                    &file.path,
                    1,
                    1,
                    format!("cannot read: {e}"),
                ));
                continue;
            }
        };
        hasher.update(file.rel.as_bytes());
        hasher.update(&[0]);
        hasher.update(&(bytes.len() as u64).to_be_bytes());
        hasher.update(&bytes);
        let text = match std::str::from_utf8(&bytes) {
            Ok(t) => t,
            Err(e) => {
                cache.forget(&file.path);
                let (line, col) = line_col(&bytes, e.valid_up_to());
                diagnostics.push(Diagnostic::error(
                    &file.path,
                    line,
                    col,
                    "file is not valid UTF-8",
                ));
                continue;
            }
        };
        let parse = cache.get_or_parse(&file.path, &bytes, || {
            let mut out = FileParse::default();
            if file.rel == MESH_FILE {
                out.mesh = Some(parse_mesh(&file.path, text, &mut out.diagnostics));
            } else {
                parse_file(&file.path, text, &mut out);
            }
            out
        });
        parse.add_to(&mut parsed, &mut diagnostics);
    }
    let present: Vec<&Path> = files.iter().map(|f| f.path.as_path()).collect();
    cache.retain(&present);
    let mesh = parsed.mesh.clone().unwrap_or_default();
    let (services, policies) = check::check(&mesh, &parsed, &mut diagnostics);
    let routes = crate::check::route::check_routes(&parsed, &services, &mut diagnostics);
    diagnostics.sort_by(|a, b| (&a.file, a.line, a.col).cmp(&(&b.file, b.line, b.col)));
    if diagnostics.iter().any(Diagnostic::is_error) {
        return Err(diagnostics);
    }
    // No error: every policy compiled.
    let (policies, compiled): (Vec<_>, Vec<_>) = policies.into_iter().unzip();
    let set = PolicySet {
        mesh,
        registry: Registry::new(services),
        policies,
        routes,
        warnings: diagnostics,
        content_hash: hex(hasher.finish().as_ref()),
    };
    let compiled = CompiledPolicies::from_compiled(&set, compiled.into_iter().flatten().collect());
    Ok((set, compiled))
}

/// Only `apiVersion` and `kind`, to choose the typed parse.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Header {
    #[serde(default)]
    kind: Option<String>,
}

/// `mesh.yaml` as written; the trust domain is parsed afterwards so that a bad one is placed
/// on its value (serde_yaml places errors raised after a scalar was read at the mapping's start).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct MeshFile {
    trust_domain: Option<String>,
    default_action: DefaultAction,
    root_namespace: Option<String>,
    enforcement: Enforcement,
    outbound_policy: OutboundPolicy,
    path_parameters: PathParameters,
}

fn parse_mesh(path: &Path, text: &str, diagnostics: &mut Vec<Diagnostic>) -> Option<MeshConfig> {
    let Some(doc) = split_documents(text).into_iter().next() else {
        return Some(MeshConfig::default());
    };
    let before = diagnostics.len();
    let raw = read::<MeshFile>(path, &doc, diagnostics)?;
    let mut ok = diagnostics.len() == before;
    let mut mesh = MeshConfig {
        default_action: raw.default_action,
        enforcement: raw.enforcement,
        outbound_policy: raw.outbound_policy,
        path_parameters: raw.path_parameters,
        ..MeshConfig::default()
    };
    if let Some(td) = raw.trust_domain {
        match TrustDomain::parse(&td) {
            Ok(td) => mesh.trust_domain = td,
            Err(e) => {
                let (line, col) = doc.locate("trust_domain", Some(&td));
                diagnostics.push(Diagnostic::error(
                    path,
                    line,
                    col,
                    format!("bad trust_domain: {e}"),
                ));
                ok = false;
            }
        }
    }
    if let Some(ns) = raw.root_namespace {
        if !crate::names::is_dns_label(&ns) {
            let (line, col) = doc.locate("root_namespace", Some(&ns));
            diagnostics.push(Diagnostic::error(
                path,
                line,
                col,
                format!("bad root_namespace {ns:?}: lowercase letters, digits and '-', at most 63 characters"),
            ));
            ok = false;
        }
        mesh.root_namespace = ns;
    }
    ok.then_some(mesh)
}

/// Parses the documents of one (non-mesh) file into `out`.
fn parse_file(path: &Path, text: &str, out: &mut FileParse) {
    let diagnostics = &mut out.diagnostics;
    for doc in split_documents(text) {
        let fail = |e: &serde_yaml::Error| {
            let (line, col, message) = yaml_error::describe(e);
            let (line, col) = doc.shift(line, col);
            Diagnostic::error(path, line, col, message)
        };
        let header = match serde_yaml::from_str::<Header>(doc.text) {
            Ok(h) => h,
            Err(e) => {
                diagnostics.push(fail(&e));
                continue;
            }
        };
        match header.kind.as_deref() {
            Some("Service") => {
                if let Some(d) = read::<ServiceDoc>(path, &doc, diagnostics) {
                    out.services.push(Arc::new(Located::new(d, path, &doc)));
                }
            }
            Some("AuthorizationPolicy") => {
                if let Some(d) = read::<PolicyDoc>(path, &doc, diagnostics) {
                    out.policies.push(Arc::new(Located::new(d, path, &doc)));
                }
            }
            Some("HTTPRoute") => {
                if let Some(d) = read::<RouteDoc>(path, &doc, diagnostics) {
                    out.routes.push(Arc::new(Located::new(d, path, &doc)));
                }
            }
            Some(other) => {
                let (line, col) = doc.locate("kind", Some(other));
                diagnostics.push(Diagnostic::error(
                    path,
                    line,
                    col,
                    format!("unknown kind `{other}`; expected Service, AuthorizationPolicy or HTTPRoute"),
                ));
            }
            None => {
                let (line, col) = doc.shift(1, 1);
                diagnostics.push(Diagnostic::error(path, line, col, "missing field `kind`"));
            }
        }
    }
}

/// Reads one document as `T`, pushing every shape error; the document when it read (perhaps
/// with unknown keys left out, which were reported).
fn read<T: DeserializeOwned>(
    path: &Path,
    doc: &Document<'_>,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<T> {
    let parsed = shape::parse::<T>(doc.text);
    for (line, col, message) in parsed.errors {
        let (line, col) = doc.shift(line, col);
        diagnostics.push(Diagnostic::error(path, line, col, message));
    }
    parsed.doc
}

/// The 1-based line and column of byte `offset` in `bytes`.
fn line_col(bytes: &[u8], offset: usize) -> (usize, usize) {
    let before = &bytes[..offset.min(bytes.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let col = String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count()
        + 1;
    (line, col)
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod cache_tests;
#[cfg(test)]
mod tests;

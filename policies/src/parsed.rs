//! The typed documents of a policy folder as they were parsed, each with the file and text it
//! came from: what [`crate::load`] produces and [`crate::check`] validates. It sits below both,
//! so that the checks need nothing of the loader.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::diagnostic::Diagnostic;
use crate::document::Document;
use crate::mesh::MeshConfig;
use crate::model::PolicySpec;
use crate::route::HttpRouteSpec;
use crate::service::ServicePort;

/// Everything that parsed, with where it came from (each document shared with the
/// [`crate::load::LoadCache`] that kept it).
#[derive(Debug, Default)]
pub(crate) struct Parsed {
    /// `mesh.yaml`, if present and valid.
    pub mesh: Option<MeshConfig>,
    /// `Service` documents.
    pub services: Vec<Arc<Located<ServiceDoc>>>,
    /// `AuthorizationPolicy` documents.
    pub policies: Vec<Arc<Located<PolicyDoc>>>,
    /// `HTTPRoute` documents.
    pub routes: Vec<Arc<Located<RouteDoc>>>,
}

/// A parsed document and the text it came from (to place later errors).
#[derive(Debug)]
pub(crate) struct Located<T> {
    /// The parsed document.
    pub doc: T,
    /// The file it is in.
    pub file: PathBuf,
    /// Its text.
    pub text: String,
    /// The 1-based line of the file where `text` starts.
    pub first_line: usize,
}

impl<T> Located<T> {
    pub(crate) fn new(doc: T, file: &Path, from: &Document<'_>) -> Self {
        Self {
            doc,
            file: file.to_path_buf(),
            text: from.text.to_string(),
            first_line: from.first_line,
        }
    }

    /// The document, for [`Document::locate`].
    pub fn document(&self) -> Document<'_> {
        Document {
            text: &self.text,
            first_line: self.first_line,
        }
    }

    /// An error at `key` (or its `value`) in this document.
    pub fn error(&self, key: &str, value: Option<&str>, message: impl Into<String>) -> Diagnostic {
        let (line, col) = self.document().locate(key, value);
        Diagnostic::error(&self.file, line, col, message)
    }

    /// A warning at `key` (or its `value`) in this document.
    pub fn warning(
        &self,
        key: &str,
        value: Option<&str>,
        message: impl Into<String>,
    ) -> Diagnostic {
        let (line, col) = self.document().locate(key, value);
        Diagnostic::warning(&self.file, line, col, message)
    }
}

/// `metadata` of a document.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Metadata {
    pub name: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Kubernetes annotations; only `istio.io/dry-run` means something (on a policy).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

fn default_namespace() -> String {
    "default".to_string()
}

/// A whole document: the envelope common to both kinds.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct Envelope<S> {
    pub api_version: String,
    #[allow(dead_code)]
    pub kind: String,
    pub metadata: Metadata,
    /// Optional in the YAML (serde reads a missing `Option` as `None`): a policy without `spec`
    /// is `spec: {}`; a Service needs one.
    pub spec: Option<S>,
}

/// `spec` of a `Service`; values are checked in `check`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ServiceSpec {
    pub identity: String,
    #[serde(default)]
    pub endpoints: Vec<String>,
    #[serde(default)]
    pub ports: Vec<ServicePort>,
}

/// A `Service` document.
pub(crate) type ServiceDoc = Envelope<ServiceSpec>;
/// An `AuthorizationPolicy` document.
pub(crate) type PolicyDoc = Envelope<PolicySpec>;
/// An `HTTPRoute` document.
pub(crate) type RouteDoc = Envelope<HttpRouteSpec>;

//! trustmesh-policies: what the mesh allows, as data, and the decision made from it.
//!
//! The policy folder (usually a git checkout) holds `mesh.yaml` ([`MeshConfig`]), the service
//! registry (`kind: Service`, [`ServiceEntry`], collected in a [`Registry`]) and
//! `kind: AuthorizationPolicy` documents ([`AuthorizationPolicy`], Istio's form). [`load_dir`]
//! reads and validates the whole folder and reports every problem as a [`Diagnostic`]
//! (`FILE:LINE:COL: message`); only a fully valid folder becomes a [`PolicySet`].
//!
//! On the data path: [`normalize_path`] turns a request target into a [`RoutePath`] (or a
//! `400`), and [`CompiledPolicies`] — made only from a valid set — decides each [`Request`]
//! with Istio's semantics ([`Decision`]). The proxy and `trustmesh authz check` call the same
//! evaluator.
//!
//! Gateway API `HTTPRoute`s ([`route`]) say which rule a request to a Service takes and where
//! it goes ([`route::CompiledRoutes`]).
//!
//! This crate is pure: no sockets, no clocks. Reading the policy folder from disk is its one
//! piece of I/O.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod authorize;
mod check;
pub mod compile;
pub mod diagnostic;
mod document;
mod evaluate;
pub mod ipset;
mod lint;
pub mod load;
pub mod mesh;
pub mod model;
mod names;
pub mod normalize;
mod parsed;
mod pattern;
pub mod registry;
pub mod request;
pub mod route;
mod selector;
pub mod service;
mod shape;
pub mod snapshot;
mod walk;
mod yaml_error;

pub use authorize::{CompiledPolicies, Decision, Reason, WorkloadPolicies};
pub use compile::CompileError;
pub use diagnostic::{Diagnostic, Severity};
pub use ipset::IpRanges;
pub use load::{load_dir, load_dir_cached, load_dir_compiled, LoadCache, PolicySet};
pub use mesh::{DefaultAction, Enforcement, MeshConfig};
pub use model::{
    Action, AuthorizationPolicy, Condition, Mode, Operation, PolicySpec, Rule, RuleFrom, RuleTo,
    Selector, Source,
};
pub use normalize::{normalize_path, normalize_path_with, PathError, PathParameters, RoutePath};
pub use registry::Registry;
pub use request::{Headers, NoHeaders, Request};
pub use service::{Protocol, ServiceEntry, ServicePort};

//! Gateway API `HTTPRoute`s in the policy folder, as mesh routes (GAMMA): which rule a request
//! to a registry Service takes, and where it goes from there (weighted backends, header
//! filters, timeouts, retries). Routes apply on the caller's sidecar; authorization stays on
//! the destination's.
//!
//! [`model`] is the YAML as written; the loader checks it against the registry ([`crate::check`], `check/route.rs`) and
//! [`CompiledRoutes::compile`] turns it, once, into what requests are matched against
//! ([`CompiledRoutes::route`], [`CompiledRule::pick`]). The proxy and `trustmesh route check`
//! call the same code.

mod action;
mod compile;
mod duration;
mod errors;
mod filters;
mod matchers;
mod matching;
pub mod model;
mod table;

pub use action::{Backend, CompiledRule, HeaderEdits, RetryPolicy};
pub use compile::{MAX_RETRY_ATTEMPTS, MAX_WEIGHT};
pub use duration::{format_duration, parse_duration};
pub use errors::RouteError;
pub use matching::{query_pairs, RouteRequest, Routed};
pub use model::{HttpRoute, HttpRouteSpec, ROUTE_API_VERSION};
pub use table::CompiledRoutes;

#[cfg(test)]
mod tests;

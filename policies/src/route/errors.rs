//! What compiling an `HTTPRoute` can find wrong: a [`RouteError`] names the route, the field
//! and the value; [`Errors`] collects them for one route while it is compiled.

use std::fmt;

use super::model::HttpRoute;

/// An `HTTPRoute` value that cannot be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct RouteError {
    /// `namespace/name` of the route.
    pub route: String,
    /// The YAML key the value is under (`value`, `weight`, `backendRequest`, ...).
    pub field: &'static str,
    /// The offending value as written.
    pub value: String,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "HTTPRoute {}: {} {:?}: {}",
            self.route, self.field, self.value, self.message
        )
    }
}

/// The errors of one route being compiled.
pub(super) struct Errors<'a> {
    pub(super) route: &'a HttpRoute,
    pub(super) errors: &'a mut Vec<RouteError>,
}

impl Errors<'_> {
    pub(super) fn push(
        &mut self,
        field: &'static str,
        value: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.errors.push(RouteError {
            route: self.route.key(),
            field,
            value: value.into(),
            message: message.into(),
        });
    }
}

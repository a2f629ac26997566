//! The loader's checks of `HTTPRoute` documents: API version, metadata, duplicates, every value
//! [`CompiledRoutes::compile`] refuses, and the registry: each parentRef and backendRef must
//! name a registry Service (and one of its ports, when it lists ports). Each problem is placed
//! in its document at `FILE:LINE:COL`.

use std::collections::HashMap;

use super::check_metadata;
use crate::diagnostic::Diagnostic;
use crate::parsed::{Located, Parsed, RouteDoc};
use crate::route::{CompiledRoutes, HttpRoute, ROUTE_API_VERSION};
use crate::service::ServiceEntry;

/// Checks every parsed route and returns them, sorted by (namespace, name).
pub(crate) fn check_routes(
    parsed: &Parsed,
    services: &[ServiceEntry],
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<HttpRoute> {
    let mut seen: HashMap<(String, String), String> = HashMap::new();
    let mut routes = Vec::new();
    for r in &parsed.routes {
        let d = &r.doc;
        if d.api_version != ROUTE_API_VERSION {
            diagnostics.push(r.error(
                "apiVersion",
                Some(&d.api_version),
                format!(
                    "unsupported apiVersion `{}` for HTTPRoute; expected {ROUTE_API_VERSION}",
                    d.api_version
                ),
            ));
        }
        check_metadata(r, &d.metadata, diagnostics);
        let (line, col) = r.document().locate("name", Some(&d.metadata.name));
        let key = (d.metadata.namespace.clone(), d.metadata.name.clone());
        if let Some(first) = seen.get(&key) {
            diagnostics.push(Diagnostic::error(
                &r.file,
                line,
                col,
                format!(
                    "duplicate HTTPRoute {}/{} (first defined at {first})",
                    key.0, key.1
                ),
            ));
        } else {
            seen.insert(key, format!("{}:{line}:{col}", r.file.display()));
        }
        let route = HttpRoute {
            name: d.metadata.name.clone(),
            namespace: d.metadata.namespace.clone(),
            spec: d.spec.clone().unwrap_or_default(),
        };
        if let Err(errors) = CompiledRoutes::compile(std::slice::from_ref(&route)) {
            for e in errors {
                diagnostics.push(r.error(e.field, Some(&e.value), e.message));
            }
        }
        check_registry(r, &route, services, diagnostics);
        routes.push(route);
    }
    routes.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    routes
}

fn check_registry(
    r: &Located<RouteDoc>,
    route: &HttpRoute,
    services: &[ServiceEntry],
    diagnostics: &mut Vec<Diagnostic>,
) {
    let mut refs: Vec<(&str, &str, Option<u16>, &str)> = route
        .spec
        .parent_refs
        .iter()
        .map(|p| {
            (
                route.namespace.as_str(),
                p.name.as_str(),
                p.port,
                "parentRef",
            )
        })
        .collect();
    for rule in &route.spec.rules {
        for b in &rule.backend_refs {
            let ns = b.namespace.as_deref().unwrap_or(&route.namespace);
            refs.push((ns, b.name.as_str(), Some(b.port), "backendRef"));
        }
    }
    for (ns, name, port, what) in refs {
        let Some(s) = services
            .iter()
            .find(|s| s.namespace == ns && s.name == name)
        else {
            diagnostics.push(r.error(
                "name",
                Some(name),
                format!("{what} names no registry Service {ns}/{name}"),
            ));
            continue;
        };
        let Some(port) = port.filter(|_| !s.ports.is_empty()) else {
            continue;
        };
        let p = port.to_string();
        match s.protocol_of(port) {
            None => diagnostics.push(r.error(
                "port",
                Some(&p),
                format!("{what}: Service {ns}/{name} has no port {port}"),
            )),
            Some(proto) if !proto.is_http() => diagnostics.push(r.error(
                "port",
                Some(&p),
                format!("{what}: port {port} of Service {ns}/{name} is opaque TCP; routes need an HTTP port"),
            )),
            Some(_) => {}
        }
    }
}

//! The checks that need more than one document or more than serde's shape checks: names,
//! API versions, identities, endpoints, duplicates across the folder, and (through
//! [`crate::compile`]) every pattern of every policy. Each problem is placed in its document by
//! [`crate::document::Document::locate`]. The checks of `HTTPRoute` documents are in
//! [`route`].

pub(crate) mod route;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use trustmesh_certs::SpiffeId;

use crate::compile::{compile_policy, CompiledPolicy};
use crate::diagnostic::Diagnostic;
use crate::mesh::MeshConfig;
use crate::model::{Action, AuthorizationPolicy, Mode, POLICY_API_VERSIONS};
use crate::names::{is_dns_label, is_dns_subdomain};
use crate::parsed::{Located, Metadata, Parsed};
use crate::selector::LabelIndex;
use crate::service::{validate_endpoint, ServiceEntry};

/// The `apiVersion` of a `Service`.
pub const SERVICE_API_VERSION: &str = "trustmesh.io/v1";

/// A checked policy, and it compiled (`None` when it did not compile).
pub(crate) type Checked = (AuthorizationPolicy, Option<Arc<CompiledPolicy>>);

/// Checks everything that parsed and returns the valid services and policies (sorted by
/// namespace and name) with each policy compiled (`None` where it did not compile); problems
/// go to `diagnostics`.
pub(crate) fn check(
    mesh: &MeshConfig,
    parsed: &Parsed,
    diagnostics: &mut Vec<Diagnostic>,
) -> (Vec<ServiceEntry>, Vec<Checked>) {
    let mut services = Vec::new();
    let mut seen: HashMap<(&str, &str, &str), String> = HashMap::new();
    let mut identities: HashMap<SpiffeId, String> = HashMap::new();
    let mut endpoints: HashMap<SocketAddr, String> = HashMap::new();

    for s in &parsed.services {
        let d = &s.doc;
        if d.api_version != SERVICE_API_VERSION {
            diagnostics.push(s.error(
                "apiVersion",
                Some(&d.api_version),
                format!(
                    "unsupported apiVersion `{}` for Service; expected {SERVICE_API_VERSION}",
                    d.api_version
                ),
            ));
        }
        check_metadata(s, &d.metadata, diagnostics);
        check_duplicate(s, "Service", &d.metadata, &mut seen, diagnostics);
        let here = || format!("{}/{}", d.metadata.namespace, d.metadata.name);
        let Some(spec) = &d.spec else {
            diagnostics.push(s.error(
                "kind",
                None,
                "missing field `spec` (a Service needs spec.identity)",
            ));
            continue;
        };

        let identity = match SpiffeId::parse(&spec.identity) {
            Ok(id) => Some(id),
            Err(e) => {
                diagnostics.push(s.error(
                    "identity",
                    Some(&spec.identity),
                    format!("bad identity {:?}: {e}", spec.identity),
                ));
                None
            }
        };
        if let Some(id) = &identity {
            if id.trust_domain_str() != mesh.trust_domain.as_str() {
                diagnostics.push(s.error(
                    "identity",
                    Some(&spec.identity),
                    format!(
                        "identity {id} is not in the mesh's trust domain {} (mesh.yaml trust_domain)",
                        mesh.trust_domain
                    ),
                ));
            } else if let Some(other) = identities.insert(id.clone(), here()) {
                diagnostics.push(s.error(
                    "identity",
                    Some(&spec.identity),
                    format!("identity {id} is already the identity of Service {other}; one Service per identity"),
                ));
            }
        }
        for ep in &spec.endpoints {
            if let Err(e) = validate_endpoint(ep) {
                diagnostics.push(s.error("endpoints", Some(ep), e.to_string()));
            } else if let Ok(addr) = ep.parse::<SocketAddr>() {
                if let Some(other) = endpoints.insert(addr, here()) {
                    diagnostics.push(s.error(
                        "endpoints",
                        Some(ep),
                        format!("endpoint {ep} is already an endpoint of Service {other}"),
                    ));
                }
            }
        }
        let mut ports = BTreeMap::new();
        for p in &spec.ports {
            if p.port == 0 {
                diagnostics.push(s.error("port", Some("0"), "port 0 is not a valid port"));
            } else if ports.insert(p.port, p.protocol).is_some() {
                diagnostics.push(s.error(
                    "port",
                    Some(&p.port.to_string()),
                    format!("port {} is listed twice", p.port),
                ));
            }
        }
        if let Some(identity) = identity {
            services.push(ServiceEntry {
                name: d.metadata.name.clone(),
                namespace: d.metadata.namespace.clone(),
                labels: d.metadata.labels.clone(),
                identity,
                endpoints: spec.endpoints.clone(),
                ports: spec.ports.clone(),
                endpoint_identities: BTreeMap::new(),
            });
        }
    }

    let mut policies = Vec::new();
    for p in &parsed.policies {
        let d = &p.doc;
        if !POLICY_API_VERSIONS.contains(&d.api_version.as_str()) {
            diagnostics.push(p.error(
                "apiVersion",
                Some(&d.api_version),
                format!(
                    "unsupported apiVersion `{}` for AuthorizationPolicy; expected one of {}",
                    d.api_version,
                    POLICY_API_VERSIONS.join(", ")
                ),
            ));
        }
        check_metadata(p, &d.metadata, diagnostics);
        check_duplicate(
            p,
            "AuthorizationPolicy",
            &d.metadata,
            &mut seen,
            diagnostics,
        );
        let mut policy = AuthorizationPolicy {
            name: d.metadata.name.clone(),
            namespace: d.metadata.namespace.clone(),
            spec: d.spec.clone().unwrap_or_default(),
        };
        if dry_run_annotation(p, &policy, &d.metadata, diagnostics) {
            policy.spec.mode = Mode::Audit;
        }
        for f in crate::lint::lint(&policy, mesh.trust_domain.as_str()) {
            diagnostics.push(if f.is_error {
                p.error(f.field, Some(&f.value), f.message)
            } else {
                p.warning(f.field, Some(&f.value), f.message)
            });
        }
        let compiled = match compile_policy(&policy, &mesh.trust_domain) {
            Ok(c) => Some(Arc::new(c)),
            Err(errors) => {
                for e in errors {
                    diagnostics.push(p.error(
                        e.field,
                        Some(&e.value),
                        format!("{} {:?}: {}", e.field, e.value, e.message),
                    ));
                }
                None
            }
        };
        policies.push((policy, compiled));
    }
    // `policies` is still in `parsed.policies` order here.
    let (mut in_namespace, mut anywhere) = (LabelIndex::default(), LabelIndex::default());
    for (i, s) in services.iter().enumerate() {
        in_namespace.file_all(i, &s.namespace, &s.labels);
        anywhere.file_all(i, "", &s.labels);
    }
    let indexed = Indexed {
        services: &services,
        in_namespace,
        anywhere,
    };
    for (p, (policy, _)) in parsed.policies.iter().zip(&policies) {
        if let Some(warning) = selector_warning(p, policy, mesh, &indexed) {
            diagnostics.push(warning);
        }
    }
    policies.sort_by(|(a, _), (b, _)| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    (services, policies)
}

/// The services, filed by their labels (in their namespace, and in any).
struct Indexed<'a> {
    services: &'a [ServiceEntry],
    in_namespace: LabelIndex<'a>,
    anywhere: LabelIndex<'a>,
}

/// A warning when a policy's selector matches no Service it could apply to (a typo in a label
/// would otherwise leave a workload unprotected without a word).
fn selector_warning<T>(
    doc: &Located<T>,
    policy: &AuthorizationPolicy,
    mesh: &MeshConfig,
    indexed: &Indexed<'_>,
) -> Option<Diagnostic> {
    let selector = policy.spec.selector.as_ref()?;
    let mesh_wide = policy.namespace == mesh.root_namespace;
    let matches = |s: &ServiceEntry| {
        (mesh_wide || s.namespace == policy.namespace)
            && selector
                .match_labels
                .iter()
                .all(|(k, v)| s.labels.get(k) == Some(v))
    };
    // A service it selects carries its first label, so only those are asked.
    let selects_some = match selector.match_labels.iter().next() {
        Some((k, v)) => {
            let filed = if mesh_wide {
                indexed.anywhere.under("", k, v)
            } else {
                indexed.in_namespace.under(&policy.namespace, k, v)
            };
            filed.iter().any(|&i| matches(&indexed.services[i]))
        }
        None => indexed.services.iter().any(matches),
    };
    if selects_some {
        return None;
    }
    let scope = if mesh_wide {
        "the mesh".to_string()
    } else {
        format!("namespace {}", policy.namespace)
    };
    Some(doc.warning(
        "matchLabels",
        None,
        format!(
            "selector of AuthorizationPolicy {} selects no Service in {scope}",
            policy.key()
        ),
    ))
}

/// Istio's dry-run annotation on an `AuthorizationPolicy`.
pub const DRY_RUN_ANNOTATION: &str = "istio.io/dry-run";

/// Whether `metadata.annotations` puts the policy in dry run (`istio.io/dry-run`, read as Go's
/// `strconv.ParseBool` reads it, as Istio does: `1 t T TRUE true True`, `0 f F FALSE false
/// False`). Any other value, or the annotation on an AUDIT policy, is an error at the value
/// (Istio's validation refuses both).
fn dry_run_annotation<T>(
    doc: &Located<T>,
    policy: &AuthorizationPolicy,
    m: &Metadata,
    diagnostics: &mut Vec<Diagnostic>,
) -> bool {
    let Some(value) = m.annotations.get(DRY_RUN_ANNOTATION) else {
        return false;
    };
    let dry_run = match value.as_str() {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => true,
        "0" | "f" | "F" | "FALSE" | "false" | "False" => false,
        _ => {
            diagnostics.push(doc.error(
                DRY_RUN_ANNOTATION,
                Some(value),
                format!(
                    "bad {DRY_RUN_ANNOTATION} annotation {value:?}: must be \"true\" or \"false\""
                ),
            ));
            return false;
        }
    };
    if policy.spec.action == Action::Audit {
        diagnostics.push(doc.error(
            DRY_RUN_ANNOTATION,
            Some(value),
            format!("the {DRY_RUN_ANNOTATION} annotation applies to ALLOW and DENY policies only, not AUDIT"),
        ));
    }
    dry_run
}

pub(crate) fn check_metadata<T>(doc: &Located<T>, m: &Metadata, diagnostics: &mut Vec<Diagnostic>) {
    if !is_dns_subdomain(&m.name) {
        diagnostics.push(doc.error(
            "name",
            Some(&m.name),
            format!("bad name {:?}: lowercase letters, digits, '-' and '.', starting and ending with a letter or digit, at most 253 characters", m.name),
        ));
    }
    if !is_dns_label(&m.namespace) {
        diagnostics.push(doc.error(
            "namespace",
            Some(&m.namespace),
            format!("bad namespace {:?}: lowercase letters, digits and '-', starting and ending with a letter or digit, at most 63 characters", m.namespace),
        ));
    }
}

fn check_duplicate<'a, T>(
    doc: &'a Located<T>,
    kind: &'a str,
    m: &'a Metadata,
    seen: &mut HashMap<(&'a str, &'a str, &'a str), String>,
    diagnostics: &mut Vec<Diagnostic>,
) {
    let (line, col) = doc.document().locate("name", Some(&m.name));
    let here = format!("{}:{line}:{col}", doc.file.display());
    if let Some(first) = seen.get(&(kind, m.namespace.as_str(), m.name.as_str())) {
        diagnostics.push(Diagnostic::error(
            &doc.file,
            line,
            col,
            format!(
                "duplicate {kind} {}/{} (first defined at {first})",
                m.namespace, m.name
            ),
        ));
    } else {
        seen.insert((kind, &m.namespace, &m.name), here);
    }
}

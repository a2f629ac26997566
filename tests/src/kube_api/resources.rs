//! The resource types the stub API server serves, and the parsing of request paths into them
//! (`/api/v1/namespaces/NS/pods/NAME`, `/apis/discovery.k8s.io/v1/endpointslices`, ...).

use std::fmt;

/// One resource type the stub serves, as its discovery document would describe it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    /// `v1` `Namespace` (cluster-scoped).
    Namespaces,
    /// `v1` `Service`.
    Services,
    /// `v1` `Pod`.
    Pods,
    /// `v1` `ConfigMap`.
    ConfigMaps,
    /// `v1` `Secret`.
    Secrets,
    /// `discovery.k8s.io/v1` `EndpointSlice`.
    EndpointSlices,
}

impl Resource {
    /// Every resource the stub serves.
    pub const ALL: [Resource; 6] = [
        Resource::Namespaces,
        Resource::Services,
        Resource::Pods,
        Resource::ConfigMaps,
        Resource::Secrets,
        Resource::EndpointSlices,
    ];

    /// The `apiVersion` of its objects (`v1`, `discovery.k8s.io/v1`).
    pub fn api_version(self) -> &'static str {
        match self {
            Resource::EndpointSlices => "discovery.k8s.io/v1",
            _ => "v1",
        }
    }

    /// The `kind` of its objects (`Pod`).
    pub fn kind(self) -> &'static str {
        match self {
            Resource::Namespaces => "Namespace",
            Resource::Services => "Service",
            Resource::Pods => "Pod",
            Resource::ConfigMaps => "ConfigMap",
            Resource::Secrets => "Secret",
            Resource::EndpointSlices => "EndpointSlice",
        }
    }

    /// The plural name in its URL path (`pods`).
    pub fn plural(self) -> &'static str {
        match self {
            Resource::Namespaces => "namespaces",
            Resource::Services => "services",
            Resource::Pods => "pods",
            Resource::ConfigMaps => "configmaps",
            Resource::Secrets => "secrets",
            Resource::EndpointSlices => "endpointslices",
        }
    }

    /// Whether its objects live in a namespace (all but `Namespace`).
    pub fn namespaced(self) -> bool {
        self != Resource::Namespaces
    }

    /// The URL path prefix of its API group (`/api/v1`, `/apis/discovery.k8s.io/v1`).
    pub fn group_prefix(self) -> &'static str {
        match self {
            Resource::EndpointSlices => "/apis/discovery.k8s.io/v1",
            _ => "/api/v1",
        }
    }

    /// The field selectors the real API server accepts for this type, besides
    /// `metadata.name` and `metadata.namespace` (which every type accepts).
    pub fn extra_fields(self) -> &'static [&'static str] {
        match self {
            Resource::Pods => &[
                "spec.nodeName",
                "spec.serviceAccountName",
                "status.phase",
                "status.podIP",
            ],
            Resource::Secrets => &["type"],
            Resource::Namespaces => &["status.phase"],
            _ => &[],
        }
    }

    fn from_group_and_plural(group: &str, plural: &str) -> Option<Self> {
        Resource::ALL
            .into_iter()
            .find(|r| r.group_prefix() == group && r.plural() == plural)
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.plural())
    }
}

/// What a request path names: a resource, maybe within a namespace, maybe one object of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The resource type.
    pub resource: Resource,
    /// The namespace in the path (`None`: cluster-wide, or a cluster-scoped type).
    pub namespace: Option<String>,
    /// The object's name (`None`: the collection).
    pub name: Option<String>,
}

impl Target {
    /// Parses a request path; `None` when it names nothing the stub serves (answered `404`).
    pub fn parse(path: &str) -> Option<Target> {
        let (group, rest) = if let Some(rest) = path.strip_prefix("/api/v1/") {
            ("/api/v1", rest)
        } else if let Some(rest) = path.strip_prefix("/apis/discovery.k8s.io/v1/") {
            ("/apis/discovery.k8s.io/v1", rest)
        } else {
            return None;
        };
        let parts: Vec<&str> = rest.split('/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return None;
        }
        let (resource, namespace, name) = match parts.as_slice() {
            // `/api/v1/namespaces/NS/pods[/NAME]`
            ["namespaces", ns, plural] => (*plural, Some(*ns), None),
            ["namespaces", ns, plural, name] => (*plural, Some(*ns), Some(*name)),
            [plural] => (*plural, None, None),
            [plural, name] => (*plural, None, Some(*name)),
            _ => return None,
        };
        let resource = Resource::from_group_and_plural(group, resource)?;
        if namespace.is_some() && !resource.namespaced() {
            return None;
        }
        Some(Target {
            resource,
            namespace: namespace.map(str::to_owned),
            name: name.map(str::to_owned),
        })
    }

    /// The path of the object this target names (or of the collection).
    pub fn path(&self) -> String {
        let mut path = self.resource.group_prefix().to_owned();
        if let Some(ns) = &self.namespace {
            path.push_str("/namespaces/");
            path.push_str(ns);
        }
        path.push('/');
        path.push_str(self.resource.plural());
        if let Some(name) = &self.name {
            path.push('/');
            path.push_str(name);
        }
        path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_namespaced_cluster_wide_and_cluster_scoped_paths() {
        let t = Target::parse("/api/v1/namespaces/a/pods/p1").unwrap();
        assert_eq!(
            (t.resource, t.namespace.as_deref(), t.name.as_deref()),
            (Resource::Pods, Some("a"), Some("p1"))
        );
        let t = Target::parse("/apis/discovery.k8s.io/v1/endpointslices").unwrap();
        assert_eq!(
            (t.resource, t.namespace, t.name),
            (Resource::EndpointSlices, None, None)
        );
        let t = Target::parse("/api/v1/namespaces/a").unwrap();
        assert_eq!(
            (t.resource, t.name.as_deref()),
            (Resource::Namespaces, Some("a"))
        );
        assert_eq!(Target::parse("/api/v1/namespaces/a/namespaces"), None);
        assert_eq!(Target::parse("/api/v1/endpointslices"), None);
        assert_eq!(Target::parse("/api/v1/namespaces/a/pods/p1/status"), None);
        assert_eq!(Target::parse("/api/v1//pods"), None);
    }
}

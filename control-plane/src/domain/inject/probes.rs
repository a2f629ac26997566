//! Domain: the probe rewrite of an injected pod: every `httpGet` (HTTP) and `tcpSocket` probe of the
//! app's containers goes to the sidecar's probe listener
//! (`:15020/app-health/<container>/<livez|readyz|startupz>`), which makes the original probe
//! against the app on loopback; other probes stay, with a warning when interception will make
//! them fail.

use serde_json::{json, Map, Value};

use super::PROBE_PORT;

/// Rewrites the app containers' probes (see the module docs); returns the original probes by
/// rewritten path, in the sidecar's `--app-probes` format.
pub(super) fn rewrite(
    containers: &[Value],
    patch: &mut Vec<Value>,
    warnings: &mut Vec<String>,
) -> Map<String, Value> {
    let mut probes = Map::new();
    for (i, c) in containers.iter().enumerate() {
        let name = c["name"].as_str().unwrap_or("app");
        for (field, kind) in [
            ("livenessProbe", "livez"),
            ("readinessProbe", "readyz"),
            ("startupProbe", "startupz"),
        ] {
            let probe = &c[field];
            if !probe.is_object() {
                continue;
            }
            let key = format!("/app-health/{name}/{kind}");
            let original = if let Some(h) = probe.get("httpGet") {
                let scheme = h["scheme"].as_str().unwrap_or("HTTP");
                match (
                    scheme.eq_ignore_ascii_case("HTTP"),
                    resolve_port(c, &h["port"]),
                ) {
                    (true, Some(port)) => {
                        let mut g =
                            json!({"port": port, "path": h["path"].as_str().unwrap_or("/")});
                        if let Some(hs) = h.get("httpHeaders") {
                            g["httpHeaders"] = hs.clone();
                        }
                        json!({"httpGet": g})
                    }
                    _ => {
                        warnings.push(format!("trustmesh: {field} of container {name} is not a plain HTTP probe on a known port; it is left as is and will fail under interception unless its port is in trustmesh.io/exclude-inbound-ports"));
                        continue;
                    }
                }
            } else if let Some(t) = probe.get("tcpSocket") {
                match resolve_port(c, &t["port"]) {
                    Some(port) => json!({"tcpSocket": {"port": port}}),
                    None => {
                        warnings.push(format!("trustmesh: {field} of container {name} names an unknown port; left as is"));
                        continue;
                    }
                }
            } else {
                if probe.get("grpc").is_some() {
                    warnings.push(format!("trustmesh: the gRPC {field} of container {name} is left as is and will fail under interception unless its port is in trustmesh.io/exclude-inbound-ports"));
                }
                continue;
            };
            let mut original = original;
            if let Some(t) = probe.get("timeoutSeconds") {
                original["timeoutSeconds"] = t.clone();
            }
            probes.insert(key.clone(), original);
            let mut rewritten = probe.clone();
            if let Some(o) = rewritten.as_object_mut() {
                o.remove("tcpSocket");
                o.insert(
                    "httpGet".into(),
                    json!({"path": key, "port": PROBE_PORT, "scheme": "HTTP"}),
                );
            }
            patch.push(json!({"op": "replace", "path": format!("/spec/containers/{i}/{field}"), "value": rewritten}));
        }
    }
    probes
}

/// A probe's port: a number, or the name of one of the container's ports.
fn resolve_port(container: &Value, port: &Value) -> Option<u64> {
    if let Some(n) = port.as_u64().filter(|n| (1..=65535).contains(n)) {
        return Some(n);
    }
    let name = port.as_str()?;
    if let Ok(n) = name.parse::<u16>() {
        return (n != 0).then_some(u64::from(n));
    }
    container["ports"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_u64())
}

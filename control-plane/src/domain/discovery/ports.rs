//! Domain: the protocol of a Kubernetes Service port, as Istio reads it: `appProtocol` first,
//! then the prefix of the port's name (`http`, `http-web`, `grpc-api`, `tcp-db`...).

use k8s_openapi::api::core::v1::ServicePort as KubePort;
use trustmesh_policies::{Protocol, ServicePort};

/// The registry port of a Service port, `None` for UDP/SCTP ports and ports whose protocol
/// neither `appProtocol` nor the name tells (left undeclared: the caller's own version).
pub fn service_port(p: &KubePort) -> Option<ServicePort> {
    if p.protocol.as_deref().is_some_and(|proto| proto != "TCP") {
        return None;
    }
    let port = u16::try_from(p.port).ok().filter(|&n| n != 0)?;
    let protocol = p.app_protocol.as_deref().and_then(protocol).or_else(|| {
        let name = p.name.as_deref()?;
        protocol(name.split_once('-').map_or(name, |(prefix, _)| prefix))
    })?;
    Some(ServicePort { port, protocol })
}

/// The protocol an `appProtocol` value or a port name prefix names (case-insensitive).
pub fn protocol(word: &str) -> Option<Protocol> {
    let w = word.to_ascii_lowercase();
    Some(match w.as_str() {
        "http" | "http1" => Protocol::Http,
        "http2" | "h2c" | "kubernetes.io/h2c" => Protocol::Http2,
        "grpc" | "grpc-web" => Protocol::Grpc,
        // Opaque to the mesh: TLS the app speaks itself and the non-HTTP protocols Istio names.
        "tcp" | "tls" | "https" | "kubernetes.io/ws" | "kubernetes.io/wss" | "mongo" | "mysql"
        | "redis" => Protocol::Tcp,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(name: Option<&str>, app: Option<&str>) -> Option<Protocol> {
        service_port(&KubePort {
            name: name.map(str::to_string),
            app_protocol: app.map(str::to_string),
            port: 80,
            protocol: Some("TCP".into()),
            ..Default::default()
        })
        .map(|p| p.protocol)
    }

    #[test]
    fn app_protocol_wins_then_the_name_prefix() {
        assert_eq!(port(Some("http-web"), Some("grpc")), Some(Protocol::Grpc));
        assert_eq!(port(Some("http-web"), None), Some(Protocol::Http));
        assert_eq!(port(Some("http2-x"), None), Some(Protocol::Http2));
        assert_eq!(port(Some("grpc"), None), Some(Protocol::Grpc));
        assert_eq!(port(Some("tcp-db"), None), Some(Protocol::Tcp));
        assert_eq!(port(Some("HTTP"), None), Some(Protocol::Http));
        assert_eq!(port(None, Some("kubernetes.io/h2c")), Some(Protocol::Http2));
        assert_eq!(port(Some("web"), None), None);
        assert_eq!(port(Some("httpx-web"), None), None);
        assert_eq!(port(None, None), None);
    }

    #[test]
    fn udp_ports_are_not_mesh_ports() {
        let udp = KubePort {
            name: Some("http".into()),
            port: 53,
            protocol: Some("UDP".into()),
            ..Default::default()
        };
        assert_eq!(service_port(&udp), None);
    }
}

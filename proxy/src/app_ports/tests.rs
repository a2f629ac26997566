use std::net::SocketAddr;

use trustmesh_policies::{Protocol, ServicePort};

use super::*;

const INBOUND: u16 = 15006;
const OUTBOUND: u16 = 15001;
const ADMIN: u16 = 15000;
const PROBES: u16 = 15020;
const APP: u16 = 8080;

fn addr(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), port)
}

fn sidecar() -> SidecarPorts {
    SidecarPorts::new(
        &[
            ("--inbound", addr("0.0.0.0", INBOUND)),
            ("--outbound", addr("127.0.0.1", OUTBOUND)),
            ("--admin", addr("127.0.0.1", ADMIN)),
            ("--probe-listen", addr("0.0.0.0", PROBES)),
        ],
        addr("127.0.0.1", APP),
    )
    .unwrap()
}

fn ports(declared: &[(u16, Protocol)]) -> InboundPorts {
    let declared: Vec<ServicePort> = declared
        .iter()
        .map(|&(port, protocol)| ServicePort { port, protocol })
        .collect();
    InboundPorts::new(&sidecar(), &declared)
}

/// Name, ports, carrier, port asked for, what `check` answers.
type Case<'a> = (
    &'a str,
    &'a InboundPorts,
    Carrier,
    u16,
    Result<u16, PortRefusal>,
);

#[test]
fn a_port_is_reached_only_when_declared_for_its_carrier_and_never_a_sidecar_port() {
    use Carrier::{OpaqueTcp as Tcp, RedirectedHttp as Http};
    use PortRefusal::*;
    // The entry declares the app port for HTTP, 5432 for TCP, and (a registry mistake) the
    // sidecar's admin port for TCP.
    let entry = ports(&[
        (APP, Protocol::Http),
        (9090, Protocol::Grpc),
        (5432, Protocol::Tcp),
        (ADMIN, Protocol::Tcp),
    ]);
    let none = ports(&[]);
    let own = |port, flag| Err(OwnListener { port, flag });
    let cases: &[Case<'_>] = &[
        ("tcp to a port declared tcp", &entry, Tcp, 5432, Ok(5432)),
        (
            "tcp to a port declared http",
            &entry,
            Tcp,
            APP,
            Err(NotTcp {
                port: APP,
                protocol: Protocol::Http,
            }),
        ),
        (
            "tcp to a port declared grpc",
            &entry,
            Tcp,
            9090,
            Err(NotTcp {
                port: 9090,
                protocol: Protocol::Grpc,
            }),
        ),
        (
            "tcp to an undeclared port",
            &entry,
            Tcp,
            6379,
            Err(Undeclared(6379)),
        ),
        (
            "tcp to the admin port, even declared",
            &entry,
            Tcp,
            ADMIN,
            own(ADMIN, "--admin"),
        ),
        (
            "tcp to the outbound port",
            &entry,
            Tcp,
            OUTBOUND,
            own(OUTBOUND, "--outbound"),
        ),
        (
            "tcp to the inbound port",
            &entry,
            Tcp,
            INBOUND,
            own(INBOUND, "--inbound"),
        ),
        (
            "tcp to the probe port",
            &entry,
            Tcp,
            PROBES,
            own(PROBES, "--probe-listen"),
        ),
        (
            "tcp, no ports declared, app port",
            &none,
            Tcp,
            APP,
            Err(Undeclared(APP)),
        ),
        (
            "tcp, no ports declared, other",
            &none,
            Tcp,
            5432,
            Err(Undeclared(5432)),
        ),
        ("http to a port declared http", &entry, Http, APP, Ok(APP)),
        ("http to a port declared grpc", &entry, Http, 9090, Ok(9090)),
        ("http to a port declared tcp", &entry, Http, 5432, Ok(5432)),
        (
            "http to an undeclared port",
            &entry,
            Http,
            6379,
            Err(Undeclared(6379)),
        ),
        (
            "http to the admin port, even declared",
            &entry,
            Http,
            ADMIN,
            own(ADMIN, "--admin"),
        ),
        (
            "http to the outbound port",
            &entry,
            Http,
            OUTBOUND,
            own(OUTBOUND, "--outbound"),
        ),
        (
            "http to the probe port",
            &entry,
            Http,
            PROBES,
            own(PROBES, "--probe-listen"),
        ),
        (
            "http, no ports declared, the --app port",
            &none,
            Http,
            APP,
            Ok(APP),
        ),
        (
            "http, no ports declared, other",
            &none,
            Http,
            9090,
            Err(Undeclared(9090)),
        ),
        (
            "http, no ports declared, admin",
            &none,
            Http,
            ADMIN,
            own(ADMIN, "--admin"),
        ),
    ];
    for (name, ports, carrier, port, want) in cases {
        assert_eq!(&ports.check(*carrier, *port), want, "{name}");
    }
}

#[test]
fn a_redirected_opaque_connection_reaches_its_original_port_only() {
    let entry = ports(&[(5432, Protocol::Tcp), (6379, Protocol::Tcp)]);
    assert_eq!(entry.opaque(5432, None), Ok(5432));
    assert_eq!(entry.opaque(5432, Some(5432)), Ok(5432));
    assert_eq!(
        entry.opaque(6379, Some(5432)),
        Err(PortRefusal::PreambleMismatch {
            preamble: 6379,
            original: 5432
        })
    );
    assert_eq!(
        entry.opaque(ADMIN, Some(ADMIN)),
        Err(PortRefusal::OwnListener {
            port: ADMIN,
            flag: "--admin"
        })
    );
    assert_eq!(entry.opaque(22, None), Err(PortRefusal::Undeclared(22)));
}

#[test]
fn an_app_port_that_is_a_sidecar_listener_stops_the_start() {
    let err = SidecarPorts::new(
        &[
            ("--inbound", addr("0.0.0.0", INBOUND)),
            ("--outbound", addr("127.0.0.1", OUTBOUND)),
        ],
        addr("127.0.0.1", OUTBOUND),
    )
    .unwrap_err();
    assert!(err.contains("--outbound"), "{err}");
    assert_eq!(sidecar().app(), APP);
}

#[test]
fn the_app_is_sent_the_version_its_port_declares_else_the_callers() {
    let entry = ports(&[
        (APP, Protocol::Http),
        (9090, Protocol::Grpc),
        (9091, Protocol::Http2),
        (5432, Protocol::Tcp),
    ]);
    // (port reached, the caller spoke HTTP/1.1, the app is sent HTTP/1.1)
    let table = [
        (APP, false, true),
        (APP, true, true),
        (9090, true, false),
        (9090, false, false),
        (9091, true, false),
        (5432, true, true),
        (5432, false, false),
        (7000, true, true),
        (7000, false, false),
    ];
    for (port, caller_http1, want) in table {
        let got = app_speaks_http1(entry.protocol(port), caller_http1);
        assert_eq!(got, want, "port {port}, caller HTTP/1.1: {caller_http1}");
    }
}

//! The mesh of the route tests and the helpers they share.

use std::net::SocketAddr;

use bytes::Bytes;
use http::Request;
use http_body_util::Empty;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use trustmesh_e2e::app::App;
use trustmesh_e2e::client::{admin_get, collect, connect, Resp, REQUEST_TIMEOUT};
use trustmesh_e2e::control_plane::ControlPlane;
use trustmesh_e2e::policies::{spiffe_id, write_policies, ServiceEntry};
use trustmesh_e2e::ports::ProxyPorts;
use trustmesh_e2e::proxy::Proxy;
use trustmesh_e2e::workdir::WorkDir;

pub const NS: &str = "test";

/// One route on `orders` with a rule per behaviour under test (rule index in the comment).
pub const ROUTE: &str = "\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: orders, namespace: test}
spec:
  parentRefs: [{kind: Service, name: orders, port: 80}]
  rules:
    # 0: the canary split
    - matches: [{path: {type: PathPrefix, value: /split}}]
      backendRefs:
        - {name: orders, port: 80, weight: 90}
        - {name: orders-canary, port: 80, weight: 10}
    # 1: a tester's header sends /api to the canary, with header changes both ways
    - matches:
        - path: {type: PathPrefix, value: /api}
          headers: [{name: x-canary, value: always}]
      backendRefs: [{name: orders-canary, port: 80}]
      filters:
        - type: RequestHeaderModifier
          requestHeaderModifier:
            set: [{name: x-route, value: canary}]
            add: [{name: x-tag, value: routed}]
            remove: [x-drop]
        - type: ResponseHeaderModifier
          responseHeaderModifier:
            set: [{name: x-served-by, value: canary}]
    # 2: everything else under /api stays on orders
    - matches: [{path: {type: PathPrefix, value: /api}}]
      backendRefs: [{name: orders, port: 80}]
    # 3: a flaky path, retried
    - matches: [{path: {type: PathPrefix, value: /flaky}}]
      backendRefs: [{name: orders, port: 80}]
      retry: {attempts: 2, codes: [503], backoff: 10ms}
    # 4: a slow path, with a short request timeout
    - matches: [{path: {type: PathPrefix, value: /sleep}}]
      backendRefs: [{name: orders, port: 80}]
      timeouts: {request: 500ms}
    # 5: the same path, each attempt cut at 300ms and retried once
    - matches:
        - path: {type: PathPrefix, value: /sleep}
          headers: [{name: x-per-try, value: short}]
      backendRefs: [{name: orders, port: 80}]
      timeouts: {request: 3s, backendRequest: 300ms}
      retry: {attempts: 1, codes: [504]}
";

/// The running mesh. Fields drop in order: sidecars, control plane, apps, folder.
pub struct Traffic {
    pub web: Proxy,
    _orders: Proxy,
    _canary: Proxy,
    pub cp: ControlPlane,
    pub orders_app: App,
    _canary_app: App,
    _web_app: App,
    _dir: WorkDir,
}

impl Traffic {
    /// Starts it all; `web_flags` are extra flags for the caller's sidecar.
    pub async fn start(test: &str, web_flags: &[&str]) -> Self {
        let dir = WorkDir::new(test).unwrap();
        let (web_ports, orders_ports, canary_ports) = (
            ProxyPorts::allocate().unwrap(),
            ProxyPorts::allocate().unwrap(),
            ProxyPorts::allocate().unwrap(),
        );
        let policies = write_policies(
            &dir.path().join("policies"),
            &[
                ServiceEntry::new("web", NS, web_ports.inbound),
                ServiceEntry::new("orders", NS, orders_ports.inbound),
                ServiceEntry::new("orders-canary", NS, canary_ports.inbound),
            ],
        )
        .unwrap();
        std::fs::write(policies.join("routes.yaml"), ROUTE).unwrap();
        let cp = ControlPlane::start(dir.path(), &policies).await.unwrap();
        let orders_app = App::start_named("orders").await.unwrap();
        let canary_app = App::start_named("orders-canary").await.unwrap();
        let web_app = App::start().await.unwrap();
        let ids = [
            spiffe_id(NS, "orders"),
            spiffe_id(NS, "orders-canary"),
            spiffe_id(NS, "web"),
        ];
        let (orders, canary, web) = tokio::try_join!(
            Proxy::start(&cp, "orders", &ids[0], orders_app.addr(), orders_ports),
            Proxy::start(
                &cp,
                "orders-canary",
                &ids[1],
                canary_app.addr(),
                canary_ports
            ),
            Proxy::start_with(&cp, "web", &ids[2], web_app.addr(), web_ports, web_flags),
        )
        .unwrap();
        Self {
            web,
            _orders: orders,
            _canary: canary,
            cp,
            orders_app,
            _canary_app: canary_app,
            _web_app: web_app,
            _dir: dir,
        }
    }

    pub async fn metrics(&self) -> String {
        admin_get(self.web.admin(), "/metrics")
            .await
            .unwrap()
            .text()
    }
}

/// A keep-alive HTTP/1.1 connection of the app to its sidecar's outbound listener.
pub struct Client {
    addr: SocketAddr,
    send: Option<SendRequest<Empty<Bytes>>>,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Self {
        Self { addr, send: None }
    }

    /// `GET path` with `Host: orders` and `headers`, read to the end.
    pub async fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> Resp {
        let mut req = Request::get(path).header("host", "orders");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Empty::new()).unwrap();
        let send = match self.send.take().filter(|s| !s.is_closed()) {
            Some(s) => s,
            None => {
                let io = TokioIo::new(connect(self.addr).await.unwrap());
                let (s, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
                tokio::spawn(conn);
                s
            }
        };
        let mut send = send;
        let work = async {
            send.ready().await.unwrap();
            collect(send.send_request(req).await.unwrap())
                .await
                .unwrap()
        };
        let resp = tokio::time::timeout(REQUEST_TIMEOUT, work)
            .await
            .unwrap_or_else(|_| panic!("GET {path} timed out"));
        self.send = Some(send);
        resp
    }
}

/// Which app answered.
pub fn app_of(resp: &Resp) -> String {
    let json = resp.json().unwrap();
    json["app"].as_str().unwrap_or("-").to_string()
}

/// The value of metric `name` on the series with all of `labels`, 0 when absent.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

//! What the WebSocket tests share: the Python echo server and client (`tests/real/`), a mesh
//! with short timeouts in front of an app, a policy push, metric reads, an h2c extended
//! CONNECT client and an h2c app that accepts one.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Empty;
use hyper::upgrade::Upgraded;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use trustmesh_e2e::client::admin_get;
use trustmesh_e2e::mesh::{Mesh, MeshOptions, NAMESPACE};
use trustmesh_e2e::policies::spiffe_id;
use trustmesh_e2e::ports::ProxyPorts;
use trustmesh_e2e::process::Process;
use trustmesh_e2e::proxy::Proxy;

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("real")
        .join(name)
}

fn python() -> PathBuf {
    trustmesh_e2e::python::python().expect("the real-client virtualenv (.ci/pyenv.sh)")
}

/// `tests/real/ws_echo.py` on a loopback port, stopped on drop.
pub struct WsEcho {
    process: Process,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl WsEcho {
    /// Starts the echo server and waits (up to 30 s) until it listens.
    pub fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let log = dir.path().join("ws_echo.log");
        let mut cmd = std::process::Command::new(python());
        cmd.arg(script("ws_echo.py")).arg("0");
        let process = Process::spawn("ws_echo", cmd, &log)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = process.log();
            if let Some(port) = text.lines().find_map(|l| l.strip_prefix("READY ")) {
                let addr = SocketAddr::from(([127, 0, 0, 1], port.trim().parse()?));
                return Ok(Self {
                    process,
                    addr,
                    _dir: dir,
                });
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "ws_echo.py never listened: {text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every opening handshake it accepted so far: `{"path", "headers"}`.
    pub fn handshakes(&self) -> Vec<Value> {
        self.process
            .log()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v.get("path").is_some())
            .collect()
    }
}

/// A mesh whose B fronts the echo server, and a caller C; both sidecars hold
/// `--header-timeout 1s`, B also `b_extra`.
pub async fn start_mesh(test: &str, echo: &WsEcho, b_extra: &[&str]) -> (Mesh, Proxy) {
    start_mesh_at(test, echo.addr(), b_extra).await
}

/// [`start_mesh`] in front of the app at `app`.
pub async fn start_mesh_at(test: &str, app: SocketAddr, b_extra: &[&str]) -> (Mesh, Proxy) {
    start_mesh_with(test, app, b_extra, &[]).await
}

/// [`start_mesh_at`] with `c_extra` flags for C too.
pub async fn start_mesh_with(
    test: &str,
    app: SocketAddr,
    b_extra: &[&str],
    c_extra: &[&str],
) -> (Mesh, Proxy) {
    let mut extra = vec!["--header-timeout".to_string(), "1s".to_string()];
    extra.extend(b_extra.iter().map(|s| s.to_string()));
    let opts = MeshOptions {
        b_app: Some(app),
        b_extra: extra,
        ..MeshOptions::default()
    };
    let mesh = Mesh::start(test, opts).await.expect("mesh starts");
    let c = Proxy::start_with(
        &mesh.cp,
        "c",
        &spiffe_id(NAMESPACE, "c"),
        mesh.app_a.addr(),
        ProxyPorts::allocate().unwrap(),
        &[&["--header-timeout", "1s"][..], c_extra].concat(),
    )
    .await
    .expect("C starts");
    (mesh, c)
}

/// `tests/real/ws_client.py`, its output read line by line; killed on drop.
pub struct Client {
    _child: tokio::process::Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Client {
    /// Starts the client against the outbound sidecar at `addr`.
    pub fn start(addr: SocketAddr, uri: &str, extra: &[&str]) -> Self {
        let mut child = tokio::process::Command::new(python())
            .arg(script("ws_client.py"))
            .arg(addr.to_string())
            .arg(uri)
            .args(extra)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("ws_client.py starts");
        let stdout = child.stdout.take().expect("piped stdout");
        Self {
            _child: child,
            lines: BufReader::new(stdout).lines(),
        }
    }

    /// The next JSON line it prints (within 60 s).
    pub async fn next_line(&mut self) -> Value {
        let line = tokio::time::timeout(Duration::from_secs(60), self.lines.next_line())
            .await
            .expect("ws_client.py answered within 60 s")
            .expect("reading ws_client.py")
            .expect("ws_client.py printed a line (see its stderr above)");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }
}

/// Runs the client to its end; its last line.
pub async fn run_client(addr: SocketAddr, uri: &str, extra: &[&str]) -> Value {
    let mut client = Client::start(addr, uri, extra);
    loop {
        let line = client.next_line().await;
        if line.get("open").is_none() {
            return line;
        }
    }
}

/// Writes `yaml` as the policy folder's `authz.yaml` and waits (up to 10 s) until B holds it.
pub async fn put_policy(mesh: &Mesh, yaml: &str) {
    let version = || async {
        admin_get(mesh.b.admin(), "/config")
            .await
            .unwrap()
            .json()
            .unwrap()["policy_version"]
            .clone()
    };
    let before = version().await;
    std::fs::write(mesh.dir.path().join("policies/authz.yaml"), yaml).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while version().await == before {
        assert!(Instant::now() < deadline, "the policy never reached B");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of one series (`name{labels}`, labels in Prometheus' sorted order) on an admin
/// listener's `/metrics`; 0 when absent.
pub async fn metric(admin: SocketAddr, series: &str) -> f64 {
    let text = admin_get(admin, "/metrics").await.unwrap().text();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// `trustmesh_tunnels_open{direction}` now.
pub async fn tunnels_open(admin: SocketAddr, direction: &str) -> i64 {
    let series = format!("trustmesh_tunnels_open{{direction=\"{direction}\"}}");
    metric(admin, &series).await as i64
}

/// Waits (up to 10 s) until no tunnel is open in `direction`.
pub async fn wait_tunnels_closed(admin: SocketAddr, direction: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while tunnels_open(admin, direction).await != 0 {
        assert!(
            Instant::now() < deadline,
            "a {direction} tunnel stayed open"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An h2c client's RFC 8441 WebSocket: `CONNECT` with `:protocol websocket` for `path` at
/// `authority` through the outbound sidecar at `addr`; the tunnel once answered 200.
pub async fn h2c_connect(
    addr: SocketAddr,
    authority: &str,
    path: &str,
) -> anyhow::Result<TokioIo<Upgraded>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake::<_, Empty<Bytes>>(TokioIo::new(tcp))
        .await?;
    tokio::spawn(conn);
    let mut req = Request::connect(format!("http://{authority}{path}"))
        .version(http::Version::HTTP_2)
        .header("sec-websocket-version", "13")
        .body(Empty::new())?;
    req.extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    let mut resp = sender.send_request(req).await?;
    anyhow::ensure!(
        resp.status() == StatusCode::OK,
        "answered {}",
        resp.status()
    );
    Ok(TokioIo::new(hyper::upgrade::on(&mut resp).await?))
}

/// An h2c app that accepts extended CONNECTs (RFC 8441) and echoes their bytes.
pub struct H2cTunnelApp {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<(String, String, String)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl H2cTunnelApp {
    /// Listens on a loopback port.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let record = record.clone();
                let svc =
                    hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
                        let protocol = req
                            .extensions()
                            .get::<hyper::ext::Protocol>()
                            .map_or("", |p| p.as_str())
                            .to_string();
                        record.lock().unwrap().push((
                            req.method().to_string(),
                            protocol,
                            req.uri().path().to_string(),
                        ));
                        let on = hyper::upgrade::on(&mut req);
                        tokio::spawn(async move {
                            if let Ok(up) = on.await {
                                let (mut r, mut w) = tokio::io::split(TokioIo::new(up));
                                let _ = tokio::io::copy(&mut r, &mut w).await;
                            }
                        });
                        async {
                            Ok::<_, std::convert::Infallible>(Response::new(Empty::<Bytes>::new()))
                        }
                    });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .enable_connect_protocol()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        Self { addr, seen, task }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `(method, :protocol, path)` of every request it got.
    pub fn seen(&self) -> Vec<(String, String, String)> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for H2cTunnelApp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

//! WebSockets to a destination outside the mesh, through interception: the real Python
//! `websockets` echo server (`tests/real/ws_echo.py`) in the outsider's namespace, and its
//! client (`tests/real/ws_client.py`) as a pod's app that knows nothing of the mesh. The
//! upgrade goes out through the pod's outbound sidecar as `outbound_policy` says: refused with
//! the policy's answer and nothing sent, or passed through in plaintext and tunnelled; and
//! never passed through to a mesh workload the pod may not call (`403`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use trustmesh_e2e::process::Process;

use crate::topology::Topology;

/// The port the echo server listens on in the outsider's namespace.
pub const PORT: u16 = 8765;

/// The host octet of a registry workload that only B may call; no namespace has its address.
pub const WITHHELD: u8 = 30;

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("real")
        .join(name)
}

fn python() -> String {
    let py = trustmesh_e2e::python::python().expect("the real-client virtualenv (.ci/pyenv.sh)");
    py.to_str().unwrap().to_string()
}

/// Starts the echo server on `0.0.0.0:PORT` in member `pod` and waits until it listens.
pub fn start_echo(topo: &Topology, pod: &str, dir: &Path) -> Process {
    let (py, echo) = (python(), script("ws_echo.py"));
    let port = PORT.to_string();
    let args = [echo.to_str().unwrap(), &port, "0.0.0.0"];
    let cmd = topo.exec(pod, &py, &args);
    let log = dir.join(format!("ws-echo-{pod}.log"));
    let mut p = Process::spawn(&format!("ws echo {pod}"), cmd, &log).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !p.log().contains("READY") {
        p.ensure_running().unwrap();
        assert!(Instant::now() < deadline, "ws_echo.py never listened");
        std::thread::sleep(Duration::from_millis(100));
    }
    p
}

/// The opening handshakes the echo server accepted so far: `{"path", "headers"}`.
pub fn handshakes(echo: &Process) -> Vec<Value> {
    echo.log()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("path").is_some())
        .collect()
}

/// Runs the client in member `pod` as a plain app (intercepted): it dials `ip:PORT` and opens
/// `ws://ip:PORT{path}`; its last JSON line (`{"echoes": [...]}` or `{"error", "status"}`).
pub fn client(topo: &Topology, pod: &str, ip: &str, path: &str) -> Value {
    let (py, client) = (python(), script("ws_client.py"));
    let addr = format!("{ip}:{PORT}");
    let uri = format!("ws://{addr}{path}");
    let out = topo
        .run(pod, &py, &[client.to_str().unwrap(), &addr, &uri])
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {out:?}"))
}

//! The real-client suite's one helper: a two-sidecar mesh ([`Mesh`], A → B) in front of a real
//! server process (a script of `tests/real/` run by the venv's python), and real clients
//! (`curl`, `h2load`, the scripts' clients) run against A's outbound listener.
//!
//! ```text
//! client process --> A outbound --mTLS h2--> B inbound --(B's declared protocol)--> server process
//! ```
//!
//! B's registry entry declares the server's port with the protocol the test gives
//! ([`RealMesh::start`]), so the inbound sidecar speaks to it as a real deployment would.
//! Every process started here is killed when the [`RealMesh`] or the client times out.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use anyhow::Context as _;

use crate::mesh::{Mesh, MeshOptions};
use crate::ports::free_addr;
use crate::process::Process;
use crate::python::python;
use crate::wait::poll_until;

/// The host a client names to reach B through A: a registry name of service `b`.
pub const B_HOST: &str = "b.test";

/// How long one client run may take before it is killed and the test fails.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// `tests/real/<name>`: a script or file of the suite.
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("real")
        .join(name)
}

/// The venv's python, or a failure naming why there is none.
pub fn py() -> anyhow::Result<PathBuf> {
    python().map_err(|e| anyhow::anyhow!("the real-client virtualenv: {e}"))
}

/// What the real server behind B is.
#[derive(Debug, Clone)]
pub struct Server<'a> {
    /// The script of `tests/real/` and its arguments; `--port N` is appended.
    pub args: Vec<&'a str>,
    /// The protocol B's registry entry declares for the server's port (`None`: undeclared).
    pub protocol: Option<&'static str>,
    /// A `.proto` of `tests/real/` whose stubs the server and clients import
    /// ([`RealMesh::protoc`], run before the server starts).
    pub proto: Option<&'a str>,
}

/// A mesh whose B stands in front of a real server process.
#[derive(Debug)]
pub struct RealMesh {
    /// The server; `None` when the test runs B's app down.
    pub server: Option<Process>,
    /// The mesh (its work folder holds every log and the clients' files).
    pub mesh: Mesh,
    /// The server's address (B's `--app`).
    pub app: SocketAddr,
}

impl RealMesh {
    /// Starts `server` on a free loopback port and the mesh in front of it, B's port declared
    /// as `server.protocol` (beside the usual `80: http`), with `opts` for the rest. With
    /// `server.args` empty no server is started: B's app is down.
    pub async fn start(test: &str, server: Server<'_>, opts: MeshOptions) -> anyhow::Result<Self> {
        let app = free_addr()?;
        let mut b_ports = vec![(80, "http")];
        if let Some(p) = server.protocol {
            b_ports.push((app.port(), p));
        }
        let opts = MeshOptions {
            b_app: Some(app),
            b_ports,
            ..opts
        };
        let mesh = Mesh::start(test, opts).await?;
        let mut real = Self {
            server: None,
            mesh,
            app,
        };
        if let Some(proto) = server.proto {
            real.protoc(proto).await?;
        }
        if let Some((name, rest)) = server.args.split_first() {
            let mut cmd = std::process::Command::new(py()?);
            cmd.arg(script(name))
                .args(rest)
                .args(["--port", &app.port().to_string()])
                .current_dir(real.work())
                .env("PYTHONPATH", real.work());
            let log = real.work().join(format!("server-{name}.log"));
            real.server = Some(Process::spawn(name, cmd, &log)?);
            poll_until(
                "the real server listens",
                Duration::from_secs(30),
                || async {
                    Ok(tokio::net::TcpStream::connect(app)
                        .await
                        .is_ok()
                        .then_some(()))
                },
            )
            .await?;
        }
        Ok(real)
    }

    /// The test's work folder.
    pub fn work(&self) -> &Path {
        self.mesh.dir.path()
    }

    /// A's outbound listener: where the clients send.
    pub fn outbound(&self) -> SocketAddr {
        self.mesh.a.outbound()
    }

    /// `curl --connect-to` so that `http://b.test/...` goes to A's outbound listener.
    pub fn connect_to(&self) -> String {
        let o = self.outbound();
        format!("{B_HOST}:80:{}:{}", o.ip(), o.port())
    }

    /// Runs `program args` in the work folder, killed after [`CLIENT_TIMEOUT`].
    pub async fn run(&self, program: &Path, args: &[&str]) -> anyhow::Result<Output> {
        run_in(self.work(), program, args).await
    }

    /// Runs the suite's script `name` with `args` under the venv's python.
    pub async fn client(&self, name: &str, args: &[&str]) -> anyhow::Result<Output> {
        client_in(self.work(), name, args).await
    }

    /// Generates the Python stubs of `tests/real/<proto>` into the work folder
    /// (`grpc_tools.protoc`), where the scripts import them from.
    pub async fn protoc(&self, proto: &str) -> anyhow::Result<()> {
        let include = format!("-I{}", script("").display());
        let out = format!("--python_out={}", self.work().display());
        let grpc_out = format!("--grpc_python_out={}", self.work().display());
        let file = script(proto);
        let file = file.to_string_lossy();
        let args = ["-m", "grpc_tools.protoc", &include, &out, &grpc_out, &file];
        let done = self.run(&py()?, &args).await?;
        anyhow::ensure!(done.status.success(), "protoc: {}", text(&done));
        Ok(())
    }
}

/// Runs `program args` in `dir` (also its `PYTHONPATH`, where generated stubs are), killed
/// after [`CLIENT_TIMEOUT`].
pub async fn run_in(dir: &Path, program: &Path, args: &[&str]) -> anyhow::Result<Output> {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .current_dir(dir)
        .env("PYTHONPATH", dir)
        .kill_on_drop(true);
    tokio::time::timeout(CLIENT_TIMEOUT, cmd.output())
        .await
        .with_context(|| format!("{} {args:?} did not end", program.display()))?
        .with_context(|| format!("running {}", program.display()))
}

/// Runs the suite's script `name` with `args` under the venv's python, in `dir`.
pub async fn client_in(dir: &Path, name: &str, args: &[&str]) -> anyhow::Result<Output> {
    let path = script(name);
    let path = path.to_string_lossy();
    let mut all = vec![path.as_ref()];
    all.extend_from_slice(args);
    run_in(dir, &py()?, &all).await
}

/// A client's exit status, stdout and stderr, for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "{}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

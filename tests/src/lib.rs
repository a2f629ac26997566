//! End-to-end test harness for trustmesh: the real `trustmesh` and `trustmesh-proxy` binaries
//! on real loopback sockets, with certificates from the mesh's own CA.
//!
//! Each test owns a [`workdir::WorkDir`] (policies, control plane data, tokens, logs), picks
//! ephemeral loopback ports ([`ports`]), and starts processes through [`process::Process`],
//! which kills and reaps them when dropped, also when the test panics. The binaries are built
//! once per test process by [`bins::binaries`].
//!
//! - [`control_plane::ControlPlane`]: `trustmesh serve`, ready once `/healthz` answers over TLS
//!   verified with the trust bundle.
//! - [`proxy::Proxy`]: a sidecar bootstrapped with a fresh token, ready once `/ready` is 200.
//! - [`app::App`]: an HTTP/1.1 + h2c app that answers with JSON of what it received.
//! - [`mesh::Mesh`]: the usual A → B topology.
//! - [`client`], [`https`], [`mtls`]: the clients the tests drive it with; [`admin_api`]: the
//!   control plane's admin view (`GET /v1/proxies`).
//! - [`python`]: the virtualenv of real Python clients and servers (grpcio, websockets);
//!   [`real`]: the real-client suite's mesh in front of a real server process.
//! - [`lifecycle`]: short-lived certificates, replicas, steady load and TLS probes for the
//!   certificate lifecycle tests.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod admin_api;
pub mod app;
pub mod bins;
pub mod body;
pub mod client;
pub mod control_plane;
pub mod https;
pub mod kube_api;
pub mod lifecycle;
pub mod mesh;
pub mod mtls;
pub mod policies;
pub mod ports;
pub mod process;
pub mod proxy;
pub mod python;
pub mod real;
pub mod wait;
pub mod workdir;

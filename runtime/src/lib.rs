//! `trustmesh-runtime`: what both binaries (`trustmesh` and `trustmesh-proxy`) share at run
//! time, kept once below both: RFC 3339 time formatting ([`rfc3339`]), graceful drain
//! ([`Drain`]), the shutdown signals ([`shutdown_signal`]), durations on the command line
//! ([`parse_duration`]) and the one-shot HTTPS/1.1 client
//! ([`client`]) the proxy and the operator CLI use to reach a control plane.
//!
//! It sits below the binaries' layers (command line, API or listeners, domain, storage) and
//! knows nothing of them: no policies, no CA, no listeners.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod client;
mod drain;
mod duration;
mod signal;
mod time;

pub use drain::Drain;
pub use duration::parse_duration;
pub use signal::shutdown_signal;
pub use time::{rfc3339, rfc3339_precise};

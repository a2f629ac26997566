//! What each component takes from the flags, made once at start-up ([`crate::run`]): the
//! inbound and outbound stacks, identity, the control-plane client (bootstrap, renewal and
//! the snapshot watch), the admin and probe listeners. Nothing past start-up reads [`Args`],
//! so a test builds any of them from its config alone, with no process and no flags.

use crate::{admin, control, identity, inbound, outbound, probes};

use super::Args;

impl inbound::Config {
    /// The inbound configuration the flags describe.
    pub fn from_args(args: &Args) -> Self {
        Self {
            app: args.app,
            connect_timeout: args.connect_timeout,
            upstream_timeout: args.upstream_timeout,
            max_grpc_timeout: args.max_grpc_timeout,
            body_timeout: args.body_timeout,
            handshake_timeout: args.handshake_timeout,
            max_connections: args.max_connections,
            connections_per_identity: args.connections_per_identity(),
            // Room for the fields the caller's sidecar adds (identity, trace context).
            serve: crate::layers::drive::ServeConfig {
                max_headers: args
                    .max_headers
                    .saturating_add(crate::layers::headers::SIDECAR_HEADERS),
                ..args.serve()
            },
            access_log: args.access_log,
        }
    }
}

impl outbound::Config {
    /// The outbound configuration the flags describe.
    pub fn from_args(args: &Args) -> Self {
        Self {
            connect_timeout: args.connect_timeout,
            upstream_timeout: args.upstream_timeout,
            max_grpc_timeout: args.max_grpc_timeout,
            body_timeout: args.body_timeout,
            max_connections: args.max_connections,
            serve: args.serve(),
            access_log: args.access_log,
            retry: outbound::http_route::RetryConfig {
                max_body_bytes: args.retry_max_body_bytes,
                budget_percent: args.retry_budget_percent,
                budget_min_per_sec: args.retry_budget_min_per_sec,
            },
            balance: outbound::balance::Config {
                kind: args.balancer,
                eject: outbound::balance::eject::EjectConfig {
                    consecutive_failures: args.eject_consecutive_failures,
                    base_time: args.eject_base_time,
                    max_percent: args.eject_max_percent,
                },
            },
            hop_http1: args.hop_http1,
            http1_pool: outbound::pool::http1::Limits::for_idle_timeout(args.idle_timeout),
        }
    }
}

impl identity::Config {
    /// `--token-file`, `--state-dir` and `--renew-fraction`.
    pub fn from_args(args: &Args) -> Self {
        Self {
            token_file: args.token_file.clone(),
            state_dir: args.state_dir.clone(),
            renew_fraction: args.renew_fraction,
        }
    }
}

impl control::Config {
    /// `--control-plane`, and the trust domain of `--identity`.
    pub fn from_args(args: &Args) -> Self {
        Self {
            control_plane: args.control_plane.clone(),
            trust_domain: args.identity.trust_domain(),
        }
    }
}

impl admin::Config {
    /// The flags `/config` reports, and the open-files limits start-up left in force.
    pub fn from_args(args: &Args, open_files: Option<crate::net::nofile::OpenFiles>) -> Self {
        let control_plane: Vec<String> = args.control_plane.iter().map(|u| u.to_string()).collect();
        Self {
            control_plane: control_plane.join(","),
            app: args.app,
            inbound: args.inbound,
            outbound: args.outbound,
            admin: args.admin,
            open_files,
        }
    }
}

impl probes::Config {
    /// The IP of `--app`, `--app-probes` (none: every path is 404) and the listener limits.
    pub fn from_args(args: &Args) -> Self {
        Self {
            app_ip: args.app.ip(),
            probes: args.app_probes.clone().unwrap_or_default(),
            serve: args.serve(),
        }
    }
}

//! `trustmesh-proxy`: the sidecar. `main` parses flags and starts [`run::run`], which reads top
//! to bottom: identity → snapshot → listeners (admin, inbound, outbound, probes).
//! `trustmesh-proxy init` ([`init`]) is the pod's init container: it writes the iptables rules.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

mod accept;
mod access_log;
mod admin;
mod app_ports;
mod authorize;
mod body;
mod bootstrap;
mod config;
mod control;
mod drive;
mod error;
mod headers;
mod identity;
mod inbound;
mod init;
mod intercept;
mod limits;
mod listen;
mod log_level;
mod metrics;
mod nofile;
mod opaque;
mod original_dst;
mod otlp;
mod outbound;
mod passthrough;
mod peer_cap;
mod persist;
mod pool;
mod probes;
mod revocation;
mod run;
mod state;
mod trace;
mod upstream;
mod watch;

use std::process::ExitCode;

use trustmesh_config as config_file;

use clap::CommandFactory as _;

fn main() -> ExitCode {
    // `trustmesh-proxy init ...` sets up interception and exits; anything else is the sidecar.
    if std::env::args_os().nth(1).is_some_and(|a| a == "init") {
        return init::main(std::env::args_os().skip(1));
    }
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let (args, matches, file) = match config_file::parse::<config::Args>(argv, None) {
        Ok(parsed) => parsed,
        Err(config_file::ConfigError::Clap(e)) => e.exit(),
        Err(config_file::ConfigError::Source(e)) => {
            eprintln!("trustmesh-proxy: error: {e}");
            return ExitCode::from(2);
        }
    };
    if args.print_config {
        let cmd = config::Args::command();
        print!("{}", config_file::render(&cmd, &matches, file.as_ref()));
        return ExitCode::SUCCESS;
    }
    log_level::init(&args.log_level);
    let runtime = match args.threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        0 => tokio::runtime::Builder::new_multi_thread(),
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(usize::from(n));
            b
        }
    }
    .enable_all()
    .build();
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("trustmesh-proxy: error: starting the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<bootstrap::NoCredential>().is_some() => {
            eprintln!("trustmesh-proxy: error: {e:#}");
            ExitCode::from(bootstrap::NoCredential::EXIT_CODE)
        }
        Err(e) => {
            eprintln!("trustmesh-proxy: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

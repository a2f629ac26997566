//! `trustmesh-proxy`: the sidecar. `main` parses flags and starts [`run::run`], which reads top
//! to bottom: identity → snapshot → listeners (admin, inbound, outbound, probes).
//! `trustmesh-proxy init` ([`init`]) is the pod's init container: it writes the iptables rules.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

mod admin;
mod app_ports;
mod config;
mod control;
mod identity;
mod inbound;
mod init;
mod layers;
mod net;
mod observe;
mod opaque;
mod outbound;
mod probes;
mod revocation;
mod run;
mod state;
#[cfg(test)]
mod testing;
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
    observe::log_level::init(&args.log_level);
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
        Err(e) if e.downcast_ref::<identity::NoCredential>().is_some() => {
            eprintln!("trustmesh-proxy: error: {e:#}");
            ExitCode::from(identity::NoCredential::EXIT_CODE)
        }
        Err(e) => {
            eprintln!("trustmesh-proxy: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

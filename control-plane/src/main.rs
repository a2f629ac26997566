//! `trustmesh`: the control plane server (`trustmesh serve`) and the operator CLI.
//!
//! `main` only parses flags and dispatches. The crate is four layers, each importing only
//! those below it: [`cli`] (one file per command) → [`api`] (router, authentication, one
//! handler file per endpoint group) → [`domain`] (CA and rotation, tokens, blocklist,
//! snapshots, policy source) → [`storage`] (the data folder, the Kubernetes API).
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

mod api;
mod cli;
mod domain;
mod storage;

use std::process::ExitCode;

use trustmesh_config as config_file;

use clap::CommandFactory as _;

/// jemalloc for the control plane only (the sidecar keeps the system allocator): it holds a
/// long poll per proxy and frees a snapshot buffer per proxy on every push, between
/// allocations that live on, and glibc's arenas kept that freed memory resident. At 5000
/// services x 10000 polls (README "Benchmarks", `.cargo/config.toml` for its settings): RSS
/// idle 360 -> 322 MiB, after three pushes 475-513 -> 417-418 MiB, CPU per push 457-487 ->
/// 383-400 ms. `_RJEM_MALLOC_CONF` overrides the settings at run time.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    // The control plane's TLS stays on aws-lc-rs (X25519MLKEM768 for clients that prefer it);
    // the sidecar runs on ring. `trustmesh_certs::provider` takes the process default.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let (cli, matches, file) = match config_file::parse::<cli::Cli>(argv, Some("serve")) {
        Ok(parsed) => parsed,
        Err(config_file::ConfigError::Clap(e)) => e.exit(),
        Err(config_file::ConfigError::Source(e)) => {
            eprintln!("trustmesh: error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(("serve", serve)) = matches.subcommand() {
        if serve.get_flag("print_config") {
            let cmd = cli::Cli::command();
            if let Some(cmd) = cmd.find_subcommand("serve") {
                print!("{}", config_file::render(cmd, serve, file.as_ref()));
            }
            return ExitCode::SUCCESS;
        }
    }
    init_tracing(&cli.log_level);
    match cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("trustmesh: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Logs go to stderr; `RUST_LOG` wins over `--log-level` when set.
fn init_tracing(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

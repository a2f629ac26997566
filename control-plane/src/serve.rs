//! `trustmesh serve`: wires the CA, the bootstrap-token state, the policy source and the API
//! listener together, then runs until SIGTERM or Ctrl-C.

use std::sync::Arc;
use std::time::SystemTime;

use anyhow::Context as _;

use crate::api::{AppState, Metrics};
use crate::cli::ServeArgs;
use crate::policy_source::PolicySource;
use crate::{ca_store, server_tls, tokens};

/// Runs the control plane.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let policies = PolicySource::load(&args.policies)?;
    let mesh_td = &policies.current().set.mesh.trust_domain;
    if *mesh_td != args.trust_domain {
        anyhow::bail!(
            "--trust-domain {} disagrees with trust_domain {} in {}/mesh.yaml",
            args.trust_domain,
            mesh_td,
            args.policies.display()
        );
    }
    let ca = ca_store::load_or_create(&args.data_dir, &args.trust_domain)?;
    let state = Arc::new(AppState {
        bundle_pem: ca.trust_bundle().pem().to_string(),
        token_key: tokens::load_or_create_key(&args.data_dir)?,
        used_tokens: tokens::UsedTokens::load(&args.data_dir, SystemTime::now())?,
        ca,
        policies: policies.clone(),
        cert_ttl: args.cert_ttl,
        proxies: Default::default(),
        metrics: Metrics::new()?,
    });
    tokio::spawn(policies.watch());
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding --listen {}", args.listen))?;
    tracing::info!(
        listen = %listener.local_addr()?,
        trust_domain = %args.trust_domain,
        data_dir = %args.data_dir.display(),
        cert_ttl = %humantime::format_duration(args.cert_ttl),
        "control plane serving"
    );
    server_tls::serve(listener, state, args.server_names, shutdown_signal()).await?;
    tracing::info!("control plane stopped");
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

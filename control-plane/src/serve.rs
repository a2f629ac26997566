//! `trustmesh serve`: wires the CA, the bootstrap-token state, the policy source and the API
//! listener together, then runs until SIGTERM or Ctrl-C.

use std::sync::Arc;
use std::time::SystemTime;

use anyhow::Context as _;

use crate::api::{AppState, Metrics};
use crate::ca_store::ImportFrom;
use crate::cli::ServeArgs;
use crate::k8s_jwt::K8sVerifier;
use crate::policy_source::PolicySource;
use crate::trust::{self, TrustStore};
use crate::{server_tls, tokens};

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
    let import = match (&args.ca_cert, &args.ca_key) {
        (Some(cert), Some(key)) => Some(ImportFrom { cert, key }),
        _ => None,
    };
    let trust = TrustStore::open(&args.data_dir, &args.trust_domain, args.cert_ttl, import)?;
    let state = Arc::new(AppState {
        trust: trust.clone(),
        k8s: K8sVerifier::from_args(&args.k8s, &args.trust_domain).await?,
        token_key: tokens::load_or_create_key(&args.data_dir)?,
        used_tokens: tokens::UsedTokens::load(&args.data_dir, SystemTime::now())?,
        policies: policies.clone(),
        cert_ttl: args.cert_ttl,
        proxies: Default::default(),
        peers: Default::default(),
        metrics: Metrics::new()?,
        drain: crate::drain::Drain::new(args.drain_timeout),
    });
    state.metrics.register(Box::new(policies.reloads.clone()))?;
    state.metrics.register(Box::new(policies.scans.clone()))?;
    tokio::spawn(policies.watch());
    if !args.peers.is_empty() {
        tokio::spawn(crate::peers::run(state.clone(), args.peers.clone()));
    }
    let book = state.clone();
    tokio::spawn(trust.watch(move |generation| trust::lagging_in(&book.proxies, generation)));
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

//! Start-up, top to bottom: bind the listeners (so a bad address fails at once), serve admin,
//! get a certificate with the bootstrap token, fetch the first snapshot, then serve inbound
//! and outbound while renewal and the snapshot watch run beside them.

use std::sync::Arc;

use anyhow::Context as _;
use arc_swap::ArcSwapOption;
use tokio::net::TcpListener;
use trustmesh_certs::{RotatingResolver, TrustBundle};

use crate::admin::{self, AdminInfo};
use crate::app_ports::SidecarPorts;
use crate::config::Args;
use crate::control::ControlClient;
use crate::inbound::Inbound;
use crate::metrics::Metrics;
use crate::outbound::Outbound;
use crate::state::Shared;
use crate::{identity, listen, watch};

/// Runs the sidecar until SIGTERM or Ctrl-C.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let bundle_pem = std::fs::read_to_string(&args.trust_bundle)
        .with_context(|| format!("reading --trust-bundle {}", args.trust_bundle.display()))?;
    let bundle = TrustBundle::from_pem(&bundle_pem)
        .with_context(|| format!("--trust-bundle {}", args.trust_bundle.display()))?;
    let token = std::fs::read_to_string(&args.token_file)
        .with_context(|| format!("reading --token-file {}", args.token_file.display()))?
        .trim()
        .to_string();
    if token.is_empty() {
        anyhow::bail!("--token-file {} is empty", args.token_file.display());
    }
    let bind = |addr, flag: &'static str| async move {
        TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {flag} {addr}"))
    };
    let admin_l = bind(args.admin, "--admin").await?;
    let inbound_l = bind(args.inbound, "--inbound").await?;
    let outbound_l = bind(args.outbound, "--outbound").await?;
    let probe_l = match args.probe_listen {
        Some(addr) => Some(bind(addr, "--probe-listen").await?),
        None => None,
    };
    // What inbound must never forward to: the ports as bound (a flag may say port 0).
    let mut listeners = vec![
        ("--inbound", inbound_l.local_addr()?),
        ("--outbound", outbound_l.local_addr()?),
        ("--admin", admin_l.local_addr()?),
    ];
    if let Some(l) = &probe_l {
        listeners.push(("--probe-listen", l.local_addr()?));
    }
    let ports = SidecarPorts::new(&listeners, args.app).map_err(anyhow::Error::msg)?;

    let resolver = Arc::new(RotatingResolver::new());
    let shared = Arc::new(Shared {
        identity: args.identity.clone(),
        resolver: resolver.clone(),
        cert: ArcSwapOption::empty(),
        mesh: ArcSwapOption::empty(),
        metrics: Metrics::new()?,
        drain: Default::default(),
        mesh_changes: tokio::sync::watch::channel(0).0,
        ports,
        args: args.clone(),
    });
    if args.access_log == crate::access_log::AccessLogFormat::Json {
        crate::access_log::writer::start(shared.metrics.access_log_dropped.clone())
            .context("starting the access log writer")?;
    }
    if let Some(endpoint) = &args.otlp_endpoint {
        crate::otlp::start(endpoint, args.identity.as_str())?;
    }
    let control = Arc::new(ControlClient::new(
        &args.control_plane,
        &bundle,
        resolver,
        &args.identity.trust_domain(),
    )?);
    let info = Arc::new(AdminInfo {
        control_plane: control.uris(),
    });
    tokio::spawn(admin::serve(admin_l, shared.clone(), info));

    identity::bootstrap(&shared, &control, &token).await?;
    drop(token);
    let mut backoff = identity::Backoff::new();
    while let Err(e) = watch::poll_once(&shared, &control).await {
        let wait = backoff.next();
        tracing::warn!(target: "policy", "first snapshot failed, retrying in {wait:?}: {e:#}");
        tokio::time::sleep(wait).await;
    }
    tokio::spawn(identity::renew_forever(shared.clone(), control.clone()));
    tokio::spawn(watch::watch_forever(shared.clone(), control.clone()));
    let (inbound, outbound) = (Inbound::new(shared.clone()), Outbound::new(shared.clone()));
    // IPv6 twins of the inbound and outbound listeners, for traffic ip6tables redirects.
    if let Some(l) = listen::ipv6_twin(args.inbound).await {
        tokio::spawn(inbound.clone().serve(l));
    }
    if let Some(l) = listen::ipv6_twin(args.outbound).await {
        tokio::spawn(outbound.clone().serve(l));
    }
    tokio::spawn(inbound.serve(inbound_l));
    tokio::spawn(outbound.serve(outbound_l));
    if let Some(l) = probe_l {
        let probes = args.app_probes.clone().unwrap_or_default();
        if let Some(l6) = listen::ipv6_twin(l.local_addr()?).await {
            tokio::spawn(crate::probes::serve(l6, args.app.ip(), probes.clone()));
        }
        tokio::spawn(crate::probes::serve(l, args.app.ip(), probes));
    }
    tracing::info!(
        identity = %args.identity,
        inbound = %args.inbound,
        outbound = %args.outbound,
        admin = %args.admin,
        app = %args.app,
        "sidecar ready"
    );
    shutdown_signal().await;
    let left = shared.drain.run(args.drain_timeout).await;
    if left > 0 {
        tracing::warn!("--drain-timeout passed with connections still open; closing them");
    }
    crate::otlp::flush(std::time::Duration::from_secs(2)).await;
    crate::access_log::writer::flush(std::time::Duration::from_secs(1)).await;
    tracing::info!("sidecar stopping");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
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

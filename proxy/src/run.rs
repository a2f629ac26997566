//! Start-up, top to bottom: raise the open-files limit, bind the listeners (so a bad address
//! fails at once), serve admin, load the certificate kept in `--state-dir` or get one with the
//! bootstrap token, fetch the first snapshot, then serve inbound and outbound while renewal
//! and the snapshot watch run beside them.

use std::sync::Arc;

use anyhow::Context as _;
use arc_swap::ArcSwapOption;
use tokio::net::TcpListener;
use trustmesh_certs::{RotatingResolver, TrustBundle};

use crate::app_ports::SidecarPorts;
use crate::config::Args;
use crate::control::ControlClient;
use crate::identity::{Backoff, Identity};
use crate::inbound::Inbound;
use crate::net::listen;
use crate::observe::metrics::Metrics;
use crate::outbound::Outbound;
use crate::state::Shared;
use crate::{admin, control, identity, inbound, outbound, probes, watch};

/// Runs the sidecar until SIGTERM or Ctrl-C.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let bundle_pem = std::fs::read_to_string(&args.trust_bundle)
        .with_context(|| format!("reading --trust-bundle {}", args.trust_bundle.display()))?;
    let bundle = TrustBundle::from_pem(&bundle_pem)
        .with_context(|| format!("--trust-bundle {}", args.trust_bundle.display()))?;
    let open_files = crate::net::nofile::raise();
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
    });
    if args.access_log == crate::observe::access_log::AccessLogFormat::Json {
        crate::observe::access_log::writer::start(shared.metrics.access_log_dropped.clone())
            .context("starting the access log writer")?;
    }
    if let Some(endpoint) = &args.otlp_endpoint {
        crate::observe::otlp::start(endpoint, args.identity.as_str())?;
    }
    // Each component gets what it needs from the flags, made once here.
    let control = Arc::new(ControlClient::new(
        &control::Config::from_args(&args),
        &bundle,
        resolver,
    )?);
    let admin_config = admin::Config::from_args(&args, open_files);
    tokio::spawn(admin::serve(admin_l, shared.clone(), admin_config));

    // A certificate kept in --state-dir is used at once and renewed at once; without one, the
    // token gets the first.
    let identity = Identity::new(
        shared.clone(),
        control.clone(),
        identity::Config::from_args(&args),
    );
    let restored = match identity.restore(&bundle)? {
        Ok(()) => true,
        Err(why) => {
            identity.bootstrap(&why).await?;
            false
        }
    };
    let mut backoff = Backoff::new();
    while let Err(e) = watch::poll_once(&shared, &control).await {
        let wait = backoff.next();
        tracing::warn!(target: "policy", "first snapshot failed, retrying in {wait:?}: {e:#}");
        tokio::time::sleep(wait).await;
    }
    tokio::spawn(identity.renew_forever(restored));
    tokio::spawn(watch::watch_forever(shared.clone(), control.clone()));
    let inbound = Inbound::new(shared.clone(), inbound::Config::from_args(&args));
    let outbound = Outbound::new(shared.clone(), outbound::Config::from_args(&args));
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
        let config = probes::Config::from_args(&args);
        if let Some(l6) = listen::ipv6_twin(l.local_addr()?).await {
            tokio::spawn(probes::serve(l6, config.clone(), shared.clone()));
        }
        tokio::spawn(probes::serve(l, config, shared.clone()));
    }
    tracing::info!(
        identity = %args.identity,
        inbound = %args.inbound,
        outbound = %args.outbound,
        admin = %args.admin,
        app = %args.app,
        "sidecar ready"
    );
    trustmesh_runtime::shutdown_signal().await;
    let left = shared.drain.run(args.drain_timeout).await;
    if left > 0 {
        tracing::warn!("--drain-timeout passed with connections still open; closing them");
    }
    crate::observe::otlp::flush(std::time::Duration::from_secs(2)).await;
    crate::observe::access_log::writer::flush(std::time::Duration::from_secs(1)).await;
    tracing::info!("sidecar stopping");
    Ok(())
}

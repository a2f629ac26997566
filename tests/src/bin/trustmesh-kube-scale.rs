//! `trustmesh-kube-scale`: the scale figure of Kubernetes mode. The stand-in API server
//! (`trustmesh_e2e::kube_api`, not a real one) is filled with `--services` Services and
//! `--pods` Pods (one EndpointSlice per Service, every pod ready), a real
//! `trustmesh serve --kubeconfig` is started against it, and one real sidecar
//! (`trustmesh-proxy`, the ServiceAccount of one of the pods) follows its snapshot. Prints the
//! control plane's RSS and CPU, the time to the first complete registry, and the time for one
//! EndpointSlice change to reach the sidecar (`--changes` times).
//!
//! `cargo run --release -p trustmesh-e2e --bin trustmesh-kube-scale -- --services 1000 --pods 10000`
//! (a release run builds release binaries). CPU is user+system ticks of the control-plane
//! process from `/proc/PID/stat`; times are wall clock, so on a loaded machine they are upper
//! bounds.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde_json::Value;
use trustmesh_e2e::app::App;
use trustmesh_e2e::control_plane::ControlPlane;
use trustmesh_e2e::kube_api::scale::{self, Cluster};
use trustmesh_e2e::kube_api::{KubeApi, Resource};
use trustmesh_e2e::lifecycle::config;
use trustmesh_e2e::policies::{spiffe_id, write_policies};
use trustmesh_e2e::ports::ProxyPorts;
use trustmesh_e2e::proxy::{rss_kib, Proxy};
use trustmesh_e2e::workdir::WorkDir;

/// Longest wait for one change to reach the sidecar.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(60);

struct Args {
    services: usize,
    pods: usize,
    namespaces: usize,
    changes: usize,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        services: 1000,
        pods: 10_000,
        namespaces: 10,
        changes: 5,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value: usize = it
            .next()
            .with_context(|| format!("{flag} needs a number"))?
            .parse()
            .with_context(|| format!("{flag} needs a number"))?;
        match flag.as_str() {
            "--services" => a.services = value.max(1),
            "--pods" => a.pods = value.max(1),
            "--namespaces" => a.namespaces = value.max(1),
            "--changes" => a.changes = value.clamp(1, 100),
            other => bail!("unknown flag {other} (--services, --pods, --namespaces, --changes)"),
        }
    }
    Ok(a)
}

/// User + system CPU of `pid` in seconds.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    // sysconf(_SC_CLK_TCK) is 100 on Linux.
    Ok(ticks as f64 / 100.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    let dir = WorkDir::new("kube-scale")?;
    let api = KubeApi::start().await?;
    let filled = Instant::now();
    scale::populate(
        &api,
        &Cluster {
            namespaces: a.namespaces,
            services: a.services,
            pods: a.pods,
        },
    )
    .map_err(|e| anyhow::anyhow!("filling the stub: {e}"))?;
    println!(
        "stub: {} namespaces, {} Services, {} EndpointSlices, {} Pods (filled in {:?})",
        api.count(Resource::Namespaces),
        api.count(Resource::Services),
        api.count(Resource::EndpointSlices),
        api.count(Resource::Pods),
        filled.elapsed()
    );
    let kubeconfig = dir.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig)?;
    let policies = write_policies(&dir.path().join("policies"), &[])?;
    let kc = kubeconfig.display().to_string();
    // Built (or found) before the clock starts.
    trustmesh_e2e::bins::binaries()?;
    let started = Instant::now();
    let mut cp = ControlPlane::start_with(
        dir.path(),
        &dir.path().join("cp-data"),
        &policies,
        &["--kubeconfig", &kc],
    )
    .await?;
    // serve answers /healthz only once the first complete registry is in force.
    let to_registry = started.elapsed();
    let pid = cp
        .process()
        .pid()
        .context("the control plane is not running")?;
    let cpu_start = cpu_seconds(pid)?;
    println!(
        "control plane: first complete registry {to_registry:?} after start (upper bound: to /healthz), \
         CPU {cpu_start:.2} s, RSS {} MiB",
        rss_kib(pid)? / 1024
    );

    // One sidecar: the ServiceAccount of svc-0's pods, which may call every Service.
    let app = App::start().await?;
    let id = spiffe_id("ns-0", "svc-0");
    let proxy =
        Proxy::start_with(&cp, "svc-0", &id, app.addr(), ProxyPorts::allocate()?, &[]).await?;
    let known = config(proxy.admin()).await?["services_known"].clone();
    println!("sidecar {id}: {known} services in its snapshot");
    let idle_from = cpu_seconds(pid)?;
    tokio::time::sleep(Duration::from_secs(10)).await;
    println!(
        "control plane idle: {:.3} CPU s over 10 s, RSS {} MiB",
        cpu_seconds(pid)? - idle_from,
        rss_kib(pid)? / 1024
    );

    // EndpointSlice changes: svc-1 loses, then regains, its first pod.
    let mut took = Vec::new();
    let pods_of_svc1: Vec<(String, String)> = (0..a.pods)
        .filter(|p| p % a.services == 1 % a.services)
        .map(|p| {
            (
                format!("svc-{}-{}", 1 % a.services, p / a.services),
                scale::pod_ip(p),
            )
        })
        .collect();
    let ns1 = format!("ns-{}", (1 % a.services) % a.namespaces);
    let svc1 = format!("svc-{}", 1 % a.services);
    for i in 0..a.changes {
        let before = snapshot_version(&proxy).await?;
        let members = if i % 2 == 0 {
            &pods_of_svc1[1.min(pods_of_svc1.len())..]
        } else {
            &pods_of_svc1[..]
        };
        let cpu_before = cpu_seconds(pid)?;
        let t0 = Instant::now();
        api.apply(scale::endpoint_slice(&ns1, &svc1, members))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        loop {
            if snapshot_version(&proxy).await? != before {
                break;
            }
            if t0.elapsed() > CHANGE_TIMEOUT {
                bail!("change {i} did not reach the sidecar in {CHANGE_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let dt = t0.elapsed();
        // Let the push finish before reading its CPU.
        tokio::time::sleep(Duration::from_millis(500)).await;
        println!(
            "EndpointSlice change {i}: reached the sidecar in {dt:?}; control plane CPU {:.3} s",
            cpu_seconds(pid)? - cpu_before
        );
        took.push(dt);
    }
    took.sort();
    println!(
        "EndpointSlice change to sidecar: median {:?}, max {:?} ({} changes); control plane RSS {} MiB",
        took[took.len() / 2],
        took[took.len() - 1],
        took.len(),
        rss_kib(pid)? / 1024
    );
    Ok(())
}

async fn snapshot_version(proxy: &Proxy) -> anyhow::Result<Value> {
    Ok(config(proxy.admin()).await?["snapshot_version"].clone())
}

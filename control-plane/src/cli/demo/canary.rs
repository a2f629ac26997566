//! The canary half of `trustmesh demo`: the example `policies/examples/canary` (namespace
//! `shop`) beside the production one, web calling orders, and an `HTTPRoute` that sends 90 % of
//! it to orders and 10 % to orders-canary, every request with `x-canary: always` to the canary.
//! The demo sends a hundred requests through web's sidecar, prints how they split, and the
//! shell command that shows it again.

use std::collections::BTreeMap;
use std::path::Path;

use super::{get, get_with, Workload};

const CANARY_SERVICES: &str = include_str!("../../../../policies/examples/canary/services.yaml");
const CANARY_POLICY: &str = include_str!("../../../../policies/examples/canary/orders-policy.yaml");
const CANARY_ROUTE: &str = include_str!("../../../../policies/examples/canary/orders-route.yaml");

/// The inbound ports match the endpoints in `policies/examples/canary/services.yaml`.
pub(super) const WORKLOADS: [Workload; 3] = [
    Workload {
        name: "orders",
        namespace: "shop",
        inbound: 16106,
        outbound: 16101,
        admin: 16100,
        app: 18091,
    },
    Workload {
        name: "orders-canary",
        namespace: "shop",
        inbound: 16206,
        outbound: 16201,
        admin: 16200,
        app: 18092,
    },
    Workload {
        name: "web",
        namespace: "shop",
        inbound: 16306,
        outbound: 16301,
        admin: 16300,
        app: 18093,
    },
];

/// web's outbound listener.
const WEB_OUTBOUND: u16 = 16301;

/// Adds the canary example's registry, policy and route to the demo's policy folder (its
/// `mesh.yaml` says what the production example's does).
pub(super) fn write_policies(dir: &Path) -> anyhow::Result<()> {
    std::fs::write(dir.join("canary-services.yaml"), CANARY_SERVICES)?;
    std::fs::write(dir.join("canary-orders-policy.yaml"), CANARY_POLICY)?;
    std::fs::write(dir.join("canary-orders-route.yaml"), CANARY_ROUTE)?;
    Ok(())
}

/// Sends 100 requests from web to orders, prints where they went and the command that shows
/// the split; then one with the tester's header.
pub(super) async fn try_split() {
    let mut by_service: BTreeMap<String, u32> = BTreeMap::new();
    for i in 0..100 {
        let url = format!("http://127.0.0.1:{WEB_OUTBOUND}/orders/{i}");
        let who = match get(&url, Some("orders")).await {
            Ok((200, body)) => serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["service"].as_str().map(str::to_string))
                .unwrap_or_else(|| "unreadable answer".to_string()),
            Ok((status, _)) => format!("status {status}"),
            Err(e) => format!("failed ({e:#})"),
        };
        *by_service.entry(who).or_default() += 1;
    }
    let counts: Vec<String> = by_service.iter().map(|(s, n)| format!("{n} {s}")).collect();
    println!("# web reads orders: the HTTPRoute shop/orders-canary sends 90 % to orders, 10 % to orders-canary");
    println!(
        "for i in $(seq 100); do curl -s -H 'Host: orders' http://127.0.0.1:{WEB_OUTBOUND}/orders/$i; echo; done \
         | grep -o '\"service\":\"[^\"]*\"' | sort | uniq -c"
    );
    println!("#  -> 100 requests: {}", counts.join(", "));
    println!();
    let url = format!("http://127.0.0.1:{WEB_OUTBOUND}/orders/1");
    let tester = match get_with(&url, Some("orders"), &[("x-canary", "always")]).await {
        Ok((status, body)) => format!("{status} {}", body.trim()),
        Err(e) => format!("failed: {e:#}"),
    };
    println!("# a tester's header: every such request goes to the canary");
    println!("curl -s -H 'Host: orders' -H 'x-canary: always' {url}");
    println!("#  -> {tester}");
    println!();
}

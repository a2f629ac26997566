//! Replicas with data folders of their own (Kubernetes without a shared volume) share the
//! blocked identities through `--peers`: a block written on one replica's folder reaches the
//! proxies of the other, an unblock too, and a replica that was down catches up.

// Helpers outside #[test] functions fail the test by panicking, like the tests themselves.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use trustmesh_certs::{control_plane_identity, RotatingResolver, TrustBundle};
use trustmesh_e2e::app::App;
use trustmesh_e2e::client::http1_get;
use trustmesh_e2e::control_plane::{run_cli, ControlPlane};
use trustmesh_e2e::mesh::NAMESPACE;
use trustmesh_e2e::mtls::{issue, mesh_ca, mtls_get, trust_domain};
use trustmesh_e2e::policies::{spiffe_id, write_policies, ServiceEntry};
use trustmesh_e2e::ports::{free_addr, ProxyPorts};
use trustmesh_e2e::proxy::Proxy;
use trustmesh_e2e::wait::poll_until;
use trustmesh_e2e::workdir::WorkDir;

/// How long a change may take to reach the other replica's proxies: the exchange runs every
/// second, then the trust state is re-read and pushed.
const WITHIN: Duration = Duration::from_secs(5);

async fn listed(data_dir: &Path) -> String {
    let out = run_cli(&["identity", "list", "--data-dir", data_dir.to_str().unwrap()])
        .await
        .unwrap();
    assert!(out.status.success(), "{}", out.stderr);
    out.stdout
}

/// `trustmesh identity VERB ID --data-dir DIR`, which must succeed.
async fn identity(verb: &str, id: &str, data_dir: &Path) {
    let out = run_cli(&[
        "identity",
        verb,
        id,
        "--data-dir",
        data_dir.to_str().unwrap(),
    ])
    .await
    .unwrap();
    assert!(out.status.success(), "{}", out.stderr);
}

async fn status_via_a(a: &Proxy) -> u16 {
    http1_get(a.outbound(), "b.test", "/orders/1", &[])
        .await
        .map(|r| r.status.as_u16())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_on_one_replica_reaches_the_proxies_of_the_other() {
    let dir = WorkDir::new("peers").unwrap();
    let (a_ports, b_ports) = (
        ProxyPorts::allocate().unwrap(),
        ProxyPorts::allocate().unwrap(),
    );
    let policies = write_policies(
        &dir.path().join("policies"),
        &[
            ServiceEntry::new("a", NAMESPACE, a_ports.inbound),
            ServiceEntry::new("b", NAMESPACE, b_ports.inbound),
        ],
    )
    .unwrap();
    let (addr1, addr2) = (free_addr().unwrap(), free_addr().unwrap());
    let (data1, data2) = (dir.path().join("cp1-data"), dir.path().join("cp2-data"));
    let peers1 = addr2.to_string();
    let cp1 = ControlPlane::start_on(dir.path(), &data1, &policies, addr1, &["--peers", &peers1])
        .await
        .expect("replica 1 starts");
    // Replica 2 imports the same CA (as both import the trust-ca Secret on Kubernetes) into a
    // data folder of its own.
    let (ca_cert, ca_key) = (cp1.ca_cert_path(), cp1.ca_key_path());
    // Replica 2 also names two "peers" that accept TCP and then never answer (a node that
    // hangs): each exchange with them takes the full timeout, and must not hold up replica 1's.
    let silent: Vec<std::net::TcpListener> = (0..2)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let mut peers2: Vec<String> = silent
        .iter()
        .map(|l| l.local_addr().unwrap().to_string())
        .collect();
    peers2.push(addr1.to_string());
    let peers2 = peers2.join(",");
    let mut cp2 = ControlPlane::start_on(
        dir.path(),
        &data2,
        &policies,
        addr2,
        &[
            "--peers",
            &peers2,
            "--ca-cert",
            ca_cert.to_str().unwrap(),
            "--ca-key",
            ca_key.to_str().unwrap(),
        ],
    )
    .await
    .expect("replica 2 starts");
    assert_eq!(
        cp1.trust_bundle_pem().unwrap(),
        cp2.trust_bundle_pem().unwrap()
    );

    // A is served by replica 1, B by replica 2.
    let (app_a, app_b) = (App::start().await.unwrap(), App::start().await.unwrap());
    let id_a = spiffe_id(NAMESPACE, "a");
    let id_b = spiffe_id(NAMESPACE, "b");
    let _b = Proxy::start(&cp2, "b", &id_b, app_b.addr(), b_ports)
        .await
        .expect("B starts on replica 2");
    let a = Proxy::start(&cp1, "a", &id_a, app_a.addr(), a_ports)
        .await
        .expect("A starts on replica 1");
    assert_eq!(status_via_a(&a).await, 200);

    // Block A on replica 1's folder: replica 2 takes it in, and B refuses A.
    identity("block", &id_a, &data1).await;
    let blocked = Instant::now();
    poll_until("replica 2 lists A as blocked", WITHIN, || async {
        Ok(listed(&data2).await.contains(&id_a).then_some(()))
    })
    .await
    .unwrap();
    let reached_b = poll_until("B refuses A", WITHIN, || async {
        Ok((status_via_a(&a).await != 200).then(|| blocked.elapsed()))
    })
    .await
    .unwrap();
    eprintln!("peers: the block on replica 1 cut A off at B (replica 2) after {reached_b:?}");
    let seen_by_app = app_b.request_count();

    // Unblock on replica 1: the dated unblock wins on replica 2 too, and A gets through again.
    identity("unblock", &id_a, &data1).await;
    poll_until("A gets through B again", WITHIN, || async {
        Ok((status_via_a(&a).await == 200).then_some(()))
    })
    .await
    .unwrap();
    assert!(!listed(&data2).await.contains(&id_a));
    assert!(app_b.request_count() > seen_by_app);

    // Replica 2 is down while A is blocked on replica 1; when it is back it catches up.
    cp2.stop();
    identity("block", &id_a, &data1).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!listed(&data2).await.contains(&id_a), "replica 2 was down");
    cp2.restart().await.expect("replica 2 restarts");
    poll_until("replica 2 catches up on the block", WITHIN, || async {
        Ok(listed(&data2).await.contains(&id_a).then_some(()))
    })
    .await
    .unwrap();
    // B reconnects to replica 2 on its own retry schedule (jittered backoff), hence the margin.
    poll_until("B refuses A again", Duration::from_secs(30), || async {
        Ok((status_via_a(&a).await != 200).then_some(()))
    })
    .await
    .unwrap();

    // Only replicas and the admin may read a blocklist: a workload's certificate may not.
    let ca = mesh_ca(&cp1).unwrap();
    let bundle = TrustBundle::from_pem(&cp1.trust_bundle_pem().unwrap()).unwrap();
    let as_id = |id: &str| {
        let (cert, key) = issue(&ca, id, Duration::from_secs(600), SystemTime::now()).unwrap();
        let resolver = Arc::new(RotatingResolver::new());
        resolver.set(cert.chain, &key).unwrap();
        let td = trust_domain().unwrap();
        Arc::new(
            trustmesh_certs::tls::control_plane_client_config(
                &bundle,
                control_plane_identity(&td),
                Some(resolver),
            )
            .unwrap(),
        )
    };
    let workload = mtls_get(as_id(&id_b), cp1.addr(), "cp", "/v1/blocklist")
        .await
        .unwrap();
    assert_eq!(workload.status, 403, "{}", workload.text());
    let anonymous = cp1.get("/v1/blocklist").await.unwrap();
    assert_eq!(anonymous.status, 401, "{}", anonymous.text());
    let admin_id = spiffe_id("trustmesh-system", "admin");
    let admin = mtls_get(as_id(&admin_id), cp1.addr(), "cp", "/v1/blocklist")
        .await
        .unwrap();
    assert_eq!(admin.status, 200, "{}", admin.text());
    let v: serde_json::Value = admin.json().unwrap();
    assert_eq!(v["blocked"][0]["identity"], id_a.as_str(), "{v}");
    // `trustmesh status` (GET /v1/proxies) shows each peer and how the last exchange went:
    // replica 2 was down a moment ago, so replica 1's next exchange with it is awaited.
    let admin_tls = as_id(&admin_id);
    let cp1_addr = cp1.addr();
    poll_until("replica 1 reports replica 2 reachable", WITHIN, || {
        let admin_tls = admin_tls.clone();
        async move {
            let status = mtls_get(admin_tls, cp1_addr, "cp", "/v1/proxies").await?;
            let v: serde_json::Value = status.json()?;
            let peers = v["control_plane"]["peers"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            assert_eq!(peers.len(), 1, "{v}");
            assert_eq!(peers[0]["address"], addr2.to_string(), "{v}");
            Ok((peers[0]["ok"] == true).then_some(()))
        }
    })
    .await
    .unwrap();

    let metrics = cp1.get("/metrics").await.unwrap().text();
    assert!(
        metrics.contains("trustmesh_cp_peer_sync_total{result=\"unchanged\"}"),
        "{metrics}"
    );
}

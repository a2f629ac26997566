//! Kubernetes mode's shared state: two replicas of `trustmesh serve --kubeconfig` with **no
//! shared data folder** keep the CA in the `trustmesh-ca` Secret, the blocked identities in the
//! `trustmesh-blocklist` ConfigMap and a CA rotation in the `trustmesh-ca-rotation` Secret.
//!
//! **The API server here is a stand-in**: no Kubernetes API server runs on the machines these
//! tests run on, so `trustmesh_e2e::kube_api` (in this test process, plain HTTP on loopback)
//! serves the real API's objects, `resourceVersion`s, watches and `409 Conflict`s in its place.
//! The control plane and the CLI reach it through a kubeconfig, with the same kube-rs client
//! they use against a real cluster.

// Helpers outside #[test] functions fail the test by panicking, like the tests themselves.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use serde_json::json;
use trustmesh_certs::TrustBundle;
use trustmesh_e2e::app::App;
use trustmesh_e2e::client::http1_get;
use trustmesh_e2e::control_plane::{run_cli, ControlPlane};
use trustmesh_e2e::kube_api::{KubeApi, Resource};
use trustmesh_e2e::lifecycle::{presented, probe_config};
use trustmesh_e2e::mesh::NAMESPACE;
use trustmesh_e2e::policies::{spiffe_id, write_policies, ServiceEntry};
use trustmesh_e2e::ports::{free_addr, ProxyPorts};
use trustmesh_e2e::proxy::Proxy;
use trustmesh_e2e::wait::poll_until;
use trustmesh_e2e::workdir::WorkDir;

/// The control plane's namespace in the stand-in API.
const CP_NS: &str = "trustmesh-system";
/// The contract: a block reaches every sidecar within a second.
const BLOCK_WITHIN: Duration = Duration::from_secs(1);

/// Two replicas on the stand-in API, each with a data folder of its own, and a sidecar on
/// each: A (calling) served by replica 1, B (called) by replica 2.
struct Cluster {
    stub: KubeApi,
    dir: WorkDir,
    kubeconfig: PathBuf,
    cps: Vec<ControlPlane>,
    a: Proxy,
    b: Proxy,
    _apps: (App, App),
}

impl Cluster {
    async fn start(name: &str, ttl: &str) -> Self {
        let stub = KubeApi::start().await.unwrap();
        stub.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": CP_NS}}))
            .unwrap();
        let dir = WorkDir::new(name).unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        stub.write_kubeconfig(&kubeconfig).unwrap();
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
        let kc = kubeconfig.to_str().unwrap().to_string();
        let flags = [
            "--kubeconfig",
            &kc,
            "--kube-namespace",
            CP_NS,
            "--cert-ttl",
            ttl,
        ];
        let (data1, data2) = (dir.path().join("cp1-data"), dir.path().join("cp2-data"));
        // Both start at once on an empty API: they race to create the CA.
        let (cp1, cp2) = tokio::join!(
            ControlPlane::start_on(dir.path(), &data1, &policies, free_addr().unwrap(), &flags),
            ControlPlane::start_on(dir.path(), &data2, &policies, free_addr().unwrap(), &flags),
        );
        let (cp1, cp2) = (
            cp1.expect("replica 1 starts"),
            cp2.expect("replica 2 starts"),
        );
        let apps = (App::start().await.unwrap(), App::start().await.unwrap());
        let b = Proxy::start(
            &cp2,
            "b",
            &spiffe_id(NAMESPACE, "b"),
            apps.1.addr(),
            b_ports,
        )
        .await
        .expect("B starts on replica 2");
        let a = Proxy::start(
            &cp1,
            "a",
            &spiffe_id(NAMESPACE, "a"),
            apps.0.addr(),
            a_ports,
        )
        .await
        .expect("A starts on replica 1");
        Self {
            stub,
            dir,
            kubeconfig,
            cps: vec![cp1, cp2],
            a,
            b,
            _apps: apps,
        }
    }

    /// `trustmesh ARGS --kubeconfig K --kube-namespace trustmesh-system`, which must succeed.
    async fn cli(&self, args: &[&str]) -> String {
        let mut all = args.to_vec();
        all.extend(["--kubeconfig", self.kubeconfig.to_str().unwrap()]);
        all.extend(["--kube-namespace", CP_NS]);
        let out = run_cli(&all).await.unwrap();
        assert!(out.status.success(), "trustmesh {args:?}: {}", out.stderr);
        out.stdout
    }

    async fn a_to_b(&self) -> u16 {
        http1_get(self.a.outbound(), "b.test", "/orders/1", &[])
            .await
            .map(|r| r.status.as_u16())
            .unwrap_or(0)
    }

    fn bundles(&self) -> Vec<String> {
        self.cps
            .iter()
            .map(|cp| cp.trust_bundle_pem().unwrap())
            .collect()
    }

    fn secret_data(&self, name: &str, key: &str) -> Option<String> {
        let s = self.stub.get(Resource::Secrets, Some(CP_NS), name)?;
        let b64 = s["data"][key].as_str()?;
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        Some(String::from_utf8(bytes).unwrap())
    }

    fn blocklist(&self) -> String {
        self.stub
            .get(Resource::ConfigMaps, Some(CP_NS), "trustmesh-blocklist")
            .map(|cm| cm["data"]["blocked-identities.json"].to_string())
            .unwrap_or_default()
    }
}

fn no_ca_on_disk(data_dir: &Path) {
    for f in ["ca-key.pem", "ca-cert.pem", "blocked-identities.json"] {
        assert!(!data_dir.join(f).exists(), "{f} in {}", data_dir.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_through_the_api_reach_the_other_replica_and_survive_conflicts_and_cut_watches() {
    let mut c = Cluster::start("kube-state-block", "1h").await;
    // One CA for both: the race to create it had one winner, and no key is on either disk.
    let [b1, b2] = &c.bundles()[..] else { panic!() };
    assert_eq!(b1, b2, "both replicas trust the same CA");
    let ca_cert = c
        .secret_data("trustmesh-ca", "ca-cert.pem")
        .expect("the CA Secret");
    assert_eq!(
        TrustBundle::from_pem(b1).unwrap().roots(),
        TrustBundle::from_pem(&ca_cert).unwrap().roots()
    );
    assert!(c.secret_data("trustmesh-ca", "ca-key.pem").is_some());
    let mut creators = 0;
    for cp in c.cps.iter_mut() {
        no_ca_on_disk(cp.data_dir());
        let log = cp.process().log_path().to_path_buf();
        let log = std::fs::read_to_string(log).unwrap();
        assert!(!log.contains("PRIVATE KEY"), "the CA key is never logged");
        creators += usize::from(log.contains("created a new mesh CA"));
    }
    assert_eq!(
        creators, 1,
        "exactly one replica made the CA, the other read it"
    );
    // The admin's certificate from the CA in the API, and `trustmesh status` with it.
    let admin = c.dir.path().join("admin.pem");
    c.cli(&["admin-cert", "--out", admin.to_str().unwrap()])
        .await;
    let status = run_cli(&[
        "status",
        "--control-plane",
        &c.cps[1].url(),
        "--admin-cert",
        admin.to_str().unwrap(),
        "--trust-bundle",
        c.cps[1].trust_bundle_path().to_str().unwrap(),
    ])
    .await
    .unwrap();
    assert!(
        status
            .stdout
            .contains("shared state:      kubernetes/trustmesh-system"),
        "{}{}",
        status.stdout,
        status.stderr
    );
    assert_eq!(c.a_to_b().await, 200);
    // The retired peer exchange is gone from the API.
    assert_eq!(c.cps[0].get("/v1/blocklist").await.unwrap().status, 404);

    // A block written through the API (not through either replica's folder) cuts A off at B,
    // which replica 2 serves.
    let id_a = spiffe_id(NAMESPACE, "a");
    c.cli(&["identity", "block", &id_a]).await;
    let written = Instant::now();
    let took = poll_until("B refuses A", BLOCK_WITHIN, || async {
        Ok((c.a_to_b().await != 200).then(|| written.elapsed()))
    })
    .await
    .expect("the block reaches B's sidecar through replica 2 within a second");
    eprintln!("kube state: a block in the ConfigMap cut A off at B (replica 2) after {took:?}");
    assert!(c.blocklist().contains(&id_a), "{}", c.blocklist());
    assert!(c.cli(&["identity", "list"]).await.contains(&id_a));
    c.cli(&["identity", "unblock", &id_a]).await;
    poll_until("A reaches B again", Duration::from_secs(5), || async {
        Ok((c.a_to_b().await == 200).then_some(()))
    })
    .await
    .unwrap();

    // Two blocks at once while another writer keeps changing the ConfigMap: every write is
    // against the version it read, the losers read again, and nothing is lost.
    let api: Api<ConfigMap> = Api::namespaced(c.stub.client().unwrap(), CP_NS);
    let before = c.stub.requests_for(Resource::ConfigMaps);
    let (id_c, id_d) = (spiffe_id(NAMESPACE, "c"), spiffe_id(NAMESPACE, "d"));
    let (block_c, block_d) = (["identity", "block", &id_c], ["identity", "block", &id_d]);
    let blocks = async { tokio::join!(c.cli(&block_c), c.cli(&block_d)) };
    let writer = async {
        let mut mine = Vec::new();
        let mut attempts = 0u64;
        let deadline = Instant::now() + Duration::from_secs(10);
        while mine.len() < 200 && Instant::now() < deadline {
            let mut cm = api.get("trustmesh-blocklist").await.unwrap();
            let key = format!("other-{}", mine.len());
            cm.data
                .get_or_insert_default()
                .insert(key.clone(), "x".into());
            attempts += 1;
            if api
                .replace("trustmesh-blocklist", &PostParams::default(), &cm)
                .await
                .is_ok()
            {
                mine.push(key);
            }
            if c.blocklist().contains(&id_c) && c.blocklist().contains(&id_d) {
                break;
            }
        }
        (mine, attempts)
    };
    let (_, (mine, attempts)) = tokio::join!(blocks, writer);
    let cm = api.get("trustmesh-blocklist").await.unwrap();
    let data = cm.data.unwrap_or_default();
    let list = data
        .get("blocked-identities.json")
        .cloned()
        .unwrap_or_default();
    assert!(list.contains(&id_c) && list.contains(&id_d), "{list}");
    for key in &mine {
        assert!(
            data.contains_key(key),
            "the other writer's {key} was overwritten"
        );
    }
    let after = c.stub.requests_for(Resource::ConfigMaps);
    let updates =
        after.get("update").copied().unwrap_or(0) - before.get("update").copied().unwrap_or(0);
    let cli_updates = updates - attempts;
    eprintln!(
        "kube state: two blocks beside {attempts} other writes: {cli_updates} ConfigMap updates \
         by the CLI, {} of them made again after a 409 Conflict",
        cli_updates.saturating_sub(2)
    );
    poll_until("replica 2 lists both", Duration::from_secs(5), || async {
        let out = c.cli(&["identity", "list"]).await;
        Ok((out.contains(&id_c) && out.contains(&id_d)).then_some(()))
    })
    .await
    .unwrap();

    // The API server cuts every watch: the replicas watch again and miss nothing.
    assert!(
        c.stub.cut_watches() >= 6,
        "three objects watched by each replica"
    );
    c.cli(&["identity", "block", &id_a]).await;
    poll_until(
        "B refuses A after the cut",
        Duration::from_secs(5),
        || async { Ok((c.a_to_b().await != 200).then_some(())) },
    )
    .await
    .expect("replica 2 watches again after the cut");
    c.cli(&["identity", "unblock", &id_a]).await;

    // Restarted, with its data folder wiped, a replica comes back with the same CA and list.
    let ca_before = c.secret_data("trustmesh-ca", "ca-cert.pem");
    c.cps[1].stop();
    std::fs::remove_dir_all(c.cps[1].data_dir()).unwrap();
    c.cps[1].restart().await.expect("replica 2 restarts");
    assert_eq!(c.secret_data("trustmesh-ca", "ca-cert.pem"), ca_before);
    let [b1, b2] = &c.bundles()[..] else { panic!() };
    assert_eq!(b1, b2, "the same CA after the restart");
    assert!(c.cli(&["identity", "list"]).await.contains(&id_c));
    drop(c.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_rotation_started_once_completes_on_both_replicas() {
    let mut c = Cluster::start("kube-state-rotate", "10s").await;
    let old = TrustBundle::from_pem(&c.bundles()[0]).unwrap();
    assert_eq!(c.a_to_b().await, 200);
    let out = c.cli(&["ca", "rotate", "--propagation", "2s"]).await;
    assert!(out.contains("namespace trustmesh-system"), "{out}");
    poll_until(
        "both replicas trust both roots",
        Duration::from_secs(5),
        || async {
            Ok(c.bundles()
                .iter()
                .all(|b| TrustBundle::from_pem(b).is_ok_and(|b| b.len() == 2))
                .then_some(()))
        },
    )
    .await
    .expect("the new root reaches both replicas");
    poll_until(
        "the rotation ends on both",
        Duration::from_secs(60),
        || async {
            let done = c
                .bundles()
                .iter()
                .all(|b| TrustBundle::from_pem(b).is_ok_and(|b| b.len() == 1 && b != old));
            Ok(done.then_some(()))
        },
    )
    .await
    .expect("both replicas end with the new root alone");
    let status = c.cli(&["ca", "status"]).await;
    assert!(status.contains("rotation        none"), "{status}");
    let new_pem = c.bundles()[0].clone();
    assert_eq!(c.bundles()[1], new_pem);
    assert_eq!(
        TrustBundle::from_pem(&c.secret_data("trustmesh-ca", "ca-cert.pem").unwrap())
            .unwrap()
            .roots(),
        TrustBundle::from_pem(&new_pem).unwrap().roots(),
        "the CA Secret holds the new CA"
    );
    // The sidecars of both replicas renewed to the new CA (they verify with the new root alone).
    for (who, p) in [("A", &c.a), ("B", &c.b)] {
        let probe = probe_config(&new_pem, p.identity()).unwrap();
        poll_until(who, Duration::from_secs(15), || async {
            Ok(presented(probe.clone(), p.inbound()).await.ok())
        })
        .await
        .unwrap_or_else(|e| panic!("{who} presents a certificate of the new CA: {e:#}"));
    }
    assert_eq!(c.a_to_b().await, 200);

    // Both replicas restarted come back with the CA the rotation left.
    for i in 0..2 {
        c.cps[i].restart().await.expect("a replica restarts");
    }
    assert_eq!(c.bundles(), vec![new_pem.clone(), new_pem]);
}

#[tokio::test]
async fn the_retired_peers_flag_is_refused() {
    let out = run_cli(&["serve", "--peers", "10.0.0.2:15012"])
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("--peers"), "{}", out.stderr);
}

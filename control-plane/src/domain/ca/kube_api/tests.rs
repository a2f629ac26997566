//! The CA and its rotation in Secrets, against the stand-in API server of the end-to-end tests
//! (`trustmesh_e2e::kube_api`, in this process: no real API server runs here).

use serde_json::json;
use trustmesh_e2e::kube_api::KubeApi;

use super::*;

const NS: &str = "trustmesh-system";

fn td() -> TrustDomain {
    TrustDomain::parse("cluster.local").unwrap()
}

async fn stub() -> (KubeApi, Kube) {
    let stub = KubeApi::start().await.unwrap();
    stub.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}))
        .unwrap();
    let kube = Kube {
        client: stub.client().unwrap(),
        namespace: NS.to_string(),
    };
    (stub, kube)
}

async fn secret_cert(kube: &Kube) -> String {
    kube_state::read(kube, Object::Ca).await.unwrap().data[CA_CERT].clone()
}

#[tokio::test]
async fn replicas_racing_on_an_empty_api_end_with_one_ca() {
    let (_stub, kube) = stub().await;
    let td = td();
    let (a, b, c) = tokio::join!(
        load_or_create(&kube, &td, None),
        load_or_create(&kube, &td, None),
        load_or_create(&kube, &td, None),
    );
    let (a, b, c) = (a.unwrap(), b.unwrap(), c.unwrap());
    assert_eq!(a.cert_der(), b.cert_der());
    assert_eq!(a.cert_der(), c.cert_der());
    assert_eq!(secret_cert(&kube).await, a.chain_pem());
    let other = TrustDomain::parse("other.local").unwrap();
    assert!(load_or_create(&kube, &other, None).await.is_err());
}

#[tokio::test]
async fn a_rotation_propagates_switches_and_finishes_in_the_secrets() {
    let (_stub, kube) = stub().await;
    let old = load_or_create(&kube, &td(), None).await.unwrap();
    let now = SystemTime::now();
    let next = start(&kube, Duration::from_secs(5), None, now)
        .await
        .unwrap();
    assert!(
        start(&kube, Duration::from_secs(5), None, now)
            .await
            .is_err(),
        "one at a time"
    );

    let t = load(&kube, Some(&td())).await.unwrap();
    assert!(matches!(
        t.rotation,
        Some(Rotation::Propagating {
            propagate_secs: 5,
            ..
        })
    ));
    assert_eq!(t.signer.cert_der(), old.cert_der());
    assert_eq!(t.bundle, old.trust_bundle().merge(&next.trust_bundle()));

    let ttl = Duration::from_secs(10);
    assert!(switch(&kube, now, ttl).await.unwrap());
    assert!(!switch(&kube, now, ttl).await.unwrap(), "already switched");
    let t = load(&kube, Some(&td())).await.unwrap();
    let Some(Rotation::Issuing { old_root_until, .. }) = t.rotation else {
        panic!("{:?}", t.rotation)
    };
    assert_eq!(old_root_until, unix(now + ttl + DROP_MARGIN));
    assert_eq!(t.signer.cert_der(), next.cert_der());
    assert_eq!(secret_cert(&kube).await, next.chain_pem());
    assert_eq!(t.bundle.len(), 2);

    // Longer, never shorter.
    extend(&kube, now + Duration::from_secs(60)).await.unwrap();
    extend(&kube, now).await.unwrap();
    let t = load(&kube, None).await.unwrap();
    assert!(
        matches!(t.rotation, Some(Rotation::Issuing { old_root_until, .. }) if old_root_until == unix(now) + 60)
    );

    assert!(!finish_if_due(&kube, now).await.unwrap(), "not yet");
    assert!(finish_if_due(&kube, now + Duration::from_secs(61))
        .await
        .unwrap());
    let t = load(&kube, None).await.unwrap();
    assert_eq!(t.rotation, None);
    assert_eq!(t.bundle, next.trust_bundle());
    assert!(kube_state::read(&kube, Object::Rotation)
        .await
        .unwrap()
        .data
        .is_empty());
}

#[tokio::test]
async fn a_switch_interrupted_between_its_two_writes_is_completed_by_the_next_reader() {
    let (_stub, kube) = stub().await;
    let old = load_or_create(&kube, &td(), None).await.unwrap();
    let now = SystemTime::now();
    let next = start(&kube, Duration::from_secs(1), None, now)
        .await
        .unwrap();
    // The first write of a switch, and then the replica died.
    kube_state::update(&kube, Object::Rotation, |doc| {
        let phase = Rotation::Issuing {
            started_at: unix(now),
            switched_at: unix(now),
            old_root_until: unix(now) + 30,
        };
        let mut data = with_phase(doc, &phase)?;
        data.insert(PREV_ROOT.into(), old.trust_bundle().pem().to_string());
        Ok((Some(data), ()))
    })
    .await
    .unwrap();
    assert_eq!(secret_cert(&kube).await, old.chain_pem());
    let t = load(&kube, None).await.unwrap();
    assert_eq!(t.signer.cert_der(), next.cert_der(), "the new CA issues");
    assert_eq!(
        secret_cert(&kube).await,
        next.chain_pem(),
        "and the CA Secret holds it"
    );
    assert_eq!(t.bundle, next.trust_bundle().merge(&old.trust_bundle()));
}

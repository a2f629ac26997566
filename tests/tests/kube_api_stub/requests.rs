//! The stub's requests one by one through kube's `Api`: selectors, pages, `410`, injected
//! failures, kubeconfig files, a small cluster of real k8s-openapi types.

use super::*;

#[tokio::test]
async fn label_selectors_filter_lists_and_watches() {
    let stub = stub_with_namespace("a").await;
    let api: Api<ConfigMap> = Api::namespaced(stub.client().unwrap(), "a");
    for (name, app) in [("w", "web"), ("p", "api"), ("d", "db")] {
        api.create(
            &PostParams::default(),
            &config_map(name, json!({"app": app}), json!({})),
        )
        .await
        .unwrap();
    }
    let names = |l: kube::core::ObjectList<ConfigMap>| {
        l.items.iter().map(|o| o.name_any()).collect::<Vec<_>>()
    };
    let lp = ListParams::default().labels("app in (web,api)");
    assert_eq!(names(api.list(&lp).await.unwrap()), ["p", "w"]);
    assert_eq!(
        names(
            api.list(&ListParams::default().labels("app!=web"))
                .await
                .unwrap()
        ),
        ["d", "p"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().fields("metadata.name=d"))
                .await
                .unwrap()
        ),
        ["d"]
    );
    let err = api
        .list(&ListParams::default().fields("data.v=1"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 400),
        "{err:?}"
    );

    let mut events = spawn_watcher(api.clone(), watcher::Config::default().labels("app=web"));
    assert_eq!(initial_list(&mut events).await, ["w"]);
    // `d` joining the selector is an add; `w` leaving it is a delete for this watch.
    api.patch(
        "d",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "web"}}})),
    )
    .await
    .unwrap();
    api.patch(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": null}}})),
    )
    .await
    .unwrap();
    api.patch(
        "p",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"v": "1"}})),
    )
    .await
    .unwrap();
    api.patch(
        "d",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"v": "1"}})),
    )
    .await
    .unwrap();
    let seen: Vec<String> = [(); 3].iter().map(|_| String::new()).collect();
    let mut seen = seen;
    for s in &mut seen {
        *s = describe(&next_event(&mut events).await);
    }
    assert_eq!(seen, ["apply d None", "delete w", "apply d Some(\"1\")"]);
}

#[tokio::test]
async fn paged_lists_are_one_snapshot_and_expire_with_the_history() {
    let stub = stub_with_namespace("a").await;
    for i in 0..5 {
        stub.apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("c{i}"), "namespace": "a"}})).unwrap();
    }
    let api: Api<ConfigMap> = Api::namespaced(stub.client().unwrap(), "a");
    let page1 = api.list(&ListParams::default().limit(2)).await.unwrap();
    let token = page1.metadata.continue_.clone().unwrap();
    // Changes after the first page are not in the later pages: they are of the list's version.
    stub.remove(Resource::ConfigMaps, Some("a"), "c3").unwrap();
    stub.apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c2x", "namespace": "a"}})).unwrap();
    let page2 = api
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap();
    let page3 = api
        .list(
            &ListParams::default()
                .limit(2)
                .continue_token(page2.metadata.continue_.as_deref().unwrap()),
        )
        .await
        .unwrap();
    let all: Vec<String> = [&page1, &page2, &page3]
        .iter()
        .flat_map(|p| p.items.iter().map(|o| o.name_any()))
        .collect();
    assert_eq!(all, ["c0", "c1", "c2", "c3", "c4"]);
    assert_eq!(page3.metadata.continue_.as_deref().unwrap_or(""), "");
    assert_eq!(
        page2.metadata.resource_version,
        page1.metadata.resource_version
    );
    // Once compacted, the token has expired: 410, as the real server answers.
    stub.compact();
    let err = api
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 410),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_watch_from_a_compacted_version_gets_410_in_the_stream_or_as_http() {
    let stub = stub_with_namespace("a").await;
    let api: Api<ConfigMap> = Api::namespaced(stub.client().unwrap(), "a");
    let old = stub.resource_version().to_string();
    stub.apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "a"}})).unwrap();
    stub.compact();
    let mut stream = api
        .watch(&WatchParams::default(), &old)
        .await
        .unwrap()
        .boxed();
    match next(&mut stream).await.unwrap() {
        WatchEvent::Error(e) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
    stub.set_gone_as_http(true);
    let err = api
        .watch(&WatchParams::default(), &old)
        .await
        .err()
        .unwrap();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 410),
        "{err:?}"
    );
}

#[tokio::test]
async fn injected_failures_fail_the_next_requests_only() {
    let stub = stub_with_namespace("a").await;
    let api: Api<Namespace> = Api::all(stub.client().unwrap());
    stub.fail_next(2, 500);
    for _ in 0..2 {
        let err = api.list(&ListParams::default()).await.unwrap_err();
        assert!(
            matches!(err, kube::Error::Api(ref s) if s.code == 500 && s.reason == "InternalError"),
            "{err:?}"
        );
    }
    assert_eq!(
        api.list(&ListParams::default()).await.unwrap().items.len(),
        1
    );
    // kube's client retries a 503 by itself (its default retry policy): the caller sees success.
    let before = stub.requests().get("list").copied().unwrap_or(0);
    stub.fail_next(1, 503);
    assert_eq!(
        api.list(&ListParams::default()).await.unwrap().items.len(),
        1
    );
    assert_eq!(
        stub.requests().get("list").copied().unwrap_or(0),
        before + 2
    );
    // Creating in a namespace that does not exist is a 404, as with NamespaceLifecycle.
    let cms: Api<ConfigMap> = Api::namespaced(stub.client().unwrap(), "nope");
    let err = cms
        .create(
            &PostParams::default(),
            &config_map("c", json!({}), json!({})),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 404),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_kubeconfig_file_points_kube_at_the_stub() {
    let stub = stub_with_namespace("default").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    stub.write_kubeconfig(&path).unwrap();
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let names: Vec<String> = Api::<Namespace>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|n| n.name_any())
        .collect();
    assert_eq!(names, ["default"]);
    assert_eq!(client.apiserver_version().await.unwrap().minor, "33");
}

#[tokio::test]
async fn a_small_cluster_lists_and_watches_as_kube_types() {
    let stub = KubeApi::start().await.unwrap();
    let cluster = Cluster {
        namespaces: 3,
        services: 10,
        pods: 50,
    };
    scale::populate(&stub, &cluster).unwrap();
    assert_eq!(
        (
            stub.count(Resource::Services),
            stub.count(Resource::Pods),
            stub.count(Resource::EndpointSlices)
        ),
        (10, 50, 10)
    );
    let client = stub.client().unwrap();
    // The watcher pages the initial list (page size 7 here) into one consistent view.
    let slices = watcher(
        Api::<EndpointSlice>::all(client.clone()),
        watcher::Config::default().page_size(7),
    )
    .default_backoff()
    .try_take_while(|e| std::future::ready(Ok(!matches!(e, Event::InitDone))))
    .try_collect::<Vec<_>>();
    let slices = tokio::time::timeout(WAIT, slices).await.unwrap().unwrap();
    let endpoints: usize = slices
        .iter()
        .map(|e| match e {
            Event::InitApply(s) => s.endpoints.len(),
            _ => 0,
        })
        .sum();
    assert_eq!(endpoints, 50);
    let pods = Api::<Pod>::namespaced(client.clone(), "ns-1")
        .list(&ListParams::default().labels("app=svc-1"))
        .await
        .unwrap();
    assert_eq!(pods.items.len(), 5);
    let pod = &pods.items[0];
    assert_eq!(
        pod.spec
            .as_ref()
            .and_then(|s| s.service_account_name.as_deref()),
        Some("svc-1")
    );
    let svc = Api::<Service>::namespaced(client, "ns-1")
        .get("svc-1")
        .await
        .unwrap();
    assert_eq!(svc.spec.and_then(|s| s.ports).map(|p| p[0].port), Some(80));
}

#[tokio::test]
async fn periodic_bookmarks_carry_the_current_version() {
    let opts = KubeApiOptions {
        bookmark_interval: Some(Duration::from_millis(50)),
        ..KubeApiOptions::default()
    };
    let stub = KubeApi::start_with(opts).await.unwrap();
    stub.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}}))
        .unwrap();
    let api: Api<Pod> = Api::all(stub.client().unwrap());
    let bookmarks = WatchParams {
        bookmarks: true,
        ..WatchParams::default()
    };
    // No pod changes: what arrives is the server's own bookmark at its current version.
    let mut stream = api.watch(&bookmarks, "2").await.unwrap().boxed();
    match next(&mut stream).await.unwrap() {
        WatchEvent::Bookmark(b) => assert_eq!(b.metadata.resource_version, "2"),
        other => panic!("expected a bookmark, got {other:?}"),
    }
}

#[tokio::test]
async fn a_secrets_string_data_is_stored_as_data() {
    let stub = stub_with_namespace("trustmesh").await;
    let api: Api<Secret> = Api::namespaced(stub.client().unwrap(), "trustmesh");
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "trustmesh-ca"},
        "type": "Opaque",
        "stringData": {"ca.crt": "PEM"},
    }))
    .unwrap();
    api.create(&PostParams::default(), &secret).await.unwrap();
    let stored = api.get("trustmesh-ca").await.unwrap();
    assert_eq!(stored.string_data, None);
    let data = stored.data.unwrap();
    assert_eq!(
        data.get("ca.crt").map(|b| b.0.as_slice()),
        Some(&b"PEM"[..])
    );
    let opaque = api
        .list(&ListParams::default().fields("type=Opaque"))
        .await
        .unwrap();
    assert_eq!(opaque.items.len(), 1);
}

#[tokio::test]
async fn server_side_apply_is_refused_as_unsupported() {
    let stub = stub_with_namespace("a").await;
    let api: Api<ConfigMap> = Api::namespaced(stub.client().unwrap(), "a");
    api.create(
        &PostParams::default(),
        &config_map("c", json!({}), json!({})),
    )
    .await
    .unwrap();
    let apply = Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"v": "1"}}));
    let err = api
        .patch("c", &PatchParams::apply("trustmesh"), &apply)
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 415),
        "{err:?}"
    );
}

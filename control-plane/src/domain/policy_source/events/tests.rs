use super::*;

#[test]
fn only_events_that_can_change_content_count() {
    use notify::event::{CreateKind, DataChange, MetadataKind, RemoveKind, RenameMode};
    for kind in [
        EventKind::Create(CreateKind::File),
        EventKind::Remove(RemoveKind::File),
        EventKind::Modify(ModifyKind::Data(DataChange::Any)),
        EventKind::Modify(ModifyKind::Name(RenameMode::To)),
        EventKind::Access(AccessKind::Close(AccessMode::Write)),
    ] {
        assert!(changes_content(&kind), "{kind:?}");
    }
    for kind in [
        EventKind::Access(AccessKind::Open(AccessMode::Any)),
        EventKind::Access(AccessKind::Read),
        EventKind::Access(AccessKind::Close(AccessMode::Read)),
        EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime)),
    ] {
        assert!(!changes_content(&kind), "{kind:?}");
    }
}

fn policy_folder(dir: &Path, files: usize) {
    std::fs::create_dir_all(dir.join("team")).unwrap();
    std::fs::write(dir.join("mesh.yaml"), "trust_domain: cluster.local\n").unwrap();
    for i in 0..files {
        std::fs::write(
            dir.join("team").join(format!("svc-{i}.yaml")),
            format!(
                "apiVersion: trustmesh.io/v1\nkind: Service\nmetadata: {{name: s{i}, namespace: t}}\n\
                 spec: {{identity: spiffe://cluster.local/ns/t/sa/s{i}, endpoints: [\"127.0.0.1:{}\"]}}\n",
                10_000 + i
            ),
        )
        .unwrap();
    }
}

fn scans(source: &PolicySource) -> u64 {
    source.scans.get()
}

/// The watcher's own reads of the folder must not wake it: idle, it does not scan; a
/// real change is still picked up at once (well before the periodic scan).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_folder_is_not_rescanned_and_a_change_is_seen_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("policies");
    policy_folder(&dir, 200);
    let source = PolicySource::load(&dir).unwrap();
    let first = source.current().version.clone();
    tokio::spawn(source.clone().watch());
    // The first pass (scan and load) is done once a scan is counted and nothing follows.
    for _ in 0..100 {
        if scans(&source) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = scans(&source);
    assert!(before >= 1, "the watcher never scanned");
    let reloads = |r: &str| source.reloads.with_label_values(&[r]).get();
    let unchanged = reloads("unchanged");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = scans(&source) - before;
    assert!(idle <= 1, "{idle} scans of an unchanged folder in 3 s");
    assert_eq!(reloads("unchanged"), unchanged);

    std::fs::write(dir.join("team/svc-0.yaml"), "apiVersion: trustmesh.io/v1\nkind: Service\nmetadata: {name: renamed, namespace: t}\nspec: {identity: spiffe://cluster.local/ns/t/sa/s0, endpoints: [\"127.0.0.1:10000\"]}\n").unwrap();
    let mut rx = source.subscribe();
    tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|s| s.version != first))
        .await
        .expect("a changed file is picked up within 5 s")
        .unwrap();
}

/// Loads of the folder since start, `load`'s own included (every result counts one).
fn loads(source: &PolicySource) -> u64 {
    ["ok", "unchanged", "error"]
        .iter()
        .map(|r| source.reloads.with_label_values(&[r]).get())
        .sum()
}

/// A restart: the watcher's first pass does not load an unchanged folder again (it starts
/// from the fingerprint `load` took), yet a change made between `load` and the watch is
/// still put in force by that first pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_pass_loads_only_what_changed_since_load() {
    let tmp = tempfile::tempdir().unwrap();
    let changed = "apiVersion: trustmesh.io/v1\nkind: Service\nmetadata: {name: renamed, namespace: t}\nspec: {identity: spiffe://cluster.local/ns/t/sa/s0, endpoints: [\"127.0.0.1:10000\"]}\n";

    // Unchanged at the first pass: the next load is the next change's, not a second one.
    let dir = tmp.path().join("unchanged");
    policy_folder(&dir, 20);
    let source = PolicySource::load(&dir).unwrap();
    let first = source.current().version.clone();
    assert_eq!(loads(&source), 1);
    tokio::spawn(source.clone().watch());
    for _ in 0..100 {
        if scans(&source) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(scans(&source) >= 1, "the watcher never scanned");
    // Let a (wrong) load of the first pass finish before the change below.
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::write(dir.join("team/svc-0.yaml"), changed).unwrap();
    let mut rx = source.subscribe();
    tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|s| s.version != first))
        .await
        .expect("a changed file is picked up within 5 s")
        .unwrap();
    let unchanged = source.reloads.with_label_values(&["unchanged"]).get();
    assert_eq!(
        unchanged, 0,
        "the first pass loaded the unchanged folder again"
    );
    assert_eq!(loads(&source), 2);

    // Changed between `load` and the watch (no file event saw it): the first pass loads.
    let dir = tmp.path().join("changed");
    policy_folder(&dir, 20);
    let source = PolicySource::load(&dir).unwrap();
    let first = source.current().version.clone();
    std::fs::write(dir.join("team/svc-0.yaml"), changed).unwrap();
    let mut rx = source.subscribe();
    tokio::spawn(source.clone().watch());
    tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|s| s.version != first))
        .await
        .expect("a change made before the watch started is picked up by its first pass")
        .unwrap();
    assert_eq!(source.current().set.registry.entries().len(), 20);
    assert_eq!(loads(&source), 2);
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// An edit, then its `git add` and `git commit` a while later (longer than a burst's
/// quiet time): one load, with the commit's version, not the content hash first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_and_its_commit_are_one_load_with_the_commits_version() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("policies");
    policy_folder(&dir, 5);
    git(&dir, &["init", "-q", "-b", "main"]);
    git(&dir, &["add", "-A"]);
    git(&dir, &["commit", "-q", "-m", "one"]);
    let source = PolicySource::load(&dir).unwrap();
    assert!(source.current().version.starts_with("git:"));
    tokio::spawn(source.clone().watch());
    for _ in 0..100 {
        if scans(&source) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ok = || source.reloads.with_label_values(&["ok"]).get();
    let before = ok();

    std::fs::write(dir.join("team/svc-9.yaml"), "apiVersion: trustmesh.io/v1\nkind: Service\nmetadata: {name: s9, namespace: t}\nspec: {identity: spiffe://cluster.local/ns/t/sa/s9, endpoints: [\"127.0.0.1:10009\"]}\n").unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    git(&dir, &["add", "-A"]);
    git(&dir, &["commit", "-q", "-m", "two"]);
    let want = format!("git:{}", git(&dir, &["rev-parse", "HEAD"]));
    let mut rx = source.subscribe();
    tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|s| s.version == want))
        .await
        .expect("the commit is in force within 5 s")
        .unwrap();
    assert_eq!(
        ok() - before,
        1,
        "the edit and its commit were loaded apart"
    );
    assert_eq!(source.current().set.registry.entries().len(), 6);
}

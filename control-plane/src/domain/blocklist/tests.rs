//! Blocklist storage in the data folder and its stored form.

use super::*;

fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).unwrap()
}

#[test]
fn block_and_unblock_persist_in_the_data_folder() {
    let dir = tempfile::tempdir().unwrap();
    let a = id("spiffe://cluster.local/ns/test/sa/a");
    assert!(read(dir.path()).unwrap().is_empty());
    assert!(block(dir.path(), &a, SystemTime::now()).unwrap());
    assert!(!block(dir.path(), &a, SystemTime::now()).unwrap());
    let listed = read(dir.path()).unwrap();
    assert_eq!(listed.keys().collect::<Vec<_>>(), vec![&a]);
    assert!(unblock(dir.path(), &a).unwrap());
    assert!(!unblock(dir.path(), &a).unwrap());
    assert!(read(dir.path()).unwrap().is_empty());
}

#[test]
fn a_file_with_the_retired_tombstones_still_reads_and_they_are_dropped() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(BLOCKED_FILE),
        r#"{"blocked": [{"identity": "spiffe://cluster.local/ns/test/sa/a", "blocked_at": "2026-11-24T21:40:02Z"}],
            "unblocked": [{"identity": "spiffe://cluster.local/ns/test/sa/b", "unblocked_at": "2026-11-24T21:40:03Z"}]}"#,
    )
    .unwrap();
    assert_eq!(read(dir.path()).unwrap().len(), 1);
    let b = id("spiffe://cluster.local/ns/test/sa/b");
    assert!(block(dir.path(), &b, SystemTime::now()).unwrap());
    let text = std::fs::read_to_string(dir.path().join(BLOCKED_FILE)).unwrap();
    assert!(!text.contains("unblocked"), "{text}");
    assert_eq!(read(dir.path()).unwrap().len(), 2);
}

#[test]
fn a_corrupt_file_is_an_error_not_an_empty_list() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(BLOCKED_FILE), "{not json").unwrap();
    assert!(read(dir.path()).is_err());
    let a = id("spiffe://cluster.local/ns/test/sa/a");
    assert!(block(dir.path(), &a, SystemTime::now()).is_err());
    std::fs::write(
        dir.path().join(BLOCKED_FILE),
        r#"{"blocked": [{"identity": "spiffe://cluster.local/ns/test/sa/a", "blocked_at": "yesterday"}]}"#,
    )
    .unwrap();
    let err = format!("{:#}", read(dir.path()).unwrap_err());
    assert!(err.contains("RFC 3339"), "{err}");
}

#[test]
fn the_stored_form_round_trips() {
    let mut blocked = Blocked::new();
    blocked.insert(
        id("spiffe://cluster.local/ns/test/sa/a"),
        trustmesh_runtime::rfc3339_precise(SystemTime::now()),
    );
    assert_eq!(parse(&render(&blocked).unwrap(), "x").unwrap(), blocked);
}

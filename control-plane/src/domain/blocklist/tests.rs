//! Blocklist storage, merges between replicas (with proptests) and refused future events.

use super::*;
use trustmesh_runtime::rfc3339_precise as precise_time;

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
    assert!(unblock(dir.path(), &a, SystemTime::now()).unwrap());
    assert!(!unblock(dir.path(), &a, SystemTime::now()).unwrap());
    assert!(read(dir.path()).unwrap().is_empty());
    // The unblock is kept, dated, for the peers.
    assert!(read_state(dir.path()).unwrap().unblocked.contains_key(&a));
}

#[test]
fn a_file_without_tombstones_still_reads() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(BLOCKED_FILE),
        r#"{"blocked": [{"identity": "spiffe://cluster.local/ns/test/sa/a", "blocked_at": "2026-11-24T21:40:02Z"}]}"#,
    )
    .unwrap();
    assert_eq!(read(dir.path()).unwrap().len(), 1);
}

/// `secs` seconds into a minute that began ten minutes ago.
fn at(secs: u64) -> SystemTime {
    SystemTime::now() - Duration::from_secs(600) + Duration::from_secs(secs)
}

#[test]
fn merges_keep_the_latest_event_and_converge() {
    let (a, b, c) = (
        id("spiffe://cluster.local/ns/test/sa/a"),
        id("spiffe://cluster.local/ns/test/sa/b"),
        id("spiffe://cluster.local/ns/test/sa/c"),
    );
    let one = tempfile::tempdir().unwrap();
    let two = tempfile::tempdir().unwrap();
    // Replica one: a blocked, then unblocked later; b blocked.
    block(one.path(), &a, at(1)).unwrap();
    block(one.path(), &b, at(2)).unwrap();
    unblock(one.path(), &a, at(5)).unwrap();
    // Replica two: a blocked at 3 (before the unblock), c blocked at 4.
    block(two.path(), &a, at(3)).unwrap();
    block(two.path(), &c, at(4)).unwrap();

    let s1 = read_state(one.path()).unwrap();
    let s2 = read_state(two.path()).unwrap();
    assert!(merge(one.path(), &s2).unwrap());
    assert!(merge(two.path(), &s1).unwrap());
    let (m1, m2) = (
        read_state(one.path()).unwrap(),
        read_state(two.path()).unwrap(),
    );
    assert_eq!(m1, m2, "both replicas hold the same list");
    assert_eq!(m1.blocked.keys().collect::<Vec<_>>(), vec![&b, &c]);
    assert!(m1.unblocked.contains_key(&a), "the later unblock of a won");
    // Merging again changes nothing.
    assert!(!merge(one.path(), &m2).unwrap());

    // Blocked again later: the block wins over the tombstone, on both.
    block(two.path(), &a, at(9)).unwrap();
    assert!(merge(one.path(), &read_state(two.path()).unwrap()).unwrap());
    assert!(read(one.path()).unwrap().contains_key(&a));
}

#[test]
fn a_tie_is_a_block_and_bad_peer_times_are_refused() {
    let a = id("spiffe://cluster.local/ns/test/sa/a");
    let t = precise_time(at(7));
    let mut mine = State::default();
    mine.unblocked.insert(a.clone(), t.clone());
    let mut theirs = State::default();
    theirs.blocked.insert(a.clone(), t);
    assert!(mine.merge(&theirs, SystemTime::now()));
    assert!(mine.blocked.contains_key(&a));
    assert!(!theirs.merge(&mine.clone(), SystemTime::now()));

    let bad: FileForm = serde_json::from_str(
        r#"{"blocked": [{"identity": "spiffe://cluster.local/ns/test/sa/a", "blocked_at": "yesterday"}]}"#,
    )
    .unwrap();
    assert!(State::from_form(bad).is_err());

    // A list that names an identity both ways keeps its latest event only.
    let both: FileForm = serde_json::from_str(
        r#"{"blocked": [{"identity": "spiffe://cluster.local/ns/test/sa/a", "blocked_at": "2026-11-24T10:00:00Z"}],
            "unblocked": [{"identity": "spiffe://cluster.local/ns/test/sa/a", "unblocked_at": "2026-11-24T10:00:01Z"}]}"#,
    )
    .unwrap();
    let s = State::from_form(both).unwrap();
    assert!(
        s.blocked.is_empty() && s.unblocked.contains_key(&a),
        "{s:?}"
    );
}

#[test]
fn a_peer_event_dated_in_the_future_is_refused() {
    let (a, b) = (
        id("spiffe://cluster.local/ns/test/sa/a"),
        id("spiffe://cluster.local/ns/test/sa/b"),
    );
    let now = SystemTime::now();
    let dir = tempfile::tempdir().unwrap();
    block(dir.path(), &a, now).unwrap();
    // A peer unblocks a a day ahead (which no later block could ever beat), and blocks b
    // within the allowed skew.
    let mut theirs = State::default();
    theirs.unblocked.insert(
        a.clone(),
        precise_time(now + Duration::from_secs(24 * 3600)),
    );
    theirs.blocked.insert(
        b.clone(),
        precise_time(now + MAX_CLOCK_SKEW - Duration::from_secs(5)),
    );
    assert_eq!(
        theirs
            .future_events(now)
            .into_iter()
            .map(|(id, _)| id)
            .collect::<Vec<_>>(),
        vec![a.clone()]
    );
    assert!(merge(dir.path(), &theirs).unwrap());
    let merged = read_state(dir.path()).unwrap();
    assert!(merged.blocked.contains_key(&a), "the future unblock won");
    assert!(!merged.unblocked.contains_key(&a), "{merged:?}");
    assert!(merged.blocked.contains_key(&b), "within the skew is taken");

    // A future block is refused the same way: a later unblock must still lift it.
    let mut mine = State::default();
    mine.unblocked.insert(a.clone(), precise_time(now));
    let mut pinned = State::default();
    pinned
        .blocked
        .insert(a.clone(), precise_time(now + Duration::from_secs(3600)));
    assert!(!mine.merge(&pinned, now));
    assert!(mine.blocked.is_empty(), "{mine:?}");
}

#[test]
fn a_corrupt_file_is_an_error_not_an_empty_list() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(BLOCKED_FILE), "{not json").unwrap();
    assert!(read(dir.path()).is_err());
    let a = id("spiffe://cluster.local/ns/test/sa/a");
    assert!(block(dir.path(), &a, SystemTime::now()).is_err());
}

mod merge_properties {
    use super::*;
    use proptest::prelude::*;

    const IDS: [&str; 3] = [
        "spiffe://cluster.local/ns/t/sa/a",
        "spiffe://cluster.local/ns/t/sa/b",
        "spiffe://cluster.local/ns/t/sa/c",
    ];

    /// One replica's list: per identity maybe a block and maybe an unblock, at whole
    /// seconds 0..8 (so that ties happen).
    fn state() -> impl Strategy<Value = State> {
        proptest::collection::vec((0..IDS.len(), any::<bool>(), 0u64..8), 0..6).prop_map(|events| {
            let base = SystemTime::now() - Duration::from_secs(600);
            let mut s = State::default();
            for (i, blocked, t) in events {
                let id = SpiffeId::parse(IDS[i]).unwrap();
                let at = precise_time(base + Duration::from_secs(t));
                if blocked {
                    s.blocked.insert(id, at);
                } else {
                    s.unblocked.insert(id, at);
                }
            }
            // As read from a file or a peer.
            s.canonical()
        })
    }

    /// Whether each identity ends blocked: its latest event, a block on a tie.
    fn expected(states: &[State]) -> Vec<bool> {
        IDS.iter()
            .map(|id| {
                let id = SpiffeId::parse(id).unwrap();
                states
                    .iter()
                    .filter_map(|s| s.last_event(&id))
                    .reduce(|a, b| if b.beats(&a) { b } else { a })
                    .is_some_and(|e| e.blocked)
            })
            .collect()
    }

    fn blocked(s: &State) -> Vec<bool> {
        IDS.iter()
            .map(|id| s.blocked.contains_key(&SpiffeId::parse(id).unwrap()))
            .collect()
    }

    proptest! {
        /// Replicas that exchange lists in any order end with the same list, in which each
        /// identity is blocked exactly when its latest event is a block.
        #[test]
        fn exchanges_converge_in_any_order(
            states in proptest::collection::vec(state(), 2..4),
            order in proptest::collection::vec((0usize..4, 0usize..4), 0..12),
        ) {
            let want = expected(&states);
            let mut replicas = states.clone();
            let n = replicas.len();
            // Some exchanges in a random order, then a full round so that all have heard
            // from all.
            for (from, to) in order {
                let theirs = replicas[from % n].clone();
                replicas[to % n].merge(&theirs, SystemTime::now());
            }
            for _ in 0..2 {
                for from in 0..n {
                    for to in 0..n {
                        let theirs = replicas[from].clone();
                        replicas[to].merge(&theirs, SystemTime::now());
                    }
                }
            }
            for r in &replicas {
                prop_assert_eq!(blocked(r), want.clone());
                prop_assert_eq!(r, &replicas[0]);
            }
            // Once converged, merging changes nothing.
            let again = replicas[0].clone();
            prop_assert!(!replicas[1].merge(&again, SystemTime::now()));
        }
    }
}

use super::*;

fn limits(total: u32, anonymous: u32, watches: u32) -> Arc<Limits> {
    let args = LimitArgs {
        header_timeout: Duration::from_secs(10),
        handshake_timeout: Duration::from_secs(10),
        max_connections: total,
        max_anonymous_connections: anonymous,
        max_watches_per_identity: watches,
    };
    Limits::new(args).unwrap()
}

fn exceeded(limits: &Limits, limit: Limit) -> u64 {
    limits.exceeded.with_label_values(&[limit.label()]).get()
}

fn id(sa: &str) -> SpiffeId {
    SpiffeId::parse(&format!("spiffe://cluster.local/ns/test/sa/{sa}")).unwrap()
}

#[test]
fn connections_over_the_cap_are_refused_and_counted() {
    let l = limits(2, 1, 1);
    let a = l.accept().unwrap();
    let _b = l.accept().unwrap();
    assert!(l.accept().is_none(), "a third connection is over the cap");
    assert_eq!(exceeded(&l, Limit::Connections), 1);
    drop(a);
    assert!(l.accept().is_some(), "a closed connection frees its slot");
}

#[test]
fn anonymous_connections_cannot_take_the_slots_of_verified_ones() {
    let l = limits(4, 2, 1);
    let mut anon: Vec<Connection> = Vec::new();
    for _ in 0..3 {
        let mut c = l.accept().unwrap();
        if c.anonymous() {
            anon.push(c);
        }
    }
    assert_eq!(
        anon.len(),
        2,
        "the third anonymous connection is over its budget"
    );
    assert_eq!(exceeded(&l, Limit::AnonymousConnections), 1);
    // The refused one was dropped: two slots are left, and verified clients get them both.
    let mut v1 = l.accept().unwrap();
    v1.verified();
    let mut v2 = l.accept().unwrap();
    v2.verified();
    assert_eq!(l.connections_open.with_label_values(&["verified"]).get(), 2);
    assert_eq!(
        l.connections_open.with_label_values(&["anonymous"]).get(),
        2
    );
    assert_eq!(
        l.connections_open.with_label_values(&["handshake"]).get(),
        0
    );
    drop(anon.pop());
    let mut again = l.accept().unwrap();
    assert!(
        again.anonymous(),
        "a closed anonymous connection frees its budget"
    );
    assert!(again.anonymous(), "asking twice takes one slot");
    drop(again);
    drop(anon);
    assert_eq!(l.anonymous.load(Ordering::Acquire), 0);
    drop((v1, v2));
    assert_eq!(l.open.load(Ordering::Acquire), 0);
}

#[test]
fn the_anonymous_budget_must_leave_room_for_verified_clients() {
    for anonymous in [10, 11] {
        let args = LimitArgs {
            header_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            max_connections: 10,
            max_anonymous_connections: anonymous,
            max_watches_per_identity: 1,
        };
        let err = Limits::new(args).unwrap_err().to_string();
        assert!(
            err.contains(&format!(
                "--max-anonymous-connections {anonymous} must be below"
            )),
            "{err}"
        );
    }
}

#[test]
fn watches_are_capped_per_identity_and_freed_when_they_end() {
    let l = limits(10, 9, 2);
    let a1 = l.watch(&id("a")).unwrap();
    let _a2 = l.watch(&id("a")).unwrap();
    assert!(
        l.watch(&id("a")).is_none(),
        "a third poll of a is over its cap"
    );
    assert_eq!(exceeded(&l, Limit::Watches), 1);
    let b = l.watch(&id("b"));
    assert!(b.is_some(), "another identity has its own cap");
    assert_eq!(l.watches_open.get(), 3);
    drop(a1);
    assert!(l.watch(&id("a")).is_some(), "an ended poll frees its place");
    drop((_a2, b));
    assert!(
        l.watches.lock().unwrap().is_empty(),
        "identities with nothing waiting are forgotten"
    );
    assert_eq!(l.watches_open.get(), 0);
}

#[test]
fn connection_slots_hold_under_concurrent_accepts() {
    let l = limits(64, 1, 1);
    let held: Vec<Connection> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..8)
            .map(|_| s.spawn(|| (0..32).filter_map(|_| l.accept()).collect::<Vec<_>>()))
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    assert_eq!(held.len(), 64, "exactly the cap is granted");
    assert_eq!(exceeded(&l, Limit::Connections), 8 * 32 - 64);
}

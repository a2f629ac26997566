//! The idle set of one endpoint's keep-alive HTTP/1.1 connections, shared by both pools that
//! keep them: between sidecars ([`crate::outbound::pool::http1`]) and to the local app
//! ([`crate::layers::upstream`]).
//!
//! An HTTP/1.1 connection carries one exchange at a time. A request takes the most recently
//! used idle one (its peer is the least likely to have closed it), and gives it back as soon as
//! its response head is in: it is idle again (hyper's `is_ready`) once hyper has read that
//! response to its end, and is skipped, not taken, until then. Bounded: at most
//! [`Limits::max_idle`] idle connections (the oldest beyond it are closed when another comes
//! back), and one idle longer than [`Limits::idle_timeout`] (counted from its last response
//! head) is closed rather than used, when next looked at or when the set is pruned (which the
//! pools do when they make a connection, never per request).

use std::time::{Duration, Instant};

/// What the idle set needs to know of a connection.
pub trait Reusable {
    /// Closed for good: never usable again.
    fn is_closed(&self) -> bool;
    /// Free for a new exchange (its last response read to the end).
    fn is_ready(&self) -> bool;
}

impl<B> Reusable for hyper::client::conn::http1::SendRequest<B> {
    fn is_closed(&self) -> bool {
        hyper::client::conn::http1::SendRequest::is_closed(self)
    }

    fn is_ready(&self) -> bool {
        hyper::client::conn::http1::SendRequest::is_ready(self)
    }
}

/// How many idle connections a set keeps, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Idle connections kept per endpoint.
    pub max_idle: usize,
    /// An idle connection older than this is closed rather than used.
    pub idle_timeout: Duration,
}

impl Limits {
    /// Idle connections kept per endpoint by default: above the requests one sidecar has in
    /// flight to one endpoint (as many as an HTTP/2 connection's `--max-concurrent-streams`);
    /// a bound below that would close connections about to be taken again.
    pub const MAX_IDLE: usize = 256;
}

struct Idle<C> {
    conn: C,
    since: Instant,
}

/// One endpoint's connections given back, idle or still reading a response; most recently
/// given back last.
pub struct IdleSet<C> {
    conns: Vec<Idle<C>>,
}

impl<C> Default for IdleSet<C> {
    fn default() -> Self {
        Self { conns: Vec::new() }
    }
}

impl<C: Reusable> IdleSet<C> {
    /// The most recently used idle connection that `usable` accepts, and how long it was
    /// idle; closed, refused and expired ones met on the way are dropped, busy ones left in
    /// place.
    pub fn take(&mut self, limits: &Limits, usable: impl Fn(&C) -> bool) -> Option<(C, Duration)> {
        let now = Instant::now();
        let mut i = self.conns.len();
        while i > 0 {
            i -= 1;
            let c = &self.conns[i].conn;
            if c.is_closed() || !usable(c) {
                self.conns.remove(i);
                continue;
            }
            if !c.is_ready() {
                // Still reading its last response.
                continue;
            }
            let c = self.conns.remove(i);
            let idle = now.saturating_duration_since(c.since);
            if idle > limits.idle_timeout {
                continue;
            }
            return Some((c.conn, idle));
        }
        None
    }

    /// Keeps `conn`, given back once its response head is in (a closed one is dropped).
    /// Idle connections beyond [`Limits::max_idle`] are closed, oldest first; busy ones do not
    /// count.
    pub fn give_back(&mut self, conn: C, limits: &Limits) {
        if conn.is_closed() {
            return;
        }
        self.conns.push(Idle {
            conn,
            since: Instant::now(),
        });
        if self.conns.len() <= limits.max_idle {
            return;
        }
        let mut idle = self.conns.iter().filter(|c| c.conn.is_ready()).count();
        let mut i = 0;
        while idle > limits.max_idle && i < self.conns.len() {
            if self.conns[i].conn.is_ready() {
                self.conns.remove(i);
                idle -= 1;
            } else {
                i += 1;
            }
        }
    }

    /// Forgets closed connections and closes those idle past the timeout.
    pub fn prune(&mut self, limits: &Limits) {
        let now = Instant::now();
        let expired = |c: &Idle<C>| {
            c.conn.is_ready() && now.saturating_duration_since(c.since) > limits.idle_timeout
        };
        self.conns.retain(|c| !c.conn.is_closed() && !expired(c));
    }

    /// Connections held, idle or still reading a response (tests).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// Whether none is held (the pools then forget the endpoint).
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// The connections held, oldest first (tests).
    #[cfg(test)]
    pub fn iter(&self) -> impl Iterator<Item = &C> {
        self.conns.iter().map(|c| &c.conn)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::rc::Rc;

    use super::*;

    /// A connection whose state a test sets.
    #[derive(Clone)]
    struct Fake {
        id: u32,
        closed: Rc<Cell<bool>>,
        ready: Rc<Cell<bool>>,
    }

    impl Fake {
        fn new(id: u32) -> Self {
            Self {
                id,
                closed: Rc::new(Cell::new(false)),
                ready: Rc::new(Cell::new(true)),
            }
        }
    }

    impl Reusable for Fake {
        fn is_closed(&self) -> bool {
            self.closed.get()
        }
        fn is_ready(&self) -> bool {
            self.ready.get()
        }
    }

    const LONG: Limits = Limits {
        max_idle: 2,
        idle_timeout: Duration::from_secs(60),
    };

    fn ids(set: &IdleSet<Fake>) -> Vec<u32> {
        set.iter().map(|c| c.id).collect()
    }

    #[test]
    fn the_most_recently_used_idle_connection_is_taken_and_busy_ones_stay() {
        let mut set = IdleSet::default();
        let (a, b, c) = (Fake::new(1), Fake::new(2), Fake::new(3));
        set.give_back(a, &LONG);
        set.give_back(b, &LONG);
        c.ready.set(false);
        set.give_back(c.clone(), &LONG);
        // 3 is busy: 2, the most recent idle one, goes first, then 1; 3 stays.
        assert_eq!(set.take(&LONG, |_| true).map(|(c, _)| c.id), Some(2));
        assert_eq!(set.take(&LONG, |_| true).map(|(c, _)| c.id), Some(1));
        assert!(set.take(&LONG, |_| true).is_none());
        assert_eq!(ids(&set), [3]);
        c.ready.set(true);
        assert_eq!(set.take(&LONG, |_| true).map(|(c, _)| c.id), Some(3));
        assert!(set.is_empty());
    }

    #[test]
    fn closed_refused_and_expired_connections_are_dropped_not_taken() {
        let mut set = IdleSet::default();
        let (a, b) = (Fake::new(1), Fake::new(2));
        set.give_back(a.clone(), &LONG);
        set.give_back(b, &LONG);
        a.closed.set(true);
        // 2 refused by the caller (say, an old trust bundle), 1 closed: both gone.
        assert!(set.take(&LONG, |c| c.id != 2).is_none());
        assert!(set.is_empty());

        let expired = Limits {
            idle_timeout: Duration::ZERO,
            ..LONG
        };
        set.give_back(Fake::new(3), &LONG);
        std::thread::sleep(Duration::from_millis(2));
        assert!(set.take(&expired, |_| true).is_none());
        assert!(set.is_empty());
        // A closed connection given back is not kept.
        let closed = Fake::new(4);
        closed.closed.set(true);
        set.give_back(closed, &LONG);
        assert!(set.is_empty());
    }

    #[test]
    fn at_most_max_idle_idle_connections_are_kept_oldest_closed_first() {
        let mut set = IdleSet::default();
        for id in 1..=3 {
            set.give_back(Fake::new(id), &LONG);
        }
        assert_eq!(ids(&set), [2, 3]);
        // A busy connection given back does not count against idle ones.
        let busy = Fake::new(4);
        busy.ready.set(false);
        set.give_back(busy, &LONG);
        assert_eq!(ids(&set), [2, 3, 4]);
    }

    #[test]
    fn prune_forgets_closed_and_expired_idle_connections_but_not_busy_ones() {
        let mut set = IdleSet::default();
        let limits = Limits {
            max_idle: 8,
            idle_timeout: Duration::ZERO,
        };
        let (closed, busy) = (Fake::new(1), Fake::new(2));
        set.give_back(closed.clone(), &limits);
        busy.ready.set(false);
        set.give_back(busy, &limits);
        set.give_back(Fake::new(3), &limits);
        closed.closed.set(true);
        std::thread::sleep(Duration::from_millis(2));
        set.prune(&limits);
        assert_eq!(ids(&set), [2]);
        assert_eq!(set.len(), 1);
    }
}

//! The coordinator's view of the simulated fleet: the events of every sidecar folded into
//! what each last saw, and waits (each bounded in time) for the whole fleet to reach a state.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use tokio::sync::mpsc;

use crate::sidecar::Event;

/// One failed attempt of a sidecar.
struct Failure {
    /// When it was seen.
    at: Instant,
    /// When the attempt that failed began.
    began: Instant,
    /// The error's message.
    what: String,
    /// When the connection it failed on was made (`None`: while connecting).
    conn: Option<Instant>,
}

/// What the coordinator knows about every sidecar.
pub struct Fleet {
    rx: mpsc::UnboundedReceiver<Event>,
    /// The version each sidecar holds.
    pub version: Vec<Option<String>>,
    /// When each sidecar last got a snapshot.
    pub snapshot_at: Vec<Option<Instant>>,
    /// When each sidecar was last answered at all (snapshot or 304 after a reconnect).
    pub served_at: Vec<Option<Instant>>,
    /// Body length of the last snapshot each sidecar received.
    pub bytes: Vec<usize>,
    /// The errors since the last [`Fleet::take_errors`].
    errors: Vec<Failure>,
    /// Handshakes since the last [`Fleet::take_handshakes`]: full, resumed.
    handshakes: [u64; 2],
    /// Snapshots received so far, all sidecars together (more than one per sidecar in a push
    /// means it went through a version in between).
    pub snapshots: u64,
    /// Which sidecars saw them.
    erred: Vec<bool>,
    /// The first few error messages, for the report.
    pub samples: Vec<String>,
}

impl Fleet {
    /// A fleet of `n` sidecars reporting on `rx`.
    pub fn new(n: usize, rx: mpsc::UnboundedReceiver<Event>) -> Self {
        Self {
            rx,
            version: vec![None; n],
            snapshot_at: vec![None; n],
            served_at: vec![None; n],
            bytes: vec![0; n],
            errors: Vec::new(),
            handshakes: [0; 2],
            snapshots: 0,
            erred: vec![false; n],
            samples: Vec::new(),
        }
    }

    fn apply(&mut self, e: Event) {
        match e {
            Event::Snapshot {
                idx,
                version,
                bytes,
                at,
            } => {
                self.version[idx] = Some(version);
                self.snapshot_at[idx] = Some(at);
                self.served_at[idx] = Some(at);
                self.bytes[idx] = bytes;
                self.snapshots += 1;
            }
            Event::Served { idx, at } => self.served_at[idx] = Some(at),
            Event::Handshake { resumed } => self.handshakes[usize::from(resumed)] += 1,
            Event::Error {
                idx,
                what,
                at,
                began,
                conn,
            } => {
                self.erred[idx] = true;
                if self.samples.len() < 5 && !self.samples.contains(&what) {
                    self.samples.push(what.clone());
                }
                self.errors.push(Failure {
                    at,
                    began,
                    what,
                    conn,
                });
            }
        }
    }

    /// `"E on M sidecars"`: errors since the last call, and on how many sidecars.
    pub fn take_errors(&mut self) -> String {
        let on = self.erred.iter().filter(|&&e| e).count();
        self.erred.iter_mut().for_each(|e| *e = false);
        format!(
            "{} on {on} sidecars",
            std::mem::take(&mut self.errors).len()
        )
    }

    /// The errors (not yet taken) seen after `t`, when a new control plane started at
    /// `restart` listened: how many of them failed an attempt begun after `t` (what a
    /// listening control plane must not cause), and all of them by kind and by where they
    /// happened (connecting, or on a connection to the old or the new process), most
    /// frequent first. An attempt begun before `t` (a connect refused while nothing
    /// listened) may be seen failing after it.
    pub fn errors_after(&self, t: Instant, restart: Instant) -> (usize, String) {
        let mut kinds: BTreeMap<(&str, &str), usize> = BTreeMap::new();
        let mut begun_after = 0;
        for e in self.errors.iter().filter(|e| e.at > t) {
            begun_after += usize::from(e.began > t);
            let origin = match e.conn {
                None if e.began <= t => "connecting, begun before it listened",
                None => "connecting",
                Some(c) if c < restart => "on a connection to the old process",
                Some(_) => "on a connection to the new process",
            };
            *kinds.entry((e.what.as_str(), origin)).or_default() += 1;
        }
        let mut kinds: Vec<_> = kinds.into_iter().collect();
        kinds.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let text = kinds
            .iter()
            .map(|((what, origin), k)| format!("{k} {origin}: {what:?}"))
            .collect::<Vec<_>>()
            .join("; ");
        (begun_after, text)
    }

    /// `"F full, R resumed"`: TLS handshakes since the last call.
    pub fn take_handshakes(&mut self) -> String {
        let [full, resumed] = std::mem::take(&mut self.handshakes);
        format!("{full} full, {resumed} resumed")
    }

    /// Folds in events until `done` holds for every sidecar, for at most `limit`.
    pub async fn wait_all(
        &mut self,
        limit: Duration,
        what: &str,
        done: impl Fn(&Self, usize) -> bool,
    ) -> Result<()> {
        let deadline = Instant::now() + limit;
        let n = self.version.len();
        let mut missing: Vec<usize> = (0..n).filter(|&i| !done(self, i)).collect();
        while !missing.is_empty() {
            let next = tokio::time::timeout_at(deadline.into(), self.rx.recv()).await;
            match next {
                Ok(Some(e)) => self.apply(e),
                Ok(None) => bail!("every sidecar task ended"),
                Err(_) => bail!(
                    "{what}: {} of {n} sidecars not there within {limit:?} (errors: {:?})",
                    missing.len(),
                    self.samples
                ),
            }
            missing.retain(|&i| !done(self, i));
        }
        Ok(())
    }

    /// Folds in whatever arrives during `d`.
    pub async fn drain_for(&mut self, d: Duration) {
        let deadline = Instant::now() + d;
        while let Ok(Some(e)) = tokio::time::timeout_at(deadline.into(), self.rx.recv()).await {
            self.apply(e);
        }
    }
}

/// `p50 / p99 / max` of `samples` in milliseconds.
pub fn percentiles(samples: &mut [Duration]) -> String {
    if samples.is_empty() {
        return "no samples".to_owned();
    }
    samples.sort_unstable();
    let at = |q: f64| {
        let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[i].as_secs_f64() * 1000.0
    };
    format!(
        "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (n = {})",
        at(0.50),
        at(0.99),
        at(1.0),
        samples.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_nearest_rank() {
        let mut v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        v.reverse();
        assert_eq!(
            percentiles(&mut v),
            "p50 50.0 ms, p99 99.0 ms, max 100.0 ms (n = 100)"
        );
    }

    #[tokio::test]
    async fn wait_all_returns_once_every_sidecar_has_the_version() {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut fleet = Fleet::new(2, rx);
        for idx in 0..2 {
            let version = "v1".to_owned();
            let at = Instant::now();
            tx.send(Event::Snapshot {
                idx,
                version,
                bytes: 10,
                at,
            })
            .unwrap();
        }
        // Listening at `t`; a connect begun before it is seen failing after it, then two
        // requests begun after it fail on connections made before and after the restart.
        let t = Instant::now();
        let s = Duration::from_secs;
        tx.send(Event::Error {
            idx: 0,
            what: "refused".into(),
            at: t + s(1),
            began: t - s(1),
            conn: None,
        })
        .unwrap();
        for conn in [t - s(2), t + s(1)] {
            let (at, began) = (t + s(3), t + s(2));
            let what = "closed".into();
            let conn = Some(conn);
            let e = Event::Error {
                idx: 1,
                what,
                at,
                began,
                conn,
            };
            tx.send(e).unwrap();
        }
        tx.send(Event::Handshake { resumed: true }).unwrap();
        let have = |f: &Fleet, i: usize| f.version[i].as_deref() == Some("v1");
        fleet
            .wait_all(Duration::from_secs(5), "v1", have)
            .await
            .unwrap();
        assert_eq!(fleet.bytes, vec![10, 10]);
        let never = |f: &Fleet, i: usize| f.version[i].as_deref() == Some("v2");
        let r = fleet.wait_all(Duration::from_millis(50), "v2", never).await;
        assert!(r.is_err());
        let restart = t - s(1);
        let (n, kinds) = fleet.errors_after(t, restart);
        assert_eq!(n, 2, "the connect begun before it listened is not counted");
        assert_eq!(
            kinds,
            "1 on a connection to the new process: \"closed\"; \
             1 on a connection to the old process: \"closed\"; \
             1 connecting, begun before it listened: \"refused\""
        );
        assert_eq!(fleet.errors_after(t + s(4), restart), (0, String::new()));
        assert_eq!(fleet.take_handshakes(), "0 full, 1 resumed");
        assert_eq!(fleet.take_errors(), "3 on 2 sidecars");
        assert_eq!(fleet.take_errors(), "0 on 0 sidecars");
    }
}

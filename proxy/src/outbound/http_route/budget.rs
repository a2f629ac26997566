//! The retry budget (the idea of tower's `retry::budget::TpsBudget` and Linkerd's retry
//! budgets): every request a retry rule covers deposits into its service's budget, every
//! retry withdraws one. Over a sliding window of [`WINDOW_SECS`] seconds the retries may add
//! at most `percent` % of the requests, plus `min_per_sec` retries a second whatever the
//! traffic, so that a failing backend is not hammered with a multiple of its load. An
//! exhausted budget lets the failure reach the client.
//!
//! The clock is an argument ([`Instant`]), so tests drive it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The window the budget counts over.
pub const WINDOW_SECS: u64 = 10;

/// One second of the window: requests deposited and retries withdrawn in it.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    second: u64,
    deposits: u64,
    withdrawals: u64,
}

/// One service's retry budget.
#[derive(Debug)]
pub struct Budget {
    origin: Instant,
    percent: u64,
    reserve: u64,
    slots: Mutex<[Slot; WINDOW_SECS as usize]>,
}

impl Budget {
    /// A budget allowing `percent` % of the requests plus `min_per_sec` retries a second,
    /// counted from `origin`.
    pub fn new(percent: u32, min_per_sec: u32, origin: Instant) -> Self {
        Self {
            origin,
            percent: u64::from(percent),
            reserve: u64::from(min_per_sec) * WINDOW_SECS,
            slots: Mutex::new([Slot::default(); WINDOW_SECS as usize]),
        }
    }

    /// Records a request at `now`.
    pub fn deposit(&self, now: Instant) {
        self.with_slot(now, |slot, _| slot.deposits += 1);
    }

    /// Takes one retry at `now` if the window allows it; `false` when the budget is spent.
    pub fn withdraw(&self, now: Instant) -> bool {
        let (percent, reserve) = (self.percent, self.reserve);
        self.with_slot(now, |slot, (deposits, withdrawals)| {
            // retries + 1 <= reserve + deposits * percent / 100, in integers.
            let allowed = (withdrawals + 1) * 100 <= reserve * 100 + deposits * percent;
            if allowed {
                slot.withdrawals += 1;
            }
            allowed
        })
    }

    /// Calls `f` with the slot of `now` (cleared when its second has passed) and the window's
    /// totals (deposits, withdrawals) before `f` changes anything.
    fn with_slot<T>(&self, now: Instant, f: impl FnOnce(&mut Slot, (u64, u64)) -> T) -> T {
        let second = now.saturating_duration_since(self.origin).as_secs();
        // A poisoned lock only means another request panicked mid-count; the counts are
        // still numbers, so go on with them.
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let live = |s: &Slot| s.second + WINDOW_SECS > second && s.second <= second;
        let totals = slots
            .iter()
            .filter(|s| live(s))
            .fold((0, 0), |(d, w), s| (d + s.deposits, w + s.withdrawals));
        let slot = &mut slots[(second % WINDOW_SECS) as usize];
        // The slot's last second left the window (same index, ten or more seconds ago), so
        // it is not in `totals`. One from a later second (a racing caller read the clock
        // after us) is simply shared.
        if slot.second < second {
            *slot = Slot {
                second,
                ..Slot::default()
            };
        }
        f(slot, totals)
    }
}

/// The budgets of every service a retry rule covers, made on first use.
#[derive(Debug)]
pub struct Budgets {
    percent: u32,
    min_per_sec: u32,
    by_service: Mutex<HashMap<String, Arc<Budget>>>,
}

/// Most services whose budgets are kept; past it, budgets not in use are dropped (the set of
/// services follows the registry, which a long-lived sidecar sees change).
const MAX_SERVICES: usize = 4096;

impl Budgets {
    /// Budgets of `percent` % plus `min_per_sec` retries a second each.
    pub fn new(percent: u32, min_per_sec: u32) -> Self {
        Self {
            percent,
            min_per_sec,
            by_service: Mutex::default(),
        }
    }

    /// The budget of `service`.
    pub fn of(&self, service: &str) -> Arc<Budget> {
        let mut map = self.by_service.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = map.get(service) {
            return b.clone();
        }
        if map.len() >= MAX_SERVICES {
            map.retain(|_, b| Arc::strong_count(b) > 1);
        }
        let b = Arc::new(Budget::new(self.percent, self.min_per_sec, Instant::now()));
        map.insert(service.to_string(), b.clone());
        b
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn at(origin: Instant, ms: u64) -> Instant {
        origin + Duration::from_millis(ms)
    }

    #[test]
    fn the_reserve_allows_min_per_sec_times_the_window_without_requests() {
        let t0 = Instant::now();
        let b = Budget::new(20, 10, t0);
        let granted = (0..150).filter(|_| b.withdraw(at(t0, 500))).count();
        assert_eq!(granted, 100, "10 a second over a 10 s window");
    }

    #[test]
    fn retries_add_at_most_the_percentage_of_requests() {
        let t0 = Instant::now();
        let b = Budget::new(20, 0, t0);
        for _ in 0..1000 {
            b.deposit(at(t0, 100));
        }
        let granted = (0..1000).filter(|_| b.withdraw(at(t0, 200))).count();
        assert_eq!(granted, 200, "20 % of 1000 requests");
        // A new request earns a fifth of a retry: five more requests, one more retry.
        assert!(!b.withdraw(at(t0, 300)));
        for _ in 0..5 {
            b.deposit(at(t0, 300));
        }
        assert!(b.withdraw(at(t0, 300)));
        assert!(!b.withdraw(at(t0, 300)));
    }

    #[test]
    fn a_zero_budget_refuses_every_retry() {
        let t0 = Instant::now();
        let b = Budget::new(0, 0, t0);
        for _ in 0..100 {
            b.deposit(t0);
        }
        assert!(!b.withdraw(t0));
    }

    #[test]
    fn the_window_slides_old_requests_and_retries_out() {
        let t0 = Instant::now();
        let b = Budget::new(10, 0, t0);
        for _ in 0..100 {
            b.deposit(at(t0, 0));
        }
        let granted = (0..20).filter(|_| b.withdraw(at(t0, 9_900))).count();
        assert_eq!(granted, 10, "still inside the window");
        // At 10 s the first second has left the window: its requests earn nothing any more,
        // and the retries spent in second 9 still count.
        assert!(!b.withdraw(at(t0, 10_000)));
        for _ in 0..100 {
            b.deposit(at(t0, 10_000));
        }
        assert!(!b.withdraw(at(t0, 10_000)), "10 spent of the 10 earned");
        // Once second 9 has left too, the new requests' 10 retries are all there.
        let granted = (0..20).filter(|_| b.withdraw(at(t0, 19_000))).count();
        assert_eq!(granted, 10);
        // After a long silence nothing old is left.
        let granted = (0..20).filter(|_| b.withdraw(at(t0, 100_000))).count();
        assert_eq!(granted, 0);
    }

    #[test]
    fn each_service_has_its_own_budget() {
        let budgets = Budgets::new(0, 1);
        let (a, a_again, b) = (budgets.of("a.t"), budgets.of("a.t"), budgets.of("b.t"));
        assert!(Arc::ptr_eq(&a, &a_again));
        let now = Instant::now();
        assert_eq!((0..20).filter(|_| a.withdraw(now)).count(), 10);
        assert_eq!((0..20).filter(|_| b.withdraw(now)).count(), 10);
    }
}

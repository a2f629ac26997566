//! The SPIFFE IDs an entry names (this sidecar's own in every line, and its peers'), shared
//! rather than copied: [`shared`] hands out the `Arc<str>` this thread already holds for an
//! ID it saw recently, and keeps beside it serde_json's escaping of the ID, so that a line
//! copies those bytes ([`write`]) instead of escaping the same ID again for every request.
//!
//! Per thread, so without a lock; a bounded number of IDs, replaced in turn when more are in
//! use. An ID the cache no longer holds (or that another thread made) is written through
//! serde_json as any other string: the cache only saves work, it never changes a line.

use std::cell::RefCell;
use std::sync::Arc;

/// IDs held per thread: a sidecar's own, its callers' and the services it calls.
const SLOTS: usize = 16;

struct Known {
    id: Arc<str>,
    /// `id` as a JSON string, quotes included, as serde_json wrote it.
    json: Box<[u8]>,
}

#[derive(Default)]
struct Cache {
    known: Vec<Known>,
    /// The slot the next new ID replaces once every slot is taken.
    next: usize,
}

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::new(Cache::default());
}

/// `id` as an `Arc<str>`: the one this thread holds for it (no allocation), or a new one that
/// it keeps for the next requests.
pub fn shared(id: &str) -> Arc<str> {
    CACHE.with_borrow_mut(|c| {
        if let Some(k) = c.known.iter().find(|k| *k.id == *id) {
            return k.id.clone();
        }
        let shared: Arc<str> = Arc::from(id);
        let Ok(json) = serde_json::to_vec(id) else {
            return shared;
        };
        let k = Known {
            id: shared.clone(),
            json: json.into_boxed_slice(),
        };
        if c.known.len() < SLOTS {
            c.known.push(k);
        } else {
            c.known[c.next] = k;
            c.next = (c.next + 1) % SLOTS;
        }
        shared
    })
}

/// Appends `id` as a JSON string: the escaping kept for it when it came from [`shared`] on
/// this thread and is still held, else serde_json's, done now.
pub(super) fn write(out: &mut Vec<u8>, id: &Arc<str>) -> serde_json::Result<()> {
    let copied = CACHE.with_borrow(|c| {
        c.known
            .iter()
            .find(|k| Arc::ptr_eq(&k.id, id))
            .map(|k| out.extend_from_slice(&k.json))
            .is_some()
    });
    if copied {
        return Ok(());
    }
    serde_json::to_writer(out, &**id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(id: &Arc<str>) -> String {
        let mut out = Vec::new();
        write(&mut out, id).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn an_id_seen_again_is_the_same_arc_and_is_written_as_serde_json_writes_it() {
        let me = "spiffe://cluster.local/ns/shop/sa/orders";
        let a = shared(me);
        assert!(Arc::ptr_eq(&a, &shared(me)), "no new copy for a known ID");
        assert_eq!(written(&a), serde_json::to_string(me).unwrap());
        // Not from the cache (or evicted from it): written all the same.
        let odd: Arc<str> = Arc::from("spiffe://x/\"quoted\"\\\u{1}");
        assert_eq!(written(&odd), serde_json::to_string(&*odd).unwrap());
        let cached = shared(&odd);
        assert_eq!(written(&cached), written(&odd));
        // More IDs than slots: the oldest are replaced, and every ID still reads and writes right.
        let ids: Vec<String> = (0..3 * SLOTS)
            .map(|i| format!("spiffe://cluster.local/ns/n/sa/s{i}\""))
            .collect();
        let held: Vec<Arc<str>> = ids.iter().map(|id| shared(id)).collect();
        for (id, arc) in ids.iter().zip(&held) {
            assert_eq!(&**arc, id.as_str());
            assert_eq!(written(arc), serde_json::to_string(id).unwrap());
        }
        assert!(CACHE.with_borrow(|c| c.known.len()) <= SLOTS);
    }
}

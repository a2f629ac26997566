//! The hash of the maps looked up on every request (pools by identity and endpoint, the
//! balancer's services, the client-configuration caches): foldhash's fast hasher, which takes
//! its input eight and sixteen bytes at a time, where the standard library's SipHash costs
//! hundreds of instructions per key and FNV-1a (used before) a few per byte (a SPIFFE ID is
//! about 50). Its seed is random per process. The keys are registry identities, endpoint
//! addresses and service names from the control plane's snapshot, never what a caller sends.

use std::collections::HashMap;

/// A map hashed with foldhash's fast hasher.
pub type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_by_borrowed_keys_find_what_was_inserted_and_nothing_else() {
        let mut m: FastMap<String, u8> = FastMap::default();
        m.insert("127.0.0.1:1".into(), 1);
        m.insert("127.0.0.1:2".into(), 2);
        assert_eq!(m.get("127.0.0.1:2"), Some(&2));
        assert_eq!(m.get("127.0.0.1:3"), None);
    }
}

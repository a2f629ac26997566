//! The hash of the outbound maps looked up on every request (pools by identity and endpoint,
//! the balancer's services): FNV-1a, a few instructions per byte where the standard
//! library's SipHash costs hundreds per key. Their keys are registry identities, endpoint
//! addresses and service names from the control plane's snapshot, never what a caller sends,
//! so a hash without a random key is enough.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A map hashed with [`Fnv`].
pub type FnvMap<K, V> = HashMap<K, V, BuildHasherDefault<Fnv>>;

/// 64-bit FNV-1a.
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_that_differ_hash_apart_and_lookups_by_borrowed_keys_work() {
        let h = |s: &str| {
            let mut f = Fnv::default();
            f.write(s.as_bytes());
            f.finish()
        };
        // The published FNV-1a test vectors.
        assert_eq!(h(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(h("a"), 0xaf63_dc4c_8601_ec8c);
        let mut m: FnvMap<String, u8> = FnvMap::default();
        m.insert("127.0.0.1:1".into(), 1);
        m.insert("127.0.0.1:2".into(), 2);
        assert_eq!(m.get("127.0.0.1:2"), Some(&2));
        assert_eq!(m.get("127.0.0.1:3"), None);
    }
}

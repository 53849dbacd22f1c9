//! UDP fragment tracking without reassembly: the first fragment (which carries the ports)
//! goes through the normal translation and leaves a record keyed by the fragment identity
//! (src, dst, proto, IP ID, direction) holding the address the later fragments get. Later
//! fragments carry no ports; only their IP address is rewritten.
//!
//! Bounded: a fixed-capacity hashbrown table, entries live `FRAG_TIMEOUT_TICKS`; when it is
//! full new chains are simply not tracked (their later fragments are dropped and counted).
//! Fragments that arrive before their first fragment are dropped too (no buffering).

use super::expiry::is_due;
use super::flow::mix2;
use hashbrown::HashTable;

/// Records per gateway per worker.
pub const FRAG_CAPACITY: usize = 1024;
/// ~4 s at 16 ticks/s: fragments of one datagram arrive within milliseconds.
pub const FRAG_TIMEOUT_TICKS: u32 = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragKey {
    pub src: u32,
    pub dst: u32,
    pub ident: u16,
    pub proto: u8,
    /// 0 = inside to outside, 1 = outside to inside.
    pub dir: u8,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    key: FragKey,
    new_addr: u32,
    deadline: u32,
}

pub struct FragTable {
    t: HashTable<Entry>,
    seed: u64,
}

impl FragTable {
    pub fn new(seed: u64) -> FragTable {
        FragTable {
            // 2x: in-place rehash instead of reallocation under churn (see flow.rs).
            t: HashTable::with_capacity(2 * FRAG_CAPACITY + 1),
            seed,
        }
    }

    fn hash(&self, k: &FragKey) -> u64 {
        mix2(
            self.seed,
            (u64::from(k.src) << 32) | u64::from(k.dst),
            (u64::from(k.ident) << 16) | (u64::from(k.proto) << 8) | u64::from(k.dir),
        )
    }

    pub fn len(&self) -> usize {
        self.t.len()
    }
    pub fn is_empty(&self) -> bool {
        self.t.is_empty()
    }

    /// Records (or refreshes) a chain; false if the table is full.
    pub fn insert(&mut self, key: FragKey, new_addr: u32, now: u32) -> bool {
        let h = self.hash(&key);
        let deadline = now.wrapping_add(FRAG_TIMEOUT_TICKS);
        if let Some(e) = self.t.find_mut(h, |e| e.key == key) {
            e.new_addr = new_addr;
            e.deadline = deadline;
            return true;
        }
        if self.t.len() >= FRAG_CAPACITY {
            return false;
        }
        let seed = self.seed;
        self.t.insert_unique(
            h,
            Entry {
                key,
                new_addr,
                deadline,
            },
            |e| {
                mix2(
                    seed,
                    (u64::from(e.key.src) << 32) | u64::from(e.key.dst),
                    (u64::from(e.key.ident) << 16)
                        | (u64::from(e.key.proto) << 8)
                        | u64::from(e.key.dir),
                )
            },
        );
        true
    }

    /// The address to write into a later fragment of the chain, if tracked and not expired.
    pub fn lookup(&self, key: &FragKey, now: u32) -> Option<u32> {
        self.t
            .find(self.hash(key), |e| e.key == *key)
            .filter(|e| !is_due(e.deadline, now))
            .map(|e| e.new_addr)
    }

    /// Drops expired records (at most `FRAG_CAPACITY` entries: bounded, called from
    /// `NatWorker::expire`, not per packet).
    pub fn sweep(&mut self, now: u32) {
        self.t.retain(|e| !is_due(e.deadline, now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_lookup_expire_bounded() {
        let mut f = FragTable::new(3);
        let k = |i: u16| FragKey {
            src: 1,
            dst: 2,
            ident: i,
            proto: 17,
            dir: 0,
        };
        for i in 0..FRAG_CAPACITY as u16 {
            assert!(f.insert(k(i), 99, 10));
        }
        assert!(!f.insert(k(60000), 99, 10), "full");
        assert_eq!(f.lookup(&k(5), 11), Some(99));
        assert_eq!(f.lookup(&FragKey { dir: 1, ..k(5) }, 11), None);
        assert_eq!(f.lookup(&k(5), 10 + FRAG_TIMEOUT_TICKS), None, "expired");
        f.sweep(10 + FRAG_TIMEOUT_TICKS);
        assert!(f.is_empty());
    }
}

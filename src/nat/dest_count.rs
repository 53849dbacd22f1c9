//! Live mappings per destination, so the per-destination limit is exact and a refusal
//! toward a full destination is one hash lookup (a SYN flood toward a full destination
//! costs O(1) per packet, not a sweep of the port range).
//!
//! Destination = (public IP, remote IP, remote port, proto); the public IP is stored as
//! its index in the gateway's list (at most 8) to keep an entry at 12 bytes. One entry
//! per destination with at least one live mapping, so at most one per flow: the table is
//! created with room for twice the flow capacity (like the flow indexes, so hashbrown
//! always rehashes in place and never reallocates on the packet path) and never grows.

use super::flow::mix2;
use hashbrown::HashTable;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dest {
    pub remote_ip: u32,
    /// remote port << 16 | proto << 8 | public IP index.
    pub meta: u32,
}

impl Dest {
    pub fn new(pip_idx: usize, remote_ip: u32, remote_port: u16, proto: u8) -> Dest {
        Dest {
            remote_ip,
            meta: (u32::from(remote_port) << 16)
                | (u32::from(proto) << 8)
                | (pip_idx as u32 & 0xff),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    dest: Dest,
    count: u32,
}

pub struct DestCounts {
    t: HashTable<Entry>,
    cap: usize,
    seed: u64,
}

impl DestCounts {
    pub fn new(flows: usize, seed: u64) -> DestCounts {
        let cap = flows.max(1);
        DestCounts {
            t: HashTable::with_capacity(2 * cap + 1),
            cap,
            seed,
        }
    }

    /// The hash `get_hashed` and `inc_hashed` take (one hash for both on a new flow).
    #[inline]
    pub fn hash(&self, d: &Dest) -> u64 {
        mix2(self.seed, u64::from(d.remote_ip), u64::from(d.meta))
    }

    /// Live mappings toward `d`.
    #[inline]
    pub fn get(&self, d: &Dest) -> u32 {
        self.t
            .find(self.hash(d), |e| e.dest == *d)
            .map_or(0, |e| e.count)
    }

    /// One more mapping toward `d` (false only if the table is full, which the flow
    /// capacity rules out).
    pub fn inc(&mut self, d: Dest) -> bool {
        self.inc_hashed(self.hash(&d), d)
    }

    /// `get` with `h = hash(d)`.
    #[inline]
    pub fn get_hashed(&self, h: u64, d: &Dest) -> u32 {
        self.t.find(h, |e| e.dest == *d).map_or(0, |e| e.count)
    }

    /// `inc` with `h = hash(&d)`.
    pub fn inc_hashed(&mut self, h: u64, d: Dest) -> bool {
        if let Some(e) = self.t.find_mut(h, |e| e.dest == d) {
            e.count += 1;
            return true;
        }
        self.insert_first(h, d)
    }

    /// `inc_hashed` for a caller that has just read `was = get_hashed(h, &d)` and changed
    /// nothing since (a new flow: the limit check reads the count first): a destination
    /// without mappings is inserted without searching for it a second time.
    pub fn inc_after_get(&mut self, h: u64, d: Dest, was: u32) -> bool {
        if was != 0 {
            return self.inc_hashed(h, d);
        }
        debug_assert_eq!(self.get_hashed(h, &d), 0, "stale count passed in");
        self.insert_first(h, d)
    }

    /// The first mapping toward `d` (not in the table): false when the table is full.
    #[inline]
    fn insert_first(&mut self, h: u64, d: Dest) -> bool {
        if self.t.len() >= self.cap {
            return false;
        }
        let seed = self.seed;
        self.t.insert_unique(h, Entry { dest: d, count: 1 }, |e| {
            mix2(seed, u64::from(e.dest.remote_ip), u64::from(e.dest.meta))
        });
        true
    }

    /// One mapping toward `d` fewer; the entry goes with its last mapping.
    pub fn dec(&mut self, d: Dest) {
        let h = self.hash(&d);
        if let Ok(mut e) = self.t.find_entry(h, |e| e.dest == d) {
            if e.get().count <= 1 {
                e.remove();
            } else {
                e.get_mut().count -= 1;
            }
        }
    }

    /// Destinations with live mappings.
    pub fn len(&self) -> usize {
        self.t.len()
    }
    pub fn is_empty(&self) -> bool {
        self.t.is_empty()
    }
    pub fn memory_bytes(&self) -> usize {
        self.t.allocation_size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_up_and_down_and_never_reallocates() {
        let mut c = DestCounts::new(100, 1);
        let bytes = c.memory_bytes();
        let d = Dest::new(0, 7, 80, 6);
        for _ in 0..5 {
            assert!(c.inc(d));
        }
        assert_eq!(c.get(&d), 5);
        assert_eq!(c.get(&Dest::new(1, 7, 80, 6)), 0, "public IP is part of it");
        for _ in 0..5 {
            c.dec(d);
        }
        assert_eq!((c.get(&d), c.len()), (0, 0));
        // Churn of distinct destinations at capacity.
        for i in 0..100_000u32 {
            let d = Dest::new(0, i, 1, 17);
            assert!(c.inc(d));
            if i >= 99 {
                c.dec(Dest::new(0, i - 99, 1, 17));
            }
        }
        assert_eq!(c.memory_bytes(), bytes);
        assert_eq!(std::mem::size_of::<Entry>(), 12);
    }

    #[test]
    fn inc_after_get_counts_as_inc() {
        let mut c = DestCounts::new(1000, 3);
        let mut oracle = std::collections::HashMap::new();
        let mut r = crate::rng::Rng::new(9);
        for _ in 0..20_000 {
            // Few destinations, so both the new and the existing case occur often.
            let d = Dest::new(r.below(2usize), r.below(20u32), 80, 6);
            let n: &mut u32 = oracle.entry((d.remote_ip, d.meta)).or_default();
            if *n > 0 && r.below(2u32) == 0 {
                c.dec(d);
                *n -= 1;
            } else if *n < 40 {
                let h = c.hash(&d);
                let was = c.get_hashed(h, &d);
                assert_eq!(was, *n);
                assert!(c.inc_after_get(h, d, was));
                *n += 1;
            }
            assert_eq!(c.get(&d), *n);
        }
        let live = oracle.values().filter(|&&n| n > 0).count();
        assert_eq!(c.len(), live, "one entry per destination with mappings");
    }
}

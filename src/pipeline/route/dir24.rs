//! DIR-24-8 longest-prefix match (as DPDK's `rte_lpm`, issue 11 item 5), for large route
//! tables.
//!
//! `tbl24` has one entry per /24 (2^24 × 4 B = 64 MiB, on huge pages through
//! `HugeArray`): either the value of the longest prefix of length ≤ 24 covering that /24,
//! or the number of a `tbl8` group of 256 entries (one per address of the /24) when a
//! longer prefix lies inside it. A lookup is one `tbl24` read, plus one `tbl8` read for
//! addresses under a prefix longer than /24, plus the value (deduplicated, so a table of
//! a million routes over a handful of next hops keeps its values in one cache line):
//! independent of the number of routes and of the prefix lengths in use, unlike probing
//! one hash table per length.
//!
//! Built and updated on the control thread (inserts only: a route table is rebuilt from
//! its config, never edited in place); workers only read it. The depth of the prefix
//! that wrote each entry is kept beside the tables (control side only, never read by a
//! lookup) so that inserting a shorter prefix later never overwrites a longer one.
use crate::pmd::hugemem::{prefetch, HugeArray};
use hashbrown::HashMap;
use std::hash::Hash;

/// `tbl24` entries: 0 = no route; `EXT | group` = see `tbl8` group; else value index + 1.
const EXT: u32 = 1 << 31;
const TBL24: usize = 1 << 24;

pub struct Dir24<V> {
    tbl24: HugeArray<u32>,
    /// Groups of 256 entries (0 = no route, else value index + 1).
    tbl8: Vec<u32>,
    /// Prefix length + 1 of the route that wrote each entry (0 = none).
    depth24: Vec<u8>,
    depth8: Vec<u8>,
    values: Vec<V>,
    value_ids: HashMap<V, u32>,
}

impl<V: Clone + Eq + Hash> Dir24<V> {
    pub fn new() -> Self {
        Dir24 {
            tbl24: HugeArray::filled(TBL24, 0),
            tbl8: Vec::new(),
            depth24: vec![0; TBL24],
            depth8: Vec::new(),
            values: Vec::new(),
            value_ids: HashMap::new(),
        }
    }

    /// Bytes of the lookup tables (what a worker reads).
    pub fn memory_bytes(&self) -> usize {
        self.tbl24.bytes() + self.tbl8.len() * 4
    }

    /// Whether `tbl24` got explicit huge pages (one TLB entry per 2 MiB of it).
    pub fn on_hugetlb(&self) -> bool {
        self.tbl24.is_hugetlb()
    }

    pub fn tbl8_groups(&self) -> usize {
        self.tbl8.len() / 256
    }

    fn value_id(&mut self, v: V) -> u32 {
        if let Some(&id) = self.value_ids.get(&v) {
            return id;
        }
        let id = self.values.len() as u32;
        self.values.push(v.clone());
        self.value_ids.insert(v, id);
        id
    }

    /// Inserts or replaces `key/len` (`key` already masked to `len` bits, `len` ≤ 32).
    pub fn insert(&mut self, key: u32, len: u8, v: V) {
        let e = self.value_id(v) + 1;
        let d = len + 1;
        if len <= 24 {
            let start = (key >> 8) as usize;
            let n = 1usize << (24 - len);
            for i in start..start + n {
                let t = self.tbl24[i];
                if t & EXT != 0 {
                    let g = (t & !EXT) as usize * 256;
                    for j in g..g + 256 {
                        if self.depth8[j] <= d {
                            self.tbl8[j] = e;
                            self.depth8[j] = d;
                        }
                    }
                } else if self.depth24[i] <= d {
                    self.tbl24[i] = e;
                    self.depth24[i] = d;
                }
            }
            return;
        }
        let i = (key >> 8) as usize;
        let t = self.tbl24[i];
        let g = if t & EXT != 0 {
            (t & !EXT) as usize * 256
        } else {
            // A new group inherits what the /24 had (its covering prefix, if any).
            let g = self.tbl8.len();
            self.tbl8.resize(g + 256, t);
            self.depth8.resize(g + 256, self.depth24[i]);
            self.tbl24[i] = EXT | (g / 256) as u32;
            g
        };
        let start = g + (key & 0xff) as usize;
        for j in start..start + (1usize << (32 - len)) {
            if self.depth8[j] <= d {
                self.tbl8[j] = e;
                self.depth8[j] = d;
            }
        }
    }

    #[inline]
    pub fn lookup(&self, a: u32) -> Option<&V> {
        let mut e = self.tbl24.get((a >> 8) as usize).copied().unwrap_or(0);
        if e & EXT != 0 {
            let j = (e & !EXT) as usize * 256 + (a & 0xff) as usize;
            e = self.tbl8.get(j).copied().unwrap_or(0);
        }
        self.values.get(e.wrapping_sub(1) as usize)
    }

    /// Starts loading the `tbl24` line `a`'s lookup will read (burst lookahead).
    #[inline]
    pub fn prefetch(&self, a: u32) {
        if let Some(e) = self.tbl24.get((a >> 8) as usize) {
            prefetch(e);
        }
    }

    /// Looks up every address of `addrs` into `out` (same length), prefetching all their
    /// `tbl24` lines first so that the misses of a burst overlap.
    #[inline]
    pub fn lookup_burst<'a>(&'a self, addrs: &[u32], out: &mut [Option<&'a V>]) {
        for &a in addrs {
            self.prefetch(a);
        }
        for (o, &a) in out.iter_mut().zip(addrs) {
            *o = self.lookup(a);
        }
    }
}

impl<V: Clone + Eq + Hash> Default for Dir24<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V: Clone> Clone for Dir24<V> {
    fn clone(&self) -> Self {
        let t = &self.tbl24;
        Dir24 {
            tbl24: HugeArray::from_fn(TBL24, |i| t[i]),
            tbl8: self.tbl8.clone(),
            depth24: self.depth24.clone(),
            depth8: self.depth8.clone(),
            values: self.values.clone(),
            value_ids: self.value_ids.clone(),
        }
    }
}

impl<V> std::fmt::Debug for Dir24<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dir24")
            .field("tbl8_groups", &(self.tbl8.len() / 256))
            .field("values", &self.values.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask(len: u8) -> u32 {
        if len == 0 {
            0
        } else {
            u32::MAX << (32 - len as u32)
        }
    }

    struct Xs(u64);
    impl Xs {
        fn next(&mut self) -> u32 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 16) as u32
        }
    }

    /// The naive oracle: the longest stored prefix containing `a` (last insert of a
    /// prefix wins).
    fn oracle(routes: &[(u32, u8, u32)], a: u32) -> Option<u32> {
        let mut best: Option<(u8, u32)> = None;
        for &(k, l, v) in routes {
            if a & mask(l) == k && best.is_none_or(|(bl, _)| l >= bl) {
                best = Some((l, v));
            }
        }
        best.map(|(_, v)| v)
    }

    fn check(d: &Dir24<u32>, routes: &[(u32, u8, u32)], probes: &[u32]) {
        for &a in probes {
            assert_eq!(d.lookup(a).copied(), oracle(routes, a), "{a:#010x}");
        }
    }

    #[test]
    fn edge_lengths_0_8_24_25_32() {
        let mut d = Dir24::new();
        assert_eq!(d.lookup(0x0a00_0001), None);
        let routes = [
            (0x0a01_0203, 32, 32),
            (0x0a01_0280, 25, 25),
            (0x0a01_0200, 24, 24),
            (0x0a00_0000, 8, 8),
            (0, 0, 0),
        ];
        // Longest first: shorter prefixes inserted later must not overwrite them.
        for (k, l, v) in routes {
            d.insert(k, l, v);
        }
        let probes = [
            0x0a01_0203,
            0x0a01_0204,
            0x0a01_0280,
            0x0a01_02ff,
            0x0a01_027f,
            0x0a01_0300,
            0x0a02_0000,
            0x0b00_0000,
            0xffff_ffff,
            0,
        ];
        check(&d, &routes, &probes);
        assert_eq!(d.lookup(0x0a01_0203), Some(&32));
        assert_eq!(d.lookup(0x0a01_0290), Some(&25));
        assert_eq!(d.lookup(0x0a01_0201), Some(&24));
        assert_eq!(d.lookup(0x0aff_0000), Some(&8));
        assert_eq!(d.lookup(0xc000_0201), Some(&0));
        assert_eq!(d.tbl8_groups(), 1, "/25 and /32 share the /24's group");
        // Replacing a prefix replaces its value only where it was the longest match.
        d.insert(0x0a01_0200, 24, 99);
        assert_eq!(d.lookup(0x0a01_0201), Some(&99));
        assert_eq!(d.lookup(0x0a01_0290), Some(&25));
    }

    #[test]
    fn random_prefixes_match_the_oracle_in_any_insert_order() {
        let mut r = Xs(0x9e37_79b9_7f4a_7c15);
        let mut routes = Vec::new();
        // Clustered under 10.0.0.0/12 so that prefixes overlap at every length.
        for i in 0..600u32 {
            let l = (r.next() % 33) as u8;
            let k = (0x0a00_0000 | (r.next() & 0x000f_ffff)) & mask(l);
            routes.push((k, l, i));
        }
        // Duplicated prefixes with new values (replacement).
        for i in 0..50 {
            let (k, l, _) = routes[(r.next() % 600) as usize];
            routes.push((k, l, 1000 + i));
        }
        let mut d = Dir24::new();
        for &(k, l, v) in &routes {
            d.insert(k, l, v);
        }
        let mut probes: Vec<u32> = (0..20_000)
            .map(|_| 0x0a00_0000 | (r.next() & 0x000f_ffff))
            .collect();
        // Each prefix's first and last address and their neighbours.
        for &(k, l, _) in &routes {
            let last = k | !mask(l);
            probes.extend([k, last, k.wrapping_sub(1), last.wrapping_add(1)]);
        }
        probes.extend((0..2000).map(|_| r.next()));
        check(&d, &routes, &probes);
    }

    #[test]
    fn burst_lookup_and_clone_agree_with_single() {
        let mut d = Dir24::new();
        d.insert(0xc633_6400, 24, 1u32);
        d.insert(0xc633_6480, 26, 2);
        d.insert(0, 0, 3);
        let c = d.clone();
        let addrs = [0xc633_6401, 0xc633_6481, 0x0102_0304, 0xc633_64c1];
        let mut out = [None; 4];
        c.lookup_burst(&addrs, &mut out);
        let single: Vec<_> = addrs.iter().map(|&a| d.lookup(a)).collect();
        assert_eq!(out.to_vec(), single);
        assert_eq!(out, [Some(&1), Some(&2), Some(&3), Some(&1)]);
        assert!(c.memory_bytes() >= 64 << 20);
        println!("tbl24 on MAP_HUGETLB pages: {}", c.on_hugetlb());
    }
}

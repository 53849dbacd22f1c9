//! A bucketised cuckoo index from a 64-bit key hash to a slot number (`u32`), sized once.
//!
//! Why this shape (issue 11): at a million flows every memory access of a lookup is a
//! cache (and TLB) miss, so a hit must cost one index line plus the flow entry itself.
//! A bucket is one 64-byte cache line of 15 slots and an overflow count; a slot packs a
//! short signature of the key's hash (the high bits) with `slot number + 1` (the low
//! bits; 0 = empty), so one line holds 15 candidates and a mismatch rarely touches an
//! entry. Every key has two candidate buckets; it goes to its first (primary) bucket
//! when there is room, else to the second, else entries are moved to their other bucket
//! along a bounded cuckoo path. A bucket's overflow count says how many keys whose
//! primary it is live in their second bucket, so a lookup (hit or miss) reads the second
//! line only when that count is not 0. Deleting clears the slot (and decrements the
//! count): nothing like a tombstone is left behind, so churn cannot degrade it. Sized
//! for at most `LOAD` of its slots used at full capacity; memory from `HugeArray`.
use crate::pmd::hugemem::{prefetch, HugeArray};
use crate::pmd::simd::match_words;

/// Slots per bucket; the 16th word of the line is the overflow count.
const SLOTS: usize = 15;
const OVER: usize = 15;
/// Slot use at full capacity (the 15-way two-choice table fills to ~98 % before the
/// cuckoo paths get long; 0.92 keeps inserts short with a table at capacity).
const LOAD: f64 = 0.92;
/// Longest cuckoo path tried before refusing an insert.
const MAX_PATH: usize = 32;
/// Largest capacity: slot numbers take at most 27 bits, leaving ≥ 5 signature bits.
pub const MAX_CAPACITY: usize = (1 << 27) - 1;

#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
struct Bucket {
    w: [u32; 16],
}

/// Where a hash may live: its two buckets and its signature (already shifted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    b1: u32,
    tag: u32,
    h: u64,
}

pub struct FlowIndex {
    b: HugeArray<Bucket>,
    nb: u64,
    /// Low bits of a slot hold `slot number + 1`.
    idx_bits: u32,
    /// 64 - signature bits.
    tag_shift: u32,
    idx_mask: u32,
    len: usize,
    /// xorshift state choosing which entry a cuckoo path displaces.
    kick: u32,
}

/// Bit i set when slot i of the bucket carries signature `tag` (the overflow count is
/// masked out).
#[inline(always)]
fn matches(b: &Bucket, tag: u32, tag_mask: u32) -> u32 {
    match_words(&b.w, tag, tag_mask) & ((1 << SLOTS) - 1)
}

#[inline(always)]
fn first_free(b: &Bucket) -> Option<usize> {
    let m = match_words(&b.w, 0, u32::MAX) & ((1 << SLOTS) - 1);
    (m != 0).then(|| m.trailing_zeros() as usize)
}

impl FlowIndex {
    /// An index for up to `capacity` (≤ `MAX_CAPACITY`) distinct slot numbers
    /// `0..capacity`.
    pub fn new(capacity: usize) -> FlowIndex {
        let cap = capacity.clamp(1, MAX_CAPACITY);
        let nb = ((cap as f64 / (SLOTS as f64 * LOAD)).ceil() as usize).max(2);
        let idx_bits = u32::BITS - (cap as u32).leading_zeros();
        FlowIndex {
            b: HugeArray::filled(nb, Bucket::default()),
            nb: nb as u64,
            idx_bits,
            tag_shift: 64 - (u32::BITS - idx_bits),
            idx_mask: (1 << idx_bits) - 1,
            len: 0,
            kick: 0x9e37_79b9,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Bytes mapped for the buckets.
    pub fn memory_bytes(&self) -> usize {
        self.b.bytes()
    }
    pub fn buckets(&self) -> usize {
        self.b.len()
    }
    pub fn on_hugetlb(&self) -> bool {
        self.b.is_hugetlb()
    }

    /// The first bucket (multiply-shift reduction of the low 32 bits) and the signature
    /// (the top bits of a second mix, never 0 so that an empty slot never matches).
    #[inline(always)]
    pub fn probe(&self, h: u64) -> Probe {
        let b1 = ((h & 0xffff_ffff) * self.nb) >> 32;
        let t = (h.wrapping_mul(0xff51_afd7_ed55_8ccd) >> self.tag_shift) as u32;
        Probe {
            b1: b1 as u32,
            tag: t.max(1) << self.idx_bits,
            h,
        }
    }

    /// The second bucket (from the high 32 bits; never the first), computed only when a
    /// lookup or insert gets that far.
    #[inline(always)]
    fn b2(&self, p: &Probe) -> u32 {
        let b2 = ((p.h >> 32) * self.nb) >> 32;
        let b1 = u64::from(p.b1);
        (if b2 != b1 {
            b2
        } else if b1 + 1 == self.nb {
            0
        } else {
            b1 + 1
        }) as u32
    }

    /// Starts loading the primary bucket of `h` (for lookups a few packets later).
    #[inline(always)]
    pub fn prefetch(&self, h: u64) {
        if let Some(b) = self.b.get(self.probe(h).b1 as usize) {
            prefetch(b);
        }
    }

    /// The slot number stored for `h` for which `eq` holds.
    #[inline]
    pub fn find(&self, h: u64, mut eq: impl FnMut(u32) -> bool) -> Option<u32> {
        let p = self.probe(h);
        let b = self.b.get(p.b1 as usize)?;
        if let Some(i) = self.find_in(b, p.tag, &mut eq) {
            return Some(i);
        }
        if b.w[OVER] == 0 {
            return None;
        }
        let b = self.b.get(self.b2(&p) as usize)?;
        self.find_in(b, p.tag, &mut eq)
    }

    /// Calls `f` with every slot number in `h`'s primary bucket whose signature matches
    /// (no key comparison: for prefetching the entries); when there is none but the
    /// bucket has overflowed, starts loading the second bucket instead.
    #[inline]
    pub fn candidates(&self, h: u64, mut f: impl FnMut(u32)) {
        let p = self.probe(h);
        let Some(b) = self.b.get(p.b1 as usize) else {
            return;
        };
        let mut any = false;
        let _ = self.find_in(b, p.tag, &mut |i| {
            f(i);
            any = true;
            false
        });
        if !any && b.w[OVER] != 0 {
            if let Some(b) = self.b.get(self.b2(&p) as usize) {
                prefetch(b);
            }
        }
    }

    #[inline(always)]
    fn find_in(&self, b: &Bucket, tag: u32, eq: &mut impl FnMut(u32) -> bool) -> Option<u32> {
        let mut m = matches(b, tag, !self.idx_mask);
        while m != 0 {
            let w = b.w.get(m.trailing_zeros() as usize).copied().unwrap_or(0);
            let idx = (w & self.idx_mask).wrapping_sub(1);
            if eq(idx) {
                return Some(idx);
            }
            m &= m - 1;
        }
        None
    }

    fn bucket_mut(&mut self, b: u32) -> Option<&mut Bucket> {
        self.b.get_mut(b as usize)
    }

    fn word(&self, b: u32, s: usize) -> u32 {
        self.b
            .get(b as usize)
            .and_then(|b| b.w.get(s))
            .copied()
            .unwrap_or(0)
    }

    fn set_word(&mut self, b: u32, s: usize, v: u32) {
        if let Some(w) = self.bucket_mut(b).and_then(|b| b.w.get_mut(s)) {
            *w = v;
        }
    }

    fn add_over(&mut self, b: u32, d: i32) {
        if let Some(w) = self.bucket_mut(b).map(|b| &mut b.w[OVER]) {
            *w = w.wrapping_add_signed(d);
        }
    }

    /// Stores slot number `idx` (< capacity, not yet stored) under hash `h`. `rehash`
    /// gives the hash of any stored slot number (to move it to its other bucket). `false`
    /// when no room was found (nothing changed).
    pub fn insert(&mut self, h: u64, idx: u32, rehash: impl Fn(u32) -> u64) -> bool {
        if idx >= self.idx_mask {
            return false;
        }
        let p = self.probe(h);
        let v = p.tag | (idx + 1);
        // The primary bucket first; the second one is located only when that is full.
        if let Some(s) = self.b.get(p.b1 as usize).and_then(first_free) {
            self.set_word(p.b1, s, v);
            self.len += 1;
            return true;
        }
        let p2 = self.b2(&p);
        if let Some(s) = self.b.get(p2 as usize).and_then(first_free) {
            self.set_word(p2, s, v);
            self.add_over(p.b1, 1);
            self.len += 1;
            return true;
        }
        // Both full: find a path of displacements ending at a free slot, then apply it
        // from its end (nothing moves unless the whole path works).
        let mut path = [(0u32, 0usize, 0u32, 0u32); MAX_PATH]; // (bucket, slot, primary, alt)
        let start = if self.next_kick() & 1 == 0 { p.b1 } else { p2 };
        let mut cur = start;
        for depth in 0..MAX_PATH {
            // A random entry of `cur` not already displaced along this path.
            let mut s = (self.next_kick() % SLOTS as u32) as usize;
            let mut tries = 0;
            while path[..depth]
                .iter()
                .any(|&(b, ps, _, _)| b == cur && ps == s)
            {
                s = (s + 1) % SLOTS;
                tries += 1;
                if tries == SLOTS {
                    return false;
                }
            }
            let w = self.word(cur, s);
            let vp = self.probe(rehash((w & self.idx_mask).wrapping_sub(1)));
            let alt = if vp.b1 == cur { self.b2(&vp) } else { vp.b1 };
            path[depth] = (cur, s, vp.b1, alt);
            let Some(free) = self.b.get(alt as usize).and_then(first_free) else {
                cur = alt;
                continue;
            };
            // Apply: each displaced entry moves to its other bucket, into the slot just
            // vacated by the next one along the path (the last into the free slot).
            let mut dest = (alt, free);
            for &(b, s, primary, alt) in path[..=depth].iter().rev() {
                let w = self.word(b, s);
                self.set_word(dest.0, dest.1, w);
                // Out of its primary bucket: one more overflow; back into it: one less.
                self.add_over(primary, if b == primary { 1 } else { -1 });
                let _ = alt;
                dest = (b, s);
            }
            self.set_word(dest.0, dest.1, v);
            if start == p2 {
                self.add_over(p.b1, 1);
            }
            self.len += 1;
            return true;
        }
        false
    }

    fn next_kick(&mut self) -> u32 {
        let mut x = self.kick;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.kick = x;
        x
    }

    /// Removes slot number `idx` stored under hash `h`; `false` when it was not there.
    pub fn remove(&mut self, h: u64, idx: u32) -> bool {
        let p = self.probe(h);
        let v = p.tag | idx.wrapping_add(1);
        // The stored word is exactly `v`: one vector compare per bucket finds it (no scan
        // of the 15 slots), and the second bucket is located only when the first lacks it.
        if self.clear_word(p.b1, v) {
            self.len -= 1;
            return true;
        }
        if self.b.get(p.b1 as usize).is_some_and(|b| b.w[OVER] == 0) {
            return false;
        }
        if self.clear_word(self.b2(&p), v) {
            self.add_over(p.b1, -1);
            self.len -= 1;
            return true;
        }
        false
    }

    /// Clears the slot of bucket `b` holding exactly `v` (≠ 0); `false` when none does.
    #[inline(always)]
    fn clear_word(&mut self, b: u32, v: u32) -> bool {
        let Some(bucket) = self.bucket_mut(b) else {
            return false;
        };
        let m = match_words(&bucket.w, v, u32::MAX) & ((1 << SLOTS) - 1);
        if m == 0 {
            return false;
        }
        if let Some(w) = bucket.w.get_mut(m.trailing_zeros() as usize) {
            *w = 0;
        }
        true
    }

    /// Total of the overflow counts (tests: equals the entries outside their primary).
    #[cfg(test)]
    fn overflow_total(&self) -> u64 {
        self.b.iter().map(|b| u64::from(b.w[OVER])).sum()
    }
    #[cfg(test)]
    fn used_slots(&self) -> usize {
        self.b
            .iter()
            .map(|b| b.w[..SLOTS].iter().filter(|&&w| w != 0).count())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nat::flow::mix2;

    fn h(k: u32) -> u64 {
        mix2(0x1234, u64::from(k), 7)
    }

    #[test]
    fn bucket_is_one_cache_line() {
        assert_eq!(std::mem::size_of::<Bucket>(), 64);
        assert_eq!(std::mem::align_of::<Bucket>(), 64);
    }

    #[test]
    fn fills_to_capacity_with_few_second_bucket_entries() {
        let cap = 100_000;
        let mut x = FlowIndex::new(cap);
        // Slot number i stored under the hash of key i.
        for i in 0..cap as u32 {
            assert!(x.insert(h(i), i, h), "insert {i} of {cap}");
        }
        assert_eq!(x.len(), cap);
        assert_eq!(x.used_slots(), cap);
        for i in 0..cap as u32 {
            assert_eq!(x.find(h(i), |j| j == i), Some(i));
        }
        assert_eq!(x.find(h(cap as u32 + 1), |_| true), None);
        let load = cap as f64 / (x.buckets() * SLOTS) as f64;
        let second = x.overflow_total() as f64 / cap as f64;
        println!("load {load:.3}, in second bucket {:.1} %", second * 100.0);
        assert!(load > 0.85, "{load}");
        assert!(second < 0.2, "{second}");
    }

    #[test]
    fn churn_leaves_no_residue() {
        let cap = 20_000;
        let mut x = FlowIndex::new(cap);
        // Slot i holds key keys[i].
        let mut keys: Vec<u32> = (0..cap as u32).collect();
        for i in 0..cap as u32 {
            assert!(x.insert(h(i), i, |j| h(keys[j as usize])));
        }
        let mut r = 1u32;
        for next in cap as u32..cap as u32 + 300_000 {
            r ^= r << 13;
            r ^= r >> 17;
            r ^= r << 5;
            let slot = r % cap as u32;
            assert!(x.remove(h(keys[slot as usize]), slot));
            assert!(!x.remove(h(keys[slot as usize]), slot), "removed twice");
            keys[slot as usize] = next;
            let k = &keys;
            assert!(
                x.insert(h(next), slot, |j| h(k[j as usize])),
                "churn insert"
            );
        }
        assert_eq!(x.len(), cap);
        assert_eq!(x.used_slots(), cap, "a removal left a slot behind");
        let mut outside = 0;
        for (i, &k) in keys.iter().enumerate() {
            assert_eq!(x.find(h(k), |j| j == i as u32), Some(i as u32));
            let p = x.probe(h(k));
            let in_primary = x.b[p.b1 as usize].w[..SLOTS].contains(&(p.tag | (i as u32 + 1)));
            outside += u64::from(!in_primary);
        }
        assert_eq!(x.overflow_total(), outside, "overflow counts drifted");
        for (i, &k) in keys.iter().enumerate() {
            assert!(x.remove(h(k), i as u32));
        }
        assert_eq!((x.len(), x.used_slots(), x.overflow_total()), (0, 0, 0));
    }

    #[test]
    fn refuses_cleanly_when_no_room() {
        // More encodable slot numbers than the buckets hold: once inserts start failing,
        // every failure leaves the index as it was.
        let mut x = FlowIndex::new(1100);
        let room = x.buckets() * SLOTS;
        assert!(x.idx_mask as usize > room);
        let mut stored = Vec::new();
        let mut refused = 0;
        for i in 0..x.idx_mask - 1 {
            if x.insert(h(i), i, h) {
                stored.push(i);
            } else {
                refused += 1;
            }
            assert_eq!(x.len(), stored.len());
        }
        println!("{} of {room} slots used, {refused} refused", stored.len());
        assert!(refused > 0 && stored.len() > room * 9 / 10);
        assert_eq!(x.used_slots(), stored.len());
        for &i in &stored {
            assert_eq!(x.find(h(i), |j| j == i), Some(i));
        }
        // Slot numbers beyond the encoding are refused too.
        assert!(!x.insert(h(5000), x.idx_mask, h));
    }
}

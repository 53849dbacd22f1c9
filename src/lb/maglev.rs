//! Weighted Maglev lookup table (Eisenbud et al., NSDI 2016), weights by cumulative-weight
//! turns as in Katran's `MaglevHashV2`.
//!
//! Every flowgate node must compute the same table for the same targets, so nothing here
//! depends on the process, the platform or the order the caller lists targets in:
//! - a target is identified by `stable_key(ip, port)`; targets are sorted by that key
//!   (ties by weight, then by the caller's index) before the table is filled;
//! - a target's permutation is `offset = mix64(key ^ SEED_OFFSET) % M`,
//!   `skip = mix64(key ^ SEED_SKIP) % (M - 1) + 1`, where `mix64` is MurmurHash3's 64-bit
//!   finalizer (`fmix64`, constants below) — plain wrapping u64 arithmetic, identical on every
//!   platform; M prime makes every `skip` generate all M slots;
//! - a packet's slot is `flow_hash(5-tuple) % M`, with a fixed seed.
//!
//! Fill (Katran `MaglevHashV2`): turns go round the sorted targets; on each turn a target adds
//! its weight to its running sum and, when the sum reaches the largest weight, subtracts it
//! and claims its next free preferred slot. So the heaviest target claims a slot every
//! turn and a target of weight w claims w / max of them: slot shares follow the weights
//! through the whole fill (Maglev v1 honours weights only in the first round).
//!
//! The fill is the control thread's job (never a worker's): one allocation each for the
//! table, an occupancy bitmap and the per-target cursors, u32 arithmetic, the permutation
//! walked incrementally (`cursor += skip mod M`), no division per probe.

use std::net::Ipv4Addr;

/// Slot value meaning "no target" (only seen while filling, or when no target has weight).
const EMPTY: u16 = u16::MAX;
/// Most targets a table can name (slots are u16, `EMPTY` reserved). Config limits target
/// groups far below this; targets at slice index MAX_TARGETS and beyond are ignored.
pub const MAX_TARGETS: usize = EMPTY as usize;

/// Seeds XORed into the key before `mix64`: two independent hashes of one key for the
/// permutation, one for packets (the golden ratio and two xxHash primes). Keys use only the
/// low 48 bits and the two permutation seeds differ in the top 16, so `key ^ SEED_OFFSET`
/// never equals `key' ^ SEED_SKIP` for any two targets. Changing a seed changes every
/// table: the golden test pins them.
pub const SEED_OFFSET: u64 = 0x9e37_79b9_7f4a_7c15;
pub const SEED_SKIP: u64 = 0xc2b2_ae3d_27d4_eb4f;
pub const SEED_FLOW: u64 = 0x1656_67b1_9e37_79f9;

/// MurmurHash3's 64-bit finalizer (`fmix64`): a bijection on u64 with full avalanche.
#[inline]
pub fn mix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^= x >> 33;
    x
}

/// A target's identity for the table: `(IPv4 as u32) << 16 | port`. Distinct (ip, port)
/// pairs get distinct keys, and the key (not the caller's list position) decides the order
/// and the permutation, so all nodes agree.
#[inline]
pub fn stable_key(ip: Ipv4Addr, port: u16) -> u64 {
    (u64::from(u32::from(ip)) << 16) | u64::from(port)
}

/// The packet hash: the 5-tuple packed into two words (addresses; ports and protocol), each
/// mixed with `mix64` under the fixed seed `SEED_FLOW`. Same answer on every node and every
/// run (no per-process random state, unlike `std`'s `DefaultHasher`). Not symmetric: the
/// client-to-VIP direction is the one hashed; replies are matched by the flow table.
#[inline]
pub fn flow_hash(proto: u8, src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> u64 {
    let addrs = (u64::from(u32::from(src)) << 32) | u64::from(u32::from(dst));
    let rest = (u64::from(sport) << 48) | (u64::from(dport) << 32) | u64::from(proto);
    mix64(mix64(addrs ^ SEED_FLOW) ^ rest)
}

/// One target as the caller lists it. `weight` 0 means "no new flows" (deregistered or
/// drained): the target gets no slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaglevTarget {
    pub key: u64,
    pub weight: u32,
}

/// The lookup table: `slots[hash % M]` is an index into the caller's target slice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaglevTable {
    m: u32,
    slots: Vec<u16>,
}

/// Fill state of one target (array of structs: a turn touches every field of one target).
struct Cursor {
    /// Next slot of this target's permutation to try.
    next: u32,
    skip: u32,
    weight: u64,
    acc: u64,
    /// Index into the caller's slice: what the slot stores.
    index: u16,
}

impl MaglevTable {
    /// Builds the table of size `m` (meant to be prime; the config checks that and
    /// M >= 100 x targets, this works for any m). Targets of weight 0 get no slot; with none
    /// left every `lookup` is `None`.
    pub fn build(targets: &[MaglevTarget], m: u32) -> MaglevTable {
        // Slots store the caller's index as u16, so only the first MAX_TARGETS can be named.
        let mut order: Vec<usize> = (0..targets.len().min(MAX_TARGETS))
            .filter(|&i| targets[i].weight > 0)
            .collect();
        order.sort_unstable_by_key(|&i| (targets[i].key, targets[i].weight, i));
        let mut slots = vec![EMPTY; m as usize];
        if order.is_empty() || m == 0 {
            return MaglevTable { m, slots };
        }
        if order.len() == 1 {
            slots.fill(order[0] as u16);
            return MaglevTable { m, slots };
        }
        let mut cursors: Vec<Cursor> = order
            .iter()
            .map(|&i| {
                let t = targets[i];
                let offset = (mix64(t.key ^ SEED_OFFSET) % u64::from(m)) as u32;
                let skip = if m > 1 {
                    (mix64(t.key ^ SEED_SKIP) % u64::from(m - 1)) as u32 + 1
                } else {
                    1
                };
                Cursor {
                    next: offset,
                    skip,
                    weight: u64::from(t.weight),
                    acc: 0,
                    index: i as u16,
                }
            })
            .collect();
        let max_weight = cursors.iter().map(|c| c.weight).max().unwrap_or(1);
        // Occupancy bitmap: the probes of a nearly full table dominate the build, and M bits
        // (80 KiB at M=655373) stay in L2 where M u16 slots (1.3 MiB) do not.
        let mut taken = vec![0u64; (m as usize).div_ceil(64)];
        let mut filled = 0u32;
        loop {
            for c in cursors.iter_mut() {
                c.acc += c.weight;
                if c.acc < max_weight {
                    continue;
                }
                c.acc -= max_weight;
                // Walk this target's permutation to its next free slot. `next < m` and
                // `skip < m`, so the sum fits u32 whenever m <= 2^31 (a u16 table of that
                // size would be 4 GiB; config caps M far lower).
                let mut cur = c.next;
                while taken[(cur >> 6) as usize] & (1 << (cur & 63)) != 0 {
                    cur = step(cur, c.skip, m);
                }
                taken[(cur >> 6) as usize] |= 1 << (cur & 63);
                slots[cur as usize] = c.index;
                c.next = step(cur, c.skip, m);
                filled += 1;
                if filled == m {
                    return MaglevTable { m, slots };
                }
            }
        }
    }

    /// The target (index into the slice given to `build`) for a packet hash, or `None`
    /// when no target has weight.
    #[inline]
    pub fn lookup(&self, hash: u64) -> Option<u16> {
        if self.m == 0 {
            return None;
        }
        match self.slots[(hash % u64::from(self.m)) as usize] {
            EMPTY => None,
            i => Some(i),
        }
    }

    /// M, the number of slots.
    pub fn size(&self) -> u32 {
        self.m
    }

    /// The slots (target indices; `u16::MAX` for none), for tests and metrics.
    pub fn slots(&self) -> &[u16] {
        &self.slots
    }

    /// Slots owned by each of `n` targets (indices as given to `build`).
    pub fn counts(&self, n: usize) -> Vec<u32> {
        let mut c = vec![0u32; n];
        for &s in &self.slots {
            if let Some(x) = c.get_mut(s as usize) {
                *x += 1;
            }
        }
        c
    }
}

#[inline]
fn step(cur: u32, skip: u32, m: u32) -> u32 {
    let n = cur + skip;
    if n >= m {
        n - m
    } else {
        n
    }
}

#[cfg(test)]
#[path = "maglev_tests.rs"]
mod tests;

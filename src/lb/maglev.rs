//! PLACEHOLDER Maglev module (the `lbhc` branch delivers the real one with the same API):
//! weighted Maglev lookup table in the style of Katran's `MaglevHashV2` (cumulative-weight
//! turns), targets sorted by a stable key, fixed hash and seed so every node builds the
//! same table.

use std::net::Ipv4Addr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaglevTarget {
    /// Stable key (see `stable_key`): the sort order and the permutation seed.
    pub key: u64,
    pub weight: u32,
}

#[derive(Debug, Clone, Default)]
pub struct MaglevTable {
    /// Slot -> index into the targets slice given to `build`; u16::MAX = empty.
    slots: Vec<u16>,
}

const SEED1: u64 = 0x6d61_676c_6576_3031;
const SEED2: u64 = 0x6d61_676c_6576_3032;

/// splitmix64 finalizer of `x ^ seed` (fixed, portable, documented).
#[inline]
fn mix(x: u64, seed: u64) -> u64 {
    let mut z = x ^ seed;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The stable key of a target: its address and port.
pub fn stable_key(ip: Ipv4Addr, port: u16) -> u64 {
    (u64::from(u32::from(ip)) << 16) | u64::from(port)
}

/// The packet hash of a 5-tuple (fixed seed: the same on every node).
#[inline]
pub fn flow_hash(proto: u8, src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> u64 {
    let a = (u64::from(u32::from(src)) << 32) | u64::from(u32::from(dst));
    let b = (u64::from(proto) << 32) | (u64::from(sport) << 16) | u64::from(dport);
    mix(mix(a, SEED1) ^ b, SEED2)
}

impl MaglevTable {
    /// Builds the table of size `m` (prime). Targets of weight 0 get no slots.
    pub fn build(targets: &[MaglevTarget], m: u32) -> MaglevTable {
        let m = m.max(1) as usize;
        let mut order: Vec<usize> = (0..targets.len())
            .filter(|&i| targets[i].weight > 0)
            .collect();
        order.sort_by_key(|&i| targets[i].key);
        let mut slots = vec![u16::MAX; m];
        if order.is_empty() {
            return MaglevTable { slots };
        }
        let perm: Vec<(u64, u64)> = order
            .iter()
            .map(|&i| {
                let k = targets[i].key;
                let offset = mix(k, SEED1) % m as u64;
                let skip = if m > 1 {
                    mix(k, SEED2) % (m as u64 - 1) + 1
                } else {
                    1
                };
                (offset, skip)
            })
            .collect();
        let max_w = order.iter().map(|&i| targets[i].weight).max().unwrap_or(1);
        let mut next = vec![0u64; order.len()];
        let mut cum = vec![0u32; order.len()];
        let mut filled = 0;
        while filled < m {
            for (n, &i) in order.iter().enumerate() {
                cum[n] += targets[i].weight;
                if cum[n] < max_w {
                    continue;
                }
                cum[n] -= max_w;
                let (off, skip) = perm[n];
                loop {
                    let c = ((off + next[n] * skip) % m as u64) as usize;
                    next[n] += 1;
                    if slots[c] == u16::MAX {
                        slots[c] = i as u16;
                        filled += 1;
                        break;
                    }
                }
                if filled == m {
                    break;
                }
            }
        }
        MaglevTable { slots }
    }

    /// The target (index into the slice given to `build`) for a packet hash.
    #[inline]
    pub fn lookup(&self, hash: u64) -> Option<u16> {
        if self.slots.is_empty() {
            return None;
        }
        let s = *self.slots.get((hash % self.slots.len() as u64) as usize)?;
        (s != u16::MAX).then_some(s)
    }

    pub fn size(&self) -> usize {
        self.slots.len()
    }

    /// Slot count of each target index (tests, metrics).
    pub fn shares(&self, n: usize) -> Vec<usize> {
        let mut v = vec![0; n];
        for &s in &self.slots {
            if let Some(x) = v.get_mut(s as usize) {
                *x += 1;
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_give_shares() {
        let t: Vec<MaglevTarget> = (0..3)
            .map(|i| MaglevTarget {
                key: stable_key(Ipv4Addr::new(10, 0, 0, i as u8 + 1), 80),
                weight: i + 1,
            })
            .collect();
        let m = MaglevTable::build(&t, 65537);
        let s = m.shares(3);
        for (i, share) in s.iter().enumerate() {
            let want = (i + 1) as f64 / 6.0;
            let got = *share as f64 / 65537.0;
            assert!((got - want).abs() < 0.01, "{i}: {got} vs {want}");
        }
    }
}

//! The placement hash. Fixed forever (changing it moves every tenant of every fleet), so it is
//! spelled out here instead of borrowed from `std` (whose `DefaultHasher` may change between
//! Rust releases and is randomly keyed in `HashMap`).
//!
//! - names (tenant ids, node ids) are reduced to 64 bits with FNV-1a 64
//!   (offset basis 0xcbf29ce484222325, prime 0x100000001b3);
//! - the rendezvous score of node `n` for tenant `t` in a fleet with seed `s` is
//!   `mix64(mix64(s ^ fnv1a(t)) ^ fnv1a(n))`, where `mix64` is the SplitMix64 finalizer
//!   (add 0x9e3779b97f4a7c15, then xor-shift-multiply by 0xbf58476d1ce4e5b9 and
//!   0x94d049bb133111eb). Its avalanche makes the scores of one tenant over the nodes behave
//!   like independent uniform draws, which is what gives the hypergeometric overlap.

/// FNV-1a, 64 bits.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// SplitMix64 finalizer (Steele, Lea, Flood 2014): a bijection on u64 with full avalanche.
pub fn mix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Per-tenant key: the fleet seed combined with the tenant id.
pub fn tenant_key(seed: u64, tenant: &str) -> u64 {
    mix64(seed ^ fnv1a64(tenant.as_bytes()))
}

/// Rendezvous score of a node (pre-hashed with [`fnv1a64`]) for a tenant key.
#[inline]
pub fn score(tenant_key: u64, node_hash: u64) -> u64 {
    mix64(tenant_key ^ node_hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pinned values: if these change, every placement in every fleet changes.
    #[test]
    fn hash_is_pinned() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
        // SplitMix64 with state 0: the first output of the reference generator.
        assert_eq!(mix64(0), 0xe220_a839_7b1d_cdaf);
    }
}

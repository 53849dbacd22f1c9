//! The Toeplitz hash NICs use for RSS (Microsoft RSS spec), so the allocator can pick a
//! public port whose *return* traffic the NIC steers to the queue of the owning worker.

use std::net::Ipv4Addr;

/// Microsoft's published verification key (also the default of many drivers).
pub const MS_KEY: [u8; 40] = [
    0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f, 0xb0,
    0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30, 0xf2, 0x0c,
    0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
];

/// Toeplitz hash of `input` under `key`: for every set bit of the input (MSB first), XOR
/// in the 32 key bits starting at that bit position. Inputs longer than `key.len() - 4`
/// bytes are hashed as if truncated there (never panics).
pub fn hash(key: &[u8; 40], input: &[u8]) -> u32 {
    let mut result = 0u32;
    // `window` holds key bits [i, i+32) in its top half as we slide over the input bits.
    let mut window = u64::from(u32::from_be_bytes([key[0], key[1], key[2], key[3]])) << 32;
    for (i, &byte) in input.iter().enumerate() {
        let Some(&next) = key.get(i + 4) else { break };
        window |= u64::from(next) << 24;
        for bit in 0..8 {
            if byte & (0x80 >> bit) != 0 {
                result ^= (window >> 32) as u32;
            }
            window <<= 1;
        }
    }
    result
}

/// Hash of an IPv4 TCP/UDP 4-tuple as the NIC computes it (src ip, dst ip, src port, dst port).
pub fn hash_v4_l4(key: &[u8; 40], src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16) -> u32 {
    let mut b = [0u8; 12];
    b[0..4].copy_from_slice(&src.octets());
    b[4..8].copy_from_slice(&dst.octets());
    b[8..10].copy_from_slice(&sport.to_be_bytes());
    b[10..12].copy_from_slice(&dport.to_be_bytes());
    hash(key, &b)
}

/// Hash of an IPv4 address pair (non-TCP/UDP traffic, e.g. ICMP).
pub fn hash_v4(key: &[u8; 40], src: Ipv4Addr, dst: Ipv4Addr) -> u32 {
    let mut b = [0u8; 8];
    b[0..4].copy_from_slice(&src.octets());
    b[4..8].copy_from_slice(&dst.octets());
    hash(key, &b)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// "Verifying the RSS Hash Calculation" (Microsoft docs): IPv4 vectors, with the
    /// destination/source columns fed as src ip, dst ip, src port, dst port.
    const VECTORS: [(&str, u16, &str, u16, u32, u32); 5] = [
        (
            "66.9.149.187",
            2794,
            "161.142.100.80",
            1766,
            0x323e8fc2,
            0x51ccc178,
        ),
        (
            "199.92.111.2",
            14230,
            "65.69.140.83",
            4739,
            0xd718262a,
            0xc626b0ea,
        ),
        (
            "24.19.198.95",
            12898,
            "12.22.207.184",
            38024,
            0xd2d0a5de,
            0x5c2b394a,
        ),
        (
            "38.27.205.30",
            48228,
            "209.142.163.6",
            2217,
            0x82989176,
            0xafc7327f,
        ),
        (
            "153.39.163.191",
            44251,
            "202.188.127.2",
            1303,
            0x5d1809c5,
            0x10e828a2,
        ),
    ];

    #[test]
    fn microsoft_rss_verification_vectors() {
        for (src, sport, dst, dport, ip_only, with_ports) in VECTORS {
            let s: Ipv4Addr = src.parse().unwrap();
            let d: Ipv4Addr = dst.parse().unwrap();
            assert_eq!(hash_v4(&MS_KEY, s, d), ip_only, "{src} -> {dst}");
            assert_eq!(
                hash_v4_l4(&MS_KEY, s, d, sport, dport),
                with_ports,
                "{src}:{sport} -> {dst}:{dport}"
            );
        }
    }

    #[test]
    fn long_input_does_not_panic() {
        let _ = hash(&MS_KEY, &[0xff; 100]);
        assert_eq!(hash(&MS_KEY, &[]), 0);
    }
}

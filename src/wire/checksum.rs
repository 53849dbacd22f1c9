//! Internet checksum (RFC 1071) and incremental update (RFC 1624).

use std::net::Ipv4Addr;

/// Ones-complement partial sum of `data` as 16-bit big-endian words; an odd
/// trailing byte is padded with a zero byte.
///
/// The result is already folded to at most `0xFFFF`, so several partial sums
/// (and a [`pseudo_header_sum`]) can be added with plain `+` without any risk
/// of overflow before passing the total to [`fold`].
#[inline]
pub fn sum(data: &[u8]) -> u32 {
    // Summing 32-bit big-endian words into a u64 is equivalent modulo 0xFFFF
    // (2^16 == 1) and halves the number of iterations. A u64 cannot overflow
    // for any slice that fits in memory on a 64-bit target before 2^32 words.
    let mut acc: u64 = 0;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        if let &[a, b, c, d] = c {
            acc += u64::from(u32::from_be_bytes([a, b, c, d]));
        }
    }
    let rest = chunks.remainder();
    let mut tail = [0u8; 4];
    if let Some(t) = tail.get_mut(..rest.len()) {
        t.copy_from_slice(rest);
    }
    acc += u64::from(u32::from_be_bytes(tail));
    // Fold 64 -> 16 bits.
    acc = (acc & 0xFFFF_FFFF) + (acc >> 32);
    acc = (acc & 0xFFFF_FFFF) + (acc >> 32);
    acc = (acc & 0xFFFF) + (acc >> 16);
    acc = (acc & 0xFFFF) + (acc >> 16);
    acc = (acc & 0xFFFF) + (acc >> 16);
    acc as u32
}

/// Fold the carries of a 32-bit partial sum into 16 bits (NOT complemented).
#[inline]
pub fn fold(sum: u32) -> u16 {
    let s = (sum & 0xFFFF) + (sum >> 16);
    let s = (s & 0xFFFF) + (s >> 16);
    s as u16
}

/// The Internet checksum of `data`: `!fold(sum(data))`.
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum(data))
}

/// Whether the 20-byte IPv4 header `h` (no options) carries a correct checksum:
/// `checksum(h) == 0` in a few instructions. The five 32-bit words are summed in native
/// byte order (RFC 1071: the ones-complement sum is byte-order independent up to a swap
/// of its two bytes, and 0xFFFF is its own swap); the folded sum is 0xFFFF exactly when
/// the sum is a non-zero multiple of 0xFFFF (2^16 == 1 modulo 0xFFFF).
#[inline]
pub fn ipv4_header20_ok(h: &[u8; 20]) -> bool {
    let w = |i: usize| u64::from(u32::from_ne_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]));
    let s = w(0) + w(4) + w(8) + w(12) + w(16);
    s != 0 && s % 0xFFFF == 0
}

/// Partial sum of the TCP/UDP IPv4 pseudo header (at most `6 * 0xFFFF`).
#[inline]
pub fn pseudo_header_sum(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: u16) -> u32 {
    let s = u32::from(src);
    let d = u32::from(dst);
    (s >> 16) + (s & 0xFFFF) + (d >> 16) + (d & 0xFFFF) + u32::from(proto) + u32::from(len)
}

/// Incremental update of checksum `csum` after a 16-bit word (aligned on an
/// even offset from the start of the checksummed data) changes from `old` to
/// `new`. RFC 1624 eqn. 3: `HC' = ~(~HC + ~m + m')`.
#[inline]
pub fn update16(csum: u16, old: u16, new: u16) -> u16 {
    !fold(u32::from(!csum) + u32::from(!old) + u32::from(new))
}

/// As [`update16`] for a 32-bit field (aligned on an even offset).
#[inline]
pub fn update32(csum: u16, old: u32, new: u32) -> u16 {
    let s = u32::from(!csum)
        + u32::from(!(old >> 16) as u16)
        + u32::from(!(old as u16))
        + (new >> 16)
        + (new & 0xFFFF);
    !fold(s)
}

/// As [`update32`] for an IPv4 address (header or pseudo-header change).
#[inline]
pub fn update_addr(csum: u16, old: Ipv4Addr, new: Ipv4Addr) -> u16 {
    update32(csum, u32::from(old), u32::from(new))
}

/// As [`update16`] for a 16-bit value stored at byte offset `offset` of the
/// checksummed data, which may be odd (e.g. a TCP option value after a NOP).
/// A value at an odd offset contributes its byte-swapped value to the sum.
#[inline]
pub fn update16_at(csum: u16, offset: usize, old: u16, new: u16) -> u16 {
    if offset & 1 == 0 {
        update16(csum, old, new)
    } else {
        update16(csum, old.swap_bytes(), new.swap_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testutil::Rng;

    /// Straightforward reference implementation (RFC 1071 style).
    fn reference_sum(data: &[u8]) -> u32 {
        let mut s: u64 = 0;
        for c in data.chunks(2) {
            let hi = c[0];
            let lo = if c.len() > 1 { c[1] } else { 0 };
            s += u64::from(u16::from_be_bytes([hi, lo]));
        }
        while s > 0xFFFF {
            s = (s & 0xFFFF) + (s >> 16);
        }
        s as u32
    }

    fn put16(buf: &mut [u8], off: usize, v: u16) {
        buf[off..off + 2].copy_from_slice(&v.to_be_bytes());
    }
    fn get16(buf: &[u8], off: usize) -> u16 {
        u16::from_be_bytes([buf[off], buf[off + 1]])
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: bytes 00 01 f2 03 f4 f5 f6 f7 sum to 0xddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&data)), 0xddf2);
        assert_eq!(checksum(&data), !0xddf2);
    }

    #[test]
    fn sum_matches_reference_and_odd_padding() {
        let mut rng = Rng::new(1);
        for len in 0..200 {
            let mut buf = vec![0u8; len];
            rng.fill(&mut buf);
            assert_eq!(fold(sum(&buf)), fold(reference_sum(&buf)), "len {len}");
            assert!(sum(&buf) <= 0xFFFF);
        }
        assert_eq!(sum(&[0xAB]), 0xAB00);
        assert_eq!(sum(&[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
        assert_eq!(sum(&[]), 0);
        assert_eq!(sum(&[0xFF; 1000]), 0xFFFF);
        assert_eq!(checksum(&[0, 0, 0, 0]), 0xFFFF);
    }

    #[test]
    fn fold_carries() {
        assert_eq!(fold(0), 0);
        assert_eq!(fold(0xFFFF), 0xFFFF);
        assert_eq!(fold(0x1_0000), 1);
        assert_eq!(fold(0x1_FFFE), 0xFFFF);
        assert_eq!(fold(0xFFFF_FFFF), 0xFFFF);
    }

    #[test]
    fn known_ipv4_header() {
        // Wikipedia's IPv4 header checksum example: checksum 0xb861.
        let mut hdr = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&hdr), 0xb861);
        hdr[10] = 0xb8;
        hdr[11] = 0x61;
        assert_eq!(checksum(&hdr), 0);
    }

    #[test]
    fn pseudo_header() {
        let s = pseudo_header_sum(
            Ipv4Addr::new(192, 168, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2),
            17,
            0x1234,
        );
        assert_eq!(s, 0xc0a8 + 0x0001 + 0x0a00 + 0x0002 + 17 + 0x1234);
        let worst = pseudo_header_sum(Ipv4Addr::BROADCAST, Ipv4Addr::BROADCAST, 255, 0xFFFF);
        assert_eq!(worst, 4 * 0xFFFF + 255 + 0xFFFF);
    }

    #[test]
    fn rfc1624_worked_example() {
        // RFC 1624 section 4: HC = 0xDD2F, m = 0x5555 -> m' = 0x3285.
        // Eqn. 3 gives 0x0000 (RFC 1141's eqn. 1 would give the wrong 0xFFFF).
        assert_eq!(update16(0xDD2F, 0x5555, 0x3285), 0x0000);

        // Same thing on real data: words [m, x, csum] where x makes HC 0xDD2F.
        let mut buf = [0u8; 6];
        put16(&mut buf, 0, 0x5555);
        put16(&mut buf, 2, 0xCD7A);
        let hc = checksum(&buf);
        assert_eq!(hc, 0xDD2F);
        put16(&mut buf, 4, hc);
        assert_eq!(checksum(&buf), 0);
        put16(&mut buf, 0, 0x3285);
        put16(&mut buf, 4, 0);
        assert_eq!(checksum(&buf), 0x0000, "full recompute agrees");
    }

    #[test]
    fn update32_and_addr() {
        let old = Ipv4Addr::new(10, 1, 2, 3);
        let new = Ipv4Addr::new(203, 0, 113, 77);
        let mut buf = [0u8; 12];
        buf[0] = 0x45;
        buf[4..8].copy_from_slice(&old.octets());
        let c = checksum(&buf);
        buf[4..8].copy_from_slice(&new.octets());
        assert_eq!(update_addr(c, old, new), checksum(&buf));
        assert_eq!(update32(c, u32::from(old), u32::from(new)), checksum(&buf));
    }

    #[test]
    fn update16_at_odd_offset() {
        let mut rng = Rng::new(99);
        for _ in 0..2000 {
            let len = 8 + rng.below(40);
            let mut buf = vec![0u8; len];
            rng.fill(&mut buf);
            buf[0] |= 0x40; // never all zero
            let off = 1 + rng.below(len - 3);
            let c = checksum(&buf);
            let old = get16(&buf, off);
            let new = rng.edgy_u16();
            put16(&mut buf, off, new);
            assert_eq!(update16_at(c, off, old, new), checksum(&buf), "off {off}");
        }
    }

    /// Property: after changing random 16- or 32-bit fields, the incrementally
    /// updated checksum equals a full recompute, including the edge cases where
    /// old/new values are 0x0000/0xFFFF and where the checksum becomes 0x0000.
    #[test]
    fn incremental_equals_full_recompute() {
        let mut rng = Rng::new(0x1624);
        let mut saw_zero_csum = 0;
        for iter in 0..20_000 {
            let len = (4 + rng.below(60)) & !1; // even, 4..=62
            let mut buf = vec![0u8; len.max(8)];
            let len = buf.len();
            match rng.below(4) {
                0 => buf.iter_mut().for_each(|b| *b = 0xFF),
                1 => {} // all zero apart from the fixed word below
                _ => rng.fill(&mut buf),
            }
            // Checksum field at a random even offset.
            let coff = rng.below(len / 2) * 2;
            // A fixed non-zero word elsewhere so data is never all-zero (the
            // only case where ones-complement +0/-0 ambiguity bites, and one
            // that cannot occur in IP/TCP/UDP).
            let fixed = (coff + 2) % len;
            put16(&mut buf, fixed, 0x4500);
            put16(&mut buf, coff, 0);
            let c = checksum(&buf);
            put16(&mut buf, coff, c);
            assert_eq!(checksum(&buf), 0);

            // Pick a field that overlaps neither the checksum nor the fixed word.
            let wide = rng.bool() && len >= 12;
            let flen = if wide { 4 } else { 2 };
            let mut foff;
            loop {
                foff = rng.below((len - flen) / 2 + 1) * 2;
                let overlaps = |o: usize| o + 2 > foff && o < foff + flen;
                if !overlaps(coff) && !overlaps(fixed) {
                    break;
                }
            }

            let mut csum = c;
            if wide {
                let old = u32::from_be_bytes(buf[foff..foff + 4].try_into().unwrap());
                let new = match rng.below(6) {
                    0 => 0,
                    1 => 0xFFFF_FFFF,
                    2 => 0x0000_FFFF,
                    3 => 0xFFFF_0000,
                    _ => rng.u32(),
                };
                buf[foff..foff + 4].copy_from_slice(&new.to_be_bytes());
                csum = update32(csum, old, new);
            } else {
                let old = get16(&buf, foff);
                let new = if iter % 5 == 0 {
                    // Choose m' so that the new checksum is exactly 0x0000.
                    put16(&mut buf, foff, 0);
                    put16(&mut buf, coff, 0);
                    let rest = fold(sum(&buf));
                    put16(&mut buf, coff, csum);
                    0xFFFF - rest
                } else {
                    rng.edgy_u16()
                };
                put16(&mut buf, foff, new);
                csum = update16(csum, old, new);
            }
            put16(&mut buf, coff, 0);
            let full = checksum(&buf);
            assert_eq!(csum, full, "iter {iter} len {len} coff {coff} foff {foff}");
            if full == 0 {
                saw_zero_csum += 1;
            }
            put16(&mut buf, coff, csum);
            assert_eq!(checksum(&buf), 0, "verifies");
        }
        assert!(saw_zero_csum > 100, "edge case exercised: {saw_zero_csum}");
    }

    #[test]
    fn ipv4_header20_ok_agrees_with_checksum() {
        let mut rng = Rng::new(0x1f2e_3d4c);
        let mut h = [0u8; 20];
        for round in 0..200_000u32 {
            for b in h.iter_mut() {
                *b = rng.u8();
            }
            match round % 4 {
                // A correct checksum (the usual case).
                0 | 1 => {
                    h[10] = 0;
                    h[11] = 0;
                    let c = checksum(&h);
                    put16(&mut h, 10, c);
                }
                // Sums on the edges: all zero, all ones, few bits.
                2 if round % 3 == 0 => h = [0; 20],
                2 if round % 3 == 1 => h = [0xff; 20],
                2 => {
                    h = [0; 20];
                    h[(round as usize / 4) % 20] = 1 << (round % 8);
                }
                _ => {}
            }
            assert_eq!(ipv4_header20_ok(&h), checksum(&h) == 0, "{h:?}");
        }
    }
}

//! The flow index's bucket scan: compare the 16 words of a 64-byte bucket at once.
//!
//! Plain Rust loops over the words compile to ~50 instructions (no variable shift in
//! SSE2); four 128-bit compares and one byte mask make it ~15.

/// Bit i set when `(w[i] & mask) == tag`, for all 16 words.
#[inline(always)]
pub fn match_words(w: &[u32; 16], tag: u32, mask: u32) -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        // SAFETY: SSE2 is part of the x86_64 baseline; the four unaligned 16-byte loads
        // read exactly the 64 bytes of `w`.
        unsafe {
            let t = _mm_set1_epi32(tag as i32);
            let m = _mm_set1_epi32(mask as i32);
            let p = w.as_ptr().cast::<__m128i>();
            let c0 = _mm_cmpeq_epi32(_mm_and_si128(_mm_loadu_si128(p), m), t);
            let c1 = _mm_cmpeq_epi32(_mm_and_si128(_mm_loadu_si128(p.add(1)), m), t);
            let c2 = _mm_cmpeq_epi32(_mm_and_si128(_mm_loadu_si128(p.add(2)), m), t);
            let c3 = _mm_cmpeq_epi32(_mm_and_si128(_mm_loadu_si128(p.add(3)), m), t);
            // All-ones / zero lanes narrow to all-ones / zero bytes, in word order.
            let b = _mm_packs_epi16(_mm_packs_epi32(c0, c1), _mm_packs_epi32(c2, c3));
            _mm_movemask_epi8(b) as u32
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let mut r = 0u32;
        for (i, &x) in w.iter().enumerate() {
            r |= u32::from(x & mask == tag) << i;
        }
        r
    }
}

/// Bit i set when `(a & masks[i]) == keys[i]`, for all 16 lanes: a small route table's
/// longest-prefix scan (`pipeline::route`), one mask per route.
#[inline(always)]
pub fn match_prefixes(masks: &[u32; 16], keys: &[u32; 16], a: u32) -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        // SAFETY: SSE2 is part of the x86_64 baseline; the unaligned 16-byte loads read
        // exactly the 64 bytes of `masks` and of `keys`.
        unsafe {
            let v = _mm_set1_epi32(a as i32);
            let (m, k) = (
                masks.as_ptr().cast::<__m128i>(),
                keys.as_ptr().cast::<__m128i>(),
            );
            let c = |i: usize| {
                _mm_cmpeq_epi32(
                    _mm_and_si128(_mm_loadu_si128(m.add(i)), v),
                    _mm_loadu_si128(k.add(i)),
                )
            };
            let b = _mm_packs_epi16(_mm_packs_epi32(c(0), c(1)), _mm_packs_epi32(c(2), c(3)));
            _mm_movemask_epi8(b) as u32
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let mut r = 0u32;
        for i in 0..16 {
            r |= u32::from(a & masks[i] == keys[i]) << i;
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_scalar_definition() {
        let mut w = [0u32; 16];
        let mut x = 12345u32;
        for round in 0..2000 {
            for v in w.iter_mut() {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                // Few distinct high parts, so that matches happen.
                *v = ((x >> 29) << 20) | (x & 0xfffff);
            }
            if round % 7 == 0 {
                w[round % 16] = 0;
            }
            for (tag, mask) in [(1 << 20, 0xfff0_0000), (0, u32::MAX), (w[3], u32::MAX)] {
                let mut want = 0u32;
                for (i, &v) in w.iter().enumerate() {
                    want |= u32::from(v & mask == tag) << i;
                }
                assert_eq!(match_words(&w, tag, mask), want);
            }
        }
    }

    #[test]
    fn prefix_matches_agree_with_the_scalar_definition() {
        let mut x = 777u32;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        for _ in 0..2000 {
            let (mut masks, mut keys) = ([0u32; 16], [1u32; 16]);
            for i in 0..16 {
                let len = next() % 33;
                masks[i] = if len == 0 { 0 } else { u32::MAX << (32 - len) };
                keys[i] = (0x0a00_0000 | (next() & 0xffff)) & masks[i];
            }
            for _ in 0..16 {
                let a = 0x0a00_0000 | (next() & 0x1ffff);
                let mut want = 0u32;
                for i in 0..16 {
                    want |= u32::from(a & masks[i] == keys[i]) << i;
                }
                assert_eq!(match_prefixes(&masks, &keys, a), want);
            }
        }
    }
}

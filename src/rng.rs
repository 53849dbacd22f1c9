//! The one pseudo-random generator of the crate: xorshift64* (Vigna). Fast, no state
//! beyond a `u64`, good enough for RFC 6056 port choice, hash seeds and test fuzzing —
//! not cryptographic (per-worker seeds come from the clock).

#[derive(Debug, Clone)]
pub struct Rng(u64);

/// Integer types `Rng::below` works with.
pub trait Bound: Copy {
    fn to_u64(self) -> u64;
    fn from_u64(v: u64) -> Self;
}

impl Bound for u32 {
    #[inline]
    fn to_u64(self) -> u64 {
        u64::from(self)
    }
    #[inline]
    fn from_u64(v: u64) -> Self {
        v as u32
    }
}

/// Unconstrained integer literals in test code default to `i32` (negative `n`: 0).
impl Bound for i32 {
    #[inline]
    fn to_u64(self) -> u64 {
        self.max(0) as u64
    }
    #[inline]
    fn from_u64(v: u64) -> Self {
        v as i32
    }
}

impl Bound for usize {
    #[inline]
    fn to_u64(self) -> u64 {
        self as u64
    }
    #[inline]
    fn from_u64(v: u64) -> Self {
        v as usize
    }
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform-ish in `0..n` (multiply-shift, no division; `n` below 2^32); 0 when
    /// `n == 0`. For `u32` (port choice) and `usize` (test code indexing slices).
    #[inline]
    pub fn below<T: Bound>(&mut self, n: T) -> T {
        let n = n.to_u64();
        T::from_u64(((self.next_u64() >> 32) * n) >> 32)
    }
    pub fn u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }
    pub fn u16(&mut self) -> u16 {
        (self.next_u64() >> 48) as u16
    }
    pub fn u8(&mut self) -> u8 {
        (self.next_u64() >> 56) as u8
    }
    pub fn bool(&mut self) -> bool {
        self.next_u64() & 1 == 1
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            *b = self.u8();
        }
    }
    /// A 16-bit value biased towards the interesting edges (fuzzing).
    pub fn edgy_u16(&mut self) -> u16 {
        match self.below(8u32) {
            0 => 0x0000,
            1 => 0xFFFF,
            2 => 0x0001,
            3 => 0xFFFE,
            _ => self.u16(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut r = Rng::new(1);
        let mut seen = [false; 10];
        for _ in 0..1000 {
            let v = r.below(10u32);
            assert!(v < 10);
            seen[v as usize] = true;
        }
        assert!(seen.iter().all(|&s| s));
        assert_eq!(r.below(0u32), 0);
        assert_eq!(r.below(0usize), 0);
        assert!(r.below(7usize) < 7);
    }
}

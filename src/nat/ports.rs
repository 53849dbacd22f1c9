//! Public port (and ICMP identifier) allocation: the Hyperplane property.
//!
//! Ownership: worker `w` of `n` owns the ports `first + k*n + w` (interleaved slices, not
//! contiguous blocks) for every public IP, so `owner_of(port) = (port - first) % n` is one
//! subtraction and a modulo, and every worker gets a slice spread over the whole range.
//! No two workers can ever hand out the same (public IP, port), without any locking.
//!
//! Per-destination limit without a counting table: for a destination D = (proto, public IP,
//! remote IP, remote port) the worker only uses a window of `limit_w` consecutive slice
//! positions starting at a keyed-hash offset of D (wrapping). At most `limit_w` live
//! mappings toward D can then exist on this worker; windows of different destinations
//! start at different places, so the whole range is used. `limit_w` is the configured
//! limit scaled to the slice (`limit * slice / range`, at least 1), so the sum over all
//! workers never exceeds the configured limit.
//!
//! Choice (RFC 6056 algorithm 1 flavour): up to `RANDOM_PROBES` uniformly random
//! positions in the window, then a sweep from a random position over at most `SWEEP_MAX`
//! positions. Exhaustion is therefore exact for windows up to `SWEEP_MAX` ports and
//! probabilistic (needs > ~99.8% occupancy to fail spuriously) beyond; the bound keeps a
//! SYN flood toward one full destination from costing 64k lookups per packet.

use super::flow::mix2;
use super::toeplitz;
use std::net::Ipv4Addr;

pub const RANDOM_PROBES: u32 = 16;
pub const SWEEP_MAX: u32 = 4096;

/// xorshift64* (per worker; seeded from the clock and the worker index).
#[derive(Debug, Clone)]
pub struct Rng(u64);

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
    /// Uniform-ish in `0..n`; 0 when `n == 0`.
    #[inline]
    pub fn below(&mut self, n: u32) -> u32 {
        if n == 0 {
            return 0;
        }
        (((self.next_u64() >> 32) * u64::from(n)) >> 32) as u32
    }
}

/// Make the NIC's RSS steer return traffic to the allocating worker (see issue 3 item 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RssSteering {
    pub key: [u8; 40],
    /// Queue of each redirection-table entry; entry = hash % reta.len().
    pub reta: Vec<u16>,
    /// The rx queue worker `w` polls (on the port return traffic arrives on).
    pub queue_of_worker: Vec<u16>,
}

impl RssSteering {
    /// The queue the NIC picks for a packet with this hash.
    pub fn queue(&self, hash: u32) -> Option<u16> {
        if self.reta.is_empty() {
            return None;
        }
        self.reta.get(hash as usize % self.reta.len()).copied()
    }

    /// Whether return traffic remote:rport -> public:port (TCP/UDP, 4-tuple hash; ICMP,
    /// 2-tuple hash) lands on `worker`'s queue.
    pub fn steers_to(
        &self,
        worker: usize,
        l4: bool,
        remote: Ipv4Addr,
        rport: u16,
        public: Ipv4Addr,
        port: u16,
    ) -> bool {
        let h = if l4 {
            toeplitz::hash_v4_l4(&self.key, remote, public, rport, port)
        } else {
            toeplitz::hash_v4(&self.key, remote, public)
        };
        self.queue(h).is_some() && self.queue(h) == self.queue_of_worker.get(worker).copied()
    }
}

#[derive(Debug, Clone)]
pub struct PortAllocator {
    first: u32,
    range: u32,
    n: u32,
    worker: u32,
    slice: u32,
    limit_w: u32,
    secret: u64,
}

impl PortAllocator {
    pub fn new(
        first: u16,
        last: u16,
        limit: u32,
        worker: usize,
        n_workers: usize,
        secret: u64,
    ) -> Self {
        let first = u32::from(first.max(1));
        let range = (u32::from(last) + 1).saturating_sub(first);
        let n = (n_workers.max(1) as u32).max(1);
        let w = (worker as u32).min(n - 1);
        let slice = if w < range {
            (range - w).div_ceil(n)
        } else {
            0
        };
        let limit = limit.clamp(1, range.max(1));
        let limit_w = if range == 0 {
            0
        } else {
            ((u64::from(limit) * u64::from(slice) / u64::from(range)) as u32).clamp(1, slice.max(1))
        };
        PortAllocator {
            first,
            range,
            n,
            worker: w,
            slice,
            limit_w,
            secret,
        }
    }

    /// Ports this worker owns per public IP.
    pub fn slice_len(&self) -> u32 {
        self.slice
    }
    /// Mappings this worker allows per destination per public IP.
    pub fn limit(&self) -> u32 {
        self.limit_w.min(self.slice)
    }

    #[inline]
    fn port_at(&self, k: u32) -> u16 {
        (self.first + k * self.n + self.worker) as u16
    }

    /// The worker owning `port`, or `None` for a port outside the range.
    #[inline]
    pub fn owner_of(&self, port: u16) -> Option<usize> {
        let p = u32::from(port);
        if p < self.first || p - self.first >= self.range {
            return None;
        }
        Some(((p - self.first) % self.n) as usize)
    }

    /// A free port toward `dest` (any value identifying the destination and public IP),
    /// accepted by `ok` (free in the table, and steered when RSS-aware); `None` if the
    /// window is exhausted.
    pub fn allocate(
        &self,
        rng: &mut Rng,
        dest: u64,
        mut ok: impl FnMut(u16) -> bool,
    ) -> Option<u16> {
        let l = self.limit();
        if self.slice == 0 || l == 0 {
            return None;
        }
        let off = (mix2(self.secret, dest, 0x5eed) % u64::from(self.slice)) as u32;
        let pos =
            |i: u32| -> u32 { ((u64::from(off) + u64::from(i)) % u64::from(self.slice)) as u32 };
        for _ in 0..RANDOM_PROBES {
            let p = self.port_at(pos(rng.below(l)));
            if ok(p) {
                return Some(p);
            }
        }
        let start = rng.below(l);
        for j in 0..l.min(SWEEP_MAX) {
            let p = self.port_at(pos((start + j) % l));
            if ok(p) {
                return Some(p);
            }
        }
        None
    }

    /// `rfc4787` mode (endpoint-independent mapping): a port anywhere in this worker's
    /// slice, since a mapping serves every destination. `ok(port, preferred)` is asked with
    /// `preferred = true` during the `RANDOM_PROBES` uniformly random probes (the caller
    /// may then also insist on RSS steering toward the first destination) and with
    /// `false` during the bounded sweep from a random position that follows.
    pub fn allocate_any(
        &self,
        rng: &mut Rng,
        mut ok: impl FnMut(u16, bool) -> bool,
    ) -> Option<u16> {
        if self.slice == 0 {
            return None;
        }
        for _ in 0..RANDOM_PROBES {
            let p = self.port_at(rng.below(self.slice));
            if ok(p, true) {
                return Some(p);
            }
        }
        let start = rng.below(self.slice);
        for j in 0..self.slice.min(SWEEP_MAX) {
            let p = self.port_at((start + j) % self.slice);
            if ok(p, false) {
                return Some(p);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn slices_are_disjoint_and_cover_the_range() {
        let n = 3;
        let allocs: Vec<PortAllocator> = (0..n)
            .map(|w| PortAllocator::new(1000, 1009, 10, w, n, 1))
            .collect();
        let mut seen = HashSet::new();
        let mut rng = Rng::new(5);
        for (w, a) in allocs.iter().enumerate() {
            // Exhaust this worker's slice toward one destination.
            let mut mine = HashSet::new();
            while let Some(p) = a.allocate(&mut rng, 1, |p| !mine.contains(&p)) {
                mine.insert(p);
                assert_eq!(a.owner_of(p), Some(w));
                assert!(seen.insert(p), "port {p} owned twice");
            }
            assert_eq!(mine.len() as u32, a.slice_len());
        }
        assert_eq!(seen.len(), 10);
        assert_eq!(allocs[0].owner_of(999), None);
        assert_eq!(allocs[0].owner_of(1010), None);
    }

    #[test]
    fn per_destination_window_limits_and_windows_differ() {
        let a = PortAllocator::new(1024, 65535, 100, 0, 1, 42);
        let mut rng = Rng::new(9);
        let mut used = HashSet::new();
        while let Some(p) = a.allocate(&mut rng, 7, |p| !used.contains(&p)) {
            used.insert(p);
        }
        assert_eq!(used.len(), 100);
        let mut other = HashSet::new();
        while let Some(p) = a.allocate(&mut rng, 8, |p| !other.contains(&p)) {
            other.insert(p);
        }
        assert_eq!(other.len(), 100);
        assert_ne!(used, other, "destinations get different windows");
    }

    #[test]
    fn allocate_any_covers_the_whole_slice_of_this_worker() {
        let a = PortAllocator::new(2000, 2099, 3, 1, 2, 7);
        let mut rng = Rng::new(3);
        let mut used = HashSet::new();
        while let Some(p) = a.allocate_any(&mut rng, |p, _| !used.contains(&p)) {
            assert_eq!(a.owner_of(p), Some(1));
            used.insert(p);
        }
        assert_eq!(used.len(), 50, "not limited by the per-destination window");
        // Preference only during the random probes.
        let mut rng = Rng::new(4);
        assert!(a.allocate_any(&mut rng, |_, pref| !pref).is_some());
    }

    #[test]
    fn limit_scales_with_workers() {
        let a = PortAllocator::new(1024, 65535, 55_000, 1, 2, 0);
        assert_eq!(a.slice_len(), 32_256);
        assert_eq!(a.limit(), 27_500);
        let tiny = PortAllocator::new(5000, 5000, 1, 1, 2, 0);
        assert_eq!(tiny.slice_len(), 0);
        assert_eq!(tiny.allocate(&mut Rng::new(1), 0, |_| true), None);
    }
}

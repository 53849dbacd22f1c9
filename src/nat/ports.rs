//! Public port (and ICMP identifier) allocation: the Hyperplane property.
//!
//! Two ways of dividing ports between workers, so that no two workers can hand out the
//! same mapping key without any locking:
//! - **handoff mode** (no programmable RSS key, and ICMP always): worker `w` of `n` owns
//!   the ports `p` of the range with `p % n == w` (interleaved slices anchored at port 0,
//!   not at `first`: a live reload that changes the range moves no port to another
//!   worker, so return traffic of flows that predate it still finds their owner), so
//!   `owner_of(port)` is one modulo and return traffic is handed to the owner.
//! - **steered mode** (TCP/UDP with a programmed RSS key, `set_steering`): ports are
//!   partitioned by the RSS bucket of the *return* 5-tuple instead — worker `w` may take
//!   any port of the range whose return traffic the NIC steers to its queue. The candidate
//!   set then depends on the destination, and is about range × (w's share of the
//!   redirection table) for every destination, so the limit holds whatever the worker
//!   count. ICMP echo is hashed by the NIC on the 2-tuple only (the identifier cannot
//!   steer it), so ICMP stays in handoff mode.
//!
//! Per-destination limit: the caller counts live mappings per destination
//! (`dest_count`) and passes the count in; a worker's share of the configured limit is
//! proportional to its candidate set (cumulative rounding, so the shares of all workers
//! add up to the limit exactly; with one worker it *is* the limit). At the share the
//! allocation is refused without a single probe (O(1)); below it a free candidate exists
//! and is found: `RANDOM_PROBES` uniformly random candidates (RFC 6056), then a sweep of
//! all candidates from a random start.
//!
//! TIME_WAIT guard: `ok` may answer `Probe::Guarded(age)` for a port that is free but was
//! closed recently toward this destination; it is taken only if no free port remains
//! (then the one closed longest ago — largest `age`).

use super::toeplitz;
use std::net::Ipv4Addr;

pub use crate::rng::Rng;

pub const RANDOM_PROBES: u32 = 16;
/// `rfc4787` mode's bounded sweep (no per-destination limit there).
pub const SWEEP_MAX: u32 = 4096;

/// What the caller says about a candidate port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    Free,
    /// Free, but in its TIME_WAIT guard since `age` ticks.
    Guarded(u32),
    /// In use (or not steered to this worker).
    Taken,
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
    /// Redirection-table entries that lead to `worker`'s queue.
    pub fn entries_of(&self, worker: usize) -> u32 {
        let q = self.queue_of_worker.get(worker).copied();
        self.reta.iter().filter(|&&e| Some(e) == q).count() as u32
    }

    /// The worker the NIC delivers return traffic remote:rport -> public:port to (TCP/UDP).
    pub fn owner(
        &self,
        remote: Ipv4Addr,
        rport: u16,
        public: Ipv4Addr,
        port: u16,
    ) -> Option<usize> {
        let q = self.queue(toeplitz::hash_v4_l4(&self.key, remote, public, rport, port))?;
        self.queue_of_worker.iter().position(|&w| w == q)
    }

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
    /// The offset of this worker's first port from `first` (`port_at`).
    off: u32,
    slice: u32,
    /// The configured per-destination limit (per public IP), clamped to the range.
    limit: u32,
    /// This worker's share of it in handoff mode.
    limit_mod: u32,
    /// This worker's share in steered mode (`None`: not steered).
    limit_steered: Option<u32>,
}

/// The share of `limit` of the part `[before, before + mine)` of `total`, rounded so
/// that the shares of consecutive parts add up to `limit` exactly.
fn share(limit: u32, before: u64, mine: u64, total: u64) -> u32 {
    if total == 0 {
        return 0;
    }
    let l = u64::from(limit);
    ((l * (before + mine) / total) - (l * before / total)) as u32
}

impl PortAllocator {
    pub fn new(first: u16, last: u16, limit: u32, worker: usize, n_workers: usize) -> Self {
        let first = u32::from(first.max(1));
        let range = (u32::from(last) + 1).saturating_sub(first);
        let n = (n_workers.max(1) as u32).max(1);
        let w = (worker as u32).min(n - 1);
        // Worker v's first port is `first + off(v)` (anchored at port 0, see the doc).
        let off = |v: u32| (v + n - first % n) % n;
        let slice_of = |v: u32| {
            if off(v) < range {
                (range - off(v)).div_ceil(n)
            } else {
                0
            }
        };
        let slice = slice_of(w);
        let limit = limit.clamp(1, range.max(1));
        let before: u64 = (0..w).map(|v| u64::from(slice_of(v))).sum();
        let limit_mod = share(limit, before, u64::from(slice), u64::from(range)).min(slice);
        PortAllocator {
            first,
            range,
            n,
            worker: w,
            off: off(w),
            slice,
            limit,
            limit_mod,
            limit_steered: None,
        }
    }

    /// Steered mode for TCP/UDP (see the module doc), or back to handoff mode.
    pub fn set_steering(&mut self, s: Option<&RssSteering>) {
        self.limit_steered = s.map(|s| {
            let before: u64 = (0..self.worker as usize)
                .map(|v| u64::from(s.entries_of(v)))
                .sum();
            let mine = u64::from(s.entries_of(self.worker as usize));
            share(self.limit, before, mine, s.reta.len() as u64)
        });
    }

    /// Whether TCP/UDP ports are partitioned by RSS bucket.
    pub fn steered(&self) -> bool {
        self.limit_steered.is_some()
    }

    /// Ports this worker owns per public IP in handoff mode.
    pub fn slice_len(&self) -> u32 {
        self.slice
    }
    /// Mappings this worker allows per destination per public IP (handoff mode, or
    /// steered mode when `steered`).
    pub fn limit(&self, steered: bool) -> u32 {
        match (steered, self.limit_steered) {
            (true, Some(l)) => l,
            _ => self.limit_mod,
        }
    }

    #[inline]
    fn port_at(&self, k: u32) -> u16 {
        (self.first + k * self.n + self.off) as u16
    }

    /// The worker owning `port` in handoff mode. A port outside the range too: a flow
    /// made before a reload narrowed the range may still hold it, on that worker.
    #[inline]
    pub fn owner_of(&self, port: u16) -> Option<usize> {
        Some((u32::from(port) % self.n) as usize)
    }

    /// A port toward a destination that has `in_use` live mappings on this worker, judged
    /// by `ok` (free in the table, not guarded, and steered here in steered mode). `None`
    /// when this worker's share of the limit is reached (without probing) or no candidate
    /// is free. The flag says a guarded port was taken.
    pub fn allocate(
        &self,
        rng: &mut Rng,
        steered: bool,
        in_use: u32,
        mut ok: impl FnMut(u16) -> Probe,
    ) -> Option<(u16, bool)> {
        let steered = steered && self.steered();
        let cands = if steered { self.range } else { self.slice };
        if cands == 0 || in_use >= self.limit(steered) {
            return None;
        }
        let at = |k: u32| {
            if steered {
                (self.first + k) as u16
            } else {
                self.port_at(k)
            }
        };
        let mut oldest: Option<(u16, u32)> = None;
        let mut judge = |p: u16, oldest: &mut Option<(u16, u32)>| match ok(p) {
            Probe::Free => true,
            Probe::Guarded(age) => {
                if oldest.is_none_or(|(_, a)| age > a) {
                    *oldest = Some((p, age));
                }
                false
            }
            Probe::Taken => false,
        };
        for _ in 0..RANDOM_PROBES {
            let p = at(rng.below(cands));
            if judge(p, &mut oldest) {
                return Some((p, false));
            }
        }
        let start = rng.below(cands);
        for j in 0..cands {
            let k = start + j;
            let p = at(if k >= cands { k - cands } else { k });
            if judge(p, &mut oldest) {
                return Some((p, false));
            }
        }
        oldest.map(|(p, _)| (p, true))
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

    /// Allocates toward one destination until refused; the ports, and whether every
    /// refusal came without probing.
    fn fill(
        a: &PortAllocator,
        rng: &mut Rng,
        steered: bool,
        ok: impl Fn(u16) -> bool,
    ) -> HashSet<u16> {
        let mut used = HashSet::new();
        while let Some((p, g)) = a.allocate(rng, steered, used.len() as u32, |p| {
            if !used.contains(&p) && ok(p) {
                Probe::Free
            } else {
                Probe::Taken
            }
        }) {
            assert!(!g);
            assert!(used.insert(p));
        }
        used
    }

    #[test]
    fn slices_are_disjoint_and_cover_the_range() {
        let n = 3;
        let allocs: Vec<PortAllocator> = (0..n)
            .map(|w| PortAllocator::new(1000, 1009, 10, w, n))
            .collect();
        let mut seen = HashSet::new();
        let mut rng = Rng::new(5);
        for (w, a) in allocs.iter().enumerate() {
            let mine = fill(a, &mut rng, false, |_| true);
            for &p in &mine {
                assert_eq!(a.owner_of(p), Some(w));
                assert!(seen.insert(p), "port {p} owned twice");
            }
            assert_eq!(mine.len() as u32, a.slice_len());
        }
        assert_eq!(seen.len(), 10);
        // Outside the range (a flow from before a reload): the same partition.
        assert_eq!(allocs[0].owner_of(999), Some(999 % 3));
        assert_eq!(allocs[0].owner_of(1010), Some(1010 % 3));
    }

    #[test]
    fn exact_limit_of_55000_at_full_scale() {
        let a = PortAllocator::new(1024, 65535, 55_000, 0, 1);
        let mut rng = Rng::new(9);
        let used = fill(&a, &mut rng, false, |_| true);
        assert_eq!(used.len(), 55_000, "the limit is reachable exactly");
    }

    #[test]
    fn refusal_at_the_limit_costs_no_probe() {
        let a = PortAllocator::new(1024, 65535, 55_000, 0, 1);
        let mut rng = Rng::new(9);
        let mut probes = 0u32;
        assert_eq!(
            a.allocate(&mut rng, false, 55_000, |_| {
                probes += 1;
                Probe::Free
            }),
            None
        );
        assert_eq!(probes, 0);
    }

    #[test]
    fn below_the_limit_a_free_port_is_always_found() {
        // Adversarial occupancy: every port but one taken (by other destinations' flows
        // this cannot happen, but by guard/steering refusals it can): still found.
        let a = PortAllocator::new(1024, 65535, 55_000, 0, 1);
        let mut rng = Rng::new(1);
        for last in [1024u16, 40_000, 65_535] {
            let got = a.allocate(&mut rng, false, 0, |p| {
                if p == last {
                    Probe::Free
                } else {
                    Probe::Taken
                }
            });
            assert_eq!(got, Some((last, false)));
        }
    }

    #[test]
    fn guarded_ports_only_when_nothing_is_free_oldest_first() {
        let a = PortAllocator::new(2000, 2009, 10, 0, 1);
        let mut rng = Rng::new(3);
        let got = a.allocate(&mut rng, false, 0, |p| match p {
            2003 => Probe::Free,
            _ => Probe::Guarded(u32::from(p)),
        });
        assert_eq!(got, Some((2003, false)));
        let got = a.allocate(&mut rng, false, 0, |p| Probe::Guarded(u32::from(2009 - p)));
        assert_eq!(got, Some((2000, true)), "closed longest ago");
        assert_eq!(a.allocate(&mut rng, false, 0, |_| Probe::Taken), None);
    }

    #[test]
    fn allocate_any_covers_the_whole_slice_of_this_worker() {
        let a = PortAllocator::new(2000, 2099, 3, 1, 2);
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
    fn worker_shares_add_up_to_the_limit() {
        let a = PortAllocator::new(1024, 65535, 55_000, 1, 2);
        assert_eq!(a.slice_len(), 32_256);
        assert_eq!(a.limit(false), 27_500);
        for n in 1..=8 {
            let sum: u32 = (0..n)
                .map(|w| PortAllocator::new(1024, 65535, 55_000, w, n).limit(false))
                .sum();
            assert_eq!(sum, 55_000, "{n} workers");
        }
        let tiny = PortAllocator::new(5000, 5000, 1, 1, 2);
        assert_eq!(tiny.slice_len(), 0);
        assert_eq!(
            tiny.allocate(&mut Rng::new(1), false, 0, |_| Probe::Free),
            None
        );
    }

    #[test]
    fn a_range_change_moves_no_port_to_another_worker() {
        // Live reload (handoff mode): the old and the new range partition alike, so a
        // flow's port keeps its owner whatever the new range.
        for n in [2, 3, 4] {
            for w in 0..n {
                let old = PortAllocator::new(1024, 65535, 65535, w, n);
                let new = PortAllocator::new(2001, 3000, 1000, w, n);
                let mut rng = Rng::new(9);
                for p in fill(&new, &mut rng, false, |_| true) {
                    assert_eq!(new.owner_of(p), Some(w));
                    assert_eq!(old.owner_of(p), Some(w));
                }
                for p in [1024u16, 1025, 40000, 65535] {
                    assert_eq!(old.owner_of(p), new.owner_of(p));
                }
            }
        }
    }
}

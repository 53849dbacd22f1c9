//! Per-tenant limits on a node (noisy-neighbour isolation, issue 9 §4; SPEC §5): packets/s,
//! new flows/s and concurrent flows of one tenant (a NAT gateway, a load balancer), enforced
//! by every worker on its own share, with no locks and no shared state.
//!
//! A tenant's node-wide rate `r` is split over the `n` workers like the port slices: worker
//! `w` enforces `r / n` (plus one for the first `r % n` workers), so the node admits at
//! most `r` per second whatever the RSS spread, and never takes a lock or touches another
//! core's cache line. The price is that a tenant whose traffic lands on one worker only gets
//! that worker's share (documented in docs/fleet.md; the same trade-off as the per-core flow
//! tables).
//!
//! Token buckets, not windows: a bucket admits short bursts up to its depth then exactly the
//! rate, with no boundary effect, in O(1) state and one multiply per packet. Refill is by
//! TSC cycles (the `now` every stage already gets), so no syscall and no clock read.

use crate::config::TenantLimits;
use crate::pipeline::counters::DropReason;

/// Largest bucket depth in cycles x rate units, so that every product below stays far from
/// `u64` overflow (2^62).
const CREDIT_MAX: u64 = 1 << 62;

/// A token bucket refilled from the TSC. Credit is kept in units of `1 / (rate * hz)`
/// tokens, i.e. one token costs `hz` units and every elapsed cycle adds `rate` units: exact
/// integer arithmetic (no per-packet division, no drift), whatever the rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBucket {
    /// Tokens per second (this worker's share).
    rate: u64,
    /// Units one token costs: the TSC frequency.
    cost: u64,
    /// Bucket depth in units (`burst * cost`).
    depth: u64,
    credit: u64,
    /// TSC of the last refill.
    last: u64,
}

impl TokenBucket {
    /// `rate` tokens per second, at most `burst` (at least 1) stored, starting full.
    /// `rate` 0 admits nothing.
    pub fn new(rate: u64, burst: u64, tsc_hz: u64) -> TokenBucket {
        let cost = tsc_hz.max(1);
        let burst = burst.clamp(1, CREDIT_MAX / cost);
        let depth = burst * cost;
        TokenBucket {
            rate: rate.min(CREDIT_MAX / cost),
            cost,
            depth,
            credit: depth,
            last: 0,
        }
    }

    /// Adds the credit of the cycles since the last call (a clock going backwards adds
    /// nothing; a long idle period fills the bucket, never more).
    #[inline]
    fn refill(&mut self, now: u64) {
        let elapsed = now.saturating_sub(self.last);
        self.last = self.last.max(now);
        if self.credit >= self.depth || self.rate == 0 {
            return;
        }
        // Cycles needed to fill the bucket from empty: more cannot add anything.
        let cap = self.depth / self.rate + 1;
        let add = elapsed.min(cap) * self.rate;
        self.credit = (self.credit + add).min(self.depth);
    }

    /// Takes one token if there is one.
    #[inline]
    pub fn take(&mut self, now: u64) -> bool {
        self.refill(now);
        if self.credit >= self.cost {
            self.credit -= self.cost;
            true
        } else {
            false
        }
    }

    /// Whole tokens available now (tests, diagnostics).
    pub fn available(&mut self, now: u64) -> u64 {
        self.refill(now);
        self.credit / self.cost
    }

    /// The bucket's start time: a bucket made at TSC 0 would otherwise treat the first
    /// packet's TSC as a long idle period (harmless: it starts full anyway).
    pub fn start_at(&mut self, now: u64) {
        self.last = now;
    }
}

/// Worker `worker`'s share of a node-wide quantity split over `n` workers: `total / n`,
/// plus one for the first `total % n` workers (the shares add up to `total`).
pub fn share(total: u64, worker: usize, n: usize) -> u64 {
    let n = n.max(1) as u64;
    let w = worker as u64;
    total / n + u64::from(w < total % n)
}

/// Why the limiter refused a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Over the tenant's packets/s.
    Packets,
    /// Over the tenant's new flows/s.
    NewFlows,
    /// At the tenant's concurrent-flow limit.
    Flows,
}

impl Refusal {
    /// The drop reason of a NAT gateway's packet refused for this.
    pub fn nat(self) -> DropReason {
        match self {
            Refusal::Packets => DropReason::NatTenantPpsLimit,
            Refusal::NewFlows => DropReason::NatTenantNewFlowLimit,
            Refusal::Flows => DropReason::NatTenantFlowLimit,
        }
    }
    /// The drop reason of a load balancer's packet refused for this.
    pub fn lb(self) -> DropReason {
        match self {
            Refusal::Packets => DropReason::LbTenantPpsLimit,
            Refusal::NewFlows => DropReason::LbTenantNewFlowLimit,
            Refusal::Flows => DropReason::LbTenantFlowLimit,
        }
    }
}

/// One tenant's limits on one worker: its share of each configured limit. An unset limit
/// costs one branch per packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantLimiter {
    packets: Option<TokenBucket>,
    new_flows: Option<TokenBucket>,
    /// This worker's share of `max_flows` (`u64::MAX`: unlimited).
    max_flows: u64,
}

impl Default for TenantLimiter {
    fn default() -> Self {
        TenantLimiter::unlimited()
    }
}

impl TenantLimiter {
    pub fn unlimited() -> TenantLimiter {
        TenantLimiter {
            packets: None,
            new_flows: None,
            max_flows: u64::MAX,
        }
    }

    /// Worker `worker` of `n`: its share of every limit of `l`; the bucket depth is the share
    /// times `l.burst_ms` (at least one token).
    pub fn new(l: &TenantLimits, worker: usize, n: usize, tsc_hz: u64) -> TenantLimiter {
        let bucket = |total: Option<u64>| {
            total.map(|t| {
                let rate = share(t, worker, n);
                let burst = (u128::from(rate) * u128::from(l.burst_ms) / 1000) as u64;
                TokenBucket::new(rate, burst, tsc_hz)
            })
        };
        TenantLimiter {
            packets: bucket(l.packets_per_s),
            new_flows: bucket(l.new_flows_per_s),
            max_flows: l.max_flows.map_or(u64::MAX, |m| share(m, worker, n)),
        }
    }

    /// Every packet of the tenant, once classified to it and before any table work.
    #[inline]
    pub fn packet(&mut self, now: u64) -> Result<(), Refusal> {
        match self.packets.as_mut().map(|b| b.take(now)) {
            Some(false) => Err(Refusal::Packets),
            _ => Ok(()),
        }
    }

    /// Before a flow is created, with the tenant's live flows on this worker: the
    /// concurrent-flow limit first (a refused flow takes no rate token), then the rate.
    #[inline]
    pub fn new_flow(&mut self, live: u64, now: u64) -> Result<(), Refusal> {
        if live >= self.max_flows {
            return Err(Refusal::Flows);
        }
        match self.new_flows.as_mut().map(|b| b.take(now)) {
            Some(false) => Err(Refusal::NewFlows),
            _ => Ok(()),
        }
    }

    /// Whether any limit is set.
    pub fn is_limited(&self) -> bool {
        self.packets.is_some() || self.new_flows.is_some() || self.max_flows != u64::MAX
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HZ: u64 = 2_000_000_000;

    fn limits(pps: Option<u64>, nfs: Option<u64>, max: Option<u64>, burst_ms: u64) -> TenantLimits {
        TenantLimits {
            packets_per_s: pps,
            new_flows_per_s: nfs,
            max_flows: max,
            burst_ms,
        }
    }

    #[test]
    fn bucket_starts_full_then_admits_the_burst_only() {
        let mut b = TokenBucket::new(100, 10, HZ);
        let admitted = (0..50).filter(|_| b.take(0)).count();
        assert_eq!(admitted, 10);
        assert!(!b.take(0));
    }

    #[test]
    fn bucket_refills_at_the_rate() {
        let mut b = TokenBucket::new(100, 10, HZ);
        while b.take(0) {}
        // 100/s: one token every 10 ms = 20 M cycles.
        assert!(!b.take(HZ / 100 - 1));
        assert!(b.take(HZ / 100));
        assert!(!b.take(HZ / 100));
        // Half a second later: 50 tokens earned but only 10 stored.
        assert_eq!(b.available(HZ / 100 + HZ / 2), 10);
    }

    #[test]
    fn bucket_rate_is_exact_over_a_long_run() {
        // 333/s is not a divisor of the clock: no drift from rounding. (Depth 2: a depth of
        // 1 would, rightly, lose the fraction of a token earned past a full bucket.)
        let mut b = TokenBucket::new(333, 2, HZ);
        let mut n = 0u64;
        let step = HZ / 10_000; // offered at 10 kHz for 10 s
        for i in 1..=100_000u64 {
            if b.take(i * step) {
                n += 1;
            }
        }
        // Starts full (2) + 10 s x 333.
        assert!((3330..=3332).contains(&n), "{n}");
    }

    #[test]
    fn bucket_tolerates_a_clock_going_backwards_and_huge_gaps() {
        let mut b = TokenBucket::new(1_000_000_000, 1_000_000, HZ);
        b.start_at(u64::MAX / 2);
        assert!(b.take(u64::MAX / 2));
        assert!(b.take(5)); // backwards: no credit added, none lost
        assert_eq!(b.available(u64::MAX), 1_000_000);
        let mut z = TokenBucket::new(0, 1, HZ);
        assert!(z.take(0), "starts with its burst of 1");
        assert!(!z.take(u64::MAX), "rate 0 never refills");
    }

    #[test]
    fn shares_add_up_to_the_total() {
        for total in [0u64, 1, 7, 100, 1001] {
            for n in 1..6 {
                let s: u64 = (0..n).map(|w| share(total, w, n)).sum();
                assert_eq!(s, total);
                let max = (0..n).map(|w| share(total, w, n)).max().unwrap();
                let min = (0..n).map(|w| share(total, w, n)).min().unwrap();
                assert!(max - min <= 1);
            }
        }
    }

    #[test]
    fn limiter_splits_over_workers_and_orders_its_checks() {
        let l = limits(Some(1000), Some(40), Some(10), 100);
        let mut w0 = TenantLimiter::new(&l, 0, 2, HZ);
        // Worker 0 of 2: 500 pps, burst 50 packets.
        assert_eq!((0..80).filter(|_| w0.packet(0).is_ok()).count(), 50);
        assert_eq!(w0.packet(0), Err(Refusal::Packets));
        // 20 new flows/s, burst 2; max 5 flows.
        assert_eq!(w0.new_flow(5, 0), Err(Refusal::Flows));
        assert_eq!(w0.new_flow(4, 0), Ok(()));
        assert_eq!(w0.new_flow(4, 0), Ok(()));
        assert_eq!(w0.new_flow(4, 0), Err(Refusal::NewFlows));
        // At the flow limit no token is taken: after 50 ms one token is there.
        assert_eq!(w0.new_flow(5, HZ / 20), Err(Refusal::Flows));
        assert_eq!(w0.new_flow(0, HZ / 20), Ok(()));
        assert!(w0.is_limited());
    }

    #[test]
    fn unlimited_admits_everything() {
        let mut u = TenantLimiter::new(&TenantLimits::default(), 0, 4, HZ);
        assert!(!u.is_limited());
        for i in 0..10_000 {
            assert_eq!(u.packet(i), Ok(()));
            assert_eq!(u.new_flow(i, i), Ok(()));
        }
        assert_eq!(u, TenantLimiter::unlimited());
    }

    #[test]
    fn burst_is_at_least_one_token() {
        // 5 new flows/s over 2 workers with a 10 ms burst: shares 3 and 2, 0.03 tokens of
        // burst rounded up to 1.
        let l = limits(None, Some(5), None, 10);
        let mut w1 = TenantLimiter::new(&l, 1, 2, HZ);
        assert_eq!(w1.new_flow(0, 0), Ok(()));
        assert_eq!(w1.new_flow(0, 0), Err(Refusal::NewFlows));
        assert_eq!(w1.new_flow(0, HZ / 2), Ok(()));
    }
}

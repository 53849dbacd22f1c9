//! Live reload of load balancers, worker side: the control thread (`LbControl`) builds
//! the tables of load balancers a reload adds (and the empty ones replacing drained ones)
//! and sends them in an `LbUpdate`; the worker moves them in between bursts and hands back
//! what it replaced. Slots never move: a new load balancer gets a new slot, so a snapshot
//! naming it is taken only once its tables are there (`LbWorker::refresh`).
//!
//! A new `lb_addresses` or `flows_per_core` (they shape the flow tables and full-NAT
//! ports of live flows) replaces the load balancer: the control thread renames the old
//! one `ID~replaced`, drains it (`drain_timeout_s`) and adds the new one in a fresh slot.
//! Both are in the snapshot with `replaced_pair`: a packet to a VIP (or an LB address)
//! both hold goes to the old one when it is of one of its flows (one hash lookup, only
//! while a replacement drains), else to the new one, and the new one never takes a
//! full-NAT port an old flow holds toward the same target (`with_pred`).

use super::counters::LbCounters;
use super::snapshot::{LbSnapshot, LbView};
use super::{parse_l4, Ip, LbState, LbWorker};
use crate::config::LoadBalancerConfig;
use crate::nat::flow::Key;
use crate::nat::ports::Rng;

/// Load balancer slots per worker (published counters are sized for this many). Slots
/// are reused once their load balancer's drain ends.
pub const MAX_SLOTS: usize = 1024;

/// One worker's part of a reload.
pub struct LbUpdate {
    /// (slot, new tables), by slot.
    pub(super) fresh: Vec<(usize, LbState)>,
    /// (slot, new token buckets) of kept load balancers whose limits changed.
    limiters: Vec<(usize, crate::limits::TenantLimiter)>,
    slots: usize,
    lbs: Vec<LbState>,
    counters: Vec<LbCounters>,
    /// Filled by the worker, freed by the control thread.
    garbage: Vec<LbState>,
    old_lbs: Vec<LbState>,
    old_counters: Vec<LbCounters>,
}

impl LbUpdate {
    /// Kept slot `slot` takes new tenant limits (a fresh bucket).
    pub fn set_limiter(&mut self, slot: usize, l: crate::limits::TenantLimiter) {
        self.limiters.push((slot, l));
    }

    /// Tables for `fresh` slots (their configs) out of `slots`, for one worker.
    pub fn build(
        fresh: &[(usize, &LoadBalancerConfig)],
        slots: usize,
        worker: usize,
        n_workers: usize,
        tsc_hz: u64,
        rng: &mut Rng,
    ) -> LbUpdate {
        LbUpdate {
            fresh: fresh
                .iter()
                .map(|(i, c)| (*i, LbState::build(c, worker, n_workers, tsc_hz, rng)))
                .collect(),
            limiters: Vec::with_capacity(slots),
            slots,
            lbs: Vec::with_capacity(slots),
            counters: Vec::with_capacity(slots),
            garbage: Vec::with_capacity(slots),
            old_lbs: Vec::new(),
            old_counters: Vec::new(),
        }
    }
}

impl LbWorker {
    /// Between bursts: takes the new slots' tables (moves only).
    pub fn reconcile(&mut self, u: &mut LbUpdate) {
        let mut old = std::mem::replace(&mut self.lbs, std::mem::take(&mut u.lbs));
        let mut old_c = std::mem::replace(&mut self.counters, std::mem::take(&mut u.counters));
        {
            let mut prev = old.drain(..);
            let mut prev_c = old_c.drain(..);
            let mut fresh = u.fresh.drain(..).peekable();
            for i in 0..u.slots {
                let (p, pc) = (prev.next(), prev_c.next());
                match fresh.next_if(|(f, _)| *f == i) {
                    Some((_, st)) => {
                        self.lbs.push(st);
                        self.counters.push(LbCounters::default());
                        if let Some(p) = p {
                            u.garbage.push(p);
                        }
                    }
                    None => {
                        if let Some(mut p) = p {
                            if let Some(&(_, l)) = u.limiters.iter().find(|x| x.0 == i) {
                                p.limiter = l;
                            }
                            self.lbs.push(p);
                            self.counters.push(pc.unwrap_or_default());
                        }
                    }
                }
            }
            u.garbage.extend(prev);
        }
        u.old_lbs = old;
        u.old_counters = old_c;
        // The snapshot naming the new load balancers can be taken now.
        self.refresh();
    }
}

/// `lbs[li]`, and the replaced load balancer `pred` (read only: its full-NAT ports stay
/// taken for the new one's allocation).
pub(super) fn with_pred(
    lbs: &mut [LbState],
    li: usize,
    pred: Option<usize>,
) -> (Option<&mut LbState>, Option<&LbState>) {
    match pred {
        Some(p) if p < li => {
            let (a, b) = lbs.split_at_mut(li);
            (b.first_mut(), a.get(p))
        }
        Some(p) if p > li && p < lbs.len() => {
            let (a, b) = lbs.split_at_mut(p);
            (a.get_mut(li), b.first())
        }
        _ => (lbs.get_mut(li), None),
    }
}

impl LbWorker {
    /// The load balancer for a packet to a VIP that `li` holds: while a replacement
    /// drains, the old one for packets of its flows, the new one (if it has the VIP) for
    /// the others.
    #[inline]
    pub(super) fn replaced_or_vip(
        &self,
        snap: &LbSnapshot,
        li: usize,
        frame: &[u8],
        ip: &Ip,
    ) -> usize {
        self.replaced_pick(
            snap,
            li,
            frame,
            ip,
            |s, k| s.flows.lookup_in(k).is_some(),
            |v| v.vips.contains(&ip.dst),
        )
    }

    /// As `replaced_or_vip`, for a full-NAT reply to an LB address.
    #[inline]
    pub(super) fn replaced_or_address(
        &self,
        snap: &LbSnapshot,
        li: usize,
        frame: &[u8],
        ip: &Ip,
    ) -> usize {
        self.replaced_pick(
            snap,
            li,
            frame,
            ip,
            |s, k| s.fnat_lookup(k).is_some(),
            |v| v.lb_addresses.contains(&ip.dst),
        )
    }

    /// `li`, or while a replacement of it drains: the old one when `old_has` the packet's
    /// flow, else the new one when `new_has` its destination.
    #[inline]
    fn replaced_pick(
        &self,
        snap: &LbSnapshot,
        li: usize,
        frame: &[u8],
        ip: &Ip,
        old_has: impl Fn(&LbState, &Key) -> bool,
        new_has: impl Fn(&LbView) -> bool,
    ) -> usize {
        let Some((old, new)) = snap.lbs.get(li).and_then(|v| v.replaced_pair) else {
            return li;
        };
        let Some(l4) = parse_l4(frame, ip) else {
            return li;
        };
        let key = Key::new(ip.proto, ip.dst, l4.dport, ip.src, l4.sport);
        if self.lbs.get(old).is_some_and(|s| old_has(s, &key)) {
            old
        } else if snap.lbs.get(new).is_some_and(new_has) {
            new
        } else {
            li
        }
    }
}

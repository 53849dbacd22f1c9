//! The load balancer as a pipeline stage: wraps a worker's `LbWorker`, swaps in new
//! snapshots between bursts, and publishes its counters for the control thread (relaxed
//! stores, summed over workers on scrape, like `nat::stage`).

use super::counters::{LbCounters, TargetCounters};
use super::LbWorker;
use crate::packet::PacketBuf;
use crate::pipeline::counters::DropReason;
use crate::pipeline::StageVerdict;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Target ids counted per worker (ids beyond are not published).
pub const MAX_TARGET_IDS: usize = 4096;

/// One worker's published LB state.
pub struct LbPublished {
    lbs: Vec<Vec<AtomicU64>>,
    /// Per target id: active flows, new flows.
    targets: Vec<[AtomicU64; 2]>,
    pub flows: AtomicU64,
    pub capacity: AtomicU64,
    /// Snapshot generation the worker runs.
    pub generation: AtomicU64,
}

impl LbPublished {
    pub fn new(lbs: usize) -> Self {
        let width = LbCounters::FIELDS.len() + DropReason::COUNT;
        LbPublished {
            lbs: (0..lbs)
                .map(|_| (0..width).map(|_| AtomicU64::new(0)).collect())
                .collect(),
            targets: (0..MAX_TARGET_IDS)
                .map(|_| [AtomicU64::new(0), AtomicU64::new(0)])
                .collect(),
            flows: AtomicU64::new(0),
            capacity: AtomicU64::new(0),
            generation: AtomicU64::new(0),
        }
    }

    pub fn publish(&self, w: &LbWorker) {
        for (slots, c) in self.lbs.iter().zip(w.counters()) {
            let vals = c.scalars().into_iter().chain(c.drops.iter().copied());
            for (s, v) in slots.iter().zip(vals) {
                s.store(v, Ordering::Relaxed);
            }
        }
        for (s, t) in self.targets.iter().zip(w.target_counters()) {
            s[0].store(t.active_flows, Ordering::Relaxed);
            s[1].store(t.new_flows, Ordering::Relaxed);
        }
        self.flows.store(w.flows() as u64, Ordering::Relaxed);
        self.capacity.store(w.capacity() as u64, Ordering::Relaxed);
        let g = w.snapshot().map_or(0, |s| s.generation);
        self.generation.store(g, Ordering::Relaxed);
    }

    pub fn lb_count(&self) -> usize {
        self.lbs.len()
    }

    pub fn read(&self, lb: usize) -> LbCounters {
        let v: Vec<u64> = self.lbs[lb]
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .collect();
        let n = LbCounters::FIELDS.len();
        LbCounters::from_scalars(&v[..n], &v[n..])
    }

    pub fn target(&self, id: usize) -> TargetCounters {
        self.targets
            .get(id)
            .map_or(TargetCounters::default(), |s| TargetCounters {
                active_flows: s[0].load(Ordering::Relaxed),
                new_flows: s[1].load(Ordering::Relaxed),
            })
    }
}

/// `LbWorker` plugged into the pipeline's stage chain.
pub struct LbStage {
    pub lb: LbWorker,
    pub published: Arc<LbPublished>,
    polls: u32,
}

impl LbStage {
    pub fn new(lb: LbWorker, published: Arc<LbPublished>) -> Self {
        published.publish(&lb);
        LbStage {
            lb,
            published,
            polls: 0,
        }
    }

    #[inline]
    pub fn process<B: PacketBuf>(
        &mut self,
        pkt: &mut B,
        p: &crate::pipeline::Parsed,
        now: u64,
    ) -> StageVerdict {
        let v = self.lb.process_parsed(pkt, p, now);
        if let StageVerdict::Drop(_) | StageVerdict::Respond(_) = v {
            // Flow logs' REJECT records (a no-op with the logs off).
            self.lb.log_reject(pkt, v, now);
        }
        v
    }

    pub fn poll(&mut self, now: u64) {
        let swapped = self.lb.refresh();
        self.lb.replication_poll(now);
        self.lb.expire(now);
        self.lb.update_lookahead();
        self.polls = self.polls.wrapping_add(1);
        if swapped || self.polls.is_multiple_of(16) {
            self.published.publish(&self.lb);
        }
    }

    pub fn publish(&mut self) {
        self.published.publish(&self.lb);
    }
}

impl LbStage {
    #[inline]
    pub fn wants_lookahead(&self) -> bool {
        self.lb.wants_lookahead()
    }

    /// Burst lookahead (see `lb::prefetch`).
    #[inline]
    pub fn prefetch(&mut self, id: usize, tuple: Option<crate::nat::prefetch::Tuple>, deep: bool) {
        self.lb.prefetch(id, tuple, deep);
    }
}

//! Worker side: per-flow-slot counters, the records they become, and the ring they go to.
//!
//! Cost on the packet path (flow logs on): one counter update beside the flow slot the
//! packet already touched (`GwLog::count`). Records are made at flow creation and
//! deletion, when a flow's first packet of a new interval arrives, and by the sweep the
//! worker's poll runs after each interval boundary (bounded slots per poll). Everything
//! is preallocated: `pending` never grows, the ring is fixed; a full one counts a loss.

use super::{Clock, Endpoint, Record};
use crate::nat::flow::{Flow, FlowTable};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// Records a gateway may queue between two polls (drained into the ring by each poll).
pub const PENDING: usize = 1024;
/// Flow slots the interval sweep examines per poll and gateway.
pub const SWEEP_BUDGET: usize = 4096;

/// Counters of one flow slot for the current interval (`out`: the direction that created
/// the flow — inside host to remote for the NAT, client to target for the load balancer).
#[derive(Debug, Clone, Copy, Default)]
pub struct FlowStats {
    pub out_packets: u32,
    pub in_packets: u32,
    pub out_bytes: u64,
    pub in_bytes: u64,
    pub first_s: u32,
    pub last_s: u32,
    epoch: u32,
}

/// What a logged flow turns into: its interval record and its translation event. The NAT
/// logs its `Flow`s; the load balancer a view with its full-NAT address
/// (`crate::lb::log_hooks`).
pub trait Logged: Copy {
    fn flow_record(&self, tenant: u16, s: &FlowStats) -> Record;
    fn mapping_record(&self, tenant: u16, created: bool, t_ms: u64) -> Record;
}

impl Logged for Flow {
    fn flow_record(&self, gw: u16, s: &FlowStats) -> Record {
        Record::Flow {
            gw,
            proto: self.proto,
            inside: Endpoint::new(self.inside_ip, self.inside_port),
            remote: Endpoint::new(self.remote_ip, self.remote_port),
            public: Endpoint::new(self.public_ip, self.public_port),
            out_packets: s.out_packets,
            in_packets: s.in_packets,
            out_bytes: s.out_bytes,
            in_bytes: s.in_bytes,
            first_s: s.first_s,
            last_s: s.last_s,
        }
    }
    fn mapping_record(&self, gw: u16, created: bool, t_ms: u64) -> Record {
        Record::Mapping {
            gw,
            created,
            proto: self.proto,
            inside: Endpoint::new(self.inside_ip, self.inside_port),
            public: Endpoint::new(self.public_ip, self.public_port),
            remote: Endpoint::new(self.remote_ip, self.remote_port),
            t_ms,
        }
    }
}

impl FlowStats {
    fn is_empty(&self) -> bool {
        self.out_packets == 0 && self.in_packets == 0
    }
}

/// One gateway's (or load balancer's) logging state on one worker.
pub struct GwLog<F: Logged = Flow> {
    gw: u16,
    /// Per flow slot (empty when flow logs are off).
    stats: Vec<FlowStats>,
    /// Translation events on.
    mappings: bool,
    pending: Vec<Record>,
    /// Records that found `pending` full.
    pub lost: u64,
    now_ms: u64,
    now_s: u32,
    epoch: u32,
    interval_s: u32,
    cursor: usize,
    swept_epoch: u32,
    _flow: std::marker::PhantomData<F>,
}

impl<F: Logged> GwLog<F> {
    pub fn new(gw: usize, capacity: usize, flows: bool, mappings: bool, interval_s: u32) -> Self {
        GwLog {
            gw: gw as u16,
            stats: if flows {
                vec![FlowStats::default(); capacity]
            } else {
                Vec::new()
            },
            mappings,
            pending: Vec::with_capacity(PENDING),
            lost: 0,
            now_ms: 0,
            now_s: 0,
            epoch: 0,
            interval_s: interval_s.max(1),
            cursor: 0,
            swept_epoch: 0,
            _flow: std::marker::PhantomData,
        }
    }

    /// The poll's wall clock (unix ms). A new interval starts the sweep.
    pub fn set_now(&mut self, now_ms: u64) {
        self.now_ms = now_ms;
        self.now_s = (now_ms / 1000) as u32;
        let e = self.now_s / self.interval_s;
        if e != self.epoch {
            if self.epoch == 0 {
                self.swept_epoch = e;
            }
            self.epoch = e;
        }
    }

    #[inline]
    fn push(&mut self, r: Record) {
        if self.pending.len() < self.pending.capacity() {
            self.pending.push(r);
        } else {
            self.lost += 1;
        }
    }

    fn mapping(&mut self, f: &F, created: bool) {
        if self.mappings {
            self.push(f.mapping_record(self.gw, created, self.now_ms));
        }
    }

    /// Emits and clears slot `idx`'s counters (nothing if it saw no packet).
    fn emit(&mut self, idx: u32, f: &F) {
        let Some(s) = self.stats.get_mut(idx as usize) else {
            return;
        };
        let s = std::mem::replace(
            s,
            FlowStats {
                epoch: s.epoch,
                ..FlowStats::default()
            },
        );
        if s.is_empty() {
            return;
        }
        self.push(f.flow_record(self.gw, &s));
    }

    /// A flow was stored in slot `idx`.
    pub fn created(&mut self, idx: u32, f: &F) {
        if let Some(s) = self.stats.get_mut(idx as usize) {
            *s = FlowStats {
                epoch: self.epoch,
                ..FlowStats::default()
            };
        }
        self.mapping(f, true);
    }

    /// Flow `idx` is being deleted: its last counters, then the mapping event.
    pub fn retired(&mut self, idx: u32, f: &F) {
        self.emit(idx, f);
        self.mapping(f, false);
    }

    /// A packet of flow `idx` was translated (`outbound`: inside to remote), `bytes` its IP
    /// length.
    #[inline]
    pub fn count(&mut self, idx: u32, f: &F, outbound: bool, bytes: usize) {
        self.count_with(idx, outbound, bytes, || *f)
    }

    /// `count`, the flow made only when a record is due (the load balancer builds its view
    /// from two tables).
    #[inline]
    pub fn count_with(&mut self, idx: u32, outbound: bool, bytes: usize, flow: impl FnOnce() -> F) {
        let (epoch, now_s) = (self.epoch, self.now_s);
        let Some(s) = self.stats.get(idx as usize) else {
            return;
        };
        if s.epoch != epoch {
            // First packet of a new interval before the sweep reached this slot.
            self.emit(idx, &flow());
        }
        let Some(s) = self.stats.get_mut(idx as usize) else {
            return;
        };
        if s.is_empty() {
            s.first_s = now_s;
        }
        s.epoch = epoch;
        s.last_s = now_s;
        if outbound {
            s.out_packets = s.out_packets.saturating_add(1);
            s.out_bytes += bytes as u64;
        } else {
            s.in_packets = s.in_packets.saturating_add(1);
            s.in_bytes += bytes as u64;
        }
    }

    /// `sweep` over any table: `flow(idx)` is the live flow of slot `idx`, if any.
    pub fn sweep_by(&mut self, flow: impl Fn(u32) -> Option<F>) {
        if self.stats.is_empty() || self.swept_epoch == self.epoch {
            return;
        }
        let end = (self.cursor + SWEEP_BUDGET).min(self.stats.len());
        for idx in self.cursor..end {
            let stale = self
                .stats
                .get(idx)
                .is_some_and(|s| !s.is_empty() && s.epoch != self.epoch);
            if stale {
                if let Some(f) = flow(idx as u32) {
                    self.emit(idx as u32, &f);
                }
            }
            if self.pending.len() == self.pending.capacity() {
                self.cursor = idx + 1;
                return;
            }
        }
        self.cursor = end;
        if end >= self.stats.len() {
            self.cursor = 0;
            self.swept_epoch = self.epoch;
        }
    }

    /// Shutdown: emits slot `idx`'s counters and, if it holds a live flow (`live`), its
    /// deletion (the mapping ends with the process).
    pub fn flush_live(&mut self, idx: u32, live: Option<F>) {
        if let Some(f) = live {
            self.emit(idx, &f);
            self.mapping(&f, false);
        }
    }

    /// Moves the queued records into the ring; those it cannot take are lost.
    pub fn drain_into(&mut self, ring: &mut rtrb::Producer<Record>) {
        for r in self.pending.drain(..) {
            if ring.push(r).is_err() {
                self.lost += 1;
            }
        }
    }

    pub fn pending_full(&self) -> bool {
        self.pending.len() == self.pending.capacity()
    }
}

impl GwLog<Flow> {
    /// Poll: after an interval boundary, emits the previous interval's counters of up to
    /// `SWEEP_BUDGET` slots, resuming where the last call stopped.
    pub fn sweep(&mut self, flows: &FlowTable) {
        self.sweep_by(|i| flows.get(i).copied())
    }

    /// Shutdown: emits slot `idx`'s counters and, if it holds a live flow, its deletion
    /// (the mapping ends with the process).
    pub fn flush_slot(&mut self, idx: u32, flows: &FlowTable) {
        let live = flows
            .get(idx)
            .copied()
            .filter(|f| f.proto != 0 && !f.is_dead());
        self.flush_live(idx, live);
    }
}

/// What workers and the control side share (atomics only).
pub struct TapShared {
    /// Records lost per worker (published by the worker's poll).
    pub lost: Vec<AtomicU64>,
    /// Raised by the control side at stop: flush all counters and end all mappings.
    pub flush_req: AtomicBool,
    /// Per worker: the flush was done.
    pub flushed: Vec<AtomicBool>,
    /// Lines written by the control side: flow-log records, translation-log events.
    pub flow_lines: AtomicU64,
    pub translation_lines: AtomicU64,
}

impl TapShared {
    pub fn new(workers: usize) -> Self {
        TapShared {
            lost: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            flush_req: AtomicBool::new(false),
            flushed: (0..workers).map(|_| AtomicBool::new(false)).collect(),
            flow_lines: AtomicU64::new(0),
            translation_lines: AtomicU64::new(0),
        }
    }
    pub fn lost_total(&self) -> u64 {
        self.lost.iter().map(|l| l.load(Ordering::Relaxed)).sum()
    }
}

/// One worker's end of the logs.
pub struct Tap {
    pub ring: rtrb::Producer<Record>,
    pub clock: Clock,
    pub shared: Arc<TapShared>,
    pub worker: usize,
    pub flows: bool,
    pub mappings: bool,
    pub interval_s: u32,
    /// Rejects that found the ring full (gateway losses are in `GwLog::lost`).
    pub lost: u64,
    pub flushed: bool,
}

impl Tap {
    /// A rejected packet, straight into the ring.
    #[inline]
    pub fn reject(
        &mut self,
        gw: usize,
        proto: u8,
        src: Endpoint,
        dst: Endpoint,
        bytes: usize,
        tsc: u64,
    ) {
        if !self.flows {
            return;
        }
        let r = Record::Reject {
            gw: gw as u16,
            proto,
            src,
            dst,
            bytes: bytes.min(u16::MAX as usize) as u16,
            t_s: (self.clock.ms(tsc) / 1000) as u32,
        };
        if self.ring.push(r).is_err() {
            self.lost += 1;
        }
    }

    pub fn publish_lost(&self, gateway_lost: u64) {
        if let Some(l) = self.shared.lost.get(self.worker) {
            l.store(self.lost + gateway_lost, Ordering::Relaxed);
        }
    }

    /// The control side asks for the final flush and this worker has not done it.
    pub fn flush_requested(&self) -> bool {
        !self.flushed && self.shared.flush_req.load(Ordering::Relaxed)
    }

    pub fn mark_flushed(&mut self) {
        self.flushed = true;
        if let Some(f) = self.shared.flushed.get(self.worker) {
            f.store(true, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow() -> Flow {
        Flow {
            inside_ip: 0x0a00_0102,
            remote_ip: 0xc633_6402,
            public_ip: 0xc633_6401,
            inside_port: 5555,
            remote_port: 9000,
            public_port: 1024,
            proto: 17,
            ..Flow::default()
        }
    }

    #[test]
    fn counts_become_one_record_per_interval_and_a_final_one() {
        let mut t = FlowTable::new(16, 1);
        let f = flow();
        let idx = t.insert(f).unwrap();
        let mut l = GwLog::new(3, 16, true, true, 10);
        l.set_now(1_000_000);
        l.created(idx, &f);
        l.count(idx, &f, true, 100);
        l.count(idx, &f, false, 60);
        l.set_now(1_003_000);
        l.count(idx, &f, true, 100);
        // Next interval (boundary at 1010 s): the sweep emits the first interval.
        l.set_now(1_010_500);
        l.sweep(&t);
        l.count(idx, &f, true, 40);
        l.retired(idx, &f);
        let (mut ring, mut rx) = rtrb::RingBuffer::new(8);
        l.drain_into(&mut ring);
        let mut got = Vec::new();
        while let Ok(r) = rx.pop() {
            got.push(r);
        }
        assert_eq!(got.len(), 4, "{got:?}");
        assert!(matches!(
            got[0],
            Record::Mapping {
                created: true,
                gw: 3,
                t_ms: 1_000_000,
                ..
            }
        ));
        match got[1] {
            Record::Flow {
                out_packets,
                out_bytes,
                in_packets,
                in_bytes,
                first_s,
                last_s,
                ..
            } => {
                assert_eq!(
                    (out_packets, out_bytes, in_packets, in_bytes),
                    (2, 200, 1, 60)
                );
                assert_eq!((first_s, last_s), (1000, 1003));
            }
            r => panic!("{r:?}"),
        }
        assert!(matches!(
            got[2],
            Record::Flow {
                out_packets: 1,
                out_bytes: 40,
                first_s: 1010,
                ..
            }
        ));
        assert!(matches!(got[3], Record::Mapping { created: false, .. }));
    }

    #[test]
    fn full_queues_count_losses() {
        let mut l = GwLog::new(0, 4, false, true, 60);
        for _ in 0..PENDING + 5 {
            l.mapping(&flow(), true);
        }
        assert_eq!(l.lost, 5);
        let (mut ring, _rx) = rtrb::RingBuffer::new(10);
        l.drain_into(&mut ring);
        assert_eq!(l.lost, 5 + PENDING as u64 - 10);
    }
}

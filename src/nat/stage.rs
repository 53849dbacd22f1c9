//! The NAT gateway as a pipeline stage: wraps a worker's `NatWorker`, and publishes its
//! per-gateway counters for the control thread (relaxed stores between bursts, summed
//! over workers on scrape, like `pipeline::counters`).

use super::{GatewayCounters, NatVerdict, NatWorker};
use crate::packet::PacketBuf;
use crate::pipeline::counters::DropReason;
use crate::pipeline::{Parsed, StageVerdict, Stages};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Number of scalar fields of `GatewayCounters` before `drops`.
const SCALARS: usize = 13;

fn scalars(c: &GatewayCounters) -> [u64; SCALARS] {
    [
        c.active_connections,
        c.connection_attempts,
        c.connections_established,
        c.port_allocation_errors,
        c.idle_timeouts,
        c.packets_in_from_source,
        c.bytes_in_from_source,
        c.packets_out_to_destination,
        c.bytes_out_to_destination,
        c.packets_in_from_destination,
        c.bytes_in_from_destination,
        c.packets_out_to_source,
        c.bytes_out_to_source,
    ]
}

fn from_scalars(v: &[u64], drops: &[u64]) -> GatewayCounters {
    let mut c = GatewayCounters {
        active_connections: v[0],
        connection_attempts: v[1],
        connections_established: v[2],
        port_allocation_errors: v[3],
        idle_timeouts: v[4],
        packets_in_from_source: v[5],
        bytes_in_from_source: v[6],
        packets_out_to_destination: v[7],
        bytes_out_to_destination: v[8],
        packets_in_from_destination: v[9],
        bytes_in_from_destination: v[10],
        packets_out_to_source: v[11],
        bytes_out_to_source: v[12],
        ..GatewayCounters::default()
    };
    c.drops.copy_from_slice(drops);
    c
}

/// One worker's published NAT state.
pub struct NatPublished {
    /// Per gateway: SCALARS values then DropReason::COUNT drop counts.
    gateways: Vec<Vec<AtomicU64>>,
    pub flows: AtomicU64,
    pub capacity: AtomicU64,
}

impl NatPublished {
    pub fn new(gateways: usize) -> Self {
        NatPublished {
            gateways: (0..gateways)
                .map(|_| {
                    (0..SCALARS + DropReason::COUNT)
                        .map(|_| AtomicU64::new(0))
                        .collect()
                })
                .collect(),
            flows: AtomicU64::new(0),
            capacity: AtomicU64::new(0),
        }
    }

    fn publish(&self, w: &NatWorker) {
        for (slots, c) in self.gateways.iter().zip(w.counters()) {
            let vals = scalars(c).into_iter().chain(c.drops.iter().copied());
            for (slot, v) in slots.iter().zip(vals) {
                slot.store(v, Ordering::Relaxed);
            }
        }
        self.flows.store(w.flows() as u64, Ordering::Relaxed);
        self.capacity.store(w.capacity() as u64, Ordering::Relaxed);
    }

    /// Publishes at once (after a live reload changed the gateways).
    pub fn publish_now(&self, w: &NatWorker) {
        self.publish(w);
    }

    /// This worker's counters of gateway `g`.
    pub fn read(&self, g: usize) -> GatewayCounters {
        let v: Vec<u64> = self.gateways[g]
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .collect();
        from_scalars(&v[..SCALARS], &v[SCALARS..])
    }

    pub fn gateway_count(&self) -> usize {
        self.gateways.len()
    }
}

/// Sum two workers' counters of one gateway.
pub fn add(into: &mut GatewayCounters, c: &GatewayCounters) {
    let a = scalars(into);
    let b = scalars(c);
    let sum: Vec<u64> = a.iter().zip(b.iter()).map(|(x, y)| x + y).collect();
    let mut drops = into.drops;
    for (d, x) in drops.iter_mut().zip(c.drops.iter()) {
        *d += *x;
    }
    *into = from_scalars(&sum, &drops);
}

/// `NatWorker` plugged into the pipeline.
pub struct NatStage {
    pub nat: NatWorker,
    pub published: Arc<NatPublished>,
    /// Publish every this many polls (polls are drain-timer paced, ~100 us).
    polls: u32,
}

impl NatStage {
    pub fn new(nat: NatWorker, published: Arc<NatPublished>) -> Self {
        published.publish(&nat);
        NatStage {
            nat,
            published,
            polls: 0,
        }
    }
}

impl<B: PacketBuf> Stages<B> for NatStage {
    #[inline]
    fn process(&mut self, pkt: &mut B, p: &Parsed, now: u64) -> StageVerdict {
        match self.nat.process_parsed(pkt, p, now) {
            NatVerdict::Pass => StageVerdict::Pass,
            NatVerdict::Translated => StageVerdict::Translated,
            // The inside packet is not forwarded: it became the RST.
            NatVerdict::Respond => StageVerdict::Respond(DropReason::NatIdleTimeoutRst),
            NatVerdict::Handoff(w) => StageVerdict::Handoff(w),
            NatVerdict::Drop(r) => {
                self.nat.log_reject(pkt, now);
                StageVerdict::Drop(r)
            }
        }
    }

    fn poll(&mut self, now: u64) {
        self.nat.replication_poll(now);
        self.nat.expire(now);
        self.polls = self.polls.wrapping_add(1);
        if self.polls.is_multiple_of(16) {
            self.published.publish(&self.nat);
        }
    }

    fn publish(&mut self) {
        self.published.publish(&self.nat);
    }
}

impl NatStage {
    #[inline]
    pub fn wants_lookahead(&self) -> bool {
        self.nat.wants_lookahead()
    }

    /// Burst lookahead (see `nat::prefetch`).
    #[inline]
    pub fn prefetch(&mut self, id: usize, tuple: Option<crate::nat::prefetch::Tuple>, deep: bool) {
        self.nat.prefetch(id, tuple, deep);
    }
}

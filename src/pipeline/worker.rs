//! A worker lcore: polls its (port, queue) pairs, runs each packet through the
//! `Pipeline`, transmits through per-port TX buffers drained on a timer (l3fwd), and
//! between bursts polls its control channel (config snapshots, learned neighbors).

use super::counters::{DropReason, SharedCounters};
use super::handoff::{HandoffEndpoints, HandoffOut};
use super::route::Fib;
use super::{Output, Pipeline, PipelineParams};
use crate::pmd::{self, FreeBatch, Mbuf, MbufAlloc, Mempool, RxBurst, TxBuffer, BURST};
use crate::wire::MacAddr;
use crossbeam_channel::{Receiver, Sender};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Control thread -> worker.
pub enum CtlMsg {
    /// A new forwarding snapshot (config reload).
    Fib(Arc<Fib>),
    /// A neighbor another worker learned.
    Neighbor {
        port: u16,
        ip: Ipv4Addr,
        mac: MacAddr,
    },
    /// Live reload of the stages' tenants (see `crate::stages::TenantUpdate`).
    Tenants(Box<crate::stages::TenantUpdate>),
}

/// Worker -> control thread.
#[derive(Debug, Clone, Copy)]
pub enum WorkerEvent {
    Learned {
        worker: usize,
        port: u16,
        ip: Ipv4Addr,
        mac: MacAddr,
    },
}

/// Everything a worker is given at launch.
pub struct WorkerSetup {
    pub index: usize,
    /// (port id, rx queue) pairs this worker polls.
    pub rx: Vec<(u16, u16)>,
    /// The tx queue this worker owns on every port.
    pub tx_queue: u16,
    pub port_ids: Vec<u16>,
    pub pool: Mempool,
    pub fib: Arc<Fib>,
    pub params: PipelineParams,
    pub burst: usize,
    pub tx_drain_us: u32,
    pub idle_sleep_us: u32,
    pub ctl: Receiver<CtlMsg>,
    pub events: Sender<WorkerEvent>,
    pub counters: Arc<SharedCounters>,
    pub stop: Arc<AtomicBool>,
    /// Rings to and from the other workers (return traffic of flows they own).
    pub handoff: HandoffEndpoints<Mbuf>,
    /// Jumbo buffers to linearize chained mbufs into (`mempool.scatter`), else chains
    /// are dropped (`multi_segment`).
    pub linear_pool: Option<Mempool>,
    /// NAT / LB stages for this worker, if configured.
    pub stages: Option<crate::stages::StageChain>,
}

/// TX side of a worker: one TxBuffer per port, dropped packets freed in bulk.
struct TxSide {
    bufs: Vec<Option<TxBuffer>>,
    /// One TxBuffer per other (port, queue) this worker polls: a packet sent back out
    /// of the port it came in on leaves on the tx queue paired with its rx queue, so a
    /// peer polling several queues gets its traffic back spread over them as it sent it
    /// (one queue would fill while the others idle: the 2-queue-pair `tx_full` drops).
    paired: Vec<TxBuffer>,
    /// Index into `paired` for the burst being handled (its rx port and queue).
    lane: Option<usize>,
    free: FreeBatch,
    tx_refused: u64,
    /// Staged per destination worker, enqueued in bulk by `flush`.
    handoff: HandoffOut<Mbuf>,
}

impl Output<Mbuf> for TxSide {
    #[inline]
    fn tx(&mut self, port: u16, pkt: Mbuf) {
        if let Some(b) = self.lane.map(|i| &mut self.paired[i]) {
            if b.port == port {
                self.tx_refused += b.push(pkt).dropped as u64;
                return;
            }
        }
        match self.bufs.get_mut(port as usize).and_then(|b| b.as_mut()) {
            Some(b) => self.tx_refused += b.push(pkt).dropped as u64,
            None => {
                self.tx_refused += 1;
                self.free.push(pkt);
            }
        }
    }
    #[inline]
    fn discard(&mut self, pkt: Mbuf) {
        self.free.push(pkt);
    }
    #[inline]
    fn handoff(&mut self, worker: usize, pkt: Mbuf) -> bool {
        match self.handoff.push(worker, pkt) {
            Ok(()) => true,
            Err(pkt) => {
                self.free.push(pkt);
                false
            }
        }
    }
}

impl TxSide {
    fn flush(&mut self) {
        self.handoff.flush();
        for b in self.bufs.iter_mut().flatten().chain(self.paired.iter_mut()) {
            self.tx_refused += b.flush().dropped as u64;
        }
        self.free.flush();
    }
}

/// A received burst as the pipeline takes it: chained mbufs (scatter rx) are made
/// contiguous here (slow path) or dropped, and counted for the worker to add.
struct Received<'a> {
    burst: &'a mut RxBurst,
    linear_pool: Option<Mempool>,
    linearized: u64,
    multi_segment: u64,
}

impl super::Burst<Mbuf> for Received<'_> {
    #[inline]
    fn prefetch_ahead(&self, k: usize) {
        self.burst.prefetch_ahead(k);
    }
    #[inline]
    fn next_packet(&mut self) -> Option<Mbuf> {
        loop {
            let m = self.burst.take()?;
            if m.nb_segs() == 1 {
                return Some(m);
            }
            match self.linear_pool.and_then(|p| m.linearize(p)) {
                Some(m) => {
                    self.linearized += 1;
                    return Some(m);
                }
                None => self.multi_segment += 1,
            }
        }
    }
}

/// The worker's main loop. Returns 0 when `stop` is set.
pub fn run(setup: WorkerSetup) -> i32 {
    let hz = pmd::tsc_hz();
    let drain_cycles = (hz / 1_000_000).max(1) * setup.tx_drain_us as u64;
    let mut pipeline: Pipeline<Mbuf> = Pipeline::new(setup.fib.clone(), setup.params);
    pipeline.stages = setup.stages;
    let mut inbound = setup.handoff.inbound;
    let mut alloc = MbufAlloc { pool: setup.pool };
    let max_port = setup.port_ids.iter().copied().max().unwrap_or(0) as usize;
    let mut tx = TxSide {
        bufs: (0..=max_port)
            .map(|p| {
                setup
                    .port_ids
                    .contains(&(p as u16))
                    .then(|| TxBuffer::new(p as u16, setup.tx_queue))
            })
            .collect(),
        paired: setup
            .rx
            .iter()
            .filter(|&&(_, q)| q != setup.tx_queue)
            .map(|&(p, q)| TxBuffer::new(p, q))
            .collect(),
        lane: None,
        free: FreeBatch::default(),
        tx_refused: 0,
        handoff: setup.handoff.out,
    };
    let burst_size = setup.burst.clamp(1, BURST);
    let mut burst = RxBurst::default();
    let mut last_drain = pmd::rdtsc();
    // No packet since the stages' counters were last published on an empty poll.
    let mut quiet = false;

    while !setup.stop.load(Ordering::Relaxed) {
        let mut got = 0;
        for &(port, queue) in &setup.rx {
            let n = burst.rx(port, queue, burst_size);
            if n == 0 {
                continue;
            }
            got += n;
            let now = pmd::rdtsc();
            tx.lane = tx
                .paired
                .iter()
                .position(|b| b.port == port && b.queue == queue);
            let mut rx = Received {
                burst: &mut burst,
                linear_pool: setup.linear_pool,
                linearized: 0,
                multi_segment: 0,
            };
            pipeline.handle_burst(&mut rx, port, now, &mut alloc, &mut tx);
            tx.lane = None;
            let (linearized, multi_segment) = (rx.linearized, rx.multi_segment);
            if linearized + multi_segment > 0 {
                pipeline.counters.events.linearized += linearized;
                pipeline.counters.events.rx_packets += multi_segment;
                pipeline.counters.drops[DropReason::MultiSegment as usize] += multi_segment;
            }
            // This burst's handoffs: one bulk enqueue per destination ring.
            tx.handoff.flush();
            if !pipeline.learned.is_empty() {
                pipeline.release_learned(now, &mut alloc, &mut tx);
                for &(port, ip, mac) in &pipeline.learned {
                    let _ = setup.events.try_send(WorkerEvent::Learned {
                        worker: setup.index,
                        port,
                        ip,
                        mac,
                    });
                }
                pipeline.learned.clear();
            }
        }
        if !inbound.is_empty() {
            let now = pmd::rdtsc();
            got += inbound.poll(BURST, |m| {
                pipeline.handle_handoff(m, now, &mut alloc, &mut tx)
            });
        }
        let now = pmd::rdtsc();
        if got == 0 {
            // Nothing more right now: send what waits (latency), then maybe sleep.
            tx.flush();
            if !quiet {
                // The first empty poll after traffic: the stages' counters now.
                quiet = true;
                if let Some(s) = pipeline.stages.as_mut() {
                    super::Stages::<Mbuf>::publish(s);
                }
            }
            if setup.idle_sleep_us > 0 {
                std::thread::sleep(std::time::Duration::from_micros(setup.idle_sleep_us as u64));
            }
        } else {
            quiet = false;
        }
        // Timers, control messages and counters once per drain period, busy or idle (an
        // empty poll costs a ring check, not a publish: issue 11, link profile).
        if now.wrapping_sub(last_drain) >= drain_cycles {
            tx.flush();
            last_drain = now;
            pipeline.poll_timers(now, &mut tx);
            while let Ok(msg) = setup.ctl.try_recv() {
                match msg {
                    CtlMsg::Fib(f) => pipeline.set_fib(f),
                    CtlMsg::Neighbor { port, ip, mac } => {
                        pipeline.neighbor_resolved(port, ip, mac, now, &mut alloc, &mut tx)
                    }
                    CtlMsg::Tenants(mut u) => {
                        if let Some(s) = pipeline.stages.as_mut() {
                            s.apply(&mut u);
                        }
                        // Freed on the control thread.
                        let back = u.back.clone();
                        let _ = back.try_send(u);
                    }
                }
            }
            tx.flush();
            pipeline.counters.drops[DropReason::TxFull as usize] = tx.tx_refused;
            setup.counters.publish(&pipeline.counters);
        }
    }
    pipeline.shutdown(&mut tx);
    if let Some(s) = pipeline.stages.as_mut() {
        super::Stages::<Mbuf>::publish(s);
    }
    tx.flush();
    pipeline.counters.drops[DropReason::TxFull as usize] = tx.tx_refused;
    setup.counters.publish(&pipeline.counters);
    0
}

//! Flow-state replication between flowgate nodes (issue 10; SPEC.md §8; docs/replication.md).
//!
//! Models: VPP's NAT HA (ADD / DEL / REFRESH events over UDP, sequence numbers, ACKs,
//! bounded resends) and conntrackd's FT-FW (reliable UDP, full resync on start).
//!
//! - Workers never block: a flow change becomes one fixed-size `FlowEvent` pushed into the
//!   worker's SPSC ring (`WorkerRepl::emit`); a full ring drops the event and counts it.
//! - The sync thread (`sync`, control side, kernel UDP socket on `replication.listen`)
//!   drains the rings, batches events into datagrams per peer (`wire`), numbers them, and
//!   resends what the peer has not acknowledged (cumulative ACKs, go-back-N, at most
//!   `max_retransmits` times, then counted lost).
//! - Received events go to the worker that owns the flow through its install ring; the
//!   worker installs them between bursts (`NatWorker::replication_poll` for NAT flows,
//!   `LbWorker::replication_poll` for load-balancer pins: each stage has its own rings).
//! - Tenants are named on the wire by `tenant_key` of their id, not by their slot.
//! - A node that starts asks its peers for a full dump (`wire::T_RESYNC`) and reports not
//!   ready (`/healthz`) until the dump's end marker arrived and was installed.

pub mod stats;
pub mod sync;
pub mod wire;

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

/// A flow was created (or is part of a dump).
pub const EV_ADD: u8 = 1;
/// A flow ended on its owner.
pub const EV_DEL: u8 = 2;
/// A flow changed TCP state, or is still alive (refreshed once per timeout period).
pub const EV_REFRESH: u8 = 3;
/// In the stream to a node that asked for a resync: everything before it was the dump.
pub const EV_DUMP_DONE: u8 = 4;
/// A load-balancer flow (DNAT or full NAT) was created (or is part of a dump).
pub const EV_LB_ADD: u8 = 5;
/// A load-balancer flow ended on its owner.
pub const EV_LB_DEL: u8 = 6;
/// A load-balancer flow changed state (closed by a RST) or is still alive.
pub const EV_LB_REFRESH: u8 = 7;
/// Control -> worker only: push every live flow as `EV_ADD`, then `EV_DUMP_END`.
pub const EV_DUMP_REQ: u8 = 0x81;
/// Worker -> control only: this worker's dump is complete.
pub const EV_DUMP_END: u8 = 0x82;

/// Events a worker may have in flight toward the sync thread, and installs toward it.
pub const RING_SIZE: usize = 65_536;

/// One flow change (fixed size, `Copy`: rings hold it by value). NAT flows: the mapping,
/// its state bits (TCP state, reply seen), the TCP window-scale shifts (`scale[d]`, 0x80 set
/// when that side's SYN carried the option) and the ticks left until its deadline.
/// LB flows (`EV_LB_*`): inside = VIP:port, remote = client:port, public = target:port,
/// `lb_ip:lb_port` the full-NAT source toward the target, `flags` the LB's flow flags.
/// `tenant` is the stable key of the gateway or load balancer (`tenant_key` of its `id`),
/// not its slot: peers map it to their own slot, so their config order may differ.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowEvent {
    pub kind: u8,
    pub proto: u8,
    pub state: u8,
    pub flags: u8,
    pub scale: [u8; 2],
    pub tenant: u32,
    pub inside_ip: u32,
    pub remote_ip: u32,
    pub public_ip: u32,
    pub inside_port: u16,
    pub remote_port: u16,
    pub public_port: u16,
    pub lb_port: u16,
    pub lb_ip: u32,
    pub remaining: u32,
}

/// Whether an event is about a load-balancer flow (goes to the LB stage's rings).
pub fn is_lb(kind: u8) -> bool {
    matches!(kind, EV_LB_ADD | EV_LB_DEL | EV_LB_REFRESH)
}

/// The stable wire identity of a tenant: 32-bit FNV-1a of its `id` (the same on every
/// node and build; collisions among gateways, and among load balancers, are refused at
/// config load when `replication:` is set, see `config::replication`).
pub fn tenant_key(id: &str) -> u32 {
    id.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// Why a received event was not installed (counted per worker, per reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// No gateway / load balancer here has the event's tenant key.
    UnknownTenant,
    /// This node maps one side of the flow differently: its own flow wins.
    Conflict,
    /// The flow table is full.
    TableFull,
    /// The tenant here does not have the event's public IP, LB address or listener.
    Mismatch,
    /// Nonsense fields (protocol 0, ...).
    Malformed,
}

impl Reject {
    pub const ALL: [Reject; 5] = [
        Reject::UnknownTenant,
        Reject::Conflict,
        Reject::TableFull,
        Reject::Mismatch,
        Reject::Malformed,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Reject::UnknownTenant => "unknown_tenant",
            Reject::Conflict => "conflict",
            Reject::TableFull => "table_full",
            Reject::Mismatch => "mismatch",
            Reject::Malformed => "malformed",
        }
    }
}

/// A worker's install results (written by the worker between bursts, read on scrape).
#[derive(Default)]
pub struct InstallCounts {
    /// New replicas installed.
    pub installed: AtomicU64,
    /// Events applied to a replica that exists (refresh, state change).
    pub updated: AtomicU64,
    /// Replicas removed by their owner's DEL.
    pub deleted: AtomicU64,
    /// Per `Reject::ALL`.
    pub rejects: [AtomicU64; 5],
}

impl InstallCounts {
    pub fn reject(&self, r: Reject) {
        if let Some(i) = Reject::ALL.iter().position(|&x| x == r) {
            self.rejects[i].fetch_add(1, Ordering::Relaxed);
        }
    }
    pub fn bump(a: &AtomicU64) {
        a.fetch_add(1, Ordering::Relaxed);
    }
}

/// A worker's end of replication: events out, installs (and dump requests) in.
pub struct WorkerRepl {
    pub events: rtrb::Producer<FlowEvent>,
    pub installs: rtrb::Consumer<FlowEvent>,
    /// Events lost to a full ring (read by the sync thread for the metrics).
    pub dropped: Arc<AtomicU64>,
    /// Dump in progress: (gateway, next slot).
    pub dump: Option<(usize, u32)>,
    /// A dump's end marker that did not fit in the ring yet.
    pub dump_end_pending: bool,
    /// Replicas installed, and events refused because this node maps the flow differently.
    pub installed: u64,
    pub conflicts: u64,
    /// Install results by outcome and reject reason (shared with the control end).
    pub counts: Arc<InstallCounts>,
}

impl WorkerRepl {
    /// Never blocks: a full ring drops the event (counted).
    #[inline]
    pub fn emit(&mut self, e: FlowEvent) {
        if self.events.push(e).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The control side's end of one worker's rings.
pub struct ControlEnd {
    pub events: rtrb::Consumer<FlowEvent>,
    pub installs: rtrb::Producer<FlowEvent>,
    pub dropped: Arc<AtomicU64>,
    pub counts: Arc<InstallCounts>,
}

/// The two rings of one worker.
pub fn worker_rings() -> (WorkerRepl, ControlEnd) {
    let (ep, ec) = rtrb::RingBuffer::new(RING_SIZE);
    let (ip, ic) = rtrb::RingBuffer::new(RING_SIZE);
    let dropped = Arc::new(AtomicU64::new(0));
    let counts = Arc::new(InstallCounts::default());
    (
        WorkerRepl {
            events: ep,
            installs: ic,
            dropped: dropped.clone(),
            dump: None,
            dump_end_pending: false,
            installed: 0,
            conflicts: 0,
            counts: counts.clone(),
        },
        ControlEnd {
            events: ec,
            installs: ip,
            dropped,
            counts,
        },
    )
}

/// Readiness gate for `/healthz`: 0 no replication, 1 resync in progress, 2 resynced.
static GATE: AtomicU8 = AtomicU8::new(0);

pub fn set_resyncing() {
    GATE.store(1, Ordering::Relaxed);
}
pub fn set_resynced() {
    GATE.store(2, Ordering::Relaxed);
}

/// Whether this node may take traffic as far as replication is concerned.
pub fn readiness() -> Result<(), String> {
    if GATE.load(Ordering::Relaxed) == 1 {
        return Err("replication: full resync from peers in progress".into());
    }
    Ok(())
}

/// A new peer set from a reload (`replication.peers` may change live), taken by the sync
/// thread on its next loop: kept peers keep their streams, new ones get a full dump of this
/// node's flows, removed ones are dropped (their counters stay, `peer_up` 0).
static PEER_UPDATE: std::sync::Mutex<Option<Vec<std::net::SocketAddr>>> =
    std::sync::Mutex::new(None);

/// Hands the sync thread a new peer set (control thread, on reload).
pub fn update_peers(peers: Vec<std::net::SocketAddr>) {
    if let Ok(mut g) = PEER_UPDATE.lock() {
        *g = Some(peers);
    }
}

/// The pending peer set, if a reload changed it (sync thread).
pub(crate) fn take_peer_update() -> Option<Vec<std::net::SocketAddr>> {
    PEER_UPDATE.lock().ok().and_then(|mut g| g.take())
}

/// Whether two replication sections differ only in `peers` (a reload may apply that).
pub fn only_peers_differ(
    a: &crate::config::ReplicationConfig,
    b: &crate::config::ReplicationConfig,
) -> bool {
    let mut b = b.clone();
    b.peers.clone_from(&a.peers);
    *a == b
}

/// Starts replication for a node (control thread, after the workers): the sync thread on
/// `cfg.replication.listen` with the workers' control ends (NAT stage, LB stage), and its
/// metrics families.
pub fn launch(
    cfg: &crate::config::Config,
    workers: Vec<ControlEnd>,
    lb_workers: Vec<ControlEnd>,
    steering: Option<crate::nat::RssSteering>,
    telemetry: &crate::metrics::Telemetry,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Result<(), String> {
    let Some(r) = cfg.replication.clone() else {
        return Ok(());
    };
    let mut stats = stats::ReplStats::new(&r.peers);
    if let Some(s) = Arc::get_mut(&mut stats) {
        s.workers = workers
            .iter()
            .map(|c| ("nat", c.counts.clone()))
            .chain(lb_workers.iter().map(|c| ("lb", c.counts.clone())))
            .collect();
    }
    let listen = r.listen;
    sync::start(sync::SyncSetup {
        cfg: r,
        workers,
        lb_workers,
        port_ranges: cfg
            .nat_gateways
            .iter()
            .map(|g| {
                (
                    tenant_key(&g.id),
                    (
                        g.port_range.first.clamp(1, 65535) as u16,
                        g.port_range.last.clamp(1, 65535) as u16,
                    ),
                )
            })
            .collect(),
        steering,
        stats: stats.clone(),
        stop,
    })
    .map_err(|e| format!("replication: cannot listen on {listen}: {e}"))?;
    if let Ok(mut c) = telemetry.collectors.lock() {
        c.push(Box::new(move |reg| stats::families(reg, &stats)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The packet-path cost of replication is one ring push per event; printed for the docs
    /// (`cargo test --release --lib event_push_cost -- --nocapture`).
    #[test]
    fn event_push_cost_and_full_ring_counts_drops() {
        let (mut w, mut c) = worker_rings();
        let e = FlowEvent {
            kind: EV_ADD,
            proto: 17,
            ..FlowEvent::default()
        };
        let rounds = 200u32;
        let t0 = std::time::Instant::now();
        for _ in 0..rounds {
            for _ in 0..RING_SIZE / 2 {
                w.emit(e);
            }
            while c.events.pop().is_ok() {}
        }
        let n = u64::from(rounds) * (RING_SIZE / 2) as u64;
        println!(
            "emit + drain: {:.1} ns per event ({} bytes on the wire)",
            t0.elapsed().as_nanos() as f64 / n as f64,
            wire::EVENT_LEN
        );
        for _ in 0..RING_SIZE + 10 {
            w.emit(e);
        }
        assert_eq!(w.dropped.load(Ordering::Relaxed), 10);
        assert_eq!(c.dropped.load(Ordering::Relaxed), 10);
    }

    /// The key is a fixed function of the id (FNV-1a 32): the same on every node and build,
    /// so peers whose configs list tenants in different orders still agree.
    #[test]
    fn tenant_key_is_stable_fnv1a() {
        assert_eq!(tenant_key(""), 0x811c_9dc5);
        assert_eq!(tenant_key("a"), 0xe40c_292c);
        assert_eq!(tenant_key("foobar"), 0xbf9c_f968);
        assert_ne!(tenant_key("web"), tenant_key("gw"));
    }
}

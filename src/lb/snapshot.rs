//! The read-only view of the load balancers that workers forward by: listeners, target
//! groups with their Maglev tables, and the state of every target. Built on the control
//! thread (`control::LbControl`), published through a `SnapshotCell`, swapped in by each
//! worker between bursts. A worker never builds or mutates one.

use super::maglev::MaglevTable;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// State of a target (by its stable id) as the data path sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetState {
    Healthy,
    /// Registered while health checks run and not yet passed them (AWS "initial"): no new
    /// flows (unless its group is failing open); flows it has keep going.
    Initial,
    /// Failed its health check: existing TCP flows get a RST to the client (unless its
    /// group is failing open), no new flows.
    Unhealthy,
    /// Weight 0 or removed from its group: existing flows continue until `until` (in the
    /// workers' clock), then are dropped or reset.
    Draining {
        until: u64,
    },
}

#[derive(Debug, Clone, Copy)]
pub struct TargetRef {
    pub ip: Ipv4Addr,
    pub port: u16,
    /// Stable id (index into `LbSnapshot::targets`), kept across reloads.
    pub id: u32,
}

#[derive(Debug, Clone)]
pub struct GroupView {
    pub name: String,
    pub preserve_client_ip: bool,
    pub connection_termination: bool,
    /// Idle timeouts in seconds.
    pub tcp_idle_s: u32,
    pub udp_idle_s: u32,
    /// Targets new flows may go to; `maglev` indexes this list.
    pub eligible: Vec<TargetRef>,
    pub maglev: MaglevTable,
    /// No eligible target was healthy: all are used (fail open).
    pub failing_open: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct Listener {
    pub vip: Ipv4Addr,
    pub port: u16,
    pub tcp: bool,
    pub udp: bool,
    /// Index into `LbView::groups`.
    pub group: u16,
}

#[derive(Debug, Clone)]
pub struct LbView {
    pub id: String,
    pub vips: Vec<Ipv4Addr>,
    pub lb_addresses: Vec<Ipv4Addr>,
    pub listeners: Vec<Listener>,
    pub groups: Vec<GroupView>,
    /// Live reload: removed from the config, serving its existing flows only.
    pub draining: bool,
    /// VIPs a reload removed (still in `vips`): existing flows only.
    pub draining_vips: Vec<Ipv4Addr>,
    /// Live reload replaced this load balancer, or it replaces one (new `lb_addresses` or
    /// `flows_per_core`): (old slot, new slot). Packets of the old one's flows go to it,
    /// the others to the new one (`reconcile`).
    pub replaced_pair: Option<(usize, usize)>,
}

impl LbView {
    #[inline]
    pub fn listener(&self, vip: Ipv4Addr, port: u16, tcp: bool) -> Option<&Listener> {
        self.listeners
            .iter()
            .find(|l| l.vip == vip && l.port == port && if tcp { l.tcp } else { l.udp })
    }
}

/// Per stable target id: where it is and what state it is in.
#[derive(Debug, Clone)]
pub struct TargetInfo {
    pub lb: u16,
    pub group: String,
    pub ip: Ipv4Addr,
    pub port: u16,
    pub state: TargetState,
    /// Removed from the config (draining until its delay ends; then gone).
    pub removed: bool,
    pub connection_termination: bool,
    /// Its group has no healthy target and uses all (fail open).
    pub failing_open: bool,
}

#[derive(Debug, Clone, Default)]
pub struct LbSnapshot {
    pub generation: u64,
    pub lbs: Vec<LbView>,
    pub targets: Vec<TargetInfo>,
    /// Addresses of every registered target (a quick "may be an LB reply" test).
    pub target_ips: hashbrown::HashSet<u32>,
    /// (ip << 16 | port) of every registered target of a client-IP-preserving group ->
    /// its load balancer: a packet from such an endpoint with no flow is not let out
    /// untranslated.
    pub dnat_endpoints: hashbrown::HashMap<u64, u16>,
}

impl LbSnapshot {
    /// Which load balancer owns `vip` (VIPs are few: a scan beats hashing).
    #[inline]
    pub fn lb_of_vip(&self, ip: Ipv4Addr) -> Option<usize> {
        self.lbs.iter().position(|l| l.vips.contains(&ip))
    }
    #[inline]
    pub fn lb_of_address(&self, ip: Ipv4Addr) -> Option<usize> {
        self.lbs.iter().position(|l| l.lb_addresses.contains(&ip))
    }
    #[inline]
    pub fn state(&self, id: u32) -> Option<TargetState> {
        self.targets.get(id as usize).map(|t| t.state)
    }
}

/// Where the control thread publishes snapshots and workers pick them up: a generation
/// number workers compare with a relaxed load between bursts, and the snapshot behind a
/// mutex the control thread holds only to swap an `Arc`. Workers only `try_lock` (never
/// wait) and only when the generation moved.
pub struct SnapshotCell {
    generation: AtomicU64,
    current: Mutex<Arc<LbSnapshot>>,
}

impl SnapshotCell {
    pub fn new(s: LbSnapshot) -> Self {
        SnapshotCell {
            generation: AtomicU64::new(s.generation),
            current: Mutex::new(Arc::new(s)),
        }
    }
    pub fn publish(&self, s: LbSnapshot) {
        let g = s.generation;
        if let Ok(mut c) = self.current.lock() {
            *c = Arc::new(s);
        }
        self.generation.store(g, Ordering::Release);
    }
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
    /// The snapshot if it is newer than `seen` and the cell is free right now.
    pub fn newer(&self, seen: u64) -> Option<Arc<LbSnapshot>> {
        if self.generation() == seen {
            return None;
        }
        self.current.try_lock().ok().map(|c| c.clone())
    }
    /// The current snapshot (control side).
    pub fn load(&self) -> Arc<LbSnapshot> {
        match self.current.lock() {
            Ok(c) => c.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }
}

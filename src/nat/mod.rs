//! NAT gateway (SPEC.md §2): Hyperplane-style source NAT, one `NatWorker` per worker core.
//!
//! Layout (after VPP's nat44-ed): `in2out` / `out2in` translate, `flow` holds the flow table
//! (one slab entry per connection, indexed by its inside and its outside 5-tuple), `ports`
//! allocates public ports (per-destination uniqueness, per-worker slices, RSS steering),
//! `expiry` is the timer wheel, `tcp_state` the connection tracking, `icmp_error` the
//! RFC 5508 rewriting of quoted headers, `frag` the UDP fragment tracking, `toeplitz` the
//! RSS hash, `counters` the CloudWatch-like per-gateway counters. `rfc4787` (with the
//! mapping and permission tables of `eim`) is the RFC 4787/5382 mode: endpoint-independent
//! mapping, address-dependent filtering, hairpinning.
//!
//! Ownership: every worker owns its flows outright. A flow is created by the worker that
//! sees its first outbound packet (RSS keeps a 5-tuple on one queue), with a port from that
//! worker's slice, so `owner_of(port)` names the worker holding the state for return
//! traffic; out2in on another worker yields `Handoff(owner)`. No locks, no shared state.
//! `rfc4787` gateways add one rule so that an inside endpoint has one mapping across
//! workers: its outbound traffic is first handed to `inside_owner(inside IP)`, which
//! allocates from its own slice (see `rfc4787`).
//!
//! Packet path: no allocation (all tables are preallocated and refuse to grow), no
//! syscalls, no logging, no panics (all buffer access is bounds-checked).

pub mod counters;
pub mod dest_count;
pub mod east_west;
pub mod eim;
pub mod expiry;
pub mod flow;
pub mod flow_index;
pub mod frag;
pub mod icmp_error;
mod in2out;
mod limits;
mod log_hooks;
mod out2in;
pub mod ports;
pub mod prefetch;
pub mod reconcile;
mod replica;
pub mod rfc4787;
pub mod stage;
pub mod tcp_state;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_hardening;
#[cfg(test)]
mod tests_rfc4787;
pub mod toeplitz;
pub mod tw_guard;

pub use counters::GatewayCounters;
pub use ports::RssSteering;

use crate::config::{Config, Ipv4Net, NatGatewayConfig, NatMode};
use crate::packet::PacketBuf;
use crate::pipeline::counters::DropReason;
use crate::wire::{Ipv4Packet, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP};
use dest_count::{Dest, DestCounts};
use eim::Eim;
use expiry::TimerWheel;
use flow::{st, Flow, FlowTable, Key};
use frag::FragTable;
use ports::{PortAllocator, Probe, Rng};
use std::net::Ipv4Addr;
use tw_guard::{GuardKey, TimeWaitGuard};

/// Timer resolution: timeouts are honoured to within 1/16 s (plus `expire` call spacing).
pub const TICKS_PER_S: u64 = 16;
/// 8192 slots of 1/16 s: a 512 s span covers the default 350 s timeouts in one turn.
pub const WHEEL_SLOTS: usize = 8192;
/// Work bound of one `expire` call, per gateway: flows examined, and empty slots stepped.
pub const EXPIRE_FLOW_BUDGET: u32 = 256;
pub const EXPIRE_SLOT_BUDGET: u32 = 256;

/// What the pipeline does with a packet after `NatWorker::process`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatVerdict {
    /// Not NAT traffic (no gateway's inside prefix as source, no public IP as
    /// destination): route unchanged.
    Pass,
    /// Rewritten (in2out or out2in, or both for a hairpinned packet in `rfc4787` mode);
    /// route by the new destination.
    Translated,
    /// Rewritten into a reply toward the original sender (TCP RST for a connection with no
    /// mapping, e.g. after its idle timeout); route it as a packet the appliance originates.
    Respond,
    /// Return traffic owned by another worker: hand the packet to that worker unchanged.
    Handoff(usize),
    Drop(DropReason),
}

/// One gateway's state on one worker.
pub(crate) struct Gateway {
    inside: Vec<Ipv4Net>,
    public_ips: Vec<Ipv4Addr>,
    /// Timeouts in ticks.
    to_tcp_est: u32,
    to_tcp_trans: u32,
    to_udp: u32,
    to_icmp: u32,
    flows: FlowTable,
    wheel: TimerWheel,
    ports: PortAllocator,
    frags: FragTable,
    /// `aws` mode: live mappings per destination (the exact per-destination limit).
    dests: DestCounts,
    /// `aws` mode: recently closed TCP (public endpoint, remote) pairs (TIME_WAIT guard).
    guard: TimeWaitGuard,
    /// `rfc4787` mode: endpoint mappings and filtering permissions (`None` in `aws` mode).
    eim: Option<Eim>,
    /// Destinations whose traffic is not translated (east-west, see `east_west`).
    no_translate: east_west::NoTranslate,
    /// This worker's share of the gateway's tenant limits (see `limits`).
    limiter: crate::limits::TenantLimiter,
    /// Flow-log counters and translation events (`log_hooks`); None when off.
    log: Option<crate::flowlog::GwLog>,
    /// Live reload (see `reconcile`): removed from the config, the gateway serves only the
    /// flows it has; new ones are refused.
    draining: bool,
    /// Per `public_ips` slot, an `ip_st` value: removed IPs drain, then retire.
    ip_state: Vec<u8>,
    /// Some public IP is retired (the per-hit check is skipped otherwise).
    any_retired: bool,
    /// Live reload replaced this gateway (new `mode` or `flows_per_core`): the slot of
    /// the old one, draining on the same public IPs (its flows' ports stay taken).
    pred: Option<usize>,
    /// Replication: the gateway's stable wire key (`repl::tenant_key` of its id).
    repl_key: u32,
}

/// States of a gateway's public IP across reloads. Slots keep their index (per-destination
/// counts and the TIME_WAIT guard are keyed by it).
pub mod ip_st {
    /// Takes new flows.
    pub const ACTIVE: u8 = 0;
    /// Removed by a reload: its flows continue, no new ones (ARP still answered).
    pub const DRAINING: u8 = 1;
    /// Its drain ended: a flow on it is removed when next seen (its slot is kept).
    pub const RETIRED: u8 = 2;
}

impl Gateway {
    fn timeout(&self, proto: u8, state: u8) -> u32 {
        match proto {
            IPPROTO_TCP if tcp_state::is_established(state & st::TCP_MASK) => self.to_tcp_est,
            IPPROTO_TCP => self.to_tcp_trans,
            IPPROTO_UDP => self.to_udp,
            _ => self.to_icmp,
        }
    }

    /// Stores and arms a new flow (deadline from its state) and counts it active; `None`
    /// when the table is full.
    fn store(&mut self, c: &mut GatewayCounters, f: Flow, t: u32) -> Option<u32> {
        self.store_hashed(c, f, t, None)
    }

    /// `store` with the outside key's hash when the caller has it (`hash_key`).
    fn store_hashed(
        &mut self,
        c: &mut GatewayCounters,
        mut f: Flow,
        t: u32,
        h_out: Option<u64>,
    ) -> Option<u32> {
        f.deadline = t.wrapping_add(self.timeout(f.proto, f.state));
        let seed = self.flows.seed();
        let h_in = flow::hash_key(seed, &f.in_key());
        let h_out = h_out.unwrap_or_else(|| flow::hash_key(seed, &f.out_key()));
        let idx = self.flows.insert_hashed(f, h_in, h_out)?;
        self.wheel.arm(&mut self.flows.next, idx, f.deadline);
        if let Some(l) = self.log.as_mut() {
            l.created(idx, &f);
        }
        c.active_connections += 1;
        Some(idx)
    }

    /// Stores and arms a flow with the deadline it carries (a replica); counted active.
    fn store_at(&mut self, c: &mut GatewayCounters, f: Flow) -> Option<u32> {
        let idx = self.flows.insert(f)?;
        self.wheel.arm(&mut self.flows.next, idx, f.deadline);
        c.active_connections += 1;
        Some(idx)
    }

    /// Unindexes a live flow (the wheel frees its slot later), releasing what it holds in
    /// `rfc4787` mode (its mapping reference and its filtering permission).
    /// A TCP connection that closed (not reset) enters the TIME_WAIT guard at `t`.
    fn retire(&mut self, idx: u32, t: u32) {
        let Some(f) = self.flows.get(idx).copied() else {
            return;
        };
        self.retire_flow(idx, &f, t);
    }

    /// `retire` of slot `idx` just read as `f` (expiry has read it already).
    fn retire_flow(&mut self, idx: u32, f: &Flow, t: u32) {
        let f = *f;
        if f.is_dead() {
            return;
        }
        if let Some(l) = self.log.as_mut() {
            l.retired(idx, &f);
        }
        match self.eim.as_mut() {
            Some(e) => e.release_flow(&f, f.state & st::ALLOWS != 0),
            None => {
                let d = self.dest_of(&f);
                self.dests.dec(d);
                if f.proto == IPPROTO_TCP && tcp_state::closed_by_fin(f.state & st::TCP_MASK) {
                    let pip = (d.meta & 0xff) as usize;
                    self.guard.insert(
                        GuardKey::new(pip, f.public_port, f.remote_ip, f.remote_port),
                        t,
                    );
                }
            }
        }
        self.flows.unindex_flow(idx, &f);
    }

    /// Whether an outbound packet belongs to a flow of this gateway (fragments and ICMP
    /// errors are assumed to).
    fn has_inside_flow(&self, frame: &[u8], ip: &Ip) -> bool {
        let l4 = frame.get(14 + ip.hl..14 + ip.len).unwrap_or(&[]);
        let key = match ip.proto {
            _ if ip.is_later_fragment() => return true,
            IPPROTO_TCP | IPPROTO_UDP if l4.len() >= 8 => {
                let (s, d) = udp_ports(frame, ip);
                Key::new(ip.proto, ip.src, s, ip.dst, d)
            }
            IPPROTO_ICMP if l4.len() >= 8 && l4[0] == crate::wire::icmp::ECHO_REQUEST => {
                let id = u16::from_be_bytes([l4[4], l4[5]]);
                Key::new(IPPROTO_ICMP, ip.src, id, ip.dst, 0)
            }
            _ => return true,
        };
        self.flows.lookup_in(&key).is_some()
    }

    /// A public IP whose drain ended (live reload): its flows are removed when seen.
    fn ip_retired(&self, ip: u32) -> bool {
        self.public_ips
            .iter()
            .zip(&self.ip_state)
            .any(|(&p, &s)| s == ip_st::RETIRED && u32::from(p) == ip)
    }

    /// The per-destination count key of a flow.
    fn dest_of(&self, f: &Flow) -> Dest {
        let pip = self
            .public_ips
            .iter()
            .position(|&p| u32::from(p) == f.public_ip)
            .unwrap_or(0);
        Dest::new(pip, f.remote_ip, f.remote_port, f.proto)
    }
}

/// Seconds to timer ticks (at least one second; bounded so wrapping compares hold).
pub(crate) fn ticks(s: u32) -> u32 {
    (u64::from(s.max(1)) * TICKS_PER_S).min(u64::from(u32::MAX / 4)) as u32
}

impl Gateway {
    /// A gateway's tables for one worker, all preallocated (on the control thread when a
    /// reload adds it, see `reconcile`).
    pub(crate) fn build(
        g: &NatGatewayConfig,
        worker: usize,
        n_workers: usize,
        tsc_hz: u64,
        rng: &mut Rng,
    ) -> Gateway {
        let first = g.port_range.first.clamp(1, 65535) as u16;
        let last = g.port_range.last.clamp(1, 65535) as u16;
        Gateway {
            inside: g.inside_prefixes.clone(),
            public_ips: g.public_ips.clone(),
            to_tcp_est: ticks(g.timeouts.tcp_established_s),
            to_tcp_trans: ticks(g.timeouts.tcp_transitory_s),
            to_udp: ticks(g.timeouts.udp_s),
            to_icmp: ticks(g.timeouts.icmp_s),
            flows: FlowTable::with_tcp_slots(
                g.flows_per_core as usize,
                g.tcp_flows_per_core.unwrap_or(g.flows_per_core) as usize,
                rng.next_u64(),
            ),
            wheel: TimerWheel::new(WHEEL_SLOTS, 0),
            ports: PortAllocator::new(first, last, g.connection_limit(), worker, n_workers),
            frags: FragTable::new(rng.next_u64()),
            guard: TimeWaitGuard::new(
                g.flows_per_core as usize,
                if g.mode == NatMode::Aws {
                    ticks(g.tcp_time_wait_guard_s)
                } else {
                    0
                },
                rng.next_u64(),
            ),
            dests: DestCounts::new(
                if g.mode == NatMode::Aws {
                    g.flows_per_core as usize
                } else {
                    1
                },
                rng.next_u64(),
            ),
            eim: (g.mode == NatMode::Rfc4787)
                .then(|| Eim::new(g.flows_per_core as usize, rng.next_u64())),
            no_translate: east_west::NoTranslate::from_gateway(g),
            limiter: crate::limits::TenantLimiter::new(&g.limits, worker, n_workers, tsc_hz),
            log: None,
            draining: false,
            ip_state: vec![ip_st::ACTIVE; g.public_ips.len()],
            any_retired: false,
            pred: None,
            repl_key: crate::repl::tenant_key(&g.id),
        }
    }
}

pub struct NatWorker {
    worker: usize,
    n_workers: usize,
    /// TSC cycles per tick.
    tick_len: u64,
    gws: Vec<Gateway>,
    counters: Vec<GatewayCounters>,
    /// Public IP -> gateway index (built once; lookups never allocate).
    public: hashbrown::HashMap<u32, usize>,
    /// Public IP -> the replaced gateway draining on it too (live reload, `reconcile`).
    shared: hashbrown::HashMap<u32, usize>,
    rng: Rng,
    steering: Option<RssSteering>,
    last_sweep: u32,
    /// Some gateway is in `rfc4787` mode (else inbound packets skip the hairpin check).
    hairpin: bool,
    /// TSC of the packet being processed (the tenant limiters refill from it).
    now: u64,
    /// This worker's end of the flow / translation logs (`log_hooks`); None when off.
    flow_log: Option<crate::flowlog::Tap>,
    /// Some gateway is draining (else the inside match takes the first gateway).
    draining: bool,
    /// Flow-state replication (`replica`), if configured; a replica's grace in ticks.
    repl: Option<Box<crate::repl::WorkerRepl>>,
    repl_grace: u32,
    /// Burst lookahead ring (`prefetch`; boxed to keep the stage enum small). Written per
    /// packet and allocated by the control thread: padded to whole cache-line pairs.
    look: Box<crossbeam_utils::CachePadded<[prefetch::Look; prefetch::LOOK]>>,
    look_pos: usize,
    /// Enough live flows for the lookahead to pay (`prefetch::worth_it`, set by `expire`).
    lookahead: bool,
}

/// The IPv4 facts the translators need, read once.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ip {
    /// Header length and total length.
    hl: usize,
    len: usize,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    ident: u16,
    /// Fragment offset in 8-byte units, and MF.
    frag_off: u16,
    more: bool,
}

impl Ip {
    fn parse(frame: &[u8]) -> Option<Ip> {
        let p = Ipv4Packet::new_checked(frame.get(14..)?).ok()?;
        Some(Ip {
            hl: p.header_len(),
            len: usize::from(p.total_len()),
            src: p.src_addr(),
            dst: p.dst_addr(),
            proto: p.protocol(),
            ident: p.ident(),
            frag_off: p.frag_offset(),
            more: p.more_frags(),
        })
    }
    fn is_fragment(&self) -> bool {
        self.more || self.frag_off != 0
    }
    /// A fragment other than the first: no transport header.
    fn is_later_fragment(&self) -> bool {
        self.frag_off != 0
    }
}

/// The fragment-table key of a fragment travelling in the direction that rewrites `side`.
fn frag_key(ip: &Ip, side: icmp_error::Side) -> frag::FragKey {
    frag::FragKey {
        src: u32::from(ip.src),
        dst: u32::from(ip.dst),
        ident: ip.ident,
        proto: ip.proto,
        dir: match side {
            icmp_error::Side::Src => 0,
            icmp_error::Side::Dst => 1,
        },
    }
}

/// The fragment-table key under which a worker that handed a first fragment to its owner
/// remembers the owner, so the later fragments (no ports) follow it.
fn frag_forward_key(ip: &Ip, side: icmp_error::Side) -> frag::FragKey {
    let mut k = frag_key(ip, side);
    k.dir |= 2;
    k
}

/// Seed of the designated worker of an inside UDP 5-tuple (the same on every worker).
const UDP_OWNER_SEED: u64 = 0x7564_705f_6f77_6e72;

/// The IP header and the IP payload of the frame, mutable.
pub(crate) fn split_l3_l4<'a>(
    frame: &'a mut [u8],
    ip: &Ip,
) -> Option<(&'a mut [u8], &'a mut [u8])> {
    let pkt = frame.get_mut(14..14 + ip.len)?;
    if ip.hl > pkt.len() {
        return None;
    }
    Some(pkt.split_at_mut(ip.hl))
}

/// Source and destination port of a UDP (or TCP: same offsets) datagram (0, 0 when the
/// header is not there; the pipeline validated it on first fragments).
#[inline]
pub(crate) fn udp_ports(frame: &[u8], ip: &Ip) -> (u16, u16) {
    match frame.get(14 + ip.hl..14 + ip.len) {
        Some(l4) if l4.len() >= 8 => {
            let u = crate::wire::UdpPacket::new_unchecked(l4);
            (u.src_port(), u.dst_port())
        }
        _ => (0, 0),
    }
}

impl NatWorker {
    pub fn new(
        gateways: &[NatGatewayConfig],
        worker: usize,
        n_workers: usize,
        tsc_hz: u64,
    ) -> NatWorker {
        let n_workers = n_workers.max(1);
        let worker = worker.min(n_workers - 1);
        let clock = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let mut rng = Rng::new(clock ^ ((worker as u64) << 48) ^ tsc_hz);
        let tick_len = (tsc_hz / TICKS_PER_S).max(1);
        let mut public = hashbrown::HashMap::new();
        let mut gws = Vec::with_capacity(gateways.len());
        for (gi, g) in gateways.iter().enumerate() {
            for ip in &g.public_ips {
                public.entry(u32::from(*ip)).or_insert(gi);
            }
            gws.push(Gateway::build(g, worker, n_workers, tsc_hz, &mut rng));
        }
        NatWorker {
            worker,
            n_workers,
            tick_len,
            hairpin: gws.iter().any(|g| g.eim.is_some()),
            draining: false,
            counters: vec![GatewayCounters::default(); gws.len()],
            gws,
            public,
            shared: hashbrown::HashMap::new(),
            rng,
            steering: None,
            last_sweep: 0,
            now: 0,
            flow_log: None,
            repl: None,
            repl_grace: 0,
            look: Default::default(),
            look_pos: 0,
            lookahead: false,
        }
    }

    /// RSS-aware allocation: when set, new ports are chosen so that the NIC steers return
    /// traffic to this worker's queue (bounded retries, see `ports`).
    pub fn set_rss_steering(&mut self, s: Option<RssSteering>) {
        for g in &mut self.gws {
            // `rfc4787` mappings serve every destination, so their ports stay in handoff
            // mode (steering is only a preference there, see `rfc4787`).
            g.ports.set_steering(s.as_ref().filter(|_| g.eim.is_none()));
        }
        self.steering = s;
    }

    /// Flow deadlines are `u32` ticks compared with wrapping arithmetic (see `expiry`).
    #[inline]
    fn tick(&self, now: u64) -> u32 {
        self.tick64(now) as u32
    }

    /// The full tick: the wheel's cursor never wraps.
    #[inline]
    fn tick64(&self, now: u64) -> u64 {
        now / self.tick_len
    }

    /// Transit IPv4 packet (Ethernet frame at data()[0..]; IPv4 header at 14 already
    /// validated; L4 header validated on first fragments; frame trimmed to 14+total_len).
    /// Called before routing and before the TTL decrement.
    pub fn process<B: PacketBuf>(&mut self, pkt: &mut B, now: u64) -> NatVerdict {
        if self.gws.is_empty() {
            // No gateway (yet: a reload may add some).
            return NatVerdict::Pass;
        }
        let Some(ip) = Ip::parse(pkt.data()) else {
            return NatVerdict::Pass;
        };
        self.process_ip(pkt, ip, now)
    }

    /// `process` for a packet the pipeline's ingress has parsed already (issue 11 item
    /// 1: the IPv4 header is not read a second time).
    #[inline]
    pub fn process_parsed<B: PacketBuf>(
        &mut self,
        pkt: &mut B,
        p: &crate::pipeline::Parsed,
        now: u64,
    ) -> NatVerdict {
        if self.gws.is_empty() {
            return NatVerdict::Pass;
        }
        let ip = Ip {
            hl: usize::from(p.hl),
            len: usize::from(p.total),
            src: p.src,
            dst: p.dst,
            proto: p.proto,
            ident: p.ident,
            frag_off: p.frag_off,
            more: p.more,
        };
        self.process_ip(pkt, ip, now)
    }

    #[inline]
    fn process_ip<B: PacketBuf>(&mut self, pkt: &mut B, ip: Ip, now: u64) -> NatVerdict {
        let t = self.tick(now);
        self.now = now;
        if let Some(&gi) = self.public.get(&u32::from(ip.dst)) {
            let gi = self.replaced_or(gi, pkt.data(), &ip);
            if let Some(gs) = self.hairpin.then(|| self.hairpin_source(ip.src)).flatten() {
                return self.hairpin(gs, gi, pkt, &ip, t);
            }
            return self.out2in(gi, pkt, &ip, t);
        }
        let src = ip.src;
        let found = if self.draining {
            self.inside_gateway_draining(pkt.data(), &ip)
        } else {
            self.gws
                .iter()
                .position(|g| g.inside.iter().any(|p| p.contains(src)))
        };
        if let Some(gi) = found {
            if self.gws[gi].no_translate.keeps_source(ip.dst) {
                return NatVerdict::Pass;
            }
            return self.in2out(gi, pkt, &ip, t);
        }
        NatVerdict::Pass
    }

    /// The gateway translating an outbound packet while some gateway drains (live
    /// reload): the first whose inside prefixes hold the source, except that a draining
    /// one keeps only packets of flows it has; the others go to the next matching gateway,
    /// if any (else to the draining one, which refuses new flows).
    fn inside_gateway_draining(&self, frame: &[u8], ip: &Ip) -> Option<usize> {
        let mut fallback = None;
        for (gi, g) in self.gws.iter().enumerate() {
            if !g.inside.iter().any(|p| p.contains(ip.src)) {
                continue;
            }
            if !g.draining || g.has_inside_flow(frame, ip) {
                return Some(gi);
            }
            fallback.get_or_insert(gi);
        }
        fallback
    }

    /// Adds the routes of `cfg` to where translation does not apply: destinations routed
    /// out of a gateway's inside ports (east-west traffic, see `east_west`). `cfg` is the
    /// config the gateways came from.
    pub fn set_routes(&mut self, cfg: &Config) {
        for (g, gc) in self.gws.iter_mut().zip(&cfg.nat_gateways) {
            g.no_translate = east_west::NoTranslate::from_config(cfg, gc);
        }
    }

    /// Amortized expiry, called between bursts: per gateway at most
    /// `EXPIRE_FLOW_BUDGET` flows and `EXPIRE_SLOT_BUDGET` wheel slots.
    pub fn expire(&mut self, now: u64) {
        self.lookahead = prefetch::worth_it(self.flows());
        let t64 = self.tick64(now);
        let t = t64 as u32;
        let sweep = t != self.last_sweep;
        self.last_sweep = t;
        self.log_poll(now);
        let repl = &mut self.repl;
        for (gi, (g, c)) in self
            .gws
            .iter_mut()
            .zip(self.counters.iter_mut())
            .enumerate()
        {
            let mut slots = EXPIRE_SLOT_BUDGET;
            for _ in 0..EXPIRE_FLOW_BUDGET {
                let Some(idx) = g.wheel.pop_due(&g.flows.next, t64, &mut slots) else {
                    break;
                };
                let Some(f) = g.flows.get(idx).copied() else {
                    continue;
                };
                if f.is_dead() {
                    g.flows.free(idx);
                } else if expiry::is_due(f.deadline, t) {
                    replica::on_expiry(repl, gi, g, idx, crate::repl::EV_DEL, t);
                    g.retire_flow(idx, &f, t);
                    g.flows.free(idx);
                    c.idle_timeouts += 1;
                    c.active_connections = c.active_connections.saturating_sub(1);
                } else {
                    replica::on_expiry(repl, gi, g, idx, crate::repl::EV_REFRESH, t);
                    g.wheel.arm(&mut g.flows.next, idx, f.deadline);
                }
            }
            if sweep {
                g.frags.sweep(t);
            }
            g.guard.expire(t, EXPIRE_FLOW_BUDGET);
        }
    }

    /// How many ticks the slowest timer wheel lags behind `now` (tests: the wheel follows
    /// the clock instead of catching up from tick 0).
    #[cfg(test)]
    pub(crate) fn wheel_lag(&self, now: u64) -> u64 {
        let t = self.tick64(now);
        self.gws
            .iter()
            .map(|g| t.saturating_sub(g.wheel.cursor()))
            .max()
            .unwrap_or(0)
    }

    /// Per gateway, this worker's values.
    pub fn counters(&self) -> &[GatewayCounters] {
        &self.counters
    }

    /// Active flows on this worker (all gateways).
    pub fn flows(&self) -> usize {
        self.gws.iter().map(|g| g.flows.len()).sum()
    }

    pub fn capacity(&self) -> usize {
        self.gws.iter().map(|g| g.flows.capacity()).sum()
    }

    /// Live endpoint-independent mappings on this worker (`rfc4787` gateways).
    pub fn mappings(&self) -> usize {
        self.gws
            .iter()
            .filter_map(|g| g.eim.as_ref())
            .map(|e| e.len())
            .sum()
    }

    /// Which worker handles outbound traffic of `inside` (and holds its mappings) for an
    /// `rfc4787` gateway; `aws` gateways have no such owner (this worker is returned).
    pub fn inside_owner(&self, gateway: usize, inside: Ipv4Addr) -> usize {
        match self.gws.get(gateway) {
            Some(g) if g.eim.is_some() => rfc4787::inside_owner(inside, self.n_workers),
            _ => self.worker,
        }
    }

    /// Which worker owns return traffic to (public ip, public port or ICMP id). A port
    /// outside the gateway's range has no owner: the asking worker handles (drops) it.
    pub fn owner_of(&self, gateway: usize, _public_ip: Ipv4Addr, port: u16) -> usize {
        self.gws
            .get(gateway)
            .and_then(|g| g.ports.owner_of(port))
            .unwrap_or(self.worker)
    }

    /// `aws` gateways with several workers: which worker handles outbound UDP of this
    /// packet, if not this one. Fragments of a datagram are spread by addresses only (RSS
    /// and the kernel's flow hash cannot see ports in fragments), whole datagrams of the
    /// same 5-tuple by 4-tuple, so they may reach different workers; for an inside 5-tuple
    /// to get one mapping, all its outbound UDP goes to one designated worker: the one the
    /// NIC steers the 5-tuple to when the RSS key is known (then whole datagrams need no
    /// handoff), else a fixed hash of the 5-tuple. A worker handing a first fragment over
    /// remembers the owner for the later fragments.
    fn udp_outbound_owner(&mut self, gi: usize, frame: &[u8], ip: &Ip, t: u32) -> Option<usize> {
        if self.n_workers < 2 {
            return None;
        }
        let g = self.gws.get(gi)?;
        if g.eim.is_some() {
            return None;
        }
        if ip.is_later_fragment() {
            let o = g
                .frags
                .lookup(&frag_forward_key(ip, icmp_error::Side::Src), t)?
                as usize;
            return (o != self.worker).then_some(o);
        }
        let (sport, dport) = udp_ports(frame, ip);
        let owner = match self.steering.as_ref().filter(|_| g.ports.steered()) {
            Some(s) => s
                .queue(toeplitz::hash_v4_l4(&s.key, ip.src, ip.dst, sport, dport))
                .and_then(|q| s.queue_of_worker.iter().position(|&w| w == q))?,
            None => {
                let a = (u64::from(u32::from(ip.src)) << 32) | u64::from(u32::from(ip.dst));
                let b = (u64::from(sport) << 16) | u64::from(dport);
                (flow::mix2(UDP_OWNER_SEED, a, b) % self.n_workers as u64) as usize
            }
        };
        if owner == self.worker {
            return None;
        }
        if ip.more {
            self.remember_forward(gi, ip, icmp_error::Side::Src, owner, t);
        }
        Some(owner)
    }

    /// A first fragment is handed to `owner`: its later fragments will be too.
    fn remember_forward(
        &mut self,
        gi: usize,
        ip: &Ip,
        side: icmp_error::Side,
        owner: usize,
        t: u32,
    ) {
        if let Some(g) = self.gws.get_mut(gi) {
            g.frags.insert(frag_forward_key(ip, side), owner as u32, t);
        }
    }

    /// The owner a later fragment must be handed to (its first fragment was), if any.
    fn later_fragment_owner(
        &self,
        gi: usize,
        ip: &Ip,
        side: icmp_error::Side,
        t: u32,
    ) -> Option<usize> {
        let o = self
            .gws
            .get(gi)?
            .frags
            .lookup(&frag_forward_key(ip, side), t)? as usize;
        (o != self.worker).then_some(o)
    }

    /// A fragment after the first (no transport header): translate the address its first
    /// fragment's flow translated — the source going out (`Side::Src`), the destination
    /// coming back (`Side::Dst`) — found by (src, dst, proto, IP ID).
    fn later_fragment<B: PacketBuf>(
        &mut self,
        gi: usize,
        pkt: &mut B,
        ip: &Ip,
        t: u32,
        side: icmp_error::Side,
    ) -> Result<NatVerdict, DropReason> {
        let key = frag_key(ip, side);
        let g = self.gws.get(gi).ok_or(DropReason::NatFragmentNoFlow)?;
        let new = g
            .frags
            .lookup(&key, t)
            .ok_or(DropReason::NatFragmentNoFlow)?;
        let (hdr, _) = split_l3_l4(pkt.data_mut(), ip).ok_or(DropReason::NatFragmentNoFlow)?;
        let mut hdr = Ipv4Packet::new_unchecked(hdr);
        match side {
            icmp_error::Side::Src => hdr.rewrite_src(Ipv4Addr::from(new)),
            icmp_error::Side::Dst => hdr.rewrite_dst(Ipv4Addr::from(new)),
        };
        Ok(NatVerdict::Translated)
    }

    /// A first fragment was translated: its later fragments get `translated` as their new
    /// source (`Side::Src`, going out) or destination (`Side::Dst`, coming back).
    fn remember_first_fragment(
        &mut self,
        gi: usize,
        ip: &Ip,
        side: icmp_error::Side,
        translated: u32,
        t: u32,
    ) {
        if let Some(g) = self.gws.get_mut(gi) {
            g.frags.insert(frag_key(ip, side), translated, t);
        }
    }

    fn drop(&mut self, gi: usize, r: DropReason) -> NatVerdict {
        if let Some(c) = self.counters.get_mut(gi) {
            c.drop(r);
        }
        NatVerdict::Drop(r)
    }

    /// Kills an expired-but-not-yet-collected flow found by a lookup (the wheel frees it).
    fn kill(&mut self, gi: usize, idx: u32, t: u32) {
        let (Some(g), Some(c)) = (self.gws.get_mut(gi), self.counters.get_mut(gi)) else {
            return;
        };
        g.retire(idx, t);
        c.idle_timeouts += 1;
        c.active_connections = c.active_connections.saturating_sub(1);
    }

    /// Live flow by inside key (an expired one is removed first and not returned).
    fn lookup_in(&mut self, gi: usize, k: &Key, t: u32) -> Option<u32> {
        let g = self.gws.get(gi)?;
        let idx = g.flows.lookup_in(k)?;
        self.live_or_kill(gi, idx, t)
    }

    fn lookup_out(&mut self, gi: usize, k: &Key, t: u32) -> Option<u32> {
        let g = self.gws.get(gi)?;
        let idx = g.flows.lookup_out(k)?;
        self.live_or_kill(gi, idx, t)
    }

    fn live_or_kill(&mut self, gi: usize, idx: u32, t: u32) -> Option<u32> {
        let g = self.gws.get(gi)?;
        let f = g.flows.get(idx)?;
        if expiry::is_due(f.deadline, t) || (g.any_retired && g.ip_retired(f.public_ip)) {
            self.kill(gi, idx, t);
            return None;
        }
        Some(idx)
    }

    /// New mapping for an inside endpoint toward a remote: picks a public IP (starting at a
    /// random one, then in turn) and a port, stores and arms the flow. `rfc4787` gateways:
    /// the flow goes on the inside endpoint's mapping (see `rfc4787`).
    fn create(
        &mut self,
        gi: usize,
        proto: u8,
        inside: (Ipv4Addr, u16),
        remote: (Ipv4Addr, u16),
        state: u8,
        t: u32,
    ) -> Result<u32, DropReason> {
        // A draining gateway refuses before its limiter is charged.
        if self.gws.get(gi).is_some_and(|g| g.draining) {
            return Err(DropReason::NatDraining);
        }
        self.limit_new_flow(gi)?;
        let NatWorker {
            gws,
            counters,
            rng,
            steering,
            worker,
            ..
        } = self;
        let (g, pred) = reconcile::with_pred(gws, gi);
        let (Some(g), Some(c)) = (g, counters.get_mut(gi)) else {
            return Err(DropReason::NatNoMapping);
        };
        c.connection_attempts += 1;
        if g.flows.len() >= g.flows.capacity() {
            return Err(DropReason::NatTableFull);
        }
        if g.eim.is_some() {
            return g.create_eim(
                c,
                rng,
                steering.as_ref(),
                *worker,
                proto,
                inside,
                remote,
                state,
                t,
            );
        }
        let n_ips = g.public_ips.len() as u32;
        // One public IP (the common case): no random start to draw.
        let start = if n_ips > 1 { rng.below(n_ips) } else { 0 };
        let steered = steering.is_some() && proto != IPPROTO_ICMP;
        let mut chosen = None;
        for i in 0..n_ips {
            let k = start + i;
            let pi = (if k >= n_ips { k - n_ips } else { k }) as usize;
            let Some(&pip) = g.public_ips.get(pi) else {
                continue;
            };
            if g.ip_state.get(pi) != Some(&ip_st::ACTIVE) {
                // Draining or retired (live reload): no new flows on it.
                continue;
            }
            let dest = Dest::new(pi, u32::from(remote.0), remote.1, proto);
            let h_dest = g.dests.hash(&dest);
            let flows = &g.flows;
            let seed = flows.seed();
            let steer = steering.as_ref().filter(|_| steered);
            let w = *worker;
            let guard = &g.guard;
            let tcp = proto == IPPROTO_TCP;
            // The last candidate's outside-key hash: the chosen port is almost always the
            // last one probed, and its flow insert then need not hash the key again.
            let mut last = (0u16, 0u64);
            let in_use = g.dests.get_hashed(h_dest, &dest);
            let port = g.ports.allocate(rng, steered, in_use, |p| {
                let k = Key::new(proto, pip, p, remote.0, remote.1);
                let h = flow::hash_key(seed, &k);
                last = (p, h);
                let free = flows.lookup_out_hashed(&k, h).is_none()
                    && pred.is_none_or(|o| o.flows.lookup_out(&k).is_none())
                    && steer.is_none_or(|s| s.steers_to(w, true, remote.0, remote.1, pip, p));
                if !free {
                    Probe::Taken
                } else if let Some(age) = tcp
                    .then(|| guard.age(&GuardKey::new(pi, p, dest.remote_ip, remote.1), t))
                    .flatten()
                {
                    Probe::Guarded(age)
                } else {
                    Probe::Free
                }
            });
            if let Some((p, reused)) = port {
                let h_out = (last.0 == p).then_some(last.1);
                chosen = Some((pi, pip, p, dest, reused, h_dest, h_out, in_use));
                break;
            }
        }
        let Some((pi, pip, pport, dest, reused, h_dest, h_out, in_use)) = chosen else {
            c.port_allocation_errors += 1;
            return Err(DropReason::NatPortExhausted);
        };
        if reused {
            g.guard
                .remove(&GuardKey::new(pi, pport, dest.remote_ip, remote.1));
            c.drop(DropReason::NatTimeWaitReuse);
        }
        let f = Flow {
            inside_ip: u32::from(inside.0),
            remote_ip: u32::from(remote.0),
            public_ip: u32::from(pip),
            inside_port: inside.1,
            remote_port: remote.1,
            public_port: pport,
            proto,
            state,
            ..Flow::default()
        };
        let idx = g
            .store_hashed(c, f, t, h_out)
            .ok_or(DropReason::NatTableFull)?;
        // Nothing touched the counts since `in_use` was read.
        g.dests.inc_after_get(h_dest, dest, in_use);
        Ok(idx)
    }

    /// Window tracking of a TCP segment on flow `idx` (see `tcp_state`): updates the state
    /// and counts a completed handshake, or refuses the segment.
    fn track_tcp(
        &mut self,
        gi: usize,
        idx: u32,
        seg: &tcp_state::Seg,
        from_inside: bool,
    ) -> Result<(), DropReason> {
        let (Some(g), Some(c)) = (self.gws.get_mut(gi), self.counters.get_mut(gi)) else {
            return Err(DropReason::NatNoMapping);
        };
        let (f, win) = g.flows.get_tcp_mut(idx).ok_or(DropReason::NatNoMapping)?;
        let (ns, established) = tcp_state::track(win, f.state & st::TCP_MASK, from_inside, seg)
            .map_err(|_| DropReason::NatTcpOutOfWindow)?;
        let changed = f.state & st::TCP_MASK != ns;
        f.state = (f.state & !st::TCP_MASK) | ns;
        if !from_inside {
            f.state |= st::SEEN_REPLY;
        }
        if established {
            c.connections_established += 1;
        }
        if changed && self.repl.is_some() {
            self.replicate(gi, idx, crate::repl::EV_REFRESH);
        }
        Ok(())
    }

    /// A new connection on the 5-tuple of a closed one: its tracking starts over.
    fn reopen_tcp(&mut self, gi: usize, idx: u32) {
        if let Some((f, win)) = self.gws.get_mut(gi).and_then(|g| g.flows.get_tcp_mut(idx)) {
            f.state = (f.state & !(st::TCP_MASK | st::SEEN_REPLY)) | tcp_state::SYN_SENT;
            tcp_state::reset(win);
        }
    }

    /// Rewrites one side of the packet to the flow's other endpoint: the source to the
    /// public one going out (`Side::Src`), the destination to the inside one coming back
    /// (`Side::Dst`); address, port (echo identifier) and checksums (RFC 1624).
    fn translate<B: PacketBuf>(
        &mut self,
        gi: usize,
        idx: u32,
        pkt: &mut B,
        ip: &Ip,
        side: icmp_error::Side,
    ) -> Result<NatVerdict, DropReason> {
        use crate::wire::{IcmpPacket, TcpPacket, UdpPacket};
        let f = self.flow(gi, idx).ok_or(DropReason::NatNoMapping)?;
        let (hdr, l4) = split_l3_l4(pkt.data_mut(), ip).ok_or(DropReason::NatNoMapping)?;
        let mut h = Ipv4Packet::new_unchecked(hdr);
        let src = side == icmp_error::Side::Src;
        if let Some(l) = self.gws.get_mut(gi).and_then(|g| g.log.as_mut()) {
            l.count(idx, &f, src, ip.len);
        }
        let (addr, port, old) = if src {
            (f.public(), f.public_port, h.rewrite_src(f.public()))
        } else {
            (f.inside(), f.inside_port, h.rewrite_dst(f.inside()))
        };
        match ip.proto {
            IPPROTO_TCP => {
                let mut p = TcpPacket::new_unchecked(l4);
                if src {
                    p.rewrite_src_port(port);
                } else {
                    p.rewrite_dst_port(port);
                }
                p.adjust_checksum_for_addr(old, addr);
            }
            IPPROTO_UDP => {
                let mut p = UdpPacket::new_unchecked(l4);
                if src {
                    p.rewrite_src_port(port);
                } else {
                    p.rewrite_dst_port(port);
                }
                p.adjust_checksum_for_addr(old, addr);
            }
            _ => {
                IcmpPacket::new_unchecked(l4).rewrite_echo_ident(port);
            }
        }
        Ok(NatVerdict::Translated)
    }

    /// Refreshes a flow's deadline for its (possibly new) state.
    fn touch(&mut self, gi: usize, idx: u32, t: u32) {
        let Some(g) = self.gws.get_mut(gi) else {
            return;
        };
        let Some(f) = g.flows.get(idx) else {
            return;
        };
        let d = t.wrapping_add(g.timeout(f.proto, f.state));
        if let Some(f) = g.flows.get_mut(idx) {
            f.deadline = d;
            // A replica carrying traffic here is this node's flow from now on.
            f.state &= !st::REPLICA;
        }
    }

    fn flow(&self, gi: usize, idx: u32) -> Option<Flow> {
        self.gws.get(gi)?.flows.get(idx).copied()
    }

    fn flow_mut(&mut self, gi: usize, idx: u32) -> Option<&mut Flow> {
        self.gws.get_mut(gi)?.flows.get_mut(idx)
    }
}

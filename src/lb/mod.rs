//! Network load balancer (SPEC.md §3, issue 7): AWS NLB behaviour on a weighted Maglev
//! core. See docs/lb.md for the picture.
//!
//! - `control` (control thread): target registry with stable ids, health and draining
//!   state, snapshot building (Maglev tables) and publication; SIGHUP reload.
//! - `snapshot`: what workers forward by, swapped between bursts.
//! - this module (`LbWorker`, one per worker): per-LB flow table (the NAT's `FlowTable`,
//!   `TimerWheel` and `PortAllocator`), target choice, DNAT / full NAT, RSTs.
//! - `stage`: the pipeline stage and the counters it publishes; `metrics`: the families.
//!
//! Flow entry (the NAT's 32-byte `Flow`): `inside` = VIP:port, `remote` = client:port,
//! `public` = target:port. Its inside key is what a client packet carries (dst VIP, src
//! client); its outside key what a DNAT reply carries (src target, dst client). Full-NAT
//! replies (target -> LB address) are found through `fnat`, an index of this module over
//! the same slots, and `meta` (parallel to the slots) holds what `Flow` has no room for.
//!
//! Packet path: no allocation, no locks, no syscalls, no panics.

pub mod control;
pub mod counters;
pub mod health;
pub mod health_wiring;
pub mod log_hooks;
pub mod maglev;
pub mod metrics;
pub mod prefetch;
pub mod reconcile;
pub mod replica;
pub mod snapshot;
pub mod stage;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_limits;
#[cfg(test)]
mod tests_reload;

use crate::config::LoadBalancerConfig;
use crate::nat::dest_count::{Dest, DestCounts};
use crate::nat::expiry::{self, TimerWheel};
use crate::nat::flow::{hash_key, Flow, FlowTable, Key};
use crate::nat::flow_index::FlowIndex;
use crate::nat::icmp_error::{self, Side};
use crate::nat::ports::{PortAllocator, Probe, Rng};
use crate::packet::PacketBuf;
use crate::pipeline::counters::DropReason;
use crate::pipeline::StageVerdict;
use crate::wire::{
    IcmpPacket, Ipv4Packet, TcpPacket, UdpPacket, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP,
};
use counters::{LbCounters, TargetCounters};
use snapshot::{LbSnapshot, SnapshotCell, TargetState};
use std::net::Ipv4Addr;
use std::sync::Arc;

pub const TICKS_PER_S: u64 = 16;
const WHEEL_SLOTS: usize = 8192;
const EXPIRE_FLOW_BUDGET: u32 = 256;
const EXPIRE_SLOT_BUDGET: u32 = 256;
/// After a client or target RST the flow lingers this long (late segments still pass).
const CLOSE_LINGER_S: u32 = 2;
/// Ports of LB addresses handed out to full-NAT flows (55,000 per target endpoint).
const FNAT_FIRST_PORT: u16 = 1024;
const FNAT_PER_TARGET: u32 = 55_000;

const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;

/// `Meta::flags`.
mod mf {
    pub const FULLNAT: u8 = 1;
    /// Removed by its idle timeout: kept only so that late packets get a RST.
    pub const TOMB: u8 = 2;
    /// A RST was seen: expires without a tombstone.
    pub const CLOSED: u8 = 4;
    /// Installed from a peer (`replica`) and not touched by a packet here since.
    pub const REPLICA: u8 = 8;
}

/// What `Flow` has no room for, one per flow slot.
#[derive(Debug, Clone, Copy, Default)]
struct Meta {
    target: u32,
    lb_ip: u32,
    lb_port: u16,
    flags: u8,
    /// Index of `lb_ip` among the LB addresses (full NAT's per-destination count).
    lb_ai: u8,
    /// Idle timeout in ticks.
    idle: u32,
}

/// One load balancer's flows on one worker.
struct LbState {
    flows: FlowTable,
    wheel: TimerWheel,
    ports: PortAllocator,
    meta: Vec<Meta>,
    /// Full-NAT reply key -> slot: the NAT's bucketised cuckoo index (issue 11 item 2).
    fnat: FlowIndex,
    /// Live full-NAT flows per (LB address, target endpoint): the exact 55,000 limit.
    dests: DestCounts,
    seed: u64,
    /// This worker's share of the load balancer's tenant limits (`crate::limits`).
    limiter: crate::limits::TenantLimiter,
    /// Flow-log counters and translation events (`log_hooks`); `None`: logs off.
    log: Option<log_hooks::LbLog>,
}

fn fnat_key(f: &Flow, m: &Meta) -> Key {
    Key {
        proto: f.proto,
        local_ip: m.lb_ip,
        local_port: m.lb_port,
        remote_ip: f.public_ip,
        remote_port: f.public_port,
    }
}

/// The full-NAT destination a flow counts against: (LB address index, target endpoint).
fn fnat_dest(f: &Flow, m: &Meta) -> Dest {
    Dest::new(m.lb_ai as usize, f.public_ip, f.public_port, f.proto)
}

impl LbState {
    /// One load balancer's tables for one worker, preallocated (on the control thread
    /// when a reload adds the load balancer, see `reconcile`).
    fn build(
        c: &LoadBalancerConfig,
        worker: usize,
        n_workers: usize,
        tsc_hz: u64,
        rng: &mut Rng,
    ) -> LbState {
        let flows = FlowTable::new(c.flows_per_core as usize, rng.next_u64());
        let cap = flows.capacity();
        LbState {
            flows,
            wheel: TimerWheel::new(WHEEL_SLOTS, 0),
            ports: PortAllocator::new(FNAT_FIRST_PORT, 65535, FNAT_PER_TARGET, worker, n_workers),
            dests: DestCounts::new(cap, rng.next_u64()),
            meta: vec![Meta::default(); cap],
            fnat: FlowIndex::new(cap),
            seed: rng.next_u64(),
            limiter: crate::limits::TenantLimiter::new(&c.limits, worker, n_workers, tsc_hz),
            log: None,
        }
    }

    fn fnat_lookup(&self, k: &Key) -> Option<u32> {
        let (flows, meta) = (&self.flows, &self.meta);
        self.fnat.find(hash_key(self.seed, k), |i| {
            match (flows.get(i), meta.get(i as usize)) {
                (Some(f), Some(m)) => !f.is_dead() && fnat_key(f, m) == *k,
                _ => false,
            }
        })
    }

    /// Indexes slot `idx` by its full-NAT reply key; `false` when the index found no room
    /// (a cuckoo path too long: rare below capacity), nothing changed then.
    #[must_use]
    fn fnat_insert(&mut self, idx: u32) -> bool {
        let (flows, meta, seed) = (&self.flows, &self.meta, self.seed);
        let (Some(f), Some(m)) = (flows.get(idx), meta.get(idx as usize)) else {
            return false;
        };
        let h = hash_key(seed, &fnat_key(f, m));
        self.fnat
            .insert(h, idx, |i| match (flows.get(i), meta.get(i as usize)) {
                (Some(f), Some(m)) => hash_key(seed, &fnat_key(f, m)),
                _ => 0,
            })
    }

    fn fnat_remove(&mut self, idx: u32) {
        let (Some(f), Some(m)) = (self.flows.get(idx), self.meta.get(idx as usize)) else {
            return;
        };
        let h = hash_key(self.seed, &fnat_key(f, m));
        self.fnat.remove(h, idx);
    }
}

/// IPv4 facts read once per packet.
#[derive(Debug, Clone, Copy)]
struct Ip {
    hl: usize,
    len: usize,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    fragment: bool,
}

/// What the transport header says.
#[derive(Debug, Clone, Copy)]
struct L4 {
    sport: u16,
    dport: u16,
    flags: u8,
}

fn parse_l4(frame: &[u8], ip: &Ip) -> Option<L4> {
    let l4 = frame.get(14 + ip.hl..14 + ip.len)?;
    match ip.proto {
        IPPROTO_TCP => {
            let t = TcpPacket::new_checked(l4).ok()?;
            Some(L4 {
                sport: t.src_port(),
                dport: t.dst_port(),
                flags: t.flags(),
            })
        }
        IPPROTO_UDP => {
            let u = UdpPacket::new_checked(l4).ok()?;
            Some(L4 {
                sport: u.src_port(),
                dport: u.dst_port(),
                flags: 0,
            })
        }
        _ => None,
    }
}

/// Rewrites source and/or destination endpoints of a TCP/UDP packet, fixing checksums.
fn rewrite<B: PacketBuf>(
    pkt: &mut B,
    ip: &Ip,
    src: Option<(Ipv4Addr, u16)>,
    dst: Option<(Ipv4Addr, u16)>,
) -> bool {
    let Some(p) = pkt.data_mut().get_mut(14..14 + ip.len) else {
        return false;
    };
    if ip.hl > p.len() {
        return false;
    }
    let (hdr, l4) = p.split_at_mut(ip.hl);
    let mut h = Ipv4Packet::new_unchecked(hdr);
    let old_src = src.map(|(a, _)| h.rewrite_src(a));
    let old_dst = dst.map(|(a, _)| h.rewrite_dst(a));
    match ip.proto {
        IPPROTO_TCP => {
            let mut t = TcpPacket::new_unchecked(l4);
            if let (Some((a, port)), Some(old)) = (src, old_src) {
                t.rewrite_src_port(port);
                t.adjust_checksum_for_addr(old, a);
            }
            if let (Some((a, port)), Some(old)) = (dst, old_dst) {
                t.rewrite_dst_port(port);
                t.adjust_checksum_for_addr(old, a);
            }
        }
        IPPROTO_UDP => {
            let mut u = UdpPacket::new_unchecked(l4);
            if let (Some((a, port)), Some(old)) = (src, old_src) {
                u.rewrite_src_port(port);
                u.adjust_checksum_for_addr(old, a);
            }
            if let (Some((a, port)), Some(old)) = (dst, old_dst) {
                u.rewrite_dst_port(port);
                u.adjust_checksum_for_addr(old, a);
            }
        }
        _ => return false,
    }
    true
}

/// `rewrite` of the destination only (a DNAT client packet), without its branches on
/// which sides change. `false` (nothing written) when the frame is too short or not
/// TCP/UDP.
#[inline]
fn rewrite_dst<B: PacketBuf>(pkt: &mut B, ip: &Ip, addr: Ipv4Addr, port: u16) -> bool {
    let tcp = match ip.proto {
        IPPROTO_TCP => true,
        IPPROTO_UDP => false,
        _ => return false,
    };
    let Some(p) = pkt.data_mut().get_mut(14..14 + ip.len) else {
        return false;
    };
    if ip.hl > p.len() {
        return false;
    }
    let (hdr, l4) = p.split_at_mut(ip.hl);
    let old = Ipv4Packet::new_unchecked(hdr).rewrite_dst(addr);
    if tcp {
        let mut t = TcpPacket::new_unchecked(l4);
        t.rewrite_dst_port(port);
        t.adjust_checksum_for_addr(old, addr);
    } else {
        let mut u = UdpPacket::new_unchecked(l4);
        u.rewrite_dst_port(port);
        u.adjust_checksum_for_addr(old, addr);
    }
    true
}

/// The worker owning the flows of client endpoint `ip:port` when there are several: the
/// client endpoint is the one thing both directions of a DNAT flow carry (source of the
/// client's packets, destination of the target's), so both find the owner without shared
/// state. Full-NAT replies find it through the LB port instead (its owner allocated it).
#[inline]
fn client_owner(ip: Ipv4Addr, port: u16, n_workers: usize) -> usize {
    let h = crate::nat::flow::mix2(
        0x6c62_6f77_6e65_7221,
        u64::from(u32::from(ip)),
        u64::from(port),
    );
    (((h >> 32) * n_workers as u64) >> 32) as usize
}

/// Which side of a flow a packet came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    Client,
    Target,
}

pub struct LbWorker {
    worker: usize,
    n_workers: usize,
    tick_len: u64,
    cell: Arc<SnapshotCell>,
    /// Taken out while a packet is processed (no refcount traffic per packet).
    snap: Option<Arc<LbSnapshot>>,
    lbs: Vec<LbState>,
    counters: Vec<LbCounters>,
    /// By stable target id (grown when a snapshot brings new ids).
    targets: Vec<TargetCounters>,
    rng: Rng,
    /// Flow-state replication of the pins (`replica`), if configured.
    repl: Option<Box<replica::LbRepl>>,
    /// The worker's end of the logs (`log_hooks`); `None`: logs off.
    flow_log: Option<log_hooks::LbTap>,
    /// Burst lookahead (`prefetch`).
    look: prefetch::LbLook,
}

impl LbWorker {
    pub fn new(
        cfg: &[LoadBalancerConfig],
        cell: Arc<SnapshotCell>,
        worker: usize,
        n_workers: usize,
        tsc_hz: u64,
    ) -> LbWorker {
        let n_workers = n_workers.max(1);
        let worker = worker.min(n_workers - 1);
        let clock = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let mut rng = Rng::new(clock ^ ((worker as u64) << 40) ^ 0x1b);
        let lbs = cfg
            .iter()
            .map(|l| LbState::build(l, worker, n_workers, tsc_hz, &mut rng))
            .collect();
        let snap = cell.load();
        let mut w = LbWorker {
            worker,
            n_workers,
            tick_len: (tsc_hz / TICKS_PER_S).max(1),
            cell,
            targets: vec![TargetCounters::default(); snap.targets.len()],
            snap: Some(snap),
            lbs,
            counters: vec![LbCounters::default(); cfg.len()],
            rng,
            repl: None,
            flow_log: None,
            look: prefetch::LbLook::default(),
        };
        w.sync_counters();
        w
    }

    fn sync_counters(&mut self) {
        let n = self.snap.as_ref().map_or(0, |s| s.targets.len());
        if self.targets.len() < n {
            self.targets.resize(n, TargetCounters::default());
        }
    }

    /// Between bursts: take a newer snapshot if one was published.
    pub fn refresh(&mut self) -> bool {
        let seen = self.snap.as_ref().map_or(0, |s| s.generation);
        match self.cell.newer(seen) {
            // A reload added load balancers: wait for their tables (`reconcile`).
            Some(s) if s.lbs.len() > self.lbs.len() => false,
            Some(s) => {
                self.snap = Some(s);
                self.sync_counters();
                true
            }
            None => false,
        }
    }

    pub fn snapshot(&self) -> Option<&Arc<LbSnapshot>> {
        self.snap.as_ref()
    }
    pub fn counters(&self) -> &[LbCounters] {
        &self.counters
    }
    pub fn target_counters(&self) -> &[TargetCounters] {
        &self.targets
    }
    pub fn flows(&self) -> usize {
        self.lbs.iter().map(|l| l.flows.len()).sum()
    }
    pub fn capacity(&self) -> usize {
        self.lbs.iter().map(|l| l.flows.capacity()).sum()
    }

    #[inline]
    fn tick(&self, now: u64) -> u32 {
        (now / self.tick_len) as u32
    }

    /// Transit IPv4 packet (validated by the pipeline's ingress; frame trimmed to the IP
    /// length). `Pass` when it is not load balancer traffic.
    #[inline]
    pub fn process<B: PacketBuf>(&mut self, pkt: &mut B, now: u64) -> StageVerdict {
        let ip = {
            let Some(p) = pkt
                .data()
                .get(14..)
                .and_then(|d| Ipv4Packet::new_checked(d).ok())
            else {
                return StageVerdict::Pass;
            };
            Ip {
                hl: p.header_len(),
                len: usize::from(p.total_len()),
                src: p.src_addr(),
                dst: p.dst_addr(),
                proto: p.protocol(),
                fragment: p.is_fragment(),
            }
        };
        self.process_ip(pkt, &ip, now)
    }

    /// `process` for a packet the pipeline's ingress has parsed already (issue 11 item
    /// 1: the IPv4 header is not read a second time).
    #[inline]
    pub fn process_parsed<B: PacketBuf>(
        &mut self,
        pkt: &mut B,
        p: &crate::pipeline::Parsed,
        now: u64,
    ) -> StageVerdict {
        let ip = Ip {
            hl: usize::from(p.hl),
            len: usize::from(p.total),
            src: p.src,
            dst: p.dst,
            proto: p.proto,
            fragment: p.is_fragment(),
        };
        self.process_ip(pkt, &ip, now)
    }

    #[inline]
    fn process_ip<B: PacketBuf>(&mut self, pkt: &mut B, ip: &Ip, now: u64) -> StageVerdict {
        let Some(snap) = self.snap.take() else {
            return StageVerdict::Pass;
        };
        let v = self.classify(&snap, pkt, ip, now);
        self.snap = Some(snap);
        v
    }

    fn classify<B: PacketBuf>(
        &mut self,
        snap: &LbSnapshot,
        pkt: &mut B,
        ip: &Ip,
        now: u64,
    ) -> StageVerdict {
        if snap.lbs.is_empty() {
            return StageVerdict::Pass;
        }
        let ip = *ip;
        if let Some(li) = snap.lb_of_vip(ip.dst) {
            let li = self.replaced_or_vip(snap, li, pkt.data(), &ip);
            let r = self.client_packet(snap, li, pkt, &ip, now);
            return self.verdict(li, r);
        }
        if let Some(li) = snap.lb_of_address(ip.dst) {
            let li = self.replaced_or_address(snap, li, pkt.data(), &ip);
            let r = self.fnat_reply(snap, li, pkt, &ip, now);
            return self.verdict(li, r);
        }
        if ip.proto == IPPROTO_ICMP {
            return self.icmp_toward_client(pkt, &ip);
        }
        if !snap.target_ips.contains(&u32::from(ip.src)) || ip.fragment {
            return StageVerdict::Pass;
        }
        self.dnat_reply(snap, pkt, &ip, now)
    }

    fn verdict(&mut self, li: usize, r: Result<StageVerdict, DropReason>) -> StageVerdict {
        match r {
            Ok(v) => {
                if let (StageVerdict::Respond(reason), Some(c)) = (v, self.counters.get_mut(li)) {
                    c.tcp_elb_resets += 1;
                    c.drop(reason);
                }
                v
            }
            Err(reason) => {
                if let Some(c) = self.counters.get_mut(li) {
                    c.drop(reason);
                }
                StageVerdict::Drop(reason)
            }
        }
    }

    /// The tenant limits (`crate::limits`): one packet of load balancer `li` (a client
    /// packet, or a full-NAT reply), charged by the worker that owns its flow, after the
    /// handoff decision and before any table work.
    #[inline]
    fn limit_packet(&mut self, li: usize, now: u64) -> Result<(), DropReason> {
        match self.lbs.get_mut(li) {
            Some(st) => st.limiter.packet(now).map_err(|r| r.lb()),
            None => Ok(()),
        }
    }

    /// A new flow of load balancer `li`: its concurrent-flow share, then its new flows/s.
    #[inline]
    fn limit_new_flow(&mut self, li: usize, now: u64) -> Result<(), DropReason> {
        let live = self.counters.get(li).map_or(0, |c| c.active_flows);
        match self.lbs.get_mut(li) {
            Some(st) => st.limiter.new_flow(live, now).map_err(|r| r.lb()),
            None => Ok(()),
        }
    }

    /// A packet to a VIP.
    fn client_packet<B: PacketBuf>(
        &mut self,
        snap: &LbSnapshot,
        li: usize,
        pkt: &mut B,
        ip: &Ip,
        now: u64,
    ) -> Result<StageVerdict, DropReason> {
        if ip.fragment {
            return Err(DropReason::LbFragment);
        }
        if ip.proto == IPPROTO_ICMP {
            return self.icmp_to_vip(li, pkt, ip);
        }
        let l4 = parse_l4(pkt.data(), ip).ok_or(DropReason::LbUnsupportedProtocol)?;
        if self.n_workers > 1 {
            let o = client_owner(ip.src, l4.sport, self.n_workers);
            if o != self.worker {
                return Ok(StageVerdict::Handoff(o));
            }
        }
        self.limit_packet(li, now)?;
        let tcp = ip.proto == IPPROTO_TCP;
        let view = snap.lbs.get(li).ok_or(DropReason::LbNoListener)?;
        let listener = *view
            .listener(ip.dst, l4.dport, tcp)
            .ok_or(DropReason::LbNoListener)?;
        let draining = view.draining || view.draining_vips.contains(&ip.dst);
        let t = self.tick(now);
        let key = Key::new(ip.proto, ip.dst, l4.dport, ip.src, l4.sport);
        let syn = tcp && l4.flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
        if let Some(idx) = self.lbs[li].flows.lookup_in(&key) {
            if self.client_hit(snap, li, idx, pkt, ip, &l4, t) {
                return Ok(StageVerdict::Translated);
            }
            let m = self.check_idle(li, idx, t);
            if m.flags & mf::TOMB != 0 {
                self.retire(li, idx);
                if tcp && !syn {
                    return self.rst(pkt, ip, DropReason::LbIdleTimeoutRst);
                }
            } else {
                match self.target_check(snap, li, idx, m, Dir::Client, tcp, now) {
                    Some(Ok(v)) => {
                        self.forward(li, idx, pkt, ip, &l4, Dir::Client, t)?;
                        return Ok(v);
                    }
                    Some(Err(reason)) => {
                        if reason == DropReason::LbDeregistered || !tcp {
                            return Err(reason);
                        }
                        return self.rst(pkt, ip, reason);
                    }
                    // UDP flow of an unhealthy target: choose again below.
                    None => {}
                }
            }
        }
        if tcp && l4.flags & TCP_RST != 0 {
            return Err(DropReason::LbNoFlow);
        }
        if draining {
            // Live reload removed the LB or this VIP: existing flows only.
            return Err(DropReason::LbDraining);
        }
        self.limit_new_flow(li, now)?;
        let idx = self.create(snap, li, listener.group, ip, &l4, t)?;
        self.repl_created(li, idx);
        if let Some(c) = self.counters.get_mut(li) {
            if tcp && !syn {
                c.non_syn_new_flows += 1;
            }
        }
        self.forward(li, idx, pkt, ip, &l4, Dir::Client, t)?;
        Ok(StageVerdict::Translated)
    }

    /// The common case of a client packet of an established flow, done in one pass over
    /// the flow and its meta (issue 7: the LB's hit path at most the NAT's): a live DNAT
    /// flow (no flag set), not idle, its target taking packets, no RST. Decides before it
    /// changes anything, so `false` leaves the packet and flow to the general path.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn client_hit<B: PacketBuf>(
        &mut self,
        snap: &LbSnapshot,
        li: usize,
        idx: u32,
        pkt: &mut B,
        ip: &Ip,
        l4: &L4,
        t: u32,
    ) -> bool {
        let Some(st) = self.lbs.get_mut(li) else {
            return false;
        };
        let (Some(f), Some(m)) = (st.flows.get_mut(idx), st.meta.get(idx as usize)) else {
            return false;
        };
        if m.flags != 0
            || expiry::is_due(f.deadline, t)
            || (ip.proto == IPPROTO_TCP && l4.flags & TCP_RST != 0)
        {
            return false;
        }
        // As `target_check`: an unknown id, or a Healthy or Initial target, forwards.
        if let Some(info) = snap.targets.get(m.target as usize) {
            if !matches!(info.state, TargetState::Healthy | TargetState::Initial) {
                return false;
            }
        }
        if !rewrite_dst(pkt, ip, f.public(), f.public_port) {
            return false;
        }
        f.deadline = t.wrapping_add(m.idle);
        st.log_count(idx, true, ip.len);
        if let Some(c) = self.counters.get_mut(li) {
            c.packets_from_client += 1;
            c.bytes_from_client += ip.len as u64;
        }
        true
    }

    /// A flow found by a lookup: turn it into a tombstone (TCP) or remove it (UDP, or
    /// after a RST) if its idle deadline passed. Returns its meta (TOMB set if dead).
    fn check_idle(&mut self, li: usize, idx: u32, t: u32) -> Meta {
        let st = &mut self.lbs[li];
        let (Some(f), Some(m)) = (
            st.flows.get(idx).copied(),
            st.meta.get(idx as usize).copied(),
        ) else {
            return Meta {
                flags: mf::TOMB,
                ..Meta::default()
            };
        };
        if !expiry::is_due(f.deadline, t) {
            return m;
        }
        if m.flags & mf::TOMB == 0 {
            self.idle_out(li, idx, t);
        }
        let m = self.lbs[li]
            .meta
            .get(idx as usize)
            .copied()
            .unwrap_or_default();
        Meta {
            flags: m.flags | mf::TOMB,
            ..m
        }
    }

    /// Idle timeout of a live flow: TCP flows stay as tombstones for another idle period
    /// (a late packet from either side gets a RST); others are removed.
    fn idle_out(&mut self, li: usize, idx: u32, t: u32) {
        let (proto, m) = {
            let st = &self.lbs[li];
            match (st.flows.get(idx), st.meta.get(idx as usize)) {
                (Some(f), Some(m)) => (f.proto, *m),
                _ => return,
            }
        };
        if let Some(c) = self.counters.get_mut(li) {
            c.idle_timeouts += 1;
        }
        if proto == IPPROTO_TCP && m.flags & mf::CLOSED == 0 {
            self.unaccount(li, m.target);
            let st = &mut self.lbs[li];
            if let Some(mm) = st.meta.get_mut(idx as usize) {
                mm.flags |= mf::TOMB;
            }
            if let Some(f) = st.flows.get_mut(idx) {
                f.deadline = t.wrapping_add(m.idle);
            }
        } else {
            self.retire(li, idx);
        }
    }

    fn unaccount(&mut self, li: usize, target: u32) {
        if let Some(c) = self.counters.get_mut(li) {
            c.active_flows = c.active_flows.saturating_sub(1);
        }
        if let Some(tc) = self.targets.get_mut(target as usize) {
            tc.active_flows = tc.active_flows.saturating_sub(1);
        }
    }

    /// Unindexes a flow (the wheel frees the slot later).
    fn retire(&mut self, li: usize, idx: u32) {
        let m = {
            let st = &self.lbs[li];
            match (st.flows.get(idx), st.meta.get(idx as usize)) {
                (Some(f), Some(m)) if !f.is_dead() => *m,
                _ => return,
            }
        };
        if m.flags & mf::TOMB == 0 {
            self.unaccount(li, m.target);
        }
        self.repl_retired(li, idx);
        let st = &mut self.lbs[li];
        if m.flags & mf::FULLNAT != 0 {
            st.fnat_remove(idx);
            if let Some(f) = st.flows.get(idx) {
                st.dests.dec(fnat_dest(f, &m));
            }
        }
        st.log_retired(idx);
        st.flows.unindex(idx);
    }

    /// Is the flow's target still taking this packet? `Some(Ok)` forward; `Some(Err)` the
    /// flow was removed and the packet is dropped (or answered with a RST when the reason
    /// is a RST reason and it is TCP); `None` (UDP, unhealthy target) the flow was removed
    /// and a new target should be chosen.
    #[allow(clippy::too_many_arguments)]
    fn target_check(
        &mut self,
        snap: &LbSnapshot,
        li: usize,
        idx: u32,
        m: Meta,
        dir: Dir,
        tcp: bool,
        now: u64,
    ) -> Option<Result<StageVerdict, DropReason>> {
        let Some(info) = snap.targets.get(m.target as usize) else {
            return Some(Ok(StageVerdict::Translated));
        };
        match info.state {
            TargetState::Healthy | TargetState::Initial => Some(Ok(StageVerdict::Translated)),
            TargetState::Unhealthy if info.failing_open || dir == Dir::Target => {
                Some(Ok(StageVerdict::Translated))
            }
            TargetState::Unhealthy => {
                self.retire(li, idx);
                if tcp {
                    Some(Err(DropReason::LbUnhealthyTargetRst))
                } else {
                    None
                }
            }
            TargetState::Draining { until } if now < until => Some(Ok(StageVerdict::Translated)),
            TargetState::Draining { .. } => {
                self.retire(li, idx);
                Some(Err(if tcp && info.connection_termination {
                    DropReason::LbDeregisteredRst
                } else {
                    DropReason::LbDeregistered
                }))
            }
        }
    }

    fn rst<B: PacketBuf>(
        &mut self,
        pkt: &mut B,
        ip: &Ip,
        reason: DropReason,
    ) -> Result<StageVerdict, DropReason> {
        self.log_note_rst(pkt, ip);
        if crate::pipeline::rst::make_rst(pkt, ip.hl, ip.len, ip.src, ip.dst) {
            Ok(StageVerdict::Respond(reason))
        } else {
            Err(reason)
        }
    }

    /// New flow: Maglev over the group's eligible targets, pinned in the table.
    fn create(
        &mut self,
        snap: &LbSnapshot,
        li: usize,
        group: u16,
        ip: &Ip,
        l4: &L4,
        t: u32,
    ) -> Result<u32, DropReason> {
        let view = snap.lbs.get(li).ok_or(DropReason::LbNoTarget)?;
        let g = view
            .groups
            .get(group as usize)
            .ok_or(DropReason::LbNoTarget)?;
        let h = maglev::flow_hash(ip.proto, ip.src, l4.sport, ip.dst, l4.dport);
        let pos = g.maglev.lookup(h).ok_or(DropReason::LbNoTarget)?;
        let target = *g.eligible.get(pos as usize).ok_or(DropReason::LbNoTarget)?;
        let LbWorker {
            lbs,
            counters,
            rng,
            targets,
            ..
        } = self;
        // A replacement's new load balancer: the old one's full-NAT ports stay taken.
        let pred = view.replaced_pair.filter(|p| p.1 == li).map(|p| p.0);
        let (st, old) = reconcile::with_pred(lbs, li, pred);
        let st = st.ok_or(DropReason::LbNoTarget)?;
        let c = counters.get_mut(li).ok_or(DropReason::LbNoTarget)?;
        if st.flows.len() >= st.flows.capacity() {
            return Err(DropReason::LbTableFull);
        }
        let out = Key::new(ip.proto, target.ip, target.port, ip.src, l4.sport);
        if st.flows.lookup_out(&out).is_some() {
            return Err(DropReason::LbTupleConflict);
        }
        let mut meta = Meta {
            target: target.id,
            idle: (u64::from(if ip.proto == IPPROTO_TCP {
                g.tcp_idle_s
            } else {
                g.udp_idle_s
            }) * TICKS_PER_S) as u32,
            ..Meta::default()
        };
        if !g.preserve_client_ip {
            let n = view.lb_addresses.len() as u32;
            if n == 0 {
                return Err(DropReason::LbPortExhausted);
            }
            let ai = (h % u64::from(n)) as usize;
            let lb_ip = view.lb_addresses[ai];
            // The NAT's exact per-destination rule (one count per LB address and
            // target endpoint): the limit is always reachable, a full target is refused
            // in O(1).
            let dest = Dest::new(ai, u32::from(target.ip), target.port, ip.proto);
            let in_use = st.dests.get(&dest);
            let port = st.ports.allocate(rng, false, in_use, |p| {
                let k = Key::new(ip.proto, lb_ip, p, target.ip, target.port);
                if st.fnat_lookup(&k).is_none() && old.is_none_or(|o| o.fnat_lookup(&k).is_none()) {
                    Probe::Free
                } else {
                    Probe::Taken
                }
            });
            let Some((port, _)) = port else {
                c.port_allocation_errors += 1;
                return Err(DropReason::LbPortExhausted);
            };
            meta.flags |= mf::FULLNAT;
            meta.lb_ip = u32::from(lb_ip);
            meta.lb_port = port;
            meta.lb_ai = ai as u8;
        }
        let f = Flow {
            inside_ip: u32::from(ip.dst),
            inside_port: l4.dport,
            remote_ip: u32::from(ip.src),
            remote_port: l4.sport,
            public_ip: u32::from(target.ip),
            public_port: target.port,
            proto: ip.proto,
            deadline: t.wrapping_add(meta.idle),
            ..Flow::default()
        };
        let idx = st.flows.insert(f).ok_or(DropReason::LbTableFull)?;
        if let Some(m) = st.meta.get_mut(idx as usize) {
            *m = meta;
        }
        if meta.flags & mf::FULLNAT != 0 {
            if !st.fnat_insert(idx) {
                // Not reachable by its replies: give the slot back (not armed yet).
                st.flows.unindex(idx);
                st.flows.free(idx);
                if let Some(m) = st.meta.get_mut(idx as usize) {
                    *m = Meta::default();
                }
                return Err(DropReason::LbTableFull);
            }
            st.dests.inc(fnat_dest(&f, &meta));
        }
        st.wheel.arm(&mut st.flows.next, idx, f.deadline);
        st.log_created(idx);
        c.new_flows += 1;
        c.active_flows += 1;
        if let Some(tc) = targets.get_mut(target.id as usize) {
            tc.new_flows += 1;
            tc.active_flows += 1;
        }
        Ok(idx)
    }

    /// Rewrites a packet of flow `idx` for its direction and refreshes the flow.
    #[allow(clippy::too_many_arguments)]
    fn forward<B: PacketBuf>(
        &mut self,
        li: usize,
        idx: u32,
        pkt: &mut B,
        ip: &Ip,
        l4: &L4,
        dir: Dir,
        t: u32,
    ) -> Result<(), DropReason> {
        let st = self.lbs.get_mut(li).ok_or(DropReason::LbNoFlow)?;
        let (Some(f), Some(m)) = (
            st.flows.get(idx).copied(),
            st.meta.get(idx as usize).copied(),
        ) else {
            return Err(DropReason::LbNoFlow);
        };
        let full = m.flags & mf::FULLNAT != 0;
        let ok = match dir {
            Dir::Client => rewrite(
                pkt,
                ip,
                full.then(|| (Ipv4Addr::from(m.lb_ip), m.lb_port)),
                Some((f.public(), f.public_port)),
            ),
            Dir::Target => rewrite(
                pkt,
                ip,
                Some((f.inside(), f.inside_port)),
                full.then(|| (f.remote(), f.remote_port)),
            ),
        };
        if !ok {
            return Err(DropReason::LbUnsupportedProtocol);
        }
        let rst = l4.flags & TCP_RST != 0 && ip.proto == IPPROTO_TCP;
        let (deadline, flags) = if rst {
            (
                t.wrapping_add(CLOSE_LINGER_S * TICKS_PER_S as u32),
                m.flags | mf::CLOSED,
            )
        } else if m.flags & mf::CLOSED != 0 {
            (f.deadline, m.flags)
        } else {
            (t.wrapping_add(m.idle), m.flags)
        };
        if let Some(fm) = st.flows.get_mut(idx) {
            fm.deadline = deadline;
        }
        if let Some(mm) = st.meta.get_mut(idx as usize) {
            mm.flags = flags;
        }
        st.log_count(idx, dir == Dir::Client, ip.len);
        self.repl_touched(li, idx, rst && m.flags & mf::CLOSED == 0, t);
        if let Some(c) = self.counters.get_mut(li) {
            let bytes = ip.len as u64;
            match dir {
                Dir::Client => {
                    c.packets_from_client += 1;
                    c.bytes_from_client += bytes;
                    c.tcp_client_resets += u64::from(rst);
                }
                Dir::Target => {
                    c.packets_from_target += 1;
                    c.bytes_from_target += bytes;
                    c.tcp_target_resets += u64::from(rst);
                }
            }
        }
        Ok(())
    }

    /// Target -> LB address (full NAT reply).
    fn fnat_reply<B: PacketBuf>(
        &mut self,
        snap: &LbSnapshot,
        li: usize,
        pkt: &mut B,
        ip: &Ip,
        now: u64,
    ) -> Result<StageVerdict, DropReason> {
        if ip.fragment {
            return Err(DropReason::LbFragment);
        }
        if ip.proto == IPPROTO_ICMP {
            return self.icmp_to_lb_address(li, pkt, ip);
        }
        let l4 = parse_l4(pkt.data(), ip).ok_or(DropReason::LbUnsupportedProtocol)?;
        if self.n_workers > 1 {
            if let Some(o) = self.lbs[li].ports.owner_of(l4.dport) {
                if o != self.worker {
                    return Ok(StageVerdict::Handoff(o));
                }
            }
        }
        self.limit_packet(li, now)?;
        let key = Key::new(ip.proto, ip.dst, l4.dport, ip.src, l4.sport);
        let idx = self.lbs[li].fnat_lookup(&key).ok_or(DropReason::LbNoFlow)?;
        self.target_side(snap, li, idx, pkt, ip, &l4, now)
    }

    /// Target -> client (DNAT reply): the flow is found by its outside key.
    fn dnat_reply<B: PacketBuf>(
        &mut self,
        snap: &LbSnapshot,
        pkt: &mut B,
        ip: &Ip,
        now: u64,
    ) -> StageVerdict {
        let Some(l4) = parse_l4(pkt.data(), ip) else {
            return StageVerdict::Pass;
        };
        let ep = (u64::from(u32::from(ip.src)) << 16) | u64::from(l4.sport);
        if self.n_workers > 1 && snap.dnat_endpoints.contains_key(&ep) {
            let o = client_owner(ip.dst, l4.dport, self.n_workers);
            if o != self.worker {
                return StageVerdict::Handoff(o);
            }
        }
        let key = Key::new(ip.proto, ip.src, l4.sport, ip.dst, l4.dport);
        for li in 0..self.lbs.len() {
            if let Some(idx) = self.lbs[li].flows.lookup_out(&key) {
                let full = self.lbs[li]
                    .meta
                    .get(idx as usize)
                    .is_some_and(|m| m.flags & mf::FULLNAT != 0);
                if full {
                    // The target speaks to the client directly: not through this flow.
                    return StageVerdict::Pass;
                }
                let r = self.target_side(snap, li, idx, pkt, ip, &l4, now);
                return self.verdict(li, r);
            }
        }
        // A target endpoint speaking with no flow (expired, or never seen here): it must
        // not reach the client untranslated.
        match snap.dnat_endpoints.get(&ep) {
            Some(&li) => self.verdict(li as usize, Err(DropReason::LbNoFlow)),
            None => StageVerdict::Pass,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn target_side<B: PacketBuf>(
        &mut self,
        snap: &LbSnapshot,
        li: usize,
        idx: u32,
        pkt: &mut B,
        ip: &Ip,
        l4: &L4,
        now: u64,
    ) -> Result<StageVerdict, DropReason> {
        let t = self.tick(now);
        let tcp = ip.proto == IPPROTO_TCP;
        let m = self.check_idle(li, idx, t);
        if m.flags & mf::TOMB != 0 {
            self.retire(li, idx);
            if tcp && l4.flags & TCP_RST == 0 {
                return self.rst(pkt, ip, DropReason::LbIdleTimeoutRst);
            }
            return Err(DropReason::LbNoFlow);
        }
        match self.target_check(snap, li, idx, m, Dir::Target, tcp, now) {
            Some(Ok(v)) => {
                self.forward(li, idx, pkt, ip, l4, Dir::Target, t)?;
                Ok(v)
            }
            Some(Err(DropReason::LbDeregisteredRst)) if tcp => {
                self.rst(pkt, ip, DropReason::LbDeregisteredRst)
            }
            Some(Err(r)) => Err(r),
            None => Err(DropReason::LbNoFlow),
        }
    }

    /// ICMP to a VIP: an error about a packet the LB sent to a client (VIP:port -> client)
    /// goes to the target with the quote rewritten to what the target sent (RFC 5508).
    fn icmp_to_vip<B: PacketBuf>(
        &mut self,
        li: usize,
        pkt: &mut B,
        ip: &Ip,
    ) -> Result<StageVerdict, DropReason> {
        let (q, _) = self.icmp_quote(pkt, ip)?;
        if q.src != ip.dst {
            return Err(DropReason::LbIcmpErrorNoFlow);
        }
        let key = Key::new(q.proto, q.src, q.sport, q.dst, q.dport);
        let st = &self.lbs[li];
        let idx = st
            .flows
            .lookup_in(&key)
            .ok_or(DropReason::LbIcmpErrorNoFlow)?;
        let (f, m) = (
            st.flows.get(idx).copied().unwrap_or_default(),
            st.meta.get(idx as usize).copied().unwrap_or_default(),
        );
        let msg = icmp_msg(pkt, ip).ok_or(DropReason::LbIcmpErrorMalformed)?;
        icmp_error::rewrite(msg, &q, Side::Src, f.public(), f.public_port);
        if m.flags & mf::FULLNAT != 0 {
            let q2 = icmp_error::parse(msg).map_err(|_| DropReason::LbIcmpErrorMalformed)?;
            icmp_error::rewrite(msg, &q2, Side::Dst, Ipv4Addr::from(m.lb_ip), m.lb_port);
        }
        set_outer(pkt, ip, None, Some(f.public()));
        Ok(StageVerdict::Translated)
    }

    /// ICMP to an LB address: an error about a full-NAT packet sent to a target.
    fn icmp_to_lb_address<B: PacketBuf>(
        &mut self,
        li: usize,
        pkt: &mut B,
        ip: &Ip,
    ) -> Result<StageVerdict, DropReason> {
        let (q, _) = self.icmp_quote(pkt, ip)?;
        let key = Key::new(q.proto, q.src, q.sport, q.dst, q.dport);
        let st = &self.lbs[li];
        let idx = st.fnat_lookup(&key).ok_or(DropReason::LbIcmpErrorNoFlow)?;
        let f = st.flows.get(idx).copied().unwrap_or_default();
        let msg = icmp_msg(pkt, ip).ok_or(DropReason::LbIcmpErrorMalformed)?;
        icmp_error::rewrite(msg, &q, Side::Src, f.remote(), f.remote_port);
        let q2 = icmp_error::parse(msg).map_err(|_| DropReason::LbIcmpErrorMalformed)?;
        icmp_error::rewrite(msg, &q2, Side::Dst, f.inside(), f.inside_port);
        let src = (ip.src == f.public()).then(|| f.inside());
        set_outer(pkt, ip, src, Some(f.remote()));
        Ok(StageVerdict::Translated)
    }

    /// An ICMP error on its way to a client about a DNAT packet the LB sent to a target
    /// (client -> target): the quote's destination becomes the VIP again.
    fn icmp_toward_client<B: PacketBuf>(&mut self, pkt: &mut B, ip: &Ip) -> StageVerdict {
        let Ok((q, _)) = self.icmp_quote(pkt, ip) else {
            return StageVerdict::Pass;
        };
        let key = Key::new(q.proto, q.dst, q.dport, q.src, q.sport);
        for li in 0..self.lbs.len() {
            let st = &self.lbs[li];
            let Some(idx) = st.flows.lookup_out(&key) else {
                continue;
            };
            let f = st.flows.get(idx).copied().unwrap_or_default();
            let Some(msg) = icmp_msg(pkt, ip) else {
                return StageVerdict::Pass;
            };
            icmp_error::rewrite(msg, &q, Side::Dst, f.inside(), f.inside_port);
            let src = (ip.src == f.public()).then(|| f.inside());
            set_outer(pkt, ip, src, None);
            return StageVerdict::Translated;
        }
        StageVerdict::Pass
    }

    fn icmp_quote<B: PacketBuf>(
        &self,
        pkt: &B,
        ip: &Ip,
    ) -> Result<(icmp_error::Quote, u8), DropReason> {
        let msg = pkt
            .data()
            .get(14 + ip.hl..14 + ip.len)
            .ok_or(DropReason::LbIcmpErrorMalformed)?;
        let t = IcmpPacket::new_checked(msg)
            .map_err(|_| DropReason::LbIcmpErrorMalformed)?
            .msg_type();
        if ip.fragment || !icmp_error::is_translated_error(t) {
            return Err(DropReason::LbUnsupportedProtocol);
        }
        let q = icmp_error::parse(msg).map_err(|e| match e {
            DropReason::NatIcmpErrorNoMapping => DropReason::LbIcmpErrorNoFlow,
            _ => DropReason::LbIcmpErrorMalformed,
        })?;
        Ok((q, t))
    }

    /// Amortized expiry between bursts (bounded work per load balancer).
    pub fn expire(&mut self, now: u64) {
        self.log_poll(now);
        let t = self.tick(now);
        for li in 0..self.lbs.len() {
            let mut slots = EXPIRE_SLOT_BUDGET;
            for _ in 0..EXPIRE_FLOW_BUDGET {
                let st = &mut self.lbs[li];
                let Some(idx) = st.wheel.pop_due(&st.flows.next, u64::from(t), &mut slots) else {
                    break;
                };
                let Some(f) = st.flows.get(idx).copied() else {
                    continue;
                };
                let tomb = st
                    .meta
                    .get(idx as usize)
                    .is_some_and(|m| m.flags & mf::TOMB != 0);
                if f.is_dead() {
                    st.flows.free(idx);
                } else if expiry::is_due(f.deadline, t) {
                    if tomb {
                        self.retire(li, idx);
                        self.lbs[li].flows.free(idx);
                    } else {
                        self.idle_out(li, idx, t);
                        let st = &mut self.lbs[li];
                        match st.flows.get(idx).copied() {
                            Some(f) if !f.is_dead() => {
                                st.wheel.arm(&mut st.flows.next, idx, f.deadline)
                            }
                            _ => st.flows.free(idx),
                        }
                    }
                } else {
                    st.wheel.arm(&mut st.flows.next, idx, f.deadline);
                    self.repl_alive(li, idx, t);
                }
            }
        }
    }
}

/// The ICMP message of the frame, mutable.
fn icmp_msg<'a, B: PacketBuf>(pkt: &'a mut B, ip: &Ip) -> Option<&'a mut [u8]> {
    pkt.data_mut().get_mut(14 + ip.hl..14 + ip.len)
}

/// Rewrites the outer IPv4 source and/or destination (IP checksum only: ICMP does not
/// cover the outer header).
fn set_outer<B: PacketBuf>(pkt: &mut B, ip: &Ip, src: Option<Ipv4Addr>, dst: Option<Ipv4Addr>) {
    let Some(hdr) = pkt.data_mut().get_mut(14..14 + ip.hl) else {
        return;
    };
    let mut h = Ipv4Packet::new_unchecked(hdr);
    if let Some(s) = src {
        h.rewrite_src(s);
    }
    if let Some(d) = dst {
        h.rewrite_dst(d);
    }
}

//! Flow-state replication of load-balancer pins (issue 10, `crate::repl`, the LB side of
//! what `nat::replica` does for NAT mappings). A pin is the flow's target (DNAT and full
//! NAT) and, for full NAT, the LB address and port it talks to the target from: a peer
//! holding the pin forwards the flow's packets after a failover exactly as its owner did,
//! whatever Maglev would answer for a new flow by then.
//!
//! Emits (owner, one ring push, never blocking): `EV_LB_ADD` when a flow is created,
//! `EV_LB_REFRESH` when a RST closes it and when the timer wheel finds it still alive
//! (at most once per idle period), `EV_LB_DEL` when it is unindexed. Installs (receiver,
//! between bursts, bounded): the replica is an ordinary flow marked `mf::REPLICA` until a
//! packet of its own touches it; its full-NAT (LB address, port, target) key is in the
//! `fnat` index and counted per destination, so this node's allocator never hands that
//! port out while the replica lives. A replica never emits (no echo), a DEL never removes
//! a flow carrying traffic here, and an event for a flow this node pins differently is
//! refused (the local flow wins). Tenants are named by `repl::tenant_key` of the load
//! balancer's `id`, mapped to the local slot here.

use super::{client_owner, fnat_dest, mf, LbWorker, Meta, TICKS_PER_S};
use crate::nat::expiry;
use crate::nat::flow::{Flow, Key};
use crate::repl::{
    FlowEvent, InstallCounts, Reject, WorkerRepl, EV_DUMP_END, EV_DUMP_REQ, EV_LB_ADD, EV_LB_DEL,
    EV_LB_REFRESH,
};
use crate::wire::{IPPROTO_TCP, IPPROTO_UDP};
use std::net::Ipv4Addr;

/// Installs taken per poll, and flow slots a dump walks per poll (as `nat::replica`).
const INSTALL_BUDGET: usize = 1024;
const DUMP_SLOT_BUDGET: u32 = 4096;
/// Meta flags that travel on the wire (the rest are local: TOMB, REPLICA).
const WIRE_FLAGS: u8 = mf::FULLNAT | mf::CLOSED;
/// Target id of a replica whose target is in none of this node's groups.
const NO_TARGET: u32 = u32::MAX;

/// A worker's LB replication state.
pub struct LbRepl {
    ring: WorkerRepl,
    /// A replica outlives its owner's last word by this many ticks.
    grace: u32,
    /// Per LB slot: its tenant key (from the snapshot's ids; refreshed between bursts, the
    /// packet path only reads it).
    keys: Vec<u32>,
    keys_gen: u64,
}

/// The worker (of `n`) that owns a received LB event: the client endpoint's owner, the
/// one that gets the client's packets (and, with the same worker count on both nodes, the
/// one whose port slice holds a full-NAT port).
pub fn owner(e: &FlowEvent, n: usize) -> usize {
    if n <= 1 {
        return 0;
    }
    client_owner(Ipv4Addr::from(e.remote_ip), e.remote_port, n).min(n - 1)
}

/// The event for flow `f` with meta `m` of the load balancer with key `key`.
fn lb_event(kind: u8, key: u32, f: &Flow, m: &Meta, remaining: u32) -> FlowEvent {
    FlowEvent {
        kind,
        proto: f.proto,
        flags: m.flags & WIRE_FLAGS,
        tenant: key,
        inside_ip: f.inside_ip,
        remote_ip: f.remote_ip,
        public_ip: f.public_ip,
        inside_port: f.inside_port,
        remote_port: f.remote_port,
        public_port: f.public_port,
        lb_port: m.lb_port,
        lb_ip: m.lb_ip,
        remaining,
        ..FlowEvent::default()
    }
}

/// What an install did.
enum Done {
    New,
    Updated,
    Deleted,
    Nothing,
}

impl LbWorker {
    /// Replicate this worker's LB flows through `r` (see `crate::repl`).
    pub fn set_replication(&mut self, r: WorkerRepl, grace_s: u32) {
        self.repl = Some(Box::new(LbRepl {
            ring: r,
            grace: grace_s.saturating_mul(TICKS_PER_S as u32),
            keys: Vec::new(),
            keys_gen: u64::MAX,
        }));
        self.sync_repl_keys();
    }

    /// The tenant keys of the snapshot's load balancers (slot order), if it changed.
    fn sync_repl_keys(&mut self) {
        let (Some(r), Some(s)) = (self.repl.as_mut(), self.snap.as_ref()) else {
            return;
        };
        if r.keys_gen != s.generation {
            r.keys = s
                .lbs
                .iter()
                .map(|v| crate::repl::tenant_key(&v.id))
                .collect();
            r.keys_gen = s.generation;
        }
    }

    /// Emits `kind` for local flow `idx` of load balancer `li` (replicas and tombstones
    /// emit nothing). `remaining`: ticks until its deadline, `None` = from tick `t`.
    fn repl_emit(&mut self, li: usize, idx: u32, kind: u8, remaining: Option<u32>, t: u32) {
        let LbWorker { repl, lbs, .. } = self;
        let (Some(r), Some(st)) = (repl.as_mut(), lbs.get(li)) else {
            return;
        };
        let (Some(f), Some(m), Some(&key)) =
            (st.flows.get(idx), st.meta.get(idx as usize), r.keys.get(li))
        else {
            return;
        };
        if m.flags & mf::REPLICA != 0 || (m.flags & mf::TOMB != 0 && kind != EV_LB_DEL) {
            return;
        }
        let rem = remaining.unwrap_or_else(|| (f.deadline.wrapping_sub(t) as i32).max(0) as u32);
        r.ring.emit(lb_event(kind, key, f, m, rem));
    }

    /// A flow was just created (`client_packet`).
    #[inline]
    pub(super) fn repl_created(&mut self, li: usize, idx: u32) {
        if self.repl.is_some() {
            let idle = self.lbs[li].meta.get(idx as usize).map_or(0, |m| m.idle);
            self.repl_emit(li, idx, EV_LB_ADD, Some(idle), 0);
        }
    }

    /// A packet of flow `idx` was forwarded: a replica becomes this node's flow (it emits
    /// from now on); a RST that closed a local flow is announced.
    #[inline]
    pub(super) fn repl_touched(&mut self, li: usize, idx: u32, closed_now: bool, t: u32) {
        if self.repl.is_none() {
            return;
        }
        if let Some(m) = self.lbs[li].meta.get_mut(idx as usize) {
            if m.flags & mf::REPLICA != 0 {
                m.flags &= !mf::REPLICA;
                return;
            }
        }
        if closed_now {
            self.repl_emit(li, idx, EV_LB_REFRESH, None, t);
        }
    }

    /// A flow is being unindexed (`retire`): its DEL (before the unindexing).
    #[inline]
    pub(super) fn repl_retired(&mut self, li: usize, idx: u32) {
        if self.repl.is_some() {
            self.repl_emit(li, idx, EV_LB_DEL, Some(0), 0);
        }
    }

    /// The wheel re-armed a live flow: the periodic refresh that keeps replicas alive.
    #[inline]
    pub(super) fn repl_alive(&mut self, li: usize, idx: u32, t: u32) {
        if self.repl.is_some() {
            self.repl_emit(li, idx, EV_LB_REFRESH, None, t);
        }
    }

    /// Between bursts (after `refresh`): installs from peers, and a step of a dump.
    pub fn replication_poll(&mut self, now: u64) {
        if self.repl.is_none() {
            return;
        }
        self.sync_repl_keys();
        let t = self.tick(now);
        for _ in 0..INSTALL_BUDGET {
            let Some(e) = self.repl.as_mut().and_then(|r| r.ring.installs.pop().ok()) else {
                break;
            };
            if e.kind == EV_DUMP_REQ {
                if let Some(r) = self.repl.as_mut() {
                    r.ring.dump = Some((0, 0));
                }
                continue;
            }
            if !crate::repl::is_lb(e.kind) {
                continue;
            }
            let o = self.lb_install(&e, t);
            if let Some(r) = self.repl.as_ref() {
                let c = &r.ring.counts;
                match o {
                    Ok(Done::New) => InstallCounts::bump(&c.installed),
                    Ok(Done::Updated) => InstallCounts::bump(&c.updated),
                    Ok(Done::Deleted) => InstallCounts::bump(&c.deleted),
                    Ok(Done::Nothing) => {}
                    Err(why) => c.reject(why),
                }
            }
        }
        self.lb_dump_step(t);
    }

    /// Applies a peer's LB event (see the module doc for the rules).
    fn lb_install(&mut self, e: &FlowEvent, t: u32) -> Result<Done, Reject> {
        let snap = self.snap.clone().ok_or(Reject::Mismatch)?;
        let (grace, li) = {
            let r = self.repl.as_ref().ok_or(Reject::Mismatch)?;
            let li = r.keys.iter().position(|&k| k == e.tenant);
            (r.grace, li.ok_or(Reject::UnknownTenant)?)
        };
        if e.proto != IPPROTO_TCP && e.proto != IPPROTO_UDP {
            return Err(Reject::Malformed);
        }
        let tcp = e.proto == IPPROTO_TCP;
        let view = snap.lbs.get(li).ok_or(Reject::Mismatch)?;
        let vip = Ipv4Addr::from(e.inside_ip);
        let listener = view
            .listener(vip, e.inside_port, tcp)
            .ok_or(Reject::Mismatch)?;
        let group = view
            .groups
            .get(usize::from(listener.group))
            .ok_or(Reject::Mismatch)?;
        let full = e.flags & mf::FULLNAT != 0;
        let ai = if full {
            let ai = view
                .lb_addresses
                .iter()
                .position(|&a| u32::from(a) == e.lb_ip)
                .ok_or(Reject::Mismatch)?;
            u8::try_from(ai).map_err(|_| Reject::Mismatch)?
        } else {
            0
        };
        let target = view
            .groups
            .iter()
            .flat_map(|g| g.eligible.iter())
            .find(|r| u32::from(r.ip) == e.public_ip && r.port == e.public_port)
            .map_or(NO_TARGET, |r| r.id);
        let idle_s = if tcp {
            group.tcp_idle_s
        } else {
            group.udp_idle_s
        };
        let deadline = t
            .wrapping_add(e.remaining.min(u32::MAX / 8))
            .wrapping_add(grace);
        let in_key = Key::new(
            e.proto,
            vip,
            e.inside_port,
            Ipv4Addr::from(e.remote_ip),
            e.remote_port,
        );
        let st = self.lbs.get_mut(li).ok_or(Reject::Mismatch)?;
        if let Some(idx) = st.flows.lookup_in(&in_key) {
            let (Some(f), Some(m)) = (st.flows.get(idx).copied(), st.meta.get(idx as usize)) else {
                return Ok(Done::Nothing);
            };
            let same = f.public_ip == e.public_ip
                && f.public_port == e.public_port
                && (m.flags & mf::FULLNAT != 0) == full
                && (!full || (m.lb_ip == e.lb_ip && m.lb_port == e.lb_port));
            if !same {
                return Err(Reject::Conflict);
            }
            let replica = m.flags & mf::REPLICA != 0;
            if e.kind == EV_LB_DEL {
                if replica {
                    self.retire(li, idx);
                    return Ok(Done::Deleted);
                }
                return Ok(Done::Nothing);
            }
            let st = &mut self.lbs[li];
            if replica {
                if let Some(mm) = st.meta.get_mut(idx as usize) {
                    mm.flags = (mm.flags & !WIRE_FLAGS) | (e.flags & WIRE_FLAGS);
                }
                if let Some(fm) = st.flows.get_mut(idx) {
                    fm.deadline = deadline;
                }
                return Ok(Done::Updated);
            }
            if let Some(fm) = st.flows.get_mut(idx) {
                if expiry::is_due(fm.deadline, deadline) {
                    fm.deadline = deadline;
                }
            }
            return Ok(Done::Nothing);
        }
        if e.kind == EV_LB_DEL {
            return Ok(Done::Nothing);
        }
        if st.flows.len() >= st.flows.capacity() {
            return Err(Reject::TableFull);
        }
        let (client, target_ip) = (Ipv4Addr::from(e.remote_ip), Ipv4Addr::from(e.public_ip));
        let out = Key::new(e.proto, target_ip, e.public_port, client, e.remote_port);
        if st.flows.lookup_out(&out).is_some() {
            return Err(Reject::Conflict);
        }
        let lb_ip = Ipv4Addr::from(e.lb_ip);
        if full
            && st
                .fnat_lookup(&Key::new(
                    e.proto,
                    lb_ip,
                    e.lb_port,
                    target_ip,
                    e.public_port,
                ))
                .is_some()
        {
            return Err(Reject::Conflict);
        }
        let meta = Meta {
            target,
            lb_ip: if full { e.lb_ip } else { 0 },
            lb_port: if full { e.lb_port } else { 0 },
            flags: (e.flags & WIRE_FLAGS) | mf::REPLICA,
            lb_ai: ai,
            idle: (u64::from(idle_s) * TICKS_PER_S) as u32,
        };
        let f = Flow {
            inside_ip: e.inside_ip,
            inside_port: e.inside_port,
            remote_ip: e.remote_ip,
            remote_port: e.remote_port,
            public_ip: e.public_ip,
            public_port: e.public_port,
            proto: e.proto,
            deadline,
            ..Flow::default()
        };
        let idx = st.flows.insert(f).ok_or(Reject::TableFull)?;
        if let Some(m) = st.meta.get_mut(idx as usize) {
            *m = meta;
        }
        if full {
            if !st.fnat_insert(idx) {
                // The full-NAT index refused it (bounded cuckoo displacement): give the slot
                // back, as `create` does; the peer counts the reject.
                st.flows.unindex(idx);
                st.flows.free(idx);
                if let Some(m) = st.meta.get_mut(idx as usize) {
                    *m = Meta::default();
                }
                return Err(Reject::TableFull);
            }
            st.dests.inc(fnat_dest(&f, &meta));
        }
        st.wheel.arm(&mut st.flows.next, idx, f.deadline);
        if let Some(c) = self.counters.get_mut(li) {
            c.active_flows += 1;
        }
        if let Some(tc) = self.targets.get_mut(target as usize) {
            tc.active_flows += 1;
        }
        Ok(Done::New)
    }

    /// Pushes the next live flows of a dump in progress as `EV_LB_ADD` (stops where the
    /// event ring is full, resumes on the next call); then the end marker.
    fn lb_dump_step(&mut self, t: u32) {
        let LbWorker {
            repl, lbs, worker, ..
        } = self;
        let Some(r) = repl.as_mut() else {
            return;
        };
        let mut budget = DUMP_SLOT_BUDGET;
        while let Some((li, slot)) = r.ring.dump {
            let (Some(st), Some(&key)) = (lbs.get(li), r.keys.get(li)) else {
                r.ring.dump = None;
                r.ring.dump_end_pending = true;
                break;
            };
            if slot as usize >= st.flows.capacity() {
                r.ring.dump = Some((li + 1, 0));
                continue;
            }
            if budget == 0 || r.ring.events.slots() == 0 {
                return;
            }
            budget -= 1;
            r.ring.dump = Some((li, slot + 1));
            let (Some(f), Some(m)) = (st.flows.get(slot), st.meta.get(slot as usize)) else {
                continue;
            };
            if f.proto == 0
                || f.is_dead()
                || m.flags & mf::TOMB != 0
                || st.flows.lookup_in(&f.in_key()) != Some(slot)
            {
                continue;
            }
            let rem = (f.deadline.wrapping_sub(t) as i32).max(0) as u32;
            r.ring.emit(lb_event(EV_LB_ADD, key, f, m, rem));
        }
        if r.ring.dump_end_pending {
            let end = FlowEvent {
                kind: EV_DUMP_END,
                tenant: *worker as u32,
                ..FlowEvent::default()
            };
            if r.ring.events.push(end).is_ok() {
                r.ring.dump_end_pending = false;
            }
        }
    }
}

#[cfg(test)]
#[path = "replica_tests.rs"]
mod tests;

//! Flow-state replication, the worker's side (issue 10, `crate::repl`): flow changes out
//! as `FlowEvent`s, replicas in, full dumps on request. Everything here runs on the
//! worker: emits from the packet path (one ring push, never blocking), installs and dump
//! steps between bursts with a bounded amount of work per call.
//!
//! What a replica is: an ordinary flow of the gateway (indexed both ways, so it translates
//! return and outbound packets exactly as on its owner, and its (public IP, port,
//! destination) key is taken for this node's own allocations), marked `st::REPLICA` until
//! a packet of its own touches it. Its deadline is the owner's plus `grace`: the owner
//! refreshes live flows once per timeout period. A replica never emits (no echo back to
//! the owner) and a DEL never removes a flow that carries traffic here.
//!
//! TCP: the replica's window tracking starts empty but with the window-scale shifts the
//! handshake negotiated, so the tracker picks the connection up from its next segment
//! each way (`tcp_state::track`'s mid-stream pickup) with correctly scaled windows.
//!
//! `rfc4787` gateways (endpoint-independent mappings): the event carries the flow's
//! `st::ALLOWS` bit; the replica binds to its mapping (created with the first replica of
//! the inside endpoint, so the public endpoint is then taken here for every destination)
//! and takes its filtering permission, as a local flow does (`store_eim`).

use super::dest_count::Dest;
use super::flow::{st, Flow};
use super::{expiry, tcp_state, Gateway, NatWorker, TICKS_PER_S};
use crate::repl::{
    FlowEvent, InstallCounts, Reject, WorkerRepl, EV_ADD, EV_DEL, EV_DUMP_END, EV_DUMP_REQ,
    EV_REFRESH,
};

/// The wheel reached a local flow: it expired (`EV_DEL`) or is still alive and re-armed
/// (`EV_REFRESH` with its time left: the periodic refresh that keeps replicas alive).
pub(super) fn on_expiry(
    repl: &mut Option<Box<WorkerRepl>>,
    _gi: usize,
    g: &mut Gateway,
    idx: u32,
    kind: u8,
    t: u32,
) {
    let Some(r) = repl.as_mut() else {
        return;
    };
    let Some((f, win)) = g.flows.get_tcp_mut(idx) else {
        return;
    };
    if f.state & st::REPLICA != 0 {
        return;
    }
    let scale = if f.proto == crate::wire::IPPROTO_TCP {
        tcp_state::scales(win)
    } else {
        [0, 0]
    };
    r.emit(event_of(kind, g.repl_key, f, scale, t));
}

/// What an install did (counted on the worker's `WorkerRepl`).
enum Installed {
    New,
    Updated,
    Deleted,
    Rejected(Reject),
    Other,
}

/// Flow state bits that travel (`ALLOWS`: an `rfc4787` flow's filtering permission).
const WIRE_STATE: u8 = st::TCP_MASK | st::SEEN_REPLY | st::ALLOWS;

/// Installs taken per `replication_poll`.
const INSTALL_BUDGET: usize = 1024;
/// Flow slots a dump walks per `replication_poll`.
const DUMP_SLOT_BUDGET: u32 = 4096;

/// The event for a flow of the gateway with wire key `key` (its state, scales, time left
/// at tick `t`).
pub(super) fn event_of(kind: u8, key: u32, f: &Flow, scale: [u8; 2], t: u32) -> FlowEvent {
    FlowEvent {
        kind,
        tenant: key,
        proto: f.proto,
        state: f.state & WIRE_STATE,
        scale,
        inside_ip: f.inside_ip,
        remote_ip: f.remote_ip,
        public_ip: f.public_ip,
        inside_port: f.inside_port,
        remote_port: f.remote_port,
        public_port: f.public_port,
        remaining: (f.deadline.wrapping_sub(t) as i32).max(0) as u32,
        ..FlowEvent::default()
    }
}

impl NatWorker {
    /// Replicate this worker's flows through `r` (see `crate::repl`).
    pub fn set_replication(&mut self, r: WorkerRepl, grace_s: u32) {
        self.repl = Some(Box::new(r));
        self.repl_grace = grace_s.saturating_mul(TICKS_PER_S as u32);
    }

    /// Emits `kind` for flow `idx` of gateway `gi` (a local flow of an `aws` gateway) that
    /// was just created or changed state: its time left is its state's full timeout.
    pub(super) fn replicate(&mut self, gi: usize, idx: u32, kind: u8) {
        let NatWorker { repl, gws, .. } = self;
        let (Some(r), Some(g)) = (repl.as_mut(), gws.get_mut(gi)) else {
            return;
        };
        let Some((f, win)) = g.flows.get_tcp_mut(idx) else {
            return;
        };
        let scale = if f.proto == crate::wire::IPPROTO_TCP {
            tcp_state::scales(win)
        } else {
            [0, 0]
        };
        let f = *f;
        let mut e = event_of(kind, g.repl_key, &f, scale, 0);
        e.remaining = g.timeout(f.proto, f.state);
        r.emit(e);
    }

    /// Between bursts: installs from peers, and a step of a requested dump.
    pub fn replication_poll(&mut self, now: u64) {
        if self.repl.is_none() {
            return;
        }
        let t = self.tick(now);
        for _ in 0..INSTALL_BUDGET {
            let Some(e) = self.repl.as_mut().and_then(|r| r.installs.pop().ok()) else {
                break;
            };
            match e.kind {
                EV_DUMP_REQ => {
                    if let Some(r) = self.repl.as_mut() {
                        r.dump = Some((0, 0));
                    }
                }
                EV_ADD | EV_REFRESH | EV_DEL => {
                    let o = self.install(&e, t);
                    if let Some(r) = self.repl.as_mut() {
                        let c = &r.counts;
                        match o {
                            Installed::New => {
                                r.installed += 1;
                                InstallCounts::bump(&c.installed);
                            }
                            Installed::Updated => InstallCounts::bump(&c.updated),
                            Installed::Deleted => InstallCounts::bump(&c.deleted),
                            Installed::Rejected(why) => {
                                r.conflicts += u64::from(why == Reject::Conflict);
                                c.reject(why);
                            }
                            Installed::Other => {}
                        }
                    }
                }
                _ => {}
            }
        }
        self.dump_step(t);
    }

    /// Pushes the next live flows of a dump in progress as ADDs (stops where the event
    /// ring is full, resumes on the next call); then the end marker.
    fn dump_step(&mut self, t: u32) {
        let NatWorker { repl, gws, .. } = self;
        let Some(r) = repl.as_mut() else {
            return;
        };
        let worker = self.worker;
        let mut budget = DUMP_SLOT_BUDGET;
        while let Some((gi, slot)) = r.dump {
            let Some(g) = gws.get_mut(gi) else {
                r.dump = None;
                r.dump_end_pending = true;
                break;
            };
            if slot as usize >= g.flows.capacity() {
                r.dump = Some((gi + 1, 0));
                continue;
            }
            if budget == 0 || r.events.slots() == 0 {
                return;
            }
            budget -= 1;
            r.dump = Some((gi, slot + 1));
            let Some(f) = g.flows.get(slot).copied() else {
                continue;
            };
            if f.proto == 0 || f.is_dead() || g.flows.lookup_out(&f.out_key()) != Some(slot) {
                continue;
            }
            let scale = match g.flows.get_tcp_mut(slot) {
                Some((_, win)) if f.proto == crate::wire::IPPROTO_TCP => tcp_state::scales(win),
                _ => [0, 0],
            };
            r.emit(event_of(EV_ADD, g.repl_key, &f, scale, t));
        }
        if r.dump_end_pending {
            let end = FlowEvent {
                kind: EV_DUMP_END,
                tenant: worker as u32,
                ..FlowEvent::default()
            };
            if r.events.push(end).is_ok() {
                r.dump_end_pending = false;
            }
        }
    }

    /// Applies a peer's event (see the module doc for the rules).
    fn install(&mut self, e: &FlowEvent, t: u32) -> Installed {
        let grace = self.repl_grace;
        // The stable tenant key names the gateway; its slot here may differ from the peer's.
        let Some(gi) = self.gws.iter().position(|g| g.repl_key == e.tenant) else {
            return Installed::Rejected(Reject::UnknownTenant);
        };
        let (Some(g), Some(c)) = (self.gws.get_mut(gi), self.counters.get_mut(gi)) else {
            return Installed::Other;
        };
        if e.proto == 0 {
            return Installed::Rejected(Reject::Malformed);
        }
        if !g.public_ips.iter().any(|&p| u32::from(p) == e.public_ip) {
            return Installed::Rejected(Reject::Mismatch);
        }
        let f = Flow {
            inside_ip: e.inside_ip,
            remote_ip: e.remote_ip,
            public_ip: e.public_ip,
            inside_port: e.inside_port,
            remote_port: e.remote_port,
            public_port: e.public_port,
            proto: e.proto,
            state: (e.state & WIRE_STATE) | st::REPLICA,
            deadline: t
                .wrapping_add(e.remaining.min(u32::MAX / 8))
                .wrapping_add(grace),
        };
        let by_out = g.flows.lookup_out(&f.out_key());
        let existing = by_out.or_else(|| g.flows.lookup_in(&f.in_key()));
        if let Some(idx) = existing {
            let Some(cur) = g.flows.get(idx).copied() else {
                return Installed::Other;
            };
            if cur.in_key() != f.in_key() || cur.out_key() != f.out_key() {
                // This node maps one side differently: its own flow wins.
                return Installed::Rejected(Reject::Conflict);
            }
            let replica = cur.state & st::REPLICA != 0;
            if e.kind == EV_DEL {
                if replica {
                    g.retire(idx, t);
                    c.active_connections = c.active_connections.saturating_sub(1);
                    return Installed::Deleted;
                }
                return Installed::Other;
            }
            if let Some((cf, win)) = g.flows.get_tcp_mut(idx) {
                if replica {
                    // The permission bit stays the replica's own (it holds a count).
                    cf.state = (f.state & !st::ALLOWS) | (cf.state & st::ALLOWS);
                    cf.deadline = f.deadline;
                    if f.proto == crate::wire::IPPROTO_TCP {
                        *win = tcp_state::from_scales(e.scale);
                    }
                } else if expiry::is_due(cf.deadline, f.deadline) {
                    cf.deadline = f.deadline;
                }
            }
            return if replica {
                Installed::Updated
            } else {
                Installed::Other
            };
        }
        if e.kind == EV_DEL {
            return Installed::Other;
        }
        if g.flows.len() >= g.flows.capacity() {
            return Installed::Rejected(Reject::TableFull);
        }
        if g.eim.is_some() {
            return store_eim(g, c, f, e.scale);
        }
        let Some(idx) = g.store_at(c, f) else {
            return Installed::Other;
        };
        let pi = g
            .public_ips
            .iter()
            .position(|&p| u32::from(p) == f.public_ip)
            .unwrap_or(0);
        g.dests
            .inc(Dest::new(pi, f.remote_ip, f.remote_port, f.proto));
        if f.proto == crate::wire::IPPROTO_TCP {
            if let Some((_, win)) = g.flows.get_tcp_mut(idx) {
                *win = tcp_state::from_scales(e.scale);
            }
        }
        Installed::New
    }
}

/// A new replica of an `rfc4787` gateway: bound to the inside endpoint's mapping (made
/// here if this is its first flow; refused if this node maps either endpoint otherwise),
/// with its filtering permission if it carries `ALLOWS`, as `Gateway::bind` does.
fn store_eim(
    g: &mut Gateway,
    c: &mut super::GatewayCounters,
    f: Flow,
    scale: [u8; 2],
) -> Installed {
    let Some(eim) = g.eim.as_mut() else {
        return Installed::Other;
    };
    let m_idx = match eim.lookup_inside(f.proto, f.inside_ip, f.inside_port) {
        Some(m) => match eim.get(m) {
            Some(mp) if mp.public_ip == f.public_ip && mp.public_port == f.public_port => m,
            _ => return Installed::Rejected(Reject::Conflict),
        },
        None => {
            if eim
                .lookup_public(f.proto, f.public_ip, f.public_port)
                .is_some()
            {
                return Installed::Rejected(Reject::Conflict);
            }
            let m = super::eim::Mapping {
                inside_ip: f.inside_ip,
                public_ip: f.public_ip,
                refs: 0,
                inside_port: f.inside_port,
                public_port: f.public_port,
                proto: f.proto,
            };
            match eim.insert(m) {
                Some(i) => i,
                None => return Installed::Rejected(Reject::TableFull),
            }
        }
    };
    let Some(idx) = g.store_at(c, f) else {
        if let Some(e) = g.eim.as_mut() {
            e.release_unused(m_idx);
        }
        return Installed::Rejected(Reject::TableFull);
    };
    let Gateway { eim, flows, .. } = g;
    if let Some(e) = eim.as_mut() {
        e.acquire(m_idx);
        if f.state & st::ALLOWS != 0 && !e.permit(&f) {
            if let Some(fl) = flows.get_mut(idx) {
                fl.state &= !st::ALLOWS;
            }
        }
    }
    if f.proto == crate::wire::IPPROTO_TCP {
        if let Some((_, win)) = flows.get_tcp_mut(idx) {
            *win = tcp_state::from_scales(scale);
        }
    }
    Installed::New
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repl::worker_rings;

    const YAML: &str = "
lcores: {workers: [1]}
ports:
  - {name: a, device: net_null0, addresses: [10.0.1.1/24]}
  - {name: b, device: net_null1, addresses: [192.0.2.1/24]}
nat_gateways:
  - id: g
    inside_prefixes: [10.0.1.0/24]
    public_ips: [192.0.2.10]
";

    fn worker() -> (NatWorker, crate::repl::ControlEnd) {
        let cfg = crate::config::parse_str(YAML, "t.yaml").unwrap_or_else(|e| panic!("{e}"));
        let mut w = NatWorker::new(&cfg.nat_gateways, 0, 1, 16_000);
        let (wr, ce) = worker_rings();
        w.set_replication(wr, 10);
        (w, ce)
    }

    fn add(port: u16) -> FlowEvent {
        FlowEvent {
            kind: EV_ADD,
            tenant: crate::repl::tenant_key("g"),
            proto: 17,
            state: 0,
            scale: [0, 0],
            inside_ip: 0x0a00_0102,
            remote_ip: 0xcb00_710a,
            public_ip: 0xc000_020a,
            inside_port: 5000,
            remote_port: 53,
            public_port: port,
            remaining: 100,
            ..FlowEvent::default()
        }
    }

    #[test]
    fn replicas_install_reserve_dump_and_delete() {
        let (mut w, mut ce) = worker();
        let now = 1_000 * 16_000;
        ce.installs.push(add(2000)).unwrap();
        let mut other = add(2001);
        other.inside_port = 5001;
        ce.installs.push(other).unwrap();
        // Same inside key, other public port: a conflict, refused.
        let mut clash = add(2002);
        clash.kind = EV_REFRESH;
        ce.installs.push(clash).unwrap();
        w.replication_poll(now);
        assert_eq!(w.flows(), 2);
        let r = w.repl.as_ref().unwrap();
        assert_eq!((r.installed, r.conflicts), (2, 1));
        // The replica is found from outside, and is no local flow: it emits nothing.
        let f = add(2000);
        let k = super::super::flow::Key::new(
            17,
            std::net::Ipv4Addr::from(f.public_ip),
            2000,
            std::net::Ipv4Addr::from(f.remote_ip),
            53,
        );
        assert!(w.gws[0].flows.lookup_out(&k).is_some());
        assert!(ce.events.pop().is_err());
        // A dump lists both, then its end marker.
        ce.installs
            .push(FlowEvent {
                kind: EV_DUMP_REQ,
                ..FlowEvent::default()
            })
            .unwrap();
        let mut got = Vec::new();
        for _ in 0..10_000 {
            w.replication_poll(now);
            while let Ok(e) = ce.events.pop() {
                got.push(e);
            }
            if got.last().is_some_and(|e| e.kind == EV_DUMP_END) {
                break;
            }
        }
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got[2].kind, EV_DUMP_END);
        let mut ports: Vec<u16> = got[..2].iter().map(|e| e.public_port).collect();
        ports.sort();
        assert_eq!(ports, [2000, 2001]);
        // DEL removes a replica.
        let mut del = add(2000);
        del.kind = EV_DEL;
        ce.installs.push(del).unwrap();
        w.replication_poll(now);
        assert_eq!(w.flows(), 1);
        // Garbage (unknown gateway, proto 0) changes nothing and never panics.
        let mut junk = add(1);
        junk.tenant = crate::repl::tenant_key("other");
        ce.installs.push(junk).unwrap();
        ce.installs.push(FlowEvent::default()).unwrap();
        w.replication_poll(now);
        assert_eq!(w.flows(), 1);
    }

    #[test]
    fn picked_up_replica_survives_zero_window_probe_then_turns_strict() {
        use crate::wire::tcp::ACK;
        let seg = |seq: u32, ack: u32, len: u32, win: u16| tcp_state::Seg {
            flags: ACK,
            seq,
            ack,
            win,
            len,
            wscale: None,
        };
        let mut w = tcp_state::from_scales([0x87, 0x87]);
        let est = tcp_state::ESTABLISHED;
        // The server's zero-window probe (seq = snd_una - 1) is the first segment here...
        assert!(tcp_state::track(&mut w, est, false, &seg(999, 5000, 0, 500)).is_ok());
        // ...then the client's ACKs (beyond the probe) and window update.
        assert!(tcp_state::track(&mut w, est, true, &seg(5000, 1000, 0, 0)).is_ok());
        assert!(tcp_state::track(&mut w, est, true, &seg(5000, 1000, 0, 64)).is_ok());
        // Data flows on; once a segment passes the checks both ways, they are strict again.
        assert!(tcp_state::track(&mut w, est, false, &seg(1000, 5000, 1000, 500)).is_ok());
        assert!(tcp_state::track(&mut w, est, true, &seg(5000, 2000, 0, 64)).is_ok());
        let blind = seg(1_000_000_000, 5000, 100, 500);
        assert!(tcp_state::track(&mut w, est, false, &blind).is_err());
    }

    #[test]
    fn scales_survive_the_trip() {
        let w = tcp_state::from_scales([0x87, 0x82]);
        assert_eq!(tcp_state::scales(&w), [0x87, 0x82]);
        let w = tcp_state::from_scales([0x0f, 0]);
        assert_eq!(tcp_state::scales(&w), [0x0e, 0]);
    }

    /// rfc4787 gateways replicate: a replica binds to its endpoint-independent mapping
    /// (made by the first one), takes its permission, conflicts are refused, and the
    /// owner's DELs release the mapping with the last flow.
    #[test]
    fn rfc4787_replicas_bind_mappings_and_permissions() {
        let y = YAML.replace(
            "    public_ips: [192.0.2.10]\n",
            "    public_ips: [192.0.2.10]\n    mode: rfc4787\n",
        );
        let cfg = crate::config::parse_str(&y, "t.yaml").unwrap_or_else(|e| panic!("{e}"));
        let mut w = NatWorker::new(&cfg.nat_gateways, 0, 1, 16_000);
        let (wr, mut ce) = worker_rings();
        w.set_replication(wr, 10);
        let now = 1_000 * 16_000;
        let mut a = add(3000);
        a.state = st::ALLOWS;
        // Same inside endpoint and public endpoint, another remote: the same mapping.
        let mut b = a;
        b.remote_ip += 1;
        // Same inside endpoint, another public port: refused.
        let mut clash = a;
        clash.remote_ip += 2;
        clash.public_port = 3001;
        for e in [a, b, clash] {
            ce.installs.push(e).unwrap();
        }
        w.replication_poll(now);
        let r = w.repl.as_ref().unwrap();
        assert_eq!((r.installed, r.conflicts), (2, 1));
        let eim = w.gws[0].eim.as_ref().unwrap();
        let m = eim.lookup_public(17, a.public_ip, 3000).expect("mapping");
        assert_eq!(eim.get(m).map(|m| (m.refs, m.inside_port)), Some((2, 5000)));
        assert!(eim.allowed(17, a.public_ip, 3000, a.remote_ip));
        assert!(eim.allowed(17, a.public_ip, 3000, b.remote_ip));
        assert!(!eim.allowed(17, a.public_ip, 3000, clash.remote_ip));
        // The owner's DELs: the mapping and permissions go with the last flow.
        for mut e in [a, b] {
            e.kind = EV_DEL;
            ce.installs.push(e).unwrap();
        }
        w.replication_poll(now);
        let eim = w.gws[0].eim.as_ref().unwrap();
        assert_eq!(eim.len(), 0);
        assert!(!eim.allowed(17, a.public_ip, 3000, a.remote_ip));
        assert_eq!(w.flows(), 0);
    }
}

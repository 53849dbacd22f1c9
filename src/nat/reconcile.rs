//! Live reload of NAT gateways (SIGHUP). The control thread keeps the tenant slots
//! (`NatTenants`): a gateway keeps its slot index from the reload that adds it until its
//! drain ends, so per-gateway tables, counters and metrics stay where they are. On a reload
//! it diffs the new gateway list against the slots by `id`, builds every new gateway's
//! tables (allocation happens here, never on a worker) and sends each worker a
//! `NatUpdate`; the worker swaps it in between bursts (`NatWorker::reconcile`: moves, no
//! allocation) and hands back what it replaced for the control thread to free.
//!
//! - unchanged gateways: nothing of theirs changes;
//! - changed parameters (inside prefixes, timeouts, port range, limits, public IPs) apply
//!   in place; existing flows keep their public IP and port (ports of live flows stay
//!   taken: allocation probes the flow table);
//! - a removed public IP drains: no new flows on it, existing ones continue (ARP still
//!   answered) until `drain_timeout_s`, then it retires: its flows are removed when next
//!   seen (an inside TCP segment then gets a RST) and ARP is withdrawn;
//! - a removed gateway drains the same way as a whole, then its slot holds an empty
//!   placeholder (reused by the next gateway added);
//! - `mode` and `flows_per_core` size and shape the tables: changing them replaces the
//!   gateway. The new one is built in a fresh slot (after the old one's, so the inside
//!   match reaches the old one first) and takes every new flow; the old one keeps its
//!   slot, marked `replaced`, and drains (`drain_timeout_s`) on the same public IPs:
//!   outbound packets of its flows still match it (`inside_gateway_draining`), return
//!   traffic to a public IP both hold is matched against its flows first (`shared`,
//!   `replaced_or`), and the new gateway never allocates a port one of its flows holds
//!   toward the same remote (`with_pred`). At most one replacement of a gateway drains at
//!   a time, so replacements cost at most one extra slot per gateway.

use super::east_west::NoTranslate;
use super::flow::Key;
use super::ports::{PortAllocator, Rng, RssSteering};
use super::{icmp_error, ip_st, udp_ports, Gateway, GatewayCounters, Ip, NatWorker};
use crate::config::{Config, Ipv4Net, NatGatewayConfig, NatMode, NatPortRange, NatTimeouts};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// Gateway slots per worker (published counters are sized for this many: about 0.5 KiB
/// per slot and worker). Slots are reused once their gateway's drain ends.
pub const MAX_SLOTS: usize = 1024;

/// What a reload makes of one gateway slot on one worker.
// Not boxed: the worker moves the gateway out, and a box would then be freed there.
#[allow(clippy::large_enum_variant)]
pub(crate) enum SlotUpdate {
    /// Same tenant: its tables and flows stay; these parameters are swapped in.
    Keep(Params),
    /// A new tenant, or the empty placeholder of a freed slot (built by the control thread).
    Fresh(Option<Gateway>),
}

/// A kept gateway's parameters (the vectors come back, swapped, to be freed).
pub struct Params {
    inside: Vec<Ipv4Net>,
    public_ips: Vec<Ipv4Addr>,
    ip_state: Vec<u8>,
    timeouts: [u32; 4],
    ports: (u16, u16, u32),
    no_translate: NoTranslate,
    draining: bool,
    /// The tenant limits as reloaded (a fresh bucket: at most one extra burst per reload).
    limiter: crate::limits::TenantLimiter,
    /// The slot of the replaced gateway draining on its public IPs, if any.
    pred: Option<usize>,
}

impl Params {
    /// A free slot's placeholder stays as it is.
    fn empty() -> Params {
        Params {
            inside: Vec::new(),
            public_ips: Vec::new(),
            ip_state: Vec::new(),
            timeouts: [1; 4],
            ports: (1024, 65535, 1),
            no_translate: NoTranslate::default(),
            draining: false,
            limiter: crate::limits::TenantLimiter::unlimited(),
            pred: None,
        }
    }
}

/// One worker's part of a reload.
pub struct NatUpdate {
    slots: Vec<SlotUpdate>,
    public: hashbrown::HashMap<u32, usize>,
    /// Public IPs a replaced gateway drains on while its successor holds them.
    shared: hashbrown::HashMap<u32, usize>,
    /// Empty, with room for every slot (the worker moves its gateways in).
    gws: Vec<Gateway>,
    counters: Vec<GatewayCounters>,
    /// Filled by the worker: gateways it dropped, and its replaced containers.
    garbage: Vec<Gateway>,
    old_gws: Vec<Gateway>,
    old_counters: Vec<GatewayCounters>,
}

impl NatUpdate {
    /// Gateways the worker gave back (tests).
    pub fn dropped(&self) -> usize {
        self.garbage.len()
    }
}

impl Gateway {
    fn apply(
        &mut self,
        p: &mut Params,
        worker: usize,
        n_workers: usize,
        steering: Option<&RssSteering>,
    ) {
        std::mem::swap(&mut self.inside, &mut p.inside);
        std::mem::swap(&mut self.public_ips, &mut p.public_ips);
        std::mem::swap(&mut self.ip_state, &mut p.ip_state);
        std::mem::swap(&mut self.no_translate, &mut p.no_translate);
        [
            self.to_tcp_est,
            self.to_tcp_trans,
            self.to_udp,
            self.to_icmp,
        ] = p.timeouts;
        let (first, last, limit) = p.ports;
        // No heap: the allocator is a handful of numbers (ports of live flows stay taken:
        // allocation probes the flow table).
        self.ports = PortAllocator::new(first, last, limit, worker, n_workers);
        self.ports
            .set_steering(steering.filter(|_| self.eim.is_none()));
        self.draining = p.draining;
        self.limiter = p.limiter;
        self.any_retired = self.ip_state.contains(&ip_st::RETIRED);
        self.pred = p.pred;
    }

    /// Whether return traffic (to a public IP) belongs to a flow of this gateway on this
    /// worker. Later fragments carry no ports: no.
    fn has_outside_flow(&self, frame: &[u8], ip: &Ip) -> bool {
        let l4 = frame.get(14 + ip.hl..14 + ip.len).unwrap_or(&[]);
        let key = match ip.proto {
            _ if ip.is_later_fragment() => return false,
            crate::wire::IPPROTO_TCP | crate::wire::IPPROTO_UDP if l4.len() >= 8 => {
                let (s, d) = udp_ports(frame, ip);
                Key::new(ip.proto, ip.dst, d, ip.src, s)
            }
            crate::wire::IPPROTO_ICMP if l4.len() >= 8 => {
                if l4[0] == crate::wire::icmp::ECHO_REPLY {
                    let id = u16::from_be_bytes([l4[4], l4[5]]);
                    Key::new(crate::wire::IPPROTO_ICMP, ip.dst, id, ip.src, 0)
                } else if icmp_error::is_translated_error(l4[0]) {
                    match icmp_error::parse(l4) {
                        Ok(q) => Key::new(q.proto, q.src, q.sport, q.dst, q.dport),
                        Err(_) => return false,
                    }
                } else {
                    return false;
                }
            }
            _ => return false,
        };
        self.flows.lookup_out(&key).is_some()
    }
}

/// `gws[gi]`, and the replaced gateway draining on its public IPs (read only: its flows'
/// ports stay taken for the new gateway's allocation).
pub(super) fn with_pred(
    gws: &mut [Gateway],
    gi: usize,
) -> (Option<&mut Gateway>, Option<&Gateway>) {
    match gws.get(gi).and_then(|g| g.pred) {
        Some(p) if p < gi => {
            let (a, b) = gws.split_at_mut(gi);
            (b.first_mut(), a.get(p))
        }
        Some(p) if p > gi && p < gws.len() => {
            let (a, b) = gws.split_at_mut(p);
            (a.get_mut(gi), b.first())
        }
        _ => (gws.get_mut(gi), None),
    }
}

impl NatWorker {
    /// The gateway for return traffic to a public IP that `public` gives to `gi`: while a
    /// replaced gateway drains on the same IP, the old one when the packet is of one of
    /// its flows (one hash lookup, only then).
    #[inline]
    pub(super) fn replaced_or(&self, gi: usize, frame: &[u8], ip: &Ip) -> usize {
        if self.shared.is_empty() {
            return gi;
        }
        match self.shared.get(&u32::from(ip.dst)) {
            Some(&o)
                if self
                    .gws
                    .get(o)
                    .is_some_and(|g| g.has_outside_flow(frame, ip)) =>
            {
                o
            }
            _ => gi,
        }
    }
}

impl NatWorker {
    /// Between bursts: takes the new gateway slots. Moves only; what it replaced goes back
    /// in `u` to be freed by the control thread.
    pub fn reconcile(&mut self, u: &mut NatUpdate) {
        let mut old = std::mem::replace(&mut self.gws, std::mem::take(&mut u.gws));
        let mut old_c = std::mem::replace(&mut self.counters, std::mem::take(&mut u.counters));
        {
            let mut prev = old.drain(..);
            let mut prev_c = old_c.drain(..);
            for s in u.slots.iter_mut() {
                let (p, pc) = (prev.next(), prev_c.next());
                match (s, p) {
                    (SlotUpdate::Keep(params), Some(mut g)) => {
                        g.apply(params, self.worker, self.n_workers, self.steering.as_ref());
                        self.gws.push(g);
                        self.counters.push(pc.unwrap_or_default());
                    }
                    (SlotUpdate::Fresh(fresh), p) => {
                        if let Some(mut g) = fresh.take() {
                            if g.eim.is_none() {
                                g.ports.set_steering(self.steering.as_ref());
                            }
                            self.gws.push(g);
                            self.counters.push(GatewayCounters::default());
                        }
                        if let Some(p) = p {
                            u.garbage.push(p);
                        }
                    }
                    // The control thread mirrors the slots: cannot happen.
                    (SlotUpdate::Keep(_), None) => {}
                }
            }
            u.garbage.extend(prev);
        }
        u.old_gws = old;
        u.old_counters = old_c;
        std::mem::swap(&mut self.public, &mut u.public);
        std::mem::swap(&mut self.shared, &mut u.shared);
        self.hairpin = self.gws.iter().any(|g| g.eim.is_some());
        self.draining = self.gws.iter().any(|g| g.draining);
    }
}

/// One slot on the control side.
#[derive(Debug, Clone, Default)]
struct Slot {
    /// `None`: free (an empty placeholder on the workers).
    cfg: Option<NatGatewayConfig>,
    /// Removed from the config: drains until then.
    drain_until: Option<Instant>,
    /// Public IPs by slot: (address, `ip_st`, drain deadline).
    ips: Vec<(Ipv4Addr, u8, Option<Instant>)>,
    /// The workers need new tables for it in the next update.
    fresh: bool,
    /// Replaced by a gateway of the same id (new `mode` or `flows_per_core`): drains.
    replaced: bool,
}

impl Slot {
    /// A new gateway's slot: every public IP active, tables to build.
    fn new_gateway(g: &NatGatewayConfig) -> Slot {
        Slot {
            cfg: Some(g.clone()),
            drain_until: None,
            ips: g
                .public_ips
                .iter()
                .map(|&ip| (ip, ip_st::ACTIVE, None))
                .collect(),
            fresh: true,
            replaced: false,
        }
    }
}

/// The control thread's view of the gateway slots.
#[derive(Debug, Clone, Default)]
pub struct NatTenants {
    slots: Vec<Slot>,
    /// TSC frequency (the tenant limiters of built gateways refill from the TSC).
    tsc_hz: u64,
    /// Flow / translation logs on: (flows, mappings, interval_s) for new gateways' counters.
    log: Option<(bool, bool, u32)>,
}

fn placeholder_cfg() -> NatGatewayConfig {
    NatGatewayConfig {
        id: String::new(),
        inside_prefixes: Vec::new(),
        public_ips: Vec::new(),
        port_range: NatPortRange::default(),
        max_connections_per_destination: None,
        timeouts: NatTimeouts::default(),
        flows_per_core: 16,
        tcp_flows_per_core: None,
        mode: NatMode::Aws,
        tcp_time_wait_guard_s: 0,
        inside_ports: None,
        drop_foreign_inside_sources: false,
        no_translate: Vec::new(),
        limits: Default::default(),
        drain_timeout_s: 0,
    }
}

impl NatTenants {
    /// The gateways the workers were started with, in config order.
    pub fn new(gws: &[NatGatewayConfig], tsc_hz: u64) -> NatTenants {
        NatTenants {
            tsc_hz,
            log: None,
            slots: gws
                .iter()
                // Built at start with the workers' tables: nothing fresh to build.
                .map(|g| Slot {
                    fresh: false,
                    ..Slot::new_gateway(g)
                })
                .collect(),
        }
    }

    /// Diffs `new` against the slots (by id). On error nothing changed. Returns a line per
    /// change for the log.
    pub fn reload(
        &mut self,
        new: &[NatGatewayConfig],
        now: Instant,
    ) -> Result<Vec<String>, String> {
        let mut next = self.clone();
        let mut log = Vec::new();
        let drain = |g: &NatGatewayConfig| now + Duration::from_secs(u64::from(g.drain_timeout_s));
        // Removed gateways drain.
        for s in next.slots.iter_mut() {
            let Some(c) = s.cfg.as_ref() else { continue };
            if s.drain_until.is_none() && !new.iter().any(|g| g.id == c.id) {
                s.drain_until = Some(drain(c));
                log.push(format!(
                    "nat gateway {}: removed, draining for up to {} s",
                    c.id, c.drain_timeout_s
                ));
            }
        }
        for g in new {
            let at = next
                .slots
                .iter()
                .position(|s| !s.replaced && s.cfg.as_ref().is_some_and(|c| c.id == g.id));
            if let Some(i) = at.filter(|&i| next.shapes_changed(i, g)) {
                log.push(next.replace(i, g, drain(g))?);
                continue;
            }
            match at {
                Some(i) => {
                    let s = &mut next.slots[i];
                    let Some(old) = s.cfg.clone() else { continue };
                    if s.drain_until.take().is_some() {
                        log.push(format!("nat gateway {}: back, drain cancelled", g.id));
                    }
                    for e in s.ips.iter_mut() {
                        if e.1 == ip_st::ACTIVE && !g.public_ips.contains(&e.0) {
                            e.1 = ip_st::DRAINING;
                            e.2 = Some(drain(g));
                            log.push(format!(
                                "nat gateway {}: public IP {} removed, draining for up to {} s",
                                g.id, e.0, g.drain_timeout_s
                            ));
                        }
                    }
                    for &ip in &g.public_ips {
                        match s.ips.iter_mut().find(|e| e.0 == ip) {
                            Some(e) => {
                                e.1 = ip_st::ACTIVE;
                                e.2 = None;
                            }
                            None => {
                                s.ips.push((ip, ip_st::ACTIVE, None));
                                log.push(format!("nat gateway {}: public IP {ip} added", g.id));
                            }
                        }
                    }
                    if s.ips.len() > 255 {
                        return Err(format!(
                            "nat gateway `{}`: too many public IP changes since start \
                             (restart needed)",
                            g.id
                        ));
                    }
                    if old != *g {
                        log.push(format!("nat gateway {}: updated in place", g.id));
                    }
                    s.cfg = Some(g.clone());
                }
                None => {
                    let slot = Slot::new_gateway(g);
                    next.place(slot, 0, &g.id)?;
                    log.push(format!("nat gateway {}: added", g.id));
                }
            }
        }
        // A public IP belongs to one gateway, draining ones included.
        for (i, s) in next.slots.iter().enumerate() {
            for (ip, st, _) in s.ips.iter().filter(|e| e.1 != ip_st::RETIRED) {
                let Some(c) = s.cfg.as_ref() else { continue };
                let other = next.slots.iter().enumerate().find(|(j, o)| {
                    *j != i
                        && o.cfg.is_some()
                        // A replaced gateway shares its IPs with its successor.
                        && !((s.replaced || o.replaced)
                            && o.cfg.as_ref().is_some_and(|oc| oc.id == c.id))
                        && o.ips.iter().any(|e| e.0 == *ip && e.1 != ip_st::RETIRED)
                });
                if let Some((_, o)) = other {
                    let oid = o.cfg.as_ref().map_or("", |c| c.id.as_str());
                    if *st != ip_st::ACTIVE || s.drain_until.is_some() {
                        return Err(format!(
                            "public IP {ip} of nat gateway `{oid}` is still draining from \
                             gateway `{}` (wait for its drain_timeout_s)",
                            c.id
                        ));
                    }
                }
            }
        }
        *self = next;
        Ok(log)
    }

    /// Slot `i` holds a gateway whose tables `g` reshapes (`mode`, `flows_per_core`).
    fn shapes_changed(&self, i: usize, g: &NatGatewayConfig) -> bool {
        self.slots[i].cfg.as_ref().is_some_and(|c| {
            c.mode != g.mode
                || c.flows_per_core != g.flows_per_core
                || c.tcp_flows_per_core != g.tcp_flows_per_core
        })
    }

    /// Replaces the gateway of slot `i` by `g` (same id) built in a fresh slot; the old one
    /// drains until `until` (see the module doc). Returns the log line.
    fn replace(
        &mut self,
        i: usize,
        g: &NatGatewayConfig,
        until: Instant,
    ) -> Result<String, String> {
        if self
            .slots
            .iter()
            .any(|s| s.replaced && s.cfg.as_ref().is_some_and(|c| c.id == g.id))
        {
            return Err(format!(
                "nat gateway `{}`: mode or flows_per_core changed while the gateway it \
                 replaced before still drains (wait for its drain_timeout_s)",
                g.id
            ));
        }
        let old = self.slots[i].cfg.clone().unwrap_or_else(placeholder_cfg);
        let s = &mut self.slots[i];
        s.replaced = true;
        s.drain_until = Some(s.drain_until.map_or(until, |d| d.min(until)));
        let j = self.place(Slot::new_gateway(g), i + 1, &g.id)?;
        Ok(format!(
            "nat gateway {}: mode {:?} -> {:?}, flows_per_core {} -> {}: replaced (new flows \
             in slot {j}; slot {i} keeps its flows, draining for up to {} s)",
            g.id, old.mode, g.mode, old.flows_per_core, g.flows_per_core, g.drain_timeout_s
        ))
    }

    /// Puts `slot` in the first free slot from `from` on (or a new one); its index.
    fn place(&mut self, slot: Slot, from: usize, id: &str) -> Result<usize, String> {
        match self.slots.iter().skip(from).position(|s| s.cfg.is_none()) {
            Some(k) => {
                self.slots[from + k] = slot;
                Ok(from + k)
            }
            None if self.slots.len() < MAX_SLOTS => {
                self.slots.push(slot);
                Ok(self.slots.len() - 1)
            }
            None => Err(format!(
                "nat gateway `{id}`: no free slot ({MAX_SLOTS} gateways, draining and \
                 replaced ones included, until a drain ends; or restart)"
            )),
        }
    }

    /// The slot of the replaced gateway draining beside slot `i`'s gateway, if any.
    fn pred_of(&self, i: usize) -> Option<usize> {
        let s = &self.slots[i];
        let id = &s.cfg.as_ref().filter(|_| !s.replaced)?.id;
        self.slots
            .iter()
            .position(|o| o.replaced && o.cfg.as_ref().is_some_and(|c| c.id == *id))
    }

    /// The gateway `id` (not the replaced one) has public IP `ip` (not retired).
    fn successor_has(&self, id: &str, ip: Ipv4Addr) -> bool {
        self.slots.iter().any(|s| {
            !s.replaced
                && s.cfg.as_ref().is_some_and(|c| c.id == id)
                && s.ips.iter().any(|e| e.0 == ip && e.1 != ip_st::RETIRED)
        })
    }

    /// Ends drains that are due. True when the workers need an update.
    pub fn tick(&mut self, now: Instant) -> Vec<String> {
        let mut log = Vec::new();
        for s in self.slots.iter_mut() {
            if s.drain_until.is_some_and(|d| d <= now) {
                if let Some(c) = s.cfg.as_ref() {
                    log.push(match s.replaced {
                        true => format!("nat gateway {}: replaced one drained, retired", c.id),
                        false => format!("nat gateway {}: drain ended, removed", c.id),
                    });
                }
                *s = Slot {
                    fresh: true,
                    ..Slot::default()
                };
                continue;
            }
            for e in s.ips.iter_mut() {
                if e.1 == ip_st::DRAINING && e.2.is_some_and(|d| d <= now) {
                    e.1 = ip_st::RETIRED;
                    e.2 = None;
                    if let Some(c) = s.cfg.as_ref() {
                        log.push(format!(
                            "nat gateway {}: public IP {} drained, retired",
                            c.id, e.0
                        ));
                    }
                }
            }
        }
        log
    }

    /// Metric label per slot ("" for a free slot; `ID~replaced` for a replaced gateway
    /// that drains, so the two series of one id stay apart).
    pub fn ids(&self) -> Vec<String> {
        self.slots
            .iter()
            .map(|s| match s.cfg.as_ref() {
                Some(c) if s.replaced => format!("{}~replaced", c.id),
                Some(c) => c.id.clone(),
                None => String::new(),
            })
            .collect()
    }

    /// Gateways for the forwarding table (ARP answers, source filters): every gateway
    /// still holding flows, with its public IPs that are not retired.
    pub fn fib_gateways(&self) -> Vec<NatGatewayConfig> {
        self.slots
            .iter()
            .filter_map(|s| {
                let mut c = s.cfg.clone()?;
                c.public_ips = s
                    .ips
                    .iter()
                    .filter(|e| e.1 != ip_st::RETIRED)
                    // An IP a replaced gateway shares with its successor: listed once.
                    .filter(|e| !s.replaced || !self.successor_has(&c.id, e.0))
                    .map(|e| e.0)
                    .collect();
                Some(c)
            })
            .collect()
    }

    /// Flow / translation logs are on: gateways added by a reload get their counters too.
    pub fn set_log(&mut self, flows: bool, mappings: bool, interval_s: u32) {
        self.log = Some((flows, mappings, interval_s));
    }

    /// Some slot drains (the control thread then checks `tick`).
    pub fn draining(&self) -> bool {
        self.slots
            .iter()
            .any(|s| s.drain_until.is_some() || s.ips.iter().any(|e| e.1 == ip_st::DRAINING))
    }

    /// Worker `worker`'s update for the current slots; `cfg` is the running config
    /// (routes, ports: east-west exemptions). Call `sent` once every worker has one.
    pub fn update_for(
        &self,
        cfg: &Config,
        worker: usize,
        n_workers: usize,
        rng: &mut Rng,
    ) -> NatUpdate {
        let mut public = hashbrown::HashMap::new();
        let mut shared = hashbrown::HashMap::new();
        // Successors first: a replaced gateway's IP they hold too goes to `shared`.
        for replaced in [false, true] {
            for (i, s) in self.slots.iter().enumerate() {
                if s.replaced != replaced || s.cfg.is_none() {
                    continue;
                }
                for e in s.ips.iter().filter(|e| e.1 != ip_st::RETIRED) {
                    match public.entry(u32::from(e.0)) {
                        hashbrown::hash_map::Entry::Vacant(v) => {
                            v.insert(i);
                        }
                        hashbrown::hash_map::Entry::Occupied(_) if replaced => {
                            shared.insert(u32::from(e.0), i);
                        }
                        hashbrown::hash_map::Entry::Occupied(_) => {}
                    }
                }
            }
        }
        let mut slots = Vec::with_capacity(self.slots.len());
        for (i, s) in self.slots.iter().enumerate() {
            let pred = self.pred_of(i);
            let Some(c) = s.cfg.as_ref() else {
                slots.push(if s.fresh {
                    SlotUpdate::Fresh(Some(Gateway::build(
                        &placeholder_cfg(),
                        worker,
                        n_workers,
                        self.tsc_hz,
                        rng,
                    )))
                } else {
                    SlotUpdate::Keep(Params::empty())
                });
                continue;
            };
            if s.fresh {
                let mut g = Gateway::build(c, worker, n_workers, self.tsc_hz, rng);
                g.pred = pred;
                if let Some((flows, mappings, interval_s)) = self.log {
                    g.log = Some(crate::flowlog::GwLog::new(
                        i,
                        g.flows.capacity(),
                        flows,
                        mappings,
                        interval_s,
                    ));
                }
                slots.push(SlotUpdate::Fresh(Some(g)));
                continue;
            }
            let t = &c.timeouts;
            slots.push(SlotUpdate::Keep(Params {
                inside: c.inside_prefixes.clone(),
                public_ips: s.ips.iter().map(|e| e.0).collect(),
                ip_state: s.ips.iter().map(|e| e.1).collect(),
                timeouts: [t.tcp_established_s, t.tcp_transitory_s, t.udp_s, t.icmp_s]
                    .map(super::ticks),
                ports: (
                    c.port_range.first.clamp(1, 65535) as u16,
                    c.port_range.last.clamp(1, 65535) as u16,
                    c.connection_limit(),
                ),
                no_translate: NoTranslate::from_config(cfg, c),
                draining: s.drain_until.is_some(),
                limiter: crate::limits::TenantLimiter::new(
                    &c.limits,
                    worker,
                    n_workers,
                    self.tsc_hz,
                ),
                pred,
            }));
        }
        let n = slots.len();
        NatUpdate {
            slots,
            public,
            shared,
            gws: Vec::with_capacity(n),
            counters: Vec::with_capacity(n),
            garbage: Vec::with_capacity(n),
            old_gws: Vec::new(),
            old_counters: Vec::new(),
        }
    }

    /// Every worker got its update: fresh slots are now built.
    pub fn sent(&mut self) {
        for s in self.slots.iter_mut() {
            s.fresh = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{gw, out_port, udp, HZ, IN1, IN2, PUB0, PUB1, REMOTE};
    use super::super::NatVerdict;
    use super::*;
    use crate::packet::VecBuf;
    use crate::pipeline::counters::DropReason;

    const PUB2: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 12);

    fn tenant(id: &str, inside: &str, ips: &[Ipv4Addr], drain: u32) -> NatGatewayConfig {
        NatGatewayConfig {
            id: id.into(),
            inside_prefixes: vec![inside.parse().unwrap()],
            drain_timeout_s: drain,
            ..gw(1024, 65535, None, 256, ips)
        }
    }

    fn cfg() -> Config {
        crate::config::parse_str(
            "lcores: {workers: [1]}\nports:\n  - {name: a, device: net_null0, addresses: [203.0.113.1/24]}\n",
            "t.yaml",
        )
        .unwrap()
    }

    fn apply(t: &mut NatTenants, w: &mut NatWorker) -> NatUpdate {
        let mut rng = Rng::new(7);
        let mut u = t.update_for(&cfg(), 0, 1, &mut rng);
        t.sent();
        w.reconcile(&mut u);
        u
    }

    fn verdict(w: &mut NatWorker, mut b: VecBuf, now: u64) -> NatVerdict {
        w.process(&mut b, now)
    }

    #[test]
    fn add_change_remove_keep_the_flows_of_unchanged_gateways() {
        let a = tenant("a", "10.0.1.5/32", &[PUB0], 10);
        let b = tenant("b", "10.0.1.6/32", &[PUB1], 10);
        let mut w = NatWorker::new(std::slice::from_ref(&a), 0, 1, HZ);
        let mut t = NatTenants::new(std::slice::from_ref(&a), HZ);
        let (_, pa) = out_port(&mut w, udp(IN1, 5000, REMOTE, 53), 0);
        // Add b: a's flow untouched, b serves at once.
        let t0 = Instant::now();
        t.reload(&[a.clone(), b.clone()], t0).unwrap();
        let u = apply(&mut t, &mut w);
        assert_eq!(u.dropped(), 0);
        assert_eq!(out_port(&mut w, udp(IN1, 5000, REMOTE, 53), 1), (PUB0, pa));
        assert_eq!(out_port(&mut w, udp(IN2, 6000, REMOTE, 53), 1).0, PUB1);
        assert_eq!(
            verdict(&mut w, udp(REMOTE, 53, PUB0, pa), 2),
            NatVerdict::Translated
        );
        // Change b's public IP: its flow stays on PUB1 (draining), new flows get PUB2.
        let b2 = tenant("b", "10.0.1.6/32", &[PUB2], 10);
        t.reload(&[a.clone(), b2.clone()], t0).unwrap();
        apply(&mut t, &mut w);
        assert_eq!(out_port(&mut w, udp(IN2, 6000, REMOTE, 53), 3).0, PUB1);
        assert_eq!(out_port(&mut w, udp(IN2, 6001, REMOTE, 53), 3).0, PUB2);
        // Remove b: existing flows continue, new ones are refused.
        t.reload(std::slice::from_ref(&a), t0).unwrap();
        apply(&mut t, &mut w);
        assert_eq!(out_port(&mut w, udp(IN2, 6001, REMOTE, 53), 4).0, PUB2);
        assert_eq!(
            verdict(&mut w, udp(IN2, 6002, REMOTE, 53), 4),
            NatVerdict::Drop(DropReason::NatDraining)
        );
        assert_eq!(t.ids(), vec!["a".to_string(), "b".to_string()]);
        // The public IP of a draining gateway cannot be taken by another yet.
        let c = tenant("c", "10.0.1.7/32", &[PUB2], 10);
        assert!(t.reload(&[a.clone(), c], t0).is_err());
        // Drain over: the slot is freed, b's packets are no longer NAT traffic.
        let log = t.tick(t0 + Duration::from_secs(11));
        assert!(log.iter().any(|l| l.contains("drain ended")), "{log:?}");
        let u = apply(&mut t, &mut w);
        assert_eq!(u.dropped(), 1);
        assert_eq!(t.ids(), vec!["a".to_string(), String::new()]);
        assert_eq!(
            verdict(&mut w, udp(IN2, 6001, REMOTE, 53), 5),
            NatVerdict::Pass
        );
        assert_eq!(out_port(&mut w, udp(IN1, 5000, REMOTE, 53), 5), (PUB0, pa));
    }

    #[test]
    fn a_mode_or_size_change_replaces_the_gateway_and_the_old_one_drains() {
        let a = tenant("a", "10.0.1.5/32", &[PUB0], 10);
        let mut w = NatWorker::new(std::slice::from_ref(&a), 0, 1, HZ);
        let mut t = NatTenants::new(std::slice::from_ref(&a), HZ);
        let (_, pa) = out_port(&mut w, udp(IN1, 5000, REMOTE, 53), 0);
        let t0 = Instant::now();
        // rfc4787 and a bigger table: a new slot after the old one.
        let mut a2 = a.clone();
        a2.mode = NatMode::Rfc4787;
        a2.flows_per_core = 512;
        let log = t.reload(std::slice::from_ref(&a2), t0).unwrap();
        assert!(log.iter().any(|l| l.contains("replaced")), "{log:?}");
        let u = apply(&mut t, &mut w);
        assert_eq!(u.dropped(), 0);
        assert_eq!(t.ids(), vec!["a~replaced".to_string(), "a".to_string()]);
        assert_eq!(w.capacity(), 256 + 512);
        // The old flow keeps its mapping both ways, on the old slot.
        assert_eq!(out_port(&mut w, udp(IN1, 5000, REMOTE, 53), 1), (PUB0, pa));
        assert_eq!(
            verdict(&mut w, udp(REMOTE, 53, PUB0, pa), 1),
            NatVerdict::Translated
        );
        // New flows go to the new slot (an endpoint-independent mapping there).
        let (ip, pb) = out_port(&mut w, udp(IN1, 5001, REMOTE, 53), 2);
        assert_eq!(ip, PUB0);
        assert_eq!(w.mappings(), 1);
        assert_eq!(
            verdict(&mut w, udp(REMOTE, 53, PUB0, pb), 2),
            NatVerdict::Translated
        );
        assert_eq!(w.counters()[0].active_connections, 1);
        assert_eq!(w.counters()[1].active_connections, 1);
        // ARP: one entry for the shared IP.
        let fib = t.fib_gateways();
        assert_eq!(fib.len(), 2);
        assert!(fib[0].public_ips.is_empty());
        assert_eq!(fib[1].public_ips, vec![PUB0]);
        // Another change while the old one drains is refused (one extra slot at most).
        let mut a3 = a2.clone();
        a3.flows_per_core = 1024;
        assert!(t
            .reload(std::slice::from_ref(&a3), t0)
            .unwrap_err()
            .contains("still drains"));
        // Other changes of the new gateway still apply in place.
        let mut a4 = a2.clone();
        a4.timeouts.udp_s = 99;
        t.reload(std::slice::from_ref(&a4), t0).unwrap();
        apply(&mut t, &mut w);
        assert_eq!(t.ids(), vec!["a~replaced".to_string(), "a".to_string()]);
        // Drain over: the old slot is free (reused by the next gateway added).
        let log = t.tick(t0 + Duration::from_secs(11));
        assert!(log.iter().any(|l| l.contains("retired")), "{log:?}");
        let u = apply(&mut t, &mut w);
        assert_eq!(u.dropped(), 1);
        assert_eq!(t.ids(), vec![String::new(), "a".to_string()]);
        assert_eq!(
            verdict(&mut w, udp(REMOTE, 53, PUB0, pb), 3),
            NatVerdict::Translated
        );
        let b = tenant("b", "10.0.1.6/32", &[PUB1], 10);
        t.reload(&[a4.clone(), b], t0).unwrap();
        apply(&mut t, &mut w);
        assert_eq!(t.ids(), vec!["b".to_string(), "a".to_string()]);
        // Now a new change may replace it again.
        t.reload(&[a3, tenant("b", "10.0.1.6/32", &[PUB1], 10)], t0)
            .unwrap();
    }

    #[test]
    fn a_replacement_never_takes_a_port_an_old_flow_holds() {
        // Two ports: the old flow holds one toward REMOTE:53, the new gateway must take
        // the other one for the same remote.
        let mut a = tenant("a", "10.0.1.5/32", &[PUB0], 10);
        a.port_range = NatPortRange {
            first: 2000,
            last: 2001,
        };
        let mut w = NatWorker::new(std::slice::from_ref(&a), 0, 1, HZ);
        let mut t = NatTenants::new(std::slice::from_ref(&a), HZ);
        let (_, pa) = out_port(&mut w, udp(IN1, 5000, REMOTE, 53), 0);
        let mut a2 = a.clone();
        a2.flows_per_core = 128;
        t.reload(std::slice::from_ref(&a2), Instant::now()).unwrap();
        apply(&mut t, &mut w);
        let (_, pb) = out_port(&mut w, udp(IN1, 6000, REMOTE, 53), 1);
        assert_ne!(pb, pa);
        assert_eq!(
            verdict(&mut w, udp(IN1, 6001, REMOTE, 53), 1),
            NatVerdict::Drop(DropReason::NatPortExhausted)
        );
        // Return traffic: each port to its own flow.
        assert_eq!(
            verdict(&mut w, udp(REMOTE, 53, PUB0, pa), 2),
            NatVerdict::Translated
        );
        assert_eq!(w.counters()[0].packets_out_to_source, 1);
    }

    #[test]
    fn slots_are_reused_after_a_drain_beyond_the_old_cap_of_64() {
        let mut t = NatTenants::new(&[], HZ);
        let t0 = Instant::now();
        for round in 0..3u32 {
            let gws: Vec<NatGatewayConfig> = (0..100u32)
                .map(|k| {
                    let ip =
                        Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + round * 256 + k);
                    tenant(&format!("g{round}-{k}"), "10.0.9.0/24", &[ip], 0)
                })
                .collect();
            t.reload(&gws, t0).unwrap();
            t.tick(t0);
            assert!(t.ids().len() <= 200, "{}", t.ids().len());
        }
        let many: Vec<NatGatewayConfig> = (0..MAX_SLOTS as u32 + 1)
            .map(|k| {
                let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 64, 0)) + k);
                tenant(&format!("m{k}"), "10.0.9.0/24", &[ip], 0)
            })
            .collect();
        let e = t.reload(&many, t0).unwrap_err();
        assert!(e.contains("no free slot"), "{e}");
    }

    #[test]
    fn a_removed_public_ip_retires_after_its_drain() {
        let a = tenant("a", "10.0.1.5/32", &[PUB0, PUB1], 5);
        let mut w = NatWorker::new(std::slice::from_ref(&a), 0, 1, HZ);
        let mut t = NatTenants::new(std::slice::from_ref(&a), HZ);
        let mut on_pub1 = None;
        for p in 5000..5100 {
            let (ip, port) = out_port(&mut w, udp(IN1, p, REMOTE, 53), 0);
            if ip == PUB1 {
                on_pub1 = Some((p, port));
                break;
            }
        }
        let (inside_port, port) = on_pub1.expect("a flow on PUB1");
        let t0 = Instant::now();
        let a2 = tenant("a", "10.0.1.5/32", &[PUB0], 5);
        t.reload(&[a2], t0).unwrap();
        apply(&mut t, &mut w);
        assert_eq!(
            verdict(&mut w, udp(REMOTE, 53, PUB1, port), 1),
            NatVerdict::Translated
        );
        for p in 6000..6050 {
            assert_eq!(out_port(&mut w, udp(IN1, p, REMOTE, 53), 1).0, PUB0);
        }
        assert_eq!(t.fib_gateways()[0].public_ips, vec![PUB0, PUB1]);
        t.tick(t0 + Duration::from_secs(6));
        apply(&mut t, &mut w);
        assert_eq!(t.fib_gateways()[0].public_ips, vec![PUB0]);
        assert_eq!(
            verdict(&mut w, udp(REMOTE, 53, PUB1, port), 2),
            NatVerdict::Pass
        );
        // Its flow is gone: the inside endpoint gets a new mapping on an active IP.
        assert_eq!(
            out_port(&mut w, udp(IN1, inside_port, REMOTE, 53), 2).0,
            PUB0
        );
    }
}

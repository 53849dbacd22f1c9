//! Control-thread side of the load balancers: the registry of targets (stable ids that
//! survive reloads), their health and draining state, and the snapshots built from them
//! and published to the workers. The health checker (`lb::health`) reports through
//! `set_target_health`; SIGHUP goes through `reload`.

use super::health::HealthState;
use super::maglev::{stable_key, MaglevTable, MaglevTarget};
use super::snapshot::{
    GroupView, LbSnapshot, LbView, Listener, SnapshotCell, TargetInfo, TargetRef, TargetState,
};
use crate::config::{HealthCheckConfig, LoadBalancerConfig};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The empty load balancer a drained one's slot holds.
fn placeholder() -> LoadBalancerConfig {
    LoadBalancerConfig {
        id: String::new(),
        vips: Vec::new(),
        lb_addresses: Vec::new(),
        maglev_table_size: 251,
        flows_per_core: 16,
        listeners: Vec::new(),
        target_groups: Vec::new(),
        health_check_source: None,
        health_check_device: None,
        health_check_interval_ms: None,
        limits: Default::default(),
        drain_timeout_s: 0,
    }
}

/// One registered target (by stable id).
#[derive(Debug, Clone)]
struct Reg {
    lb: usize,
    group: String,
    ip: Ipv4Addr,
    port: u16,
    weight: u32,
    /// `Initial` until the checker reports, when health checks run for its load balancer.
    health: HealthState,
    /// When it stopped taking new flows (removed or weight 0), in the workers' clock.
    drain_since: Option<u64>,
    removed: bool,
    dereg_delay_s: u32,
    connection_termination: bool,
}

/// A target the health checker should probe.
#[derive(Debug, Clone)]
pub struct ProbeTarget {
    pub lb: String,
    pub group: String,
    pub ip: Ipv4Addr,
    pub port: u16,
    pub health_check: HealthCheckConfig,
}

/// Health counts of one target group (metrics).
#[derive(Debug, Clone)]
pub struct GroupHealth {
    pub lb: String,
    pub group: String,
    pub healthy: u64,
    pub unhealthy: u64,
    /// Registered, not yet through its health checks (counted in neither of the above).
    pub initial: u64,
    pub draining: u64,
}

pub struct LbControl {
    /// By slot (stable across reloads, see `lb::reconcile`): a drained load balancer's
    /// slot holds an empty placeholder (id "").
    cfg: Vec<LoadBalancerConfig>,
    /// Per slot: removed by a reload, draining until then.
    lb_drain: Vec<Option<Instant>>,
    /// Per slot: VIPs a reload removed (still in `cfg`'s vips), draining until then.
    vip_drain: Vec<Vec<(Ipv4Addr, Instant)>>,
    /// Slots whose tables the workers must get (re)built in the next update.
    fresh: Vec<usize>,
    /// Kept slots whose tenant limits a reload changed (new buckets in the next update).
    relimit: Vec<usize>,
    regs: Vec<Reg>,
    generation: u64,
    tsc_hz: u64,
    cell: Arc<SnapshotCell>,
    /// Per load balancer: whether its health checks run (a probe path exists). Targets it
    /// registers then start `Initial` (no new flows until they pass, as on AWS NLB);
    /// otherwise every target is healthy.
    checked: Vec<bool>,
    /// Seconds the last build of each load balancer's Maglev tables took.
    pub maglev_build_s: Vec<f64>,
    /// Flow / translation logs on (`log_hooks`): fresh tables get log state.
    pub(super) log: Option<(bool, bool, u32)>,
}

impl LbControl {
    /// Registers every target as healthy (no health checks) and publishes the first
    /// snapshot. `now` is in the workers' clock (TSC cycles).
    pub fn new(cfg: &[LoadBalancerConfig], tsc_hz: u64, now: u64) -> LbControl {
        Self::new_checked(cfg, &vec![false; cfg.len()], tsc_hz, now)
    }

    /// As `new`, where `checked[i]` says whether load balancer i's health checks run
    /// (`health_wiring::checks_run`): its targets then start `Initial`.
    pub fn new_checked(
        cfg: &[LoadBalancerConfig],
        checked: &[bool],
        tsc_hz: u64,
        now: u64,
    ) -> LbControl {
        let mut c = LbControl {
            cfg: Vec::new(),
            lb_drain: vec![None; cfg.len()],
            vip_drain: vec![Vec::new(); cfg.len()],
            fresh: Vec::new(),
            relimit: Vec::new(),
            regs: Vec::new(),
            generation: 0,
            tsc_hz: tsc_hz.max(1),
            cell: Arc::new(SnapshotCell::new(LbSnapshot::default())),
            checked: checked.to_vec(),
            maglev_build_s: vec![0.0; cfg.len()],
            log: None,
        };
        c.apply(cfg, now);
        c
    }

    pub fn cell(&self) -> Arc<SnapshotCell> {
        self.cell.clone()
    }

    pub fn config(&self) -> &[LoadBalancerConfig] {
        &self.cfg
    }

    /// What a reload may not change of a load balancer it keeps (by id): nothing any
    /// more. A new `lb_addresses` or `flows_per_core` replaces it live (`reload`, see
    /// `lb::reconcile`); kept so the caller's check-first order stays.
    pub fn reload_compatible(
        _old: &[LoadBalancerConfig],
        _new: &[LoadBalancerConfig],
    ) -> Result<(), String> {
        Ok(())
    }

    /// The name a replaced load balancer drains under (metrics, logs).
    pub fn replaced_id(id: &str) -> String {
        format!("{id}~replaced")
    }

    /// SIGHUP: load balancers are matched by id. Kept ones change listeners, groups,
    /// targets, weights, health settings and VIPs in place (existing flows keep their
    /// targets; removed targets and VIPs drain); removed ones drain as a whole
    /// (`drain_timeout_s`); new ones get a new slot. Returns a line per change.
    pub fn reload(&mut self, new: &[LoadBalancerConfig], now: u64) -> Result<Vec<String>, String> {
        self.reload_inner(new, None, now)
    }

    /// `reload`, where `checked(lb)` says whether a load balancer's health checks run (a
    /// reload may add load balancers or remove the probe path): targets of checked ones
    /// start `initial`, those of unchecked ones serve at once.
    pub fn reload_checked(
        &mut self,
        new: &[LoadBalancerConfig],
        checked: &dyn Fn(&LoadBalancerConfig) -> bool,
        now: u64,
    ) -> Result<Vec<String>, String> {
        self.reload_inner(new, Some(checked), now)
    }

    fn reload_inner(
        &mut self,
        new: &[LoadBalancerConfig],
        checked: Option<&dyn Fn(&LoadBalancerConfig) -> bool>,
        now: u64,
    ) -> Result<Vec<String>, String> {
        Self::reload_compatible(&self.cfg, new)?;
        let at = Instant::now();
        let drain = |l: &LoadBalancerConfig| at + Duration::from_secs(u64::from(l.drain_timeout_s));
        let mut slots = self.cfg.clone();
        let mut lb_drain = self.lb_drain.clone();
        let mut vip_drain = self.vip_drain.clone();
        let mut fresh = self.fresh.clone();
        let mut relimit = self.relimit.clone();
        let mut log = Vec::new();
        // A new lb_addresses or flows_per_core: the old one drains under another name,
        // the new one is added below (a fresh slot).
        for i in 0..slots.len() {
            let s = &slots[i];
            let Some(n) = new.iter().find(|n| n.id == s.id && !s.id.is_empty()) else {
                continue;
            };
            if n.lb_addresses == s.lb_addresses && n.flows_per_core == s.flows_per_core {
                continue;
            }
            let rid = Self::replaced_id(&n.id);
            if slots.iter().any(|o| o.id == rid) {
                return Err(format!(
                    "load balancer `{}`: lb_addresses or flows_per_core changed while the load \
                     balancer it replaced before still drains (wait for its drain_timeout_s)",
                    n.id
                ));
            }
            log.push(format!(
                "load balancer {}: lb_addresses {:?} -> {:?}, flows_per_core {} -> {}: \
                 replaced (new flows in a new slot; the old one drains as {rid} for up to {} s)",
                n.id,
                s.lb_addresses,
                n.lb_addresses,
                s.flows_per_core,
                n.flows_per_core,
                n.drain_timeout_s
            ));
            let until = drain(n);
            lb_drain[i] = Some(lb_drain[i].map_or(until, |d: Instant| d.min(until)));
            slots[i].id = rid;
        }
        for (i, s) in slots.iter_mut().enumerate() {
            if s.id.is_empty() {
                continue;
            }
            match new.iter().find(|n| n.id == s.id) {
                Some(n) => {
                    if lb_drain[i].take().is_some() {
                        log.push(format!("load balancer {}: back, drain cancelled", n.id));
                    }
                    for v in &s.vips {
                        if !n.vips.contains(v) && !vip_drain[i].iter().any(|d| d.0 == *v) {
                            vip_drain[i].push((*v, drain(n)));
                            log.push(format!(
                                "load balancer {}: VIP {v} removed, draining for up to {} s",
                                n.id, n.drain_timeout_s
                            ));
                        }
                    }
                    vip_drain[i].retain(|d| !n.vips.contains(&d.0));
                    for v in n.vips.iter().filter(|v| !s.vips.contains(v)) {
                        log.push(format!("load balancer {}: VIP {v} added", n.id));
                    }
                    if n.limits != s.limits {
                        relimit.push(i);
                        log.push(format!("load balancer {}: limits changed", n.id));
                    }
                    let mut c = n.clone();
                    c.vips.extend(vip_drain[i].iter().map(|d| d.0));
                    *s = c;
                }
                None => {
                    if lb_drain[i].is_none() {
                        lb_drain[i] = Some(drain(s));
                        log.push(format!(
                            "load balancer {}: removed, draining for up to {} s",
                            s.id, s.drain_timeout_s
                        ));
                    }
                }
            }
        }
        for n in new {
            if slots.iter().any(|s| s.id == n.id) {
                continue;
            }
            // A drained slot's placeholder is reused.
            if let Some(k) = (0..slots.len())
                .find(|&k| slots[k].id.is_empty() && lb_drain[k].is_none() && !fresh.contains(&k))
            {
                fresh.push(k);
                slots[k] = n.clone();
                vip_drain[k].clear();
                log.push(format!("load balancer {}: added", n.id));
                continue;
            }
            if slots.len() >= super::reconcile::MAX_SLOTS {
                return Err(format!(
                    "load balancer `{}`: no free slot ({} load balancers, draining and \
                     replaced ones included, until a drain ends; or restart)",
                    n.id,
                    super::reconcile::MAX_SLOTS
                ));
            }
            fresh.push(slots.len());
            slots.push(n.clone());
            lb_drain.push(None);
            vip_drain.push(Vec::new());
            log.push(format!("load balancer {}: added", n.id));
        }
        // A VIP or LB address belongs to one load balancer, draining ones included.
        for (i, s) in slots.iter().enumerate() {
            for v in s.vips.iter().chain(&s.lb_addresses) {
                // A replaced load balancer shares its addresses with its successor.
                let pair = |o: &LoadBalancerConfig| {
                    o.id == Self::replaced_id(&s.id) || s.id == Self::replaced_id(&o.id)
                };
                if let Some(o) = slots.iter().enumerate().find(|(j, o)| {
                    *j != i && !pair(o) && (o.vips.contains(v) || o.lb_addresses.contains(v))
                }) {
                    return Err(format!(
                        "address {v} of load balancer `{}` is still used by draining load \
                         balancer `{}` (wait for its drain_timeout_s)",
                        s.id, o.1.id
                    ));
                }
            }
        }
        self.lb_drain = lb_drain;
        self.vip_drain = vip_drain;
        self.fresh = fresh;
        self.relimit = relimit;
        match checked {
            // By slot: a drained slot's placeholder has no targets.
            Some(f) => self.checked = slots.iter().map(f).collect(),
            None => self.checked.resize(slots.len(), false),
        }
        self.apply(&slots, now);
        Ok(log)
    }

    /// Ends drains that are due (`at`); `now` in the workers' clock. Returns a line per
    /// change (none: nothing changed).
    pub fn tick(&mut self, at: Instant, now: u64) -> Vec<String> {
        let mut log = Vec::new();
        let mut slots = self.cfg.clone();
        for (i, s) in slots.iter_mut().enumerate() {
            if self.lb_drain[i].is_some_and(|d| d <= at) {
                log.push(format!("load balancer {}: drain ended, removed", s.id));
                *s = placeholder();
                self.lb_drain[i] = None;
                self.vip_drain[i].clear();
                self.fresh.push(i);
                continue;
            }
            let due: Vec<Ipv4Addr> = self.vip_drain[i]
                .iter()
                .filter(|d| d.1 <= at)
                .map(|d| d.0)
                .collect();
            for v in due {
                log.push(format!("load balancer {}: VIP {v} drained, removed", s.id));
                s.vips.retain(|x| *x != v);
                self.vip_drain[i].retain(|d| d.0 != v);
            }
        }
        if !log.is_empty() {
            self.apply(&slots, now);
        }
        log
    }

    /// Some load balancer or VIP drains.
    pub fn draining(&self) -> bool {
        self.lb_drain.iter().any(Option::is_some) || self.vip_drain.iter().any(|v| !v.is_empty())
    }

    /// Worker `worker`'s tables for the slots added or emptied since the last update
    /// (`None`: nothing to send). Call `sent` once every worker has one.
    pub fn update_for(
        &self,
        worker: usize,
        n_workers: usize,
        rng: &mut crate::nat::ports::Rng,
    ) -> Option<super::reconcile::LbUpdate> {
        if self.fresh.is_empty() && self.relimit.is_empty() {
            return None;
        }
        let mut f: Vec<(usize, &LoadBalancerConfig)> =
            self.fresh.iter().map(|&i| (i, &self.cfg[i])).collect();
        f.sort_by_key(|x| x.0);
        f.dedup_by_key(|x| x.0);
        let mut u = super::reconcile::LbUpdate::build(
            &f,
            self.cfg.len(),
            worker,
            n_workers,
            self.tsc_hz,
            rng,
        );
        if let Some(s) = self.log {
            u.set_log(s);
        }
        for &i in &self.relimit {
            if let Some(c) = self.cfg.get(i) {
                u.set_limiter(
                    i,
                    crate::limits::TenantLimiter::new(&c.limits, worker, n_workers, self.tsc_hz),
                );
            }
        }
        Some(u)
    }

    pub fn sent(&mut self) {
        self.fresh.clear();
        self.relimit.clear();
    }

    fn is_checked(&self, lb: usize) -> bool {
        self.checked.get(lb).copied().unwrap_or(false)
    }

    fn apply(&mut self, new: &[LoadBalancerConfig], now: u64) {
        let mut seen = vec![false; self.regs.len()];
        for (li, lb) in new.iter().enumerate() {
            let checked = self.is_checked(li);
            let first = if checked {
                HealthState::Initial
            } else {
                HealthState::Healthy
            };
            for g in &lb.target_groups {
                for t in &g.targets {
                    let port = t.port as u16;
                    let id = self.regs.iter().position(|r| {
                        r.lb == li && r.group == g.name && r.ip == t.ip && r.port == port
                    });
                    let id = match id {
                        Some(id) => id,
                        None => {
                            self.regs.push(Reg {
                                lb: li,
                                group: g.name.clone(),
                                ip: t.ip,
                                port,
                                weight: 0,
                                health: first,
                                drain_since: None,
                                removed: false,
                                dereg_delay_s: 0,
                                connection_termination: false,
                            });
                            seen.push(false);
                            self.regs.len() - 1
                        }
                    };
                    seen[id] = true;
                    let r = &mut self.regs[id];
                    r.weight = t.weight;
                    if r.removed {
                        // Registered again: checked anew (the checker forgot it).
                        r.health = first;
                    }
                    r.removed = false;
                    r.dereg_delay_s = g.deregistration_delay_s;
                    r.connection_termination = g.connection_termination;
                    if t.weight == 0 {
                        r.drain_since.get_or_insert(now);
                    } else {
                        r.drain_since = None;
                    }
                }
            }
        }
        for (r, s) in self.regs.iter_mut().zip(seen) {
            if !self.checked.get(r.lb).copied().unwrap_or(false) {
                r.health = HealthState::Healthy;
            }
            if !s && !r.removed {
                r.removed = true;
                r.drain_since.get_or_insert(now);
            }
            // A removed target drains under its group's current settings.
            if r.removed {
                let g = new
                    .get(r.lb)
                    .and_then(|l| l.target_groups.iter().find(|g| g.name == r.group));
                if let Some(g) = g {
                    r.dereg_delay_s = g.deregistration_delay_s;
                    r.connection_termination = g.connection_termination;
                }
            }
        }
        self.cfg = new.to_vec();
        self.publish();
    }

    /// Health checker report. Returns false for an unknown target. Publishes a new snapshot
    /// when the state changed.
    pub fn set_target_health(
        &mut self,
        lb: &str,
        group: &str,
        ip: Ipv4Addr,
        port: u16,
        healthy: bool,
    ) -> bool {
        let h = if healthy {
            HealthState::Healthy
        } else {
            HealthState::Unhealthy
        };
        self.set_target_state(lb, group, ip, port, h)
    }

    /// The checker's state of a target (`set_target_health` with `Initial` too). Returns
    /// false for an unknown target; publishes a new snapshot when the state changed.
    pub fn set_target_state(
        &mut self,
        lb: &str,
        group: &str,
        ip: Ipv4Addr,
        port: u16,
        health: HealthState,
    ) -> bool {
        let Some(li) = self.cfg.iter().position(|l| l.id == lb) else {
            return false;
        };
        let Some(r) = self
            .regs
            .iter_mut()
            .find(|r| r.lb == li && r.group == group && r.ip == ip && r.port == port)
        else {
            return false;
        };
        if r.health != health {
            r.health = health;
            crate::info!("load balancer {lb}: target {ip}:{port} in group {group} is now {health}");
            self.publish();
        }
        true
    }

    /// The health checker's name for a target group: `lb/group` (group names are unique
    /// within a load balancer only).
    pub fn group_key(lb: &str, group: &str) -> String {
        format!("{lb}/{group}")
    }

    /// `set_target_health` by a `group_key` (what a checker keyed by group reports).
    pub fn set_target_health_keyed(
        &mut self,
        group_key: &str,
        ip: Ipv4Addr,
        port: u16,
        healthy: bool,
    ) -> bool {
        match group_key.split_once('/') {
            Some((lb, group)) => self.set_target_health(lb, group, ip, port, healthy),
            None => false,
        }
    }

    /// Targets to probe (registered, not removed).
    pub fn probe_targets(&self) -> Vec<ProbeTarget> {
        let mut v = Vec::new();
        for (li, lb) in self.cfg.iter().enumerate() {
            for g in &lb.target_groups {
                for t in &g.targets {
                    v.push(ProbeTarget {
                        lb: self.cfg[li].id.clone(),
                        group: g.name.clone(),
                        ip: t.ip,
                        port: t.port as u16,
                        health_check: g.health_check.clone(),
                    });
                }
            }
        }
        v
    }

    pub fn group_health(&self) -> Vec<GroupHealth> {
        let mut v = Vec::new();
        for (li, lb) in self.cfg.iter().enumerate() {
            for g in &lb.target_groups {
                let mut h = GroupHealth {
                    lb: lb.id.clone(),
                    group: g.name.clone(),
                    healthy: 0,
                    unhealthy: 0,
                    initial: 0,
                    draining: 0,
                };
                for r in self.regs.iter().filter(|r| r.lb == li && r.group == g.name) {
                    if r.drain_since.is_some() {
                        if !r.removed {
                            h.draining += 1;
                        }
                    } else {
                        match r.health {
                            HealthState::Healthy => h.healthy += 1,
                            HealthState::Initial => h.initial += 1,
                            HealthState::Unhealthy => h.unhealthy += 1,
                        }
                    }
                }
                v.push(h);
            }
        }
        v
    }

    fn state(&self, r: &Reg) -> TargetState {
        match r.drain_since {
            Some(t) => TargetState::Draining {
                until: t.saturating_add(u64::from(r.dereg_delay_s) * self.tsc_hz),
            },
            None => match r.health {
                HealthState::Healthy => TargetState::Healthy,
                HealthState::Initial => TargetState::Initial,
                HealthState::Unhealthy => TargetState::Unhealthy,
            },
        }
    }

    /// (old slot, new slot) of the replacement slot `li` is part of, if any.
    fn replaced_pair(&self, li: usize) -> Option<(usize, usize)> {
        let id = &self.cfg.get(li)?.id;
        if id.is_empty() {
            return None;
        }
        match id.strip_suffix("~replaced") {
            Some(base) => self.cfg.iter().position(|c| c.id == base).map(|j| (li, j)),
            None => {
                let rid = Self::replaced_id(id);
                self.cfg.iter().position(|c| c.id == rid).map(|o| (o, li))
            }
        }
    }

    /// Builds the snapshot of the current registry and config (Maglev tables here, on
    /// the control thread) and publishes it.
    pub fn publish(&mut self) {
        self.generation += 1;
        let snap = self.build();
        self.cell.publish(snap);
    }

    pub fn build(&mut self) -> LbSnapshot {
        let targets: Vec<TargetInfo> = self
            .regs
            .iter()
            .map(|r| TargetInfo {
                lb: r.lb as u16,
                group: r.group.clone(),
                ip: r.ip,
                port: r.port,
                state: self.state(r),
                removed: r.removed,
                connection_termination: r.connection_termination,
                failing_open: false,
            })
            .collect();
        let mut targets = targets;
        let target_ips = self.regs.iter().map(|r| u32::from(r.ip)).collect();
        let mut dnat_endpoints = hashbrown::HashMap::new();
        for r in &self.regs {
            let dnat = self
                .cfg
                .get(r.lb)
                .and_then(|l| l.target_groups.iter().find(|g| g.name == r.group))
                .is_none_or(|g| g.preserve_client_ip);
            if dnat {
                dnat_endpoints.insert(
                    (u64::from(u32::from(r.ip)) << 16) | u64::from(r.port),
                    r.lb as u16,
                );
            }
        }
        let mut lbs = Vec::with_capacity(self.cfg.len());
        self.maglev_build_s.resize(self.cfg.len(), 0.0);
        for (li, lb) in self.cfg.iter().enumerate() {
            let started = Instant::now();
            let mut groups = Vec::new();
            for g in &lb.target_groups {
                let mut eligible = Vec::new();
                let mut weights = Vec::new();
                let mut healthy = Vec::new();
                for t in &g.targets {
                    let port = t.port as u16;
                    let Some(id) = self.regs.iter().position(|r| {
                        r.lb == li && r.group == g.name && r.ip == t.ip && r.port == port
                    }) else {
                        continue;
                    };
                    if t.weight == 0 {
                        continue;
                    }
                    eligible.push(TargetRef {
                        ip: t.ip,
                        port,
                        id: id as u32,
                    });
                    weights.push(t.weight);
                    healthy.push(self.regs[id].health.serves());
                }
                let failing_open = !healthy.iter().any(|&h| h);
                let (eligible, weights): (Vec<TargetRef>, Vec<u32>) = eligible
                    .into_iter()
                    .zip(weights)
                    .zip(&healthy)
                    .filter(|(_, &h)| h || failing_open)
                    .map(|(x, _)| x)
                    .unzip();
                let mt: Vec<MaglevTarget> = eligible
                    .iter()
                    .zip(&weights)
                    .map(|(t, &w)| MaglevTarget {
                        key: stable_key(t.ip, t.port),
                        weight: w,
                    })
                    .collect();
                let maglev = MaglevTable::build(&mt, lb.maglev_table_size);
                groups.push(GroupView {
                    name: g.name.clone(),
                    preserve_client_ip: g.preserve_client_ip,
                    connection_termination: g.connection_termination,
                    tcp_idle_s: g.tcp_idle_timeout_s,
                    udp_idle_s: g.udp_idle_timeout_s,
                    eligible,
                    maglev,
                    failing_open: failing_open && !mt.is_empty(),
                });
            }
            self.maglev_build_s[li] = started.elapsed().as_secs_f64();
            for (gi, g) in lb.target_groups.iter().enumerate() {
                let open = groups.get(gi).is_some_and(|v: &GroupView| v.failing_open);
                for (t, r) in targets.iter_mut().zip(&self.regs) {
                    if r.lb == li && r.group == g.name {
                        t.failing_open = open;
                    }
                }
            }
            let listeners = lb
                .vips
                .iter()
                .flat_map(|&vip| {
                    lb.listeners.iter().filter_map(move |l| {
                        let group = lb
                            .target_groups
                            .iter()
                            .position(|g| g.name == l.target_group)?;
                        Some(Listener {
                            vip,
                            port: l.port as u16,
                            tcp: l.protocol.tcp(),
                            udp: l.protocol.udp(),
                            group: group as u16,
                        })
                    })
                })
                .collect();
            lbs.push(LbView {
                draining: self.lb_drain.get(li).is_some_and(Option::is_some),
                draining_vips: self
                    .vip_drain
                    .get(li)
                    .map(|v| v.iter().map(|d| d.0).collect())
                    .unwrap_or_default(),
                id: lb.id.clone(),
                vips: lb.vips.clone(),
                lb_addresses: lb.lb_addresses.clone(),
                listeners,
                groups,
                replaced_pair: self.replaced_pair(li),
            });
        }
        LbSnapshot {
            generation: self.generation,
            lbs,
            targets,
            target_ips,
            dnat_endpoints,
        }
    }
}

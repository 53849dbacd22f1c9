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
use std::time::Instant;

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
    cfg: Vec<LoadBalancerConfig>,
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
            regs: Vec::new(),
            generation: 0,
            tsc_hz: tsc_hz.max(1),
            cell: Arc::new(SnapshotCell::new(LbSnapshot::default())),
            checked: checked.to_vec(),
            maglev_build_s: vec![0.0; cfg.len()],
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

    /// What a reload may not change (flow tables and ARP entries are built from it).
    pub fn reload_compatible(
        old: &[LoadBalancerConfig],
        new: &[LoadBalancerConfig],
    ) -> Result<(), String> {
        if old.len() != new.len() {
            return Err("load balancers added or removed (restart needed)".into());
        }
        for (a, b) in old.iter().zip(new) {
            if a.id != b.id || a.vips != b.vips || a.lb_addresses != b.lb_addresses {
                return Err(format!(
                    "load balancer `{}`: id, vips or lb_addresses changed (restart needed)",
                    a.id
                ));
            }
            if a.limits != b.limits {
                return Err(format!(
                    "load balancer `{}`: limits changed (restart needed: workers build their \
                     token buckets at start)",
                    a.id
                ));
            }
            if a.flows_per_core != b.flows_per_core {
                return Err(format!(
                    "load balancer `{}`: flows_per_core changed (restart needed)",
                    a.id
                ));
            }
        }
        Ok(())
    }

    /// SIGHUP: listeners, groups, targets, weights and health settings change; existing
    /// flows keep their targets (removed targets drain).
    pub fn reload(&mut self, new: &[LoadBalancerConfig], now: u64) -> Result<(), String> {
        Self::reload_compatible(&self.cfg, new)?;
        self.apply(new, now);
        Ok(())
    }

    /// `reload` with the new config's `checked` flags (a reload may add or remove a
    /// `health_check_device`): targets added while checks run start `Initial`; where checks
    /// stop, every target becomes healthy.
    pub fn reload_checked(
        &mut self,
        new: &[LoadBalancerConfig],
        checked: &[bool],
        now: u64,
    ) -> Result<(), String> {
        Self::reload_compatible(&self.cfg, new)?;
        self.checked = checked.to_vec();
        self.apply(new, now);
        Ok(())
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
                id: lb.id.clone(),
                vips: lb.vips.clone(),
                lb_addresses: lb.lb_addresses.clone(),
                listeners,
                groups,
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

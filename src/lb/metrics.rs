//! Prometheus families of the load balancers (CloudWatch `AWS/NetworkELB` style), per load
//! balancer, target group and target. Registered as a scrape collector by `control`.

use super::control::LbControl;
use super::counters::LbCounters;
use super::stage::LbPublished;
use crate::pipeline::counters::DropReason;
use prometheus::{GaugeVec, IntCounterVec, IntGaugeVec, Opts, Registry};
use std::sync::{Arc, Mutex};

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("metric definition");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("metric definition");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

/// Adds the LB families to a scrape.
pub fn lb_families(r: &Registry, ctl: &Mutex<LbControl>, workers: &[Arc<LbPublished>]) {
    let Ok(ctl) = ctl.lock() else { return };
    let snap = ctl.cell().load();
    let ids: Vec<String> = ctl.config().iter().map(|l| l.id.clone()).collect();
    // Per load balancer.
    let active = gauge(
        r,
        "flowgate_lb_active_flows",
        "Flows (TCP connections, UDP flows) active (ActiveFlowCount)",
        &["lb"],
    );
    let scalars: Vec<(usize, IntCounterVec)> = LbCounters::FIELDS
        .iter()
        .enumerate()
        .filter(|(_, (n, _))| *n != "active_flows")
        .map(|(i, (n, h))| (i, counter(r, &format!("flowgate_lb_{n}_total"), h, &["lb"])))
        .collect();
    let drops = counter(
        r,
        "flowgate_lb_packets_dropped_total",
        "Packets of the load balancer's traffic dropped (or answered with a RST), by reason",
        &["lb", "reason"],
    );
    for (li, id) in ids.iter().enumerate() {
        if id.is_empty() {
            continue; // a drained load balancer's slot (live reload)
        }
        let mut t = LbCounters::default();
        for w in workers {
            if li < w.lb_count() {
                t.add(&w.read(li));
            }
        }
        active.with_label_values(&[id]).set(t.active_flows as i64);
        let vals = t.scalars();
        for (i, c) in &scalars {
            c.with_label_values(&[id]).inc_by(vals[*i]);
        }
        for reason in DropReason::ALL {
            let v = t.drops[*reason as usize];
            if v > 0 {
                drops.with_label_values(&[id, reason.name()]).inc_by(v);
            }
        }
    }
    // Per target group: health.
    let healthy = gauge(
        r,
        "flowgate_lb_healthy_hosts",
        "Healthy targets of the group (HealthyHostCount)",
        &["lb", "target_group"],
    );
    let unhealthy = gauge(
        r,
        "flowgate_lb_unhealthy_hosts",
        "Unhealthy targets of the group (UnHealthyHostCount)",
        &["lb", "target_group"],
    );
    let initial = gauge(
        r,
        "flowgate_lb_initial_hosts",
        "Targets of the group registered but not yet through their health checks (no new \
         flows; in neither the healthy nor the unhealthy count)",
        &["lb", "target_group"],
    );
    let draining = gauge(
        r,
        "flowgate_lb_draining_hosts",
        "Targets of the group with weight 0 (draining)",
        &["lb", "target_group"],
    );
    for h in ctl.group_health() {
        let l = [h.lb.as_str(), h.group.as_str()];
        healthy.with_label_values(&l).set(h.healthy as i64);
        unhealthy.with_label_values(&l).set(h.unhealthy as i64);
        initial.with_label_values(&l).set(h.initial as i64);
        draining.with_label_values(&l).set(h.draining as i64);
    }
    // Per target: state and flows.
    let state = gauge(
        r,
        "flowgate_lb_target_state",
        "Target state: 1 for the state it is in (healthy, initial, unhealthy, draining)",
        &["lb", "target_group", "target", "state"],
    );
    let t_active = gauge(
        r,
        "flowgate_lb_target_active_flows",
        "Active flows pinned to the target",
        &["lb", "target_group", "target"],
    );
    let t_new = counter(
        r,
        "flowgate_lb_target_new_flows_total",
        "New flows pinned to the target",
        &["lb", "target_group", "target"],
    );
    let group_active = gauge(
        r,
        "flowgate_lb_target_group_active_flows",
        "Active flows of the target group",
        &["lb", "target_group"],
    );
    let group_new = counter(
        r,
        "flowgate_lb_target_group_new_flows_total",
        "New flows of the target group",
        &["lb", "target_group"],
    );
    for (id, t) in snap.targets.iter().enumerate() {
        let lb = ids.get(t.lb as usize).cloned().unwrap_or_default();
        let ep = format!("{}:{}", t.ip, t.port);
        let (mut a, mut n) = (0u64, 0u64);
        for w in workers {
            let c = w.target(id);
            a += c.active_flows;
            n += c.new_flows;
        }
        let l = [lb.as_str(), t.group.as_str(), ep.as_str()];
        t_active.with_label_values(&l).set(a as i64);
        t_new.with_label_values(&l).inc_by(n);
        group_active
            .with_label_values(&[lb.as_str(), t.group.as_str()])
            .add(a as i64);
        group_new
            .with_label_values(&[lb.as_str(), t.group.as_str()])
            .inc_by(n);
        // A removed target is reported until its deregistration delay is over.
        if let (true, super::snapshot::TargetState::Draining { until }) = (t.removed, t.state) {
            if until <= crate::pmd::rdtsc() {
                continue;
            }
        }
        let s = match t.state {
            super::snapshot::TargetState::Healthy => "healthy",
            super::snapshot::TargetState::Initial => "initial",
            super::snapshot::TargetState::Unhealthy => "unhealthy",
            super::snapshot::TargetState::Draining { .. } => "draining",
        };
        for st in ["healthy", "initial", "unhealthy", "draining"] {
            let l = [lb.as_str(), t.group.as_str(), ep.as_str(), st];
            state.with_label_values(&l).set(i64::from(st == s));
        }
    }
    // Maglev build time of the last snapshot.
    if let Ok(g) = GaugeVec::new(
        Opts::new(
            "flowgate_lb_maglev_build_seconds",
            "Time the last build of the load balancer's Maglev tables took",
        ),
        &["lb"],
    ) {
        if r.register(Box::new(g.clone())).is_ok() {
            for (id, s) in ids.iter().zip(&ctl.maglev_build_s) {
                g.with_label_values(&[id]).set(*s);
            }
        }
    }
    let flows: u64 = workers
        .iter()
        .map(|w| w.flows.load(std::sync::atomic::Ordering::Relaxed))
        .sum();
    let cap: u64 = workers
        .iter()
        .map(|w| w.capacity.load(std::sync::atomic::Ordering::Relaxed))
        .sum();
    let g = gauge(
        r,
        "flowgate_lb_flow_table_entries",
        "LB flow-table slots in use (flows and idle tombstones), all workers",
        &[],
    );
    g.with_label_values(&[]).set(flows as i64);
    let g = gauge(
        r,
        "flowgate_lb_flow_table_capacity",
        "LB flow-table capacity, all workers",
        &[],
    );
    g.with_label_values(&[]).set(cap as i64);
}

//! flowgate's answers for DPDK's telemetry socket (`/flowgate/stats`, `/flowgate/nat/flows`,
//! `/flowgate/lb/targets`, see `pmd::telemetry`) and the HTTP `/api/*` endpoints: flat
//! dictionaries read from what the workers already publish (per-worker counter slots, NAT and
//! LB published state through the scrape collectors). Nothing here touches a worker.
use crate::metrics::Telemetry;
use crate::pipeline::counters::DropReason;
use crate::pmd::telemetry::{key, Dict, Value};
use prometheus::proto::MetricFamily;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// A command: name, help, answer.
type Command = (&'static str, &'static str, fn(&Telemetry) -> Dict);

/// Registers the commands on DPDK's telemetry socket.
pub fn register(t: Arc<Telemetry>) {
    let cmds: [Command; 3] = [
        (
            "/flowgate/stats",
            "flowgate worker and port counters. No parameters",
            stats,
        ),
        (
            "/flowgate/nat/flows",
            "flowgate NAT gateways: active connections and counters per gateway, flows per worker. No parameters",
            nat_flows,
        ),
        (
            "/flowgate/lb/targets",
            "flowgate load balancer targets: state and active flows per target. No parameters",
            lb_targets,
        ),
    ];
    for (cmd, help, f) in cmds {
        let t = t.clone();
        if let Err(e) = crate::pmd::telemetry::register(cmd, help, move |_| f(&t)) {
            crate::warn!("telemetry: {e}");
        }
    }
}

fn u(k: String, v: u64) -> (String, Value) {
    (k, Value::U64(v))
}

/// Totals, per worker, per port, non-zero drop reasons.
pub fn stats(t: &Telemetry) -> Dict {
    let mut d = Dict::new();
    let tot = t.totals();
    let dropped: u64 = tot.drops.iter().sum();
    d.push(u("workers".into(), t.workers.len() as u64));
    d.push(u(
        "config_generation".into(),
        t.config_generation.load(Ordering::Relaxed),
    ));
    d.push(u("rx_packets".into(), tot.events.rx_packets));
    d.push(u("forwarded_packets".into(), tot.events.forwarded_packets));
    d.push(u("dropped_packets".into(), dropped));
    for (i, w) in t.workers.iter().enumerate() {
        let c = w.read();
        let i = i.to_string();
        d.push(u(key(&["worker", &i, "rx_packets"]), c.events.rx_packets));
        d.push(u(
            key(&["worker", &i, "forwarded_packets"]),
            c.events.forwarded_packets,
        ));
        d.push(u(
            key(&["worker", &i, "dropped_packets"]),
            c.drops.iter().sum(),
        ));
        d.push(u(
            key(&["worker", &i, "heartbeat"]),
            w.heartbeat.load(Ordering::Relaxed),
        ));
    }
    for p in &t.ports {
        let s = p.stats();
        let n = p.name.as_str();
        d.push(u(key(&["port", n, "id"]), p.id as u64));
        d.push(u(key(&["port", n, "link_up"]), p.link_up_now() as u64));
        for (f, v) in [
            ("rx_packets", s.rx_packets),
            ("tx_packets", s.tx_packets),
            ("rx_bytes", s.rx_bytes),
            ("tx_bytes", s.tx_bytes),
            ("rx_missed", s.rx_missed),
            ("rx_nombuf", s.rx_nombuf),
            ("rx_errors", s.rx_errors),
            ("tx_errors", s.tx_errors),
        ] {
            d.push(u(key(&["port", n, f]), v));
        }
    }
    for r in DropReason::ALL {
        let v = tot.drops[*r as usize];
        if v > 0 {
            d.push(u(key(&["drop", r.name()]), v));
        }
    }
    d
}

/// The stage families (NAT, LB) as the scrape collectors produce them.
fn families(t: &Telemetry) -> Vec<MetricFamily> {
    let r = prometheus::Registry::new();
    if let Ok(cs) = t.collectors.lock() {
        for c in cs.iter() {
            c(&r);
        }
    }
    r.gather()
}

/// (label values in `labels` order, value) of every sample of family `name`.
fn samples(fams: &[MetricFamily], name: &str, labels: &[&str]) -> Vec<(Vec<String>, u64)> {
    let Some(f) = fams.iter().find(|f| f.get_name() == name) else {
        return Vec::new();
    };
    let counter = f.get_field_type() == prometheus::proto::MetricType::COUNTER;
    f.get_metric()
        .iter()
        .map(|m| {
            let lv = labels
                .iter()
                .map(|l| {
                    m.get_label()
                        .iter()
                        .find(|p| p.get_name() == *l)
                        .map(|p| p.get_value().to_string())
                        .unwrap_or_default()
                })
                .collect();
            let v = if counter {
                m.get_counter().get_value()
            } else {
                m.get_gauge().get_value()
            };
            (lv, v.max(0.0) as u64)
        })
        .collect()
}

/// Per gateway: active connections and the CloudWatch-style counters; flows per worker.
pub fn nat_flows(t: &Telemetry) -> Dict {
    let fams = families(t);
    let mut d = Dict::new();
    let active = samples(&fams, "flowgate_nat_active_connections", &["gateway"]);
    d.push(u("gateways".into(), active.len() as u64));
    let mut total = 0;
    for (l, v) in &active {
        d.push(u(key(&["gateway", &l[0], "active_connections"]), *v));
        total += v;
    }
    d.push(u("active_connections".into(), total));
    for f in [
        "connection_attempts",
        "connections_established",
        "port_allocation_errors",
        "idle_timeouts",
    ] {
        for (l, v) in samples(&fams, &format!("flowgate_nat_{f}_total"), &["gateway"]) {
            d.push(u(key(&["gateway", &l[0], f]), v));
        }
    }
    for (l, v) in samples(&fams, "flowgate_nat_flows", &["worker"]) {
        d.push(u(key(&["worker", &l[0], "flows"]), v));
    }
    for (l, v) in samples(&fams, "flowgate_nat_flow_capacity", &["worker"]) {
        d.push(u(key(&["worker", &l[0], "capacity"]), v));
    }
    d
}

/// Per target: its state and active flows (empty without load balancers).
pub fn lb_targets(t: &Telemetry) -> Dict {
    let fams = families(t);
    let lbl = ["lb", "target_group", "target"];
    let mut d = Dict::new();
    let states = samples(
        &fams,
        "flowgate_lb_target_state",
        &["lb", "target_group", "target", "state"],
    );
    let mut n = 0;
    for (l, v) in &states {
        if *v == 1 {
            d.push((
                key(&[&l[0], &l[1], &l[2], "state"]),
                Value::Str(l[3].clone()),
            ));
            n += 1;
        }
    }
    for (l, v) in samples(&fams, "flowgate_lb_target_active_flows", &lbl) {
        d.push(u(key(&[&l[0], &l[1], &l[2], "active_flows"]), v));
    }
    d.insert(0, u("targets".into(), n));
    d
}

/// A dictionary as a JSON object (for `/api/*`).
pub fn to_json(d: &Dict) -> String {
    let m: serde_json::Map<String, serde_json::Value> = d
        .iter()
        .map(|(k, v)| {
            let v = match v {
                Value::U64(x) => serde_json::Value::from(*x),
                Value::Str(s) => serde_json::Value::from(s.as_str()),
            };
            (k.clone(), v)
        })
        .collect();
    serde_json::Value::Object(m).to_string()
}

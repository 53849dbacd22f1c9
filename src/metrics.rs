//! Prometheus metrics: a registry built from the workers' published counters on every
//! scrape, served at `/metrics` by the control HTTP server (`crate::http`).

use crate::pipeline::counters::{Counters, DropReason, EventCounters, SharedCounters};
use crate::pmd::{Mempool, Port};
use prometheus::{Encoder, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Adds more metric families to a scrape (the NAT and LB stages register these).
pub type Collector = Box<dyn Fn(&Registry) + Send + Sync>;

/// Everything a scrape reads. Owned by the control thread, shared with the HTTP thread.
pub struct Telemetry {
    pub ports: Vec<Port>,
    pub pool: Mempool,
    pub workers: Vec<Arc<SharedCounters>>,
    pub neighbor_entries: AtomicU64,
    pub reloads_ok: AtomicU64,
    pub reloads_refused: AtomicU64,
    pub config_generation: AtomicU64,
    pub collectors: Mutex<Vec<Collector>>,
}

impl Telemetry {
    pub fn new(ports: Vec<Port>, pool: Mempool, workers: Vec<Arc<SharedCounters>>) -> Self {
        Telemetry {
            ports,
            pool,
            workers,
            neighbor_entries: AtomicU64::new(0),
            reloads_ok: AtomicU64::new(0),
            reloads_refused: AtomicU64::new(0),
            config_generation: AtomicU64::new(1),
            collectors: Mutex::new(Vec::new()),
        }
    }

    /// Sum of every worker's counters.
    pub fn totals(&self) -> Counters {
        let mut t = Counters::default();
        for w in &self.workers {
            t.add(&w.read());
        }
        t
    }
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("metric definition");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("metric definition");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

/// Prometheus text for the current state.
pub fn render(t: &Telemetry) -> String {
    let r = Registry::new();

    let build = gauge_vec(
        &r,
        "flowgate_build_info",
        "Build information",
        &["version", "dpdk"],
    );
    build
        .with_label_values(&[env!("CARGO_PKG_VERSION"), &crate::pmd::dpdk_version()])
        .set(1);

    let port_counters: [(&str, &str); 8] = [
        ("rx_packets", "Packets received by the port"),
        ("tx_packets", "Packets transmitted by the port"),
        ("rx_bytes", "Bytes received by the port"),
        ("tx_bytes", "Bytes transmitted by the port"),
        ("rx_errors", "Erroneous packets received"),
        ("tx_errors", "Failed transmissions"),
        (
            "rx_missed",
            "Packets dropped by the port because rx queues were full",
        ),
        ("rx_nombuf", "rx mbuf allocation failures"),
    ];
    let pcs: Vec<IntCounterVec> = port_counters
        .iter()
        .map(|(n, h)| counter_vec(&r, &format!("flowgate_port_{n}_total"), h, &["port"]))
        .collect();
    let link = gauge_vec(
        &r,
        "flowgate_port_link_up",
        "1 if the link is up",
        &["port"],
    );
    let port_info = gauge_vec(
        &r,
        "flowgate_port_info",
        "Port facts: driver, MTU, queues, and whether the RSS key is programmable \
         (programmable: NAT picks ports whose return traffic hashes to the owner's queue; \
         fixed: return traffic reaching another worker goes through a handoff ring)",
        &["port", "driver", "mtu", "queues", "rss_key"],
    );
    let xstats = counter_vec(
        &r,
        "flowgate_port_xstats_total",
        "Driver extended statistics (ENA allowance counters on EC2)",
        &["port", "stat"],
    );
    for p in &t.ports {
        let s = p.stats();
        let vals = [
            s.rx_packets,
            s.tx_packets,
            s.rx_bytes,
            s.tx_bytes,
            s.rx_errors,
            s.tx_errors,
            s.rx_missed,
            s.rx_nombuf,
        ];
        for (c, v) in pcs.iter().zip(vals) {
            c.with_label_values(&[&p.name]).inc_by(v);
        }
        link.with_label_values(&[&p.name])
            .set(p.link_up_now() as i64);
        let rss = if p.rss_programmed.is_some() {
            "programmed"
        } else if p.rss_key_programmable {
            "programmable"
        } else {
            "fixed"
        };
        port_info
            .with_label_values(&[
                p.name.as_str(),
                p.driver.as_str(),
                &p.mtu.to_string(),
                &p.queues.to_string(),
                rss,
            ])
            .set(1);
        for (name, v) in p.xstats() {
            xstats.with_label_values(&[&p.name, &name]).inc_by(v);
        }
    }

    let totals = t.totals();
    let drops = counter_vec(
        &r,
        "flowgate_packets_dropped_total",
        "Packets dropped by the data plane, by reason",
        &["reason"],
    );
    for reason in DropReason::ALL {
        drops
            .with_label_values(&[reason.name()])
            .inc_by(totals.drops[*reason as usize]);
    }
    let per_worker = counter_vec(
        &r,
        "flowgate_worker_rx_packets_total",
        "Packets taken from rx queues, per worker",
        &["worker"],
    );
    for (i, w) in t.workers.iter().enumerate() {
        per_worker
            .with_label_values(&[&i.to_string()])
            .inc_by(w.read().events.rx_packets);
    }
    let icmp_err = counter_vec(
        &r,
        "flowgate_icmp_errors_sent_total",
        "ICMP errors the appliance sent, by type",
        &["type"],
    );
    icmp_err
        .with_label_values(&["time_exceeded"])
        .inc_by(totals.events.icmp_time_exceeded_sent);
    icmp_err
        .with_label_values(&["frag_needed"])
        .inc_by(totals.events.icmp_frag_needed_sent);
    for ((field, help), v) in EventCounters::FIELDS.iter().zip(totals.events.values()) {
        if field.starts_with("icmp_") && field.ends_with("_sent") || *field == "rx_packets" {
            continue; // exported above with labels
        }
        let c = counter_vec(&r, &format!("flowgate_{field}_total"), help, &[]);
        c.with_label_values(&[]).inc_by(v);
    }

    let g = |name: &str, help: &str, v: u64| {
        gauge_vec(&r, name, help, &[])
            .with_label_values(&[])
            .set(v as i64);
    };
    g(
        "flowgate_neighbor_entries",
        "Resolved ARP neighbors known to the control thread",
        t.neighbor_entries.load(Ordering::Relaxed),
    );
    g(
        "flowgate_mempool_mbufs_in_use",
        "mbufs allocated from the packet pool (rx rings, in flight, held)",
        t.pool.in_use() as u64,
    );
    g(
        "flowgate_mempool_mbufs_available",
        "mbufs free in the packet pool",
        t.pool.available() as u64,
    );
    g(
        "flowgate_config_generation",
        "Generation of the config the workers run (1 = as started)",
        t.config_generation.load(Ordering::Relaxed),
    );
    g("flowgate_workers", "Worker lcores", t.workers.len() as u64);
    let reloads = counter_vec(
        &r,
        "flowgate_config_reloads_total",
        "Config reloads (SIGHUP) by result",
        &["result"],
    );
    reloads
        .with_label_values(&["ok"])
        .inc_by(t.reloads_ok.load(Ordering::Relaxed));
    reloads
        .with_label_values(&["refused"])
        .inc_by(t.reloads_refused.load(Ordering::Relaxed));

    if let Ok(cs) = t.collectors.lock() {
        for c in cs.iter() {
            c(&r);
        }
    }

    let mut buf = Vec::new();
    TextEncoder::new()
        .encode(&r.gather(), &mut buf)
        .expect("text encoding");
    String::from_utf8(buf).unwrap_or_default()
}

/// The NAT gateway families, mirroring CloudWatch `AWS/NATGateway`, per gateway id.
pub fn nat_families(
    r: &Registry,
    ids: &[String],
    workers: &[Arc<crate::nat::stage::NatPublished>],
) {
    use crate::nat::stage::add;
    use crate::nat::GatewayCounters;
    let active = gauge_vec(
        r,
        "flowgate_nat_active_connections",
        "Concurrent connections through the NAT gateway",
        &["gateway"],
    );
    let simple: [(&str, &str); 4] = [
        (
            "connection_attempts",
            "Connection attempts (new mappings tried)",
        ),
        ("connections_established", "Connections established"),
        (
            "port_allocation_errors",
            "New flows refused: no free source port",
        ),
        ("idle_timeouts", "Mappings removed after their idle timeout"),
    ];
    let simple_c: Vec<IntCounterVec> = simple
        .iter()
        .map(|(n, h)| counter_vec(r, &format!("flowgate_nat_{n}_total"), h, &["gateway"]))
        .collect();
    let packets = counter_vec(
        r,
        "flowgate_nat_packets_total",
        "Packets through the NAT gateway by direction (CloudWatch PacketsInFromSource etc.)",
        &["gateway", "direction"],
    );
    let bytes = counter_vec(
        r,
        "flowgate_nat_bytes_total",
        "Bytes through the NAT gateway by direction",
        &["gateway", "direction"],
    );
    let drops = counter_vec(
        r,
        "flowgate_nat_packets_dropped_total",
        "Packets of the gateway's traffic dropped, by reason",
        &["gateway", "reason"],
    );
    for (g, id) in ids.iter().enumerate() {
        if id.is_empty() {
            continue; // a free slot (live reload)
        }
        let mut t = GatewayCounters::default();
        for w in workers {
            if g < w.gateway_count() {
                add(&mut t, &w.read(g));
            }
        }
        active
            .with_label_values(&[id])
            .set(t.active_connections as i64);
        for (c, v) in simple_c.iter().zip([
            t.connection_attempts,
            t.connections_established,
            t.port_allocation_errors,
            t.idle_timeouts,
        ]) {
            c.with_label_values(&[id]).inc_by(v);
        }
        for (dir, p, b) in [
            (
                "in_from_source",
                t.packets_in_from_source,
                t.bytes_in_from_source,
            ),
            (
                "out_to_destination",
                t.packets_out_to_destination,
                t.bytes_out_to_destination,
            ),
            (
                "in_from_destination",
                t.packets_in_from_destination,
                t.bytes_in_from_destination,
            ),
            (
                "out_to_source",
                t.packets_out_to_source,
                t.bytes_out_to_source,
            ),
        ] {
            packets.with_label_values(&[id, dir]).inc_by(p);
            bytes.with_label_values(&[id, dir]).inc_by(b);
        }
        for reason in DropReason::ALL {
            let v = t.drops[*reason as usize];
            if v > 0 || reason.name().starts_with("nat_") {
                drops.with_label_values(&[id, reason.name()]).inc_by(v);
            }
        }
    }
    let flows = gauge_vec(
        r,
        "flowgate_nat_flows",
        "NAT flows held by each worker",
        &["worker"],
    );
    let cap = gauge_vec(
        r,
        "flowgate_nat_flow_capacity",
        "NAT flow table capacity of each worker",
        &["worker"],
    );
    for (i, w) in workers.iter().enumerate() {
        let l = i.to_string();
        flows
            .with_label_values(&[&l])
            .set(w.flows.load(Ordering::Relaxed) as i64);
        cap.with_label_values(&[&l])
            .set(w.capacity.load(Ordering::Relaxed) as i64);
    }
}

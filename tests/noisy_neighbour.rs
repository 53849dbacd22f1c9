//! Noisy-neighbour isolation on one node (issue 9 §4): two NAT tenants on one flowgate (one
//! worker), tenant A with limits floods (a SYN flood from many source ports plus a UDP
//! packet flood, from raw sockets, bounded in count and time) while tenant B makes 200 short
//! HTTP requests through its own NAT. Real binary, real kernel traffic, af_packet on veths
//! (the NAT topology of tests/common/nat_topology.rs: host a is tenant A, host b tenant B).

mod common;
#[path = "common/flood.rs"]
mod flood;
#[path = "common/nat_topology.rs"]
mod nat_topology;

use common::*;
use flood::{kv, FLOOD, HTTP_CLIENT};
use nat_topology::*;
use std::time::{Duration, Instant};

const A: &str = "tenant-a";
const B: &str = "tenant-b";
/// Tenant A's node-wide limits (one worker: the worker's share is all of it).
const A_PPS: f64 = 4000.0;
const A_NEW_FLOWS: f64 = 150.0;
const A_MAX_FLOWS: f64 = 600.0;
const MBUFS_IN_USE: &str = "flowgate_mempool_mbufs_in_use";

/// The NAT topology's config with two tenants: A = host a (10.0.1.2) with tight limits,
/// B = host b (10.0.1.3) with generous ones.
fn config(topo: &NatTopology) -> String {
    let base = topo.config(&NatOpts::default());
    let head = base
        .split("nat_gateways:\n")
        .next()
        .expect("generated config has nat_gateways");
    format!(
        r#"{head}nat_gateways:
  - id: {A}
    inside_prefixes: ["{HOST_A}/32"]
    public_ips: ["{pa}"]
    port_range: {{first: 20000, last: 29999}}
    timeouts: {{tcp_established_s: 30, tcp_transitory_s: 30, udp_s: 30, icmp_s: 10}}
    flows_per_core: 65536
    limits: {{packets_per_s: {pps}, new_flows_per_s: {nfs}, max_flows: {mf}}}
  - id: {B}
    inside_prefixes: ["{HOST_B}/32"]
    public_ips: ["{pb}"]
    port_range: {{first: 20000, last: 29999}}
    timeouts: {{tcp_established_s: 30, tcp_transitory_s: 30, udp_s: 30, icmp_s: 10}}
    flows_per_core: 65536
    limits: {{packets_per_s: 100000, new_flows_per_s: 5000, max_flows: 50000}}
"#,
        pa = PUBLIC_IPS[0],
        pb = PUBLIC_IPS[1],
        pps = A_PPS as u64,
        nfs = A_NEW_FLOWS as u64,
        mf = A_MAX_FLOWS as u64,
    )
}

fn nat(m: &Metrics, gw: &str, name: &str, extra: &[(&str, &str)]) -> f64 {
    let mut l = vec![("gateway", gw)];
    l.extend_from_slice(extra);
    m.value(&format!("flowgate_nat_{name}"), &l)
}

fn dropped(m: &Metrics, gw: &str, reason: &str) -> f64 {
    nat(m, gw, "packets_dropped_total", &[("reason", reason)])
}

/// Packets of gateway `gw` received from either side (before its limits).
fn offered(m: &Metrics, gw: &str) -> f64 {
    ["in_from_source", "in_from_destination"]
        .iter()
        .map(|d| nat(m, gw, "packets_total", &[("direction", d)]))
        .sum()
}

struct Point {
    at: f64,
    attempts: f64,
    active: f64,
    offered: f64,
    pps_drops: f64,
}

fn point(m: &Metrics, t0: Instant) -> Point {
    Point {
        at: t0.elapsed().as_secs_f64(),
        attempts: nat(m, A, "connection_attempts_total", &[]),
        active: nat(m, A, "active_connections", &[]),
        offered: offered(m, A),
        pps_drops: dropped(m, A, "nat_tenant_pps_limit"),
    }
}

#[test]
fn flooding_tenant_is_held_to_its_limits_and_its_neighbour_keeps_working() {
    let Some(_g) = setup("flooding_tenant_is_held_to_its_limits_and_its_neighbour_keeps_working")
    else {
        return;
    };
    let topo = NatTopology::new("nnoisy");
    let app = Appliance::start(&config(&topo));
    let mut rig = NatRig { app, topo };
    for (ns, dst) in [
        (rig.a(), INSIDE_GW),
        (rig.b(), INSIDE_GW),
        (rig.router(), OUTSIDE_IP),
    ] {
        assert!(ping_until_reply(ns, dst, 10), "no ping answer on {dst}");
    }
    let http = HttpServer::start(rig.server(), SERVER, 8080);
    let body = test_bytes(2000, 9);
    http.put("f", &body);
    let want = body.len().to_string();
    let client_args = |n: &str, spacing: &str| {
        vec![
            SERVER.to_string(),
            "8080".into(),
            "/f".into(),
            want.clone(),
            n.to_string(),
            spacing.to_string(),
        ]
    };

    // Tenant B alone: the baseline.
    let args = client_args("50", "0");
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let quiet = python_in(rig.b(), HTTP_CLIENT, &a, 60);
    assert!(quiet.ok(), "{quiet}");
    assert_eq!(kv(&quiet.stdout, "ok"), 50.0, "baseline: {quiet}");
    std::thread::sleep(Duration::from_millis(300));
    let base = rig.app.metrics();
    let mbufs_base = base.value(MBUFS_IN_USE, &[]);

    // Tenant A floods: SYNs (a new flow each) and UDP (4 flows), 9 s, bounded counts.
    let dir = TempDir::new("noisy");
    let flood = |mode: &str, pps: &str, log: &str| {
        rig.a().spawn(
            &[
                PYTHON, "-u", "-c", FLOOD, mode, HOST_A, SERVER, "9", pps, "9", "200000",
            ],
            &dir.join(log),
        )
    };
    let mut syn = flood("syn", "10000", "syn.log");
    let mut udp = flood("udp", "15000", "udp.log");
    assert!(
        wait_for(Duration::from_secs(20), || (syn
            .log_text()
            .contains("ready")
            && udp.log_text().contains("ready"))
        .then_some(()))
        .is_some(),
        "flood generators did not start: {} {}",
        syn.log_text(),
        udp.log_text()
    );
    let t0 = Instant::now();
    let start = point(&base, t0);
    // Tenant B during the flood: 200 requests, one every 30 ms (~6 s or more).
    let args = client_args("200", "0.03");
    let mut cmd = vec![PYTHON, "-u", "-c", HTTP_CLIENT];
    cmd.extend(args.iter().map(String::as_str));
    std::thread::sleep(Duration::from_millis(500));
    let mut bproc = rig.b().spawn(&cmd, &dir.join("b.log"));
    let mut points = vec![start];
    while syn.running() || udp.running() {
        assert!(t0.elapsed() < Duration::from_secs(40), "floods did not end");
        points.push(point(&rig.app.metrics(), t0));
        std::thread::sleep(Duration::from_millis(250));
    }
    let flood_secs = t0.elapsed().as_secs_f64();
    assert!(
        bproc.wait_timeout(Duration::from_secs(60)).is_some(),
        "tenant B's client did not finish: {}",
        bproc.log_text()
    );
    let b_out = bproc.log_text();
    let syn_out = syn.log_text();
    let udp_out = udp.log_text();
    let end = rig.app.metrics();
    points.push(point(&end, t0));

    // Figures.
    let sent = kv(&syn_out, "sent") + kv(&udp_out, "sent");
    let offered_a = offered(&end, A) - offered(&base, A);
    let pps_drops =
        dropped(&end, A, "nat_tenant_pps_limit") - dropped(&base, A, "nat_tenant_pps_limit");
    let admitted_pps = (offered_a - pps_drops) / flood_secs;
    // Accepted new flows/s: while the concurrent-flow limit is not reached (the rate binds
    // then), from 1 s into the flood (the bucket's initial burst spent).
    let window: Vec<&Point> = points
        .iter()
        .filter(|p| p.at >= 1.0 && p.active < A_MAX_FLOWS - 40.0)
        .collect();
    assert!(
        window.len() >= 3,
        "too few samples before the flow limit: {}",
        points.len()
    );
    let (w0, w1) = (window[0], window[window.len() - 1]);
    let new_flow_rate = (w1.attempts - w0.attempts) / (w1.at - w0.at);
    let window_pps = ((w1.offered - w1.pps_drops) - (w0.offered - w0.pps_drops)) / (w1.at - w0.at);
    let max_active = points.iter().map(|p| p.active).fold(0.0, f64::max);
    let b_ok = kv(&b_out, "ok");
    println!(
        "tenant A: sent {sent} packets in {flood_secs:.1} s ({:.0} pps offered by the generators, \
         {:.0} pps reached the gateway); admitted {admitted_pps:.0} pps overall, {window_pps:.0} pps \
         in [{:.1}, {:.1}] s (limit {A_PPS}); accepted new flows {new_flow_rate:.1}/s (limit \
         {A_NEW_FLOWS}); max concurrent flows {max_active} (limit {A_MAX_FLOWS})",
        sent / flood_secs,
        offered_a / flood_secs,
        w0.at,
        w1.at
    );
    for r in [
        "nat_tenant_pps_limit",
        "nat_tenant_new_flow_limit",
        "nat_tenant_flow_limit",
    ] {
        println!(
            "  drops {r}: A {} B {}",
            dropped(&end, A, r) - dropped(&base, A, r),
            dropped(&end, B, r)
        );
    }
    println!(
        "tenant B: quiet p50 {} ms p99 {} ms; during the flood {b_ok}/200 ok, p50 {} ms p99 {} ms",
        kv(&quiet.stdout, "p50_ms"),
        kv(&quiet.stdout, "p99_ms"),
        kv(&b_out, "p50_ms"),
        kv(&b_out, "p99_ms"),
    );

    // B keeps working.
    assert!(
        b_ok >= 190.0,
        "tenant B: {b_ok}/200 requests succeeded\n{b_out}"
    );
    for r in [
        "nat_tenant_pps_limit",
        "nat_tenant_new_flow_limit",
        "nat_tenant_flow_limit",
    ] {
        assert_eq!(dropped(&end, B, r), 0.0, "tenant B hit its own limit {r}");
        assert!(
            dropped(&end, A, r) > dropped(&base, A, r),
            "tenant A's excess not counted under {r}\n{}",
            end.excerpt("flowgate_nat_packets_dropped_total")
        );
    }
    // The limits bind: the flood exceeded them and A got about its rates, never more.
    assert!(
        offered_a / flood_secs > 2.0 * A_PPS,
        "the flood did not exceed A's packet rate ({:.0} pps)",
        offered_a / flood_secs
    );
    assert!(
        (0.7 * A_PPS..=1.15 * A_PPS).contains(&window_pps),
        "A admitted {window_pps:.0} pps, limit {A_PPS}"
    );
    assert!(
        admitted_pps <= 1.15 * A_PPS,
        "A admitted {admitted_pps:.0} pps overall, limit {A_PPS}"
    );
    assert!(
        (0.75 * A_NEW_FLOWS..=1.25 * A_NEW_FLOWS).contains(&new_flow_rate),
        "A's accepted new flows {new_flow_rate:.1}/s, limit {A_NEW_FLOWS}"
    );
    assert!(
        max_active <= A_MAX_FLOWS,
        "A held {max_active} flows, limit {A_MAX_FLOWS}"
    );
    assert!(
        max_active >= A_MAX_FLOWS - 10.0,
        "A never reached its flow limit ({max_active})"
    );
    // The node is fine: still up, every mbuf back.
    assert!(rig.app.running(), "flowgate died under the flood");
    let m = rig.app.wait_metrics(Duration::from_secs(10), |m| {
        m.value(MBUFS_IN_USE, &[]) <= mbufs_base
    });
    let now = m.value(MBUFS_IN_USE, &[]);
    println!("mbufs in use: baseline {mbufs_base}, after {now}");
    assert!(now <= mbufs_base, "mbufs {now} > baseline {mbufs_base}");
    // The per-tenant families stay valid exposition (promtool, as tests/routing.rs).
    require_tool("promtool");
    let text = rig.app.metrics_text();
    let f = dir.join("metrics.txt");
    std::fs::write(&f, &text).unwrap();
    let o = sh(&format!("promtool check metrics < {}", f.display()), 20);
    assert!(o.ok(), "promtool check metrics:\n{o}");
    // And B still works after the flood.
    let args = client_args("20", "0");
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let after = python_in(rig.b(), HTTP_CLIENT, &a, 60);
    assert_eq!(kv(&after.stdout, "ok"), 20.0, "{after}");
}

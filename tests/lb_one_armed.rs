//! The load balancer one-armed (issue 7, "one variant one-armed"; SPEC.md §4): flowgate's
//! only data port sits on one bridged segment (the "VPC subnet") with the client and the
//! targets, so every LB packet enters and leaves through the same port.
//!
//! ```text
//!  netns lb1-c  client 10.0.1.2/24, 203.0.113.0/24 via 10.0.1.1 ---------+
//!  netns lb1-t1..t4  10.0.2.11..14/24, 10.0.1.0/24 via 10.0.2.1 ---------+-- br0 in netns lb1-v
//!  netns lb1-t5  10.0.2.15/24, no route to the client (full NAT) --------+      |
//!                                                           lb1e1 ==veth== lb1e0: flowgate port
//!                                                           "eni" 10.0.1.1/24 + 10.0.2.1/24
//! ```
//!
//! Client and targets share one L2 segment but not one subnet: the client reaches the VIP
//! through flowgate's 10.0.1.1, and the client-IP-preserving targets route the client's
//! prefix back through flowgate's 10.0.2.1, so neither direction can bypass the appliance.
//! Targets run `TARGET_SERVER` (tests/common/lb_topology.rs): HTTP answering
//! `name=<target> client=<ip>` and logging `HTTP <client ip> <port>`.

mod common;
#[path = "common/lb_topology.rs"]
mod lb_topology;

use common::*;
use lb_topology::TARGET_SERVER;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const CLIENT: &str = "10.0.1.2";
const VIP: &str = "203.0.113.10";
const LB_ADDR: &str = "10.0.2.100";

fn target_ip(i: usize) -> String {
    format!("10.0.2.{}", 10 + i)
}

/// N short HTTP/1.0 connections to VIP:PORT; prints each answer's body, then `fail=<count>`.
const HTTP_CLIENT: &str = r#"
import socket, sys
vip, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
fails = 0
for i in range(n):
    try:
        s = socket.create_connection((vip, port), timeout=3)
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        data = b""
        while True:
            d = s.recv(4096)
            if not d:
                break
            data += d
        s.close()
        print(data.split(b"\r\n\r\n", 1)[1].decode().strip(), flush=True)
    except Exception as e:
        fails += 1
print("fail=%d" % fails, flush=True)
"#;

/// Field order = drop order: the root-side veth, then the namespaces.
struct OneArmLb {
    _veth: Veth,
    client: Netns,
    targets: Vec<Netns>,
    _vpc: Netns,
}

/// A veth from the bridge in `vpc` to `host` (`<tag>0` on the bridge, `<tag>1` in `host`)
/// holding `addr`, with route `route` (prefix, gateway) if given. No default routes.
fn attach(vpc: &Netns, host: &Netns, tag: &str, addr: &str, route: Option<(&str, &str)>) {
    let b = format!("{tag}0");
    let h = format!("{tag}1");
    vpc.must(
        &[
            "ip", "link", "add", &b, "type", "veth", "peer", "name", &h, "netns", &host.name,
        ],
        10,
    );
    segmentation_off(Some(vpc), &b);
    segmentation_off(Some(host), &h);
    vpc.must(&["ip", "link", "set", &b, "master", "br0"], 5);
    vpc.must(&["ip", "link", "set", &b, "up"], 5);
    host.must(&["ip", "addr", "add", addr, "dev", &h], 5);
    host.must(&["ip", "link", "set", &h, "up"], 5);
    if let Some((prefix, gw)) = route {
        add_route(host, prefix, gw);
    }
}

fn one_arm_lb() -> OneArmLb {
    require_tool("ethtool");
    let client = Netns::new("lb1-c");
    let vpc = Netns::new("lb1-v");
    let targets: Vec<Netns> = (1..=5).map(|i| Netns::new(&format!("lb1-t{i}"))).collect();
    let veth = Veth::new("lb1e0", "lb1e1", &vpc, 1500);
    bridge_with(&vpc, "lb1e1");
    attach(
        &vpc,
        &client,
        "lb1c",
        &format!("{CLIENT}/24"),
        Some(("203.0.113.0/24", "10.0.1.1")),
    );
    for (i, t) in targets.iter().enumerate() {
        // t1..t4 preserve the client IP: their replies must go back through flowgate.
        let back = (i < 4).then_some(("10.0.1.0/24", "10.0.2.1"));
        let addr = format!("{}/24", target_ip(i + 1));
        attach(&vpc, t, &format!("lb1t{}", i + 1), &addr, back);
    }
    OneArmLb {
        _veth: veth,
        client,
        targets,
        _vpc: vpc,
    }
}

/// tcp 80 -> `web` (t1..t3 weight 1, t4 weight 0, client IP preserved);
/// tcp 81 -> `fnat` (t5, full NAT from LB address 10.0.2.100).
fn config() -> String {
    let web: String = (1..=4)
        .map(|i| {
            let w = if i == 4 { 0 } else { 1 };
            format!(
                "          - {{ip: {}, port: 8080, weight: {w}}}\n",
                target_ip(i)
            )
        })
        .collect();
    format!(
        r#"lcores: {{main: 0, workers: [1]}}
mempool: {{mbufs: 4095, cache: 256, data_room: 10240}}
ports:
  - name: eni
    device: "net_af_packet0,iface=lb1e0,framesz=10240,blocksz=20480"
    addresses: [10.0.1.1/24, 10.0.2.1/24]
    mtu: 1500
routes: []
worker: {{idle_sleep_us: 50}}
load_balancers:
  - id: web
    vips: [{VIP}]
    lb_addresses: [{LB_ADDR}]
    listeners:
      - {{protocol: tcp, port: 80, target_group: web}}
      - {{protocol: tcp, port: 81, target_group: fnat}}
    target_groups:
      - name: web
        targets:
{web}      - name: fnat
        preserve_client_ip: false
        targets:
          - {{ip: {t5}, port: 8080}}
"#,
        t5 = target_ip(5),
    )
}

/// Runs `n` connections to VIP:`port` from the client; counts answers by target name.
fn burst(t: &OneArmLb, port: u16, n: usize) -> (BTreeMap<String, usize>, String) {
    let (p, n) = (port.to_string(), n.to_string());
    let o = t
        .client
        .exec(&[PYTHON, "-u", "-c", HTTP_CLIENT, VIP, &p, &n], 60);
    assert!(o.ok(), "http client failed\n{o}");
    let mut m = BTreeMap::new();
    for l in o.stdout.lines() {
        if let Some(rest) = l.strip_prefix("name=") {
            let name = rest.split_whitespace().next().unwrap_or("").to_string();
            *m.entry(name).or_insert(0) += 1;
        }
    }
    (m, o.stdout)
}

#[test]
fn one_armed_lb_spreads_preserves_client_ip_and_full_nats() {
    let Some(_g) = setup("one_armed_lb_spreads_preserves_client_ip_and_full_nats") else {
        return;
    };
    let t0 = Instant::now();
    let t = one_arm_lb();
    let dir = TempDir::new("lb-one-armed");
    let _servers: Vec<BgProc> = t
        .targets
        .iter()
        .enumerate()
        .map(|(i, ns)| {
            let name = format!("t{}", i + 1);
            let log = dir.join(&format!("{name}.log"));
            ns.spawn(
                &[PYTHON, "-u", "-c", TARGET_SERVER, &name, &target_ip(i + 1)],
                &log,
            )
        })
        .collect();
    for ns in &t.targets {
        ns.wait_listen("tcp", 8080, Duration::from_secs(10));
    }
    let log = |i: usize| std::fs::read_to_string(dir.join(&format!("t{i}.log"))).unwrap();
    let mut app = Appliance::start(&config());
    assert!(ping_until_reply(&t.client, "10.0.1.1", 10));
    assert!(ping_until_reply(&t.targets[0], "10.0.2.1", 10));

    // Client IP preserved: 60 connections over t1..t3, none on the weight-0 t4.
    let n = 60;
    let (got, out) = burst(&t, 80, n);
    println!("one-armed distribution {got:?}");
    assert!(out.contains("fail=0"), "{out}");
    assert_eq!(got.values().sum::<usize>(), n, "{got:?}");
    assert_eq!(got.get("t4"), None, "weight-0 target got flows: {got:?}");
    for i in 1..=3 {
        let k = got.get(&format!("t{i}")).copied().unwrap_or(0);
        assert!(k > 0, "t{i} got none: {got:?}");
        let l = log(i);
        assert!(l.contains(&format!("HTTP {CLIENT} ")), "t{i} log: {l}");
        assert!(!l.contains(LB_ADDR), "t{i} saw the LB address: {l}");
    }
    assert!(!log(4).contains("HTTP"), "t4 log: {}", log(4));
    assert!(
        out.lines()
            .filter(|l| l.starts_with("name="))
            .all(|l| l.ends_with(&format!("client={CLIENT}"))),
        "{out}"
    );

    // Full NAT: t5 sees the LB address and has no route back to the client.
    let f = 5;
    let (fgot, fout) = burst(&t, 81, f);
    assert!(fout.contains("fail=0"), "{fout}");
    assert_eq!(fgot.get("t5"), Some(&f), "{fout}");
    assert!(fout.contains(&format!("client={LB_ADDR}")), "{fout}");
    let l5 = log(5);
    assert!(l5.contains(&format!("HTTP {LB_ADDR} ")), "t5 log: {l5}");
    assert!(!l5.contains(CLIENT), "client IP leaked to t5: {l5}");
    let r = t.targets[4].exec(&["ip", "route", "get", CLIENT], 5);
    assert!(!r.ok(), "t5 has a route to the client: {r}");

    // Metrics equal what was sent; every packet in and out of the one port (a short
    // HTTP/1.0 exchange is at least 8 packets in all: handshake, request, answer, FINs).
    let m = app.metrics();
    assert_eq!(
        m.value("flowgate_lb_new_flows_total", &[("lb", "web")]),
        (n + f) as f64,
        "new flows"
    );
    assert_eq!(
        m.value(
            "flowgate_lb_target_new_flows_total",
            &[
                ("lb", "web"),
                ("target_group", "fnat"),
                ("target", "10.0.2.15:8080")
            ]
        ),
        f as f64
    );
    let rx = m.value("flowgate_port_rx_packets_total", &[("port", "eni")]);
    let tx = m.value("flowgate_port_tx_packets_total", &[("port", "eni")]);
    assert!(rx >= 8.0 * (n + f) as f64, "rx {rx}");
    assert!(tx >= 8.0 * (n + f) as f64, "tx {tx}");
    assert!(app.stop().success());
    println!("one-armed LB test took {:?}", t0.elapsed());
}

//! NAT gateway hardening (issue 8) with real kernel traffic through the real binary, on
//! the NAT topology of tests/common/nat_topology.rs: anti-spoofing, PMTUD on the way in,
//! east-west traffic, kernel-default offloads.

mod common;
#[path = "common/nat_topology.rs"]
mod nat_topology;

use common::*;
use nat_topology::*;

/// scapy, from a private host (iface argv[1], gateway MAC argv[2], server argv[3]): the
/// spoofed packets of issue 8 item 3, then one legitimate datagram (sport 5555) that must
/// cross. Prints `<category> <count>`.
const SCAPY_SPOOF_INSIDE: &str = r#"
import sys
from scapy.all import Ether, IP, UDP, TCP, Raw, sendp, conf, get_if_addr
conf.verb = 0
iface, mac, srv, pub = sys.argv[1:5]
me = get_if_addr(iface)
E = lambda: Ether(dst=mac)
cats = {}
def out(cat, pkts):
    sendp(pkts, iface=iface, inter=0.002)
    cats[cat] = cats.get(cat, 0) + len(pkts)
out("spoofed_own_source", [E() / IP(src=pub, dst=srv) / UDP(sport=4000 + i, dport=9999) / Raw(b"spoof-public") for i in range(5)])
out("spoofed_own_source", [E() / IP(src="10.0.1.1", dst=srv) / UDP(sport=4100 + i, dport=9999) / Raw(b"spoof-own") for i in range(5)])
out("foreign_inside_source", [E() / IP(src="172.16.9.9", dst=srv) / UDP(sport=4200 + i, dport=9999) / Raw(b"spoof-foreign") for i in range(5)])
out("land", [E() / IP(src=srv, dst=srv) / UDP(sport=9999, dport=9999) / Raw(b"land") for i in range(5)])
out("land", [E() / IP(src=srv, dst=srv) / TCP(sport=80, dport=80, flags="S") for i in range(5)])
out("l4_port_zero", [E() / IP(src=me, dst=srv) / UDP(sport=0, dport=9999) / Raw(b"zero") for i in range(5)])
out("l4_port_zero", [E() / IP(src=me, dst=srv) / UDP(sport=4300 + i, dport=0) / Raw(b"zero") for i in range(5)])
out("l4_port_zero", [E() / IP(src=me, dst=srv) / TCP(sport=0, dport=80, flags="S") for i in range(5)])
sendp(E() / IP(src=me, dst=srv) / UDP(sport=5555, dport=9999) / Raw(b"legit"), iface=iface)
for k, v in sorted(cats.items()):
    print(k, v)
"#;

#[test]
fn spoofed_sources_from_inside_are_dropped_and_counted() {
    let Some(_g) = setup("spoofed_sources_from_inside_are_dropped_and_counted") else {
        return;
    };
    let rig = NatRig::start("nspoof", &NatOpts::default());
    let mac = rig.topo.inside_mac();
    let before = rig.app.metrics();
    // Everything that reaches the server, and anything the router sees from 10/8 or 172.16/12.
    let cap = Capture::start(rig.server(), &rig.topo.server_if(), "udp or tcp");
    let o = python_in(
        rig.a(),
        SCAPY_SPOOF_INSIDE,
        &[&rig.topo.a_if(), &mac, SERVER, PUBLIC_IPS[0]],
        60,
    );
    assert!(o.ok(), "scapy: {o}");
    let want: Vec<(String, f64)> = o
        .stdout
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect();
    assert_eq!(want.len(), 4, "{o}");
    let m = rig
        .app
        .wait_metrics(std::time::Duration::from_secs(5), |m| {
            want.iter()
                .all(|(k, n)| m.dropped(k) - before.dropped(k) >= *n)
        });
    for (k, n) in &want {
        let d = m.dropped(k) - before.dropped(k);
        assert!(
            d >= *n,
            "{k}: +{d}, want {n}\n{}",
            m.excerpt("flowgate_packets_dropped")
        );
    }
    let lines = cap.finish();
    let legit: Vec<&String> = lines.iter().filter(|l| l.contains(".9999:")).collect();
    assert_eq!(
        legit.len(),
        1,
        "exactly the legitimate datagram must reach the server: {lines:#?}"
    );
    assert!(
        legit[0].contains(&format!("{}.", PUBLIC_IPS[0]))
            || legit[0].contains(&format!("{}.", PUBLIC_IPS[1])),
        "the legitimate datagram leaves translated: {}",
        legit[0]
    );
}

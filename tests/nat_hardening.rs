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

/// Starts flowgate on a fresh NAT topology with the generated config passed through
/// `edit`, and warms ARP up on both sides (as `NatRig::start` does).
fn start_edited(prefix: &str, o: &NatOpts, edit: impl Fn(String) -> String) -> NatRig {
    let topo = NatTopology::new(prefix);
    let yaml = edit(topo.config(o));
    let app = Appliance::start(&yaml);
    let rig = NatRig { app, topo };
    for (ns, dst) in [
        (&rig.topo.a, INSIDE_GW),
        (&rig.topo.b, INSIDE_GW),
        (&rig.topo.router, OUTSIDE_IP),
    ] {
        assert!(ping_until_reply(ns, dst, 10), "no ping answer on {dst}");
    }
    rig
}

/// The server end of a UDP exchange: waits for one datagram on argv[1]:argv[2], then,
/// connected to its sender, sends argv[3]-byte DF datagrams twice (1 s apart) and prints
/// the path MTU the kernel learned (`mtu N`).
const UDP_PMTU_SERVER: &str = r#"
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
s.settimeout(20)
print("listening", flush=True)
d, peer = s.recvfrom(2000)
print("peer %s %d" % peer, flush=True)
s.connect(peer)
s.setsockopt(socket.IPPROTO_IP, 10, 2)  # IP_MTU_DISCOVER = IP_PMTUDISC_DO
for i in range(2):
    try:
        s.send(b"x" * int(sys.argv[3]))
        print("send%d ok" % i, flush=True)
    except OSError as e:
        print("send%d errno %d" % (i, e.errno), flush=True)
    time.sleep(1.0)
print("mtu %d" % s.getsockopt(socket.IPPROTO_IP, 14), flush=True)
"#;

#[test]
fn inbound_df_packet_too_big_for_inside_mtu_gets_frag_needed_at_the_server() {
    let Some(_g) = setup("inbound_df_packet_too_big_for_inside_mtu_gets_frag_needed_at_the_server")
    else {
        return;
    };
    // The inside port's MTU is 1280, the outside 1500.
    let rig = start_edited("npmtuin", &NatOpts::default(), |y| {
        y.replacen("    mtu: 1500\n", "    mtu: 1280\n", 1)
    });
    let dir = TempDir::new("pmtuin");
    let before = rig.app.metrics();
    let cap = Capture::start(rig.server(), &rig.topo.server_if(), "icmp");
    let log = dir.join("server.log");
    let mut srv = rig.server().spawn(
        &[PYTHON, "-u", "-c", UDP_PMTU_SERVER, SERVER, "7777", "1400"],
        &log,
    );
    assert!(
        wait_for(std::time::Duration::from_secs(10), || srv
            .log_text()
            .contains("listening")
            .then_some(()))
        .is_some(),
        "{}",
        srv.log_text()
    );
    // The mapping is opened from inside first.
    let opener = "import socket, sys\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
                  s.bind(('0.0.0.0', 5000))\ns.sendto(b'open', (sys.argv[1], 7777))\n";
    python_in(rig.a(), opener, &[SERVER], 10).expect_ok("open the mapping");
    let st = srv.wait_timeout(std::time::Duration::from_secs(20));
    let text = srv.log_text();
    assert!(st.is_some(), "server did not finish: {text}");
    assert!(
        PUBLIC_IPS
            .iter()
            .any(|p| text.contains(&format!("peer {p} "))),
        "the server sees a public IP: {text}"
    );
    assert!(
        text.contains("mtu 1280"),
        "the server's kernel must learn the inside MTU from the ICMP: {text}"
    );
    let lines = cap.finish();
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&format!("{OUTSIDE_IP} > {SERVER}"))
                && l.contains("need to frag (mtu 1280)")),
        "ICMP 3/4 from the appliance with mtu 1280: {lines:#?}"
    );
    let (name, l) = ("flowgate_icmp_errors_sent_total", [("type", "frag_needed")]);
    let m = rig
        .app
        .wait_metrics(std::time::Duration::from_secs(5), |m| {
            m.value(name, &l) > before.value(name, &l)
        });
    let sent = m.value(name, &l) - before.value(name, &l);
    assert!(sent >= 1.0, "icmp_frag_needed_sent +{sent}");
}

#[test]
fn east_west_traffic_keeps_its_private_source() {
    let Some(_g) = setup("east_west_traffic_keeps_its_private_source") else {
        return;
    };
    // 10.0.2.0/24 is another private network behind the inside port (host b routes it).
    let rig = start_edited("neastw", &NatOpts::default(), |y| {
        y.replacen(
            "routes:\n",
            "routes:\n  - prefix: \"10.0.2.0/24\"\n    port: inside\n    via: \"10.0.1.3\"\n",
            1,
        )
    });
    let b = rig.b();
    // (No dummy interfaces here: the address lives on b's loopback.)
    b.must(&["ip", "addr", "add", "10.0.2.3/32", "dev", "lo"], 5);
    let dir = TempDir::new("eastw");
    let _east = udp_echo_server(b, "10.0.2.3", 7000, &dir.join("east.log"));
    let _north = udp_echo_server(rig.server(), SERVER, 7000, &dir.join("north.log"));
    let before = rig.app.metrics();
    let o = udp_request(rig.a(), "10.0.2.3", 7000, "east-west");
    assert!(o.ok() && o.stdout.contains("echo:east-west"), "{o}");
    let o = udp_request(rig.a(), SERVER, 7000, "north-south");
    assert!(o.ok() && o.stdout.contains("echo:north-south"), "{o}");
    let east = std::fs::read_to_string(dir.join("east.log")).unwrap_or_default();
    let north = std::fs::read_to_string(dir.join("north.log")).unwrap_or_default();
    assert!(
        east.contains(&format!("from {HOST_A}:")),
        "east-west keeps the private source: {east}"
    );
    assert!(
        PUBLIC_IPS
            .iter()
            .any(|p| north.contains(&format!("from {p}:"))),
        "north-south is translated: {north}"
    );
    let m = rig
        .app
        .wait_metrics(std::time::Duration::from_secs(5), |m| {
            rig.nat(m, "connection_attempts_total", &[])
                > rig.nat(&before, "connection_attempts_total", &[])
        });
    let attempts = rig.nat(&m, "connection_attempts_total", &[])
        - rig.nat(&before, "connection_attempts_total", &[]);
    assert_eq!(
        attempts, 1.0,
        "only the north-south flow was a NAT connection"
    );
}

/// `InCsumErrors` of UDP and TCP in a namespace (/proc/net/snmp).
fn csum_errors(ns: &Netns) -> (u64, u64) {
    let o = ns.must(&["cat", "/proc/net/snmp"], 5);
    let field = |proto: &str| -> u64 {
        let mut it = o
            .stdout
            .lines()
            .filter(|l| l.starts_with(&format!("{proto}:")));
        let (Some(h), Some(v)) = (it.next(), it.next()) else {
            return 0;
        };
        let i = h.split_whitespace().position(|w| w == "InCsumErrors");
        i.and_then(|i| v.split_whitespace().nth(i))
            .and_then(|x| x.parse().ok())
            .unwrap_or(0)
    };
    (field("Udp"), field("Tcp"))
}

/// A pcap capture decoded with `tcpdump -vv` (which verifies every checksum it can).
fn capture_vv(ns: &Netns, ifname: &str, filter: &str, dir: &TempDir) -> (BgProc, String) {
    let pcap = dir.join(&format!("{ifname}.pcap"));
    let pcap_s = pcap.to_string_lossy().into_owned();
    let mut args = vec![
        "tcpdump",
        "--immediate-mode",
        "-i",
        ifname,
        "-nn",
        "-U",
        "-w",
        &pcap_s,
    ];
    args.extend(filter.split_whitespace());
    let p = ns.spawn(&args, &dir.join(&format!("{ifname}.log")));
    assert!(
        wait_for(std::time::Duration::from_secs(10), || p
            .log_text()
            .contains("listening on")
            .then_some(()))
        .is_some(),
        "tcpdump: {}",
        p.log_text()
    );
    (p, pcap_s)
}

fn decode_vv(mut p: BgProc, pcap: &str) -> Vec<String> {
    std::thread::sleep(std::time::Duration::from_millis(300));
    p.stop_with(libc::SIGINT, std::time::Duration::from_secs(5));
    let o = run(&["tcpdump", "-nn", "-vv", "-r", pcap], 20);
    o.stdout.lines().map(str::to_string).collect()
}

/// A STUN-like exchange: argv[3] requests of argv[4] bytes, each answered with the
/// address the server saw and the request echoed; prints `ok=N`.
const UDP_STUNLIKE_CLIENT: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1.0)
ok = 0
for i in range(int(sys.argv[3])):
    msg = (b"req-%d-" % i) + bytes((j * 13 + i) % 251 for j in range(int(sys.argv[4])))
    for attempt in range(3):
        s.sendto(msg, (sys.argv[1], int(sys.argv[2])))
        try:
            d, a = s.recvfrom(65535)
        except socket.timeout:
            continue
        if d.endswith(msg):
            ok += 1
        break
print("ok=%d" % ok, flush=True)
"#;

#[test]
fn udp_and_http_through_nat_with_kernel_default_offloads() {
    let Some(_g) = setup("udp_and_http_through_nat_with_kernel_default_offloads") else {
        return;
    };
    let rig = NatRig::start("nofflds", &NatOpts::default());
    // The appliance's peers keep tx checksum offload and TSO/GSO on (kernel defaults).
    for (ns, ifn) in [
        (&rig.topo.lan, format!("{}i1", rig.topo.prefix)),
        (rig.router(), format!("{}o1", rig.topo.prefix)),
        (rig.a(), rig.topo.a_if()),
        (rig.server(), rig.topo.server_if()),
    ] {
        let o = ns.must(&["ethtool", "-k", &ifn], 5);
        assert!(
            o.stdout.contains("tx-checksumming: on"),
            "{ifn}: offloads not at defaults\n{o}"
        );
    }
    let dir = TempDir::new("offl");
    let (s0, a0) = (csum_errors(rig.server()), csum_errors(rig.a()));
    let (cap, pcap) = capture_vv(rig.server(), &rig.topo.server_if(), "udp or tcp", &dir);
    let _udp = udp_echo_server(rig.server(), SERVER, 3478, &dir.join("stun.log"));
    let o = python_in(
        rig.a(),
        UDP_STUNLIKE_CLIENT,
        &[SERVER, "3478", "20", "200"],
        60,
    );
    assert_eq!(o.stdout.trim(), "ok=20", "STUN-like exchange: {o}");
    let http = HttpServer::start(rig.server(), SERVER, 8080);
    let body = test_bytes(3 * 1024 * 1024, 7);
    http.put("blob", &body);
    let got = curl_get(rig.a(), &http.url("blob"));
    assert!(got == body, "HTTP download corrupt ({} bytes)", got.len());
    let lines = decode_vv(cap, &pcap);
    let (s1, a1) = (csum_errors(rig.server()), csum_errors(rig.a()));
    assert_eq!(s1, s0, "server InCsumErrors (udp, tcp)");
    assert_eq!(a1, a0, "host a InCsumErrors (udp, tcp)");
    let from_public: Vec<&String> = lines
        .iter()
        .filter(|l| {
            PUBLIC_IPS
                .iter()
                .any(|p| l.trim_start().starts_with(&format!("{p}.")))
        })
        .collect();
    assert!(!from_public.is_empty(), "nothing captured: {lines:#?}");
    let bad: Vec<&&String> = from_public
        .iter()
        .filter(|l| l.contains("[bad ") || l.contains("incorrect"))
        .collect();
    assert!(
        bad.is_empty(),
        "{} of {} translated packets arrive with a bad checksum: {:#?}",
        bad.len(),
        from_public.len(),
        &bad[..bad.len().min(5)]
    );
}

//! flowgate as an IPv4 router between two af_packet ports (standard topology, see
//! tests/common/mod.rs): forwarding, the appliance's own addresses, TCP/UDP through it, TTL
//! expiry, MTU (frag-needed, fragmentation, jumbo), exact counters, malformed frames,
//! the metrics exposition, clean shutdown, config errors and SIGHUP reloads.
//!
//! Every test builds its own namespaces (prefix `rt...`) and its own appliance instance.

mod common;

use common::*;
use std::fs;
use std::time::Duration;

const ECHO: &str = "flowgate_icmp_echo_requests_total";
const FORWARDED: &str = "flowgate_forwarded_packets_total";
const ICMP_ERRORS: &str = "flowgate_icmp_errors_sent_total";
const FRAGMENTS: &str = "flowgate_fragments_created_total";
const MBUFS_IN_USE: &str = "flowgate_mempool_mbufs_in_use";

#[test]
fn ping_through_router() {
    let Some(_g) = setup("ping_through_router") else {
        return;
    };
    let rig = Rig::standard("rtping", 1500, &RouterOpts::default());
    assert!(
        ping_until_reply(rig.client(), SERVER_IP, 5),
        "no reply from the server through the appliance"
    );
    let before = rig.app.metrics();
    let o = ping(rig.client(), SERVER_IP, 5, &[]);
    assert_eq!(ping_counts(&o.stdout), Some((5, 5)), "{o}");
    // The server's replies (TTL 64) crossed one router.
    assert!(
        o.stdout.contains("ttl=63"),
        "TTL not decremented once:\n{o}"
    );
    assert_ping(rig.server(), CLIENT_IP, 3);

    let m = rig.app.wait_metrics(Duration::from_secs(3), |m| {
        m.value(FORWARDED, &[]) - before.value(FORWARDED, &[]) >= 16.0
    });
    let fwd = m.value(FORWARDED, &[]) - before.value(FORWARDED, &[]);
    assert!(
        fwd >= 16.0,
        "forwarded {fwd} < 16 (5+3 pings, both ways)\n{}",
        m.text
    );
    for port in ["client", "server"] {
        for c in [
            "flowgate_port_rx_packets_total",
            "flowgate_port_tx_packets_total",
            "flowgate_port_rx_bytes_total",
            "flowgate_port_tx_bytes_total",
        ] {
            assert!(
                m.value(c, &[("port", port)]) > 0.0,
                "{c}{{port=\"{port}\"}} is 0\n{}",
                m.text
            );
        }
    }
    assert!(
        m.value("flowgate_neighbor_entries", &[]) >= 2.0,
        "neighbor entries < 2\n{}",
        m.excerpt("flowgate_neighbor")
    );
}

#[test]
fn ping_own_addresses() {
    let Some(_g) = setup("ping_own_addresses") else {
        return;
    };
    let rig = Rig::standard("rtown", 1500, &RouterOpts::default());
    let before = rig.app.metrics().value(ECHO, &[]);
    assert_ping(rig.client(), CLIENT_GW, 3);
    assert_ping(rig.server(), SERVER_GW, 3);
    // The far address answers too (reached through the appliance's own port).
    assert_ping(rig.client(), SERVER_GW, 2);
    let m = rig.app.wait_metrics(Duration::from_secs(3), |m| {
        m.value(ECHO, &[]) - before >= 8.0
    });
    assert_eq!(
        m.value(ECHO, &[]) - before,
        8.0,
        "{}",
        m.excerpt("flowgate_icmp")
    );
    // Echo requests to the appliance are not forwarded.
    assert_eq!(
        m.dropped("no_route"),
        0.0,
        "{}",
        m.excerpt("flowgate_packets_dropped")
    );
}

#[test]
fn tcp_through_router() {
    let Some(_g) = setup("tcp_through_router") else {
        return;
    };
    let rig = Rig::standard("rttcp", 1500, &RouterOpts::default());
    let http = HttpServer::start(rig.server(), SERVER_IP, 8080);
    http.put("hello.txt", b"hello through flowgate\n");
    let blob = test_bytes(512 * 1024, 7);
    http.put("blob.bin", &blob);

    assert_eq!(
        curl_get(rig.client(), &http.url("hello.txt")),
        b"hello through flowgate\n"
    );
    let got = curl_get(rig.client(), &http.url("blob.bin"));
    assert!(
        got == blob,
        "512 KiB body differs ({} bytes received)",
        got.len()
    );
    // A router preserves the client's address.
    let log = http.access_log();
    assert!(
        log.contains("10.0.1.2") && log.contains("GET /blob.bin"),
        "server access log: {log}"
    );
    let m = rig.app.metrics();
    assert!(
        m.value(FORWARDED, &[]) > 300.0,
        "{}",
        m.excerpt("flowgate_forwarded")
    );
}

#[test]
fn udp_through_router() {
    let Some(_g) = setup("udp_through_router") else {
        return;
    };
    let rig = Rig::standard("rtudp", 1500, &RouterOpts::default());
    let dir = TempDir::new("udp");
    let srv = udp_echo_server(rig.server(), SERVER_IP, 9999, &dir.join("udp.log"));
    for msg in ["hello-udp", "second datagram"] {
        let o = udp_request(rig.client(), SERVER_IP, 9999, msg);
        assert!(o.ok() && o.stdout == format!("echo:{msg}"), "{o}");
    }
    assert!(
        srv.log_text().contains("from 10.0.1.2:"),
        "{}",
        srv.log_text()
    );

    // netcat-openbsd as the client too.
    require_tool("nc");
    let o = rig.client().sh(
        &format!("printf nc-udp | timeout 5 nc -u -w 2 {SERVER_IP} 9999"),
        10,
    );
    assert!(o.stdout.contains("echo:nc-udp"), "{o}");
}

#[test]
fn ttl_exceeded() {
    let Some(_g) = setup("ttl_exceeded") else {
        return;
    };
    let rig = Rig::standard("rtttl", 1500, &RouterOpts::default());
    assert!(ping_until_reply(rig.client(), SERVER_IP, 5));
    let o = rig.client().exec(
        &["ping", "-n", "-c", "1", "-W", "2", "-t", "1", SERVER_IP],
        8,
    );
    assert!(
        o.stdout.contains("From 10.0.1.1") && o.stdout.contains("Time to live exceeded"),
        "expected 'From 10.0.1.1 ... Time to live exceeded'\n{o}"
    );
    let m = rig.app.wait_metrics(Duration::from_secs(3), |m| {
        m.value(ICMP_ERRORS, &[("type", "time_exceeded")]) >= 1.0
    });
    assert!(
        m.value(ICMP_ERRORS, &[("type", "time_exceeded")]) >= 1.0
            && m.dropped("ttl_exceeded") >= 1.0,
        "{}\n{}",
        m.excerpt(ICMP_ERRORS),
        m.excerpt("flowgate_packets_dropped")
    );

    // traceroute sees the appliance as hop 1 and the server as hop 2.
    require_tool("traceroute");
    let o = rig.client().exec(
        &[
            "traceroute",
            "-n",
            "-q",
            "1",
            "-w",
            "1",
            "-m",
            "3",
            SERVER_IP,
        ],
        20,
    );
    let hops: Vec<&str> = o.stdout.lines().skip(1).collect();
    assert!(
        hops.first().is_some_and(|l| l.contains("10.0.1.1"))
            && hops.get(1).is_some_and(|l| l.contains(SERVER_IP)),
        "traceroute hops\n{o}"
    );
}

#[test]
fn frag_needed_when_df_set() {
    let Some(_g) = setup("frag_needed_when_df_set") else {
        return;
    };
    let opts = RouterOpts {
        server_route_mtu: Some(1280),
        ..Default::default()
    };
    let rig = Rig::standard("rtdf", 1500, &opts);
    assert!(ping_until_reply(rig.client(), SERVER_IP, 5));
    // 1300 + 28 = 1328 > 1280 with DF: ICMP type 3 code 4 with the next-hop MTU.
    let o = rig.client().exec(
        &[
            "ping", "-n", "-c", "1", "-W", "2", "-M", "do", "-s", "1300", SERVER_IP,
        ],
        8,
    );
    assert!(
        o.stdout.contains("Frag needed") && o.stdout.contains("mtu = 1280"),
        "expected 'From 10.0.1.1 ... Frag needed and DF set (mtu = 1280)'\n{o}"
    );
    // The client's kernel has learned the path MTU.
    let r = rig.client().must(&["ip", "route", "get", SERVER_IP], 5);
    assert!(r.stdout.contains("mtu 1280"), "{r}");
    let o = rig.client().exec(
        &[
            "ping", "-n", "-c", "1", "-W", "2", "-M", "do", "-s", "1300", SERVER_IP,
        ],
        8,
    );
    assert!(
        o.all().contains("mtu=1280") || o.all().contains("mtu = 1280"),
        "{o}"
    );
    // Exactly the route MTU passes.
    let o = ping(rig.client(), SERVER_IP, 2, &["-M", "do", "-s", "1252"]);
    assert_eq!(ping_counts(&o.stdout), Some((2, 2)), "{o}");

    let m = rig.app.metrics();
    assert!(
        m.value(ICMP_ERRORS, &[("type", "frag_needed")]) >= 1.0 && m.dropped("frag_needed") >= 1.0,
        "{}\n{}",
        m.excerpt(ICMP_ERRORS),
        m.excerpt("flowgate_packets_dropped")
    );
}

#[test]
fn fragments_when_df_clear() {
    let Some(_g) = setup("fragments_when_df_clear") else {
        return;
    };
    let opts = RouterOpts {
        server_route_mtu: Some(1280),
        ..Default::default()
    };
    // Fresh client namespace: no path MTU learned yet, so the client sends 1328-byte
    // packets whole (its link MTU is 1500) and the appliance has to fragment them.
    let rig = Rig::standard("rtfrag", 1500, &opts);
    assert!(ping_until_reply(rig.client(), SERVER_IP, 5));
    let cap = Capture::start(
        rig.server(),
        &rig.topo.server_veth.peer,
        "ip and (ip[6:2] & 0x3fff != 0)",
    );
    let o = ping(rig.client(), SERVER_IP, 3, &["-M", "dont", "-s", "1300"]);
    assert_eq!(
        ping_counts(&o.stdout),
        Some((3, 3)),
        "DF-clear pings over the 1280 route must be fragmented and answered\n{o}"
    );
    let frags = cap.finish();
    assert!(
        frags.len() >= 6,
        "server saw {} fragments (expected 2 per echo request):\n{}",
        frags.len(),
        frags.join("\n")
    );
    // No fragment is larger than the route MTU (1280 + 14 bytes of Ethernet).
    for l in &frags {
        if let Some(len) = l
            .split("length ")
            .nth(1)
            .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|s| s.parse::<u32>().ok())
        {
            assert!(
                len <= 1294,
                "fragment frame of {len} bytes > 1280 + 14: {l}"
            );
        }
    }
    let m = rig.app.metrics();
    assert!(m.value(FRAGMENTS, &[]) > 0.0, "{}", m.excerpt(FRAGMENTS));
}

#[test]
fn tcp_mss_clamped_to_route_mtu() {
    let Some(_g) = setup("tcp_mss_clamped_to_route_mtu") else {
        return;
    };
    let opts = RouterOpts {
        server_route_mtu: Some(1280),
        ..Default::default()
    };
    let rig = Rig::standard("rtmss", 1500, &opts);
    let http = HttpServer::start(rig.server(), SERVER_IP, 8080);
    let blob = test_bytes(256 * 1024, 9);
    http.put("blob.bin", &blob);
    let cap = Capture::start(
        rig.server(),
        &rig.topo.server_veth.peer,
        "tcp[tcpflags] & tcp-syn != 0",
    );
    let got = curl_get(rig.client(), &http.url("blob.bin"));
    assert!(got == blob, "body differs ({} bytes)", got.len());
    let syns = cap.finish();
    let syn = syns
        .iter()
        .find(|l| l.contains("10.0.1.2.") && l.contains("> 198.51.100.2.8080"))
        .unwrap_or_else(|| {
            panic!(
                "no client SYN seen on the server side:\n{}",
                syns.join("\n")
            )
        });
    let mss: u32 = syn
        .split("mss ")
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no MSS option in {syn}"));
    assert!(
        mss <= 1240,
        "SYN toward a 1280-MTU route has MSS {mss} > 1240: {syn}"
    );
}

#[test]
fn jumbo_frames_9001() {
    let Some(_g) = setup("jumbo_frames_9001") else {
        return;
    };
    let rig = Rig::standard("rtjumbo", 9001, &RouterOpts::default());
    assert!(ping_until_reply(rig.client(), SERVER_IP, 5));
    // 8972 + 28 = 9000 bytes of IP, DF set, both ways through the appliance.
    let o = ping(rig.client(), SERVER_IP, 3, &["-M", "do", "-s", "8972"]);
    assert_eq!(ping_counts(&o.stdout), Some((3, 3)), "{o}");
    let o = ping(rig.server(), CLIENT_IP, 2, &["-M", "do", "-s", "8972"]);
    assert_eq!(ping_counts(&o.stdout), Some((2, 2)), "{o}");
    // And to the appliance itself.
    let o = ping(rig.client(), CLIENT_GW, 2, &["-M", "do", "-s", "8972"]);
    assert_eq!(ping_counts(&o.stdout), Some((2, 2)), "{o}");
    // TCP with a 8961-byte MSS.
    let http = HttpServer::start(rig.server(), SERVER_IP, 8080);
    let blob = test_bytes(1 << 20, 11);
    http.put("blob.bin", &blob);
    let got = curl_get(rig.client(), &http.url("blob.bin"));
    assert!(
        got == blob,
        "1 MiB body over jumbo frames differs ({} bytes)",
        got.len()
    );
    let m = rig.app.metrics();
    assert_eq!(
        m.dropped("frag_needed"),
        0.0,
        "{}",
        m.excerpt("flowgate_packets_dropped")
    );
    assert_eq!(
        m.dropped("multi_segment"),
        0.0,
        "{}",
        m.excerpt("flowgate_packets_dropped")
    );
}

#[test]
fn echo_requests_counted_exactly() {
    let Some(_g) = setup("echo_requests_counted_exactly") else {
        return;
    };
    let rig = Rig::standard("rtcount", 1500, &RouterOpts::default());
    // Let the warm-up pings settle in the counters first.
    std::thread::sleep(Duration::from_millis(500));
    let before = rig.app.metrics().value(ECHO, &[]);
    let o = ping(rig.client(), CLIENT_GW, 7, &[]);
    assert_eq!(ping_counts(&o.stdout), Some((7, 7)), "{o}");
    rig.app.wait_metrics(Duration::from_secs(3), |m| {
        m.value(ECHO, &[]) - before >= 7.0
    });
    std::thread::sleep(Duration::from_millis(500));
    let m = rig.app.metrics();
    assert_eq!(
        m.value(ECHO, &[]) - before,
        7.0,
        "{ECHO} moved by {} for 7 pings",
        m.value(ECHO, &[]) - before
    );
}

/// Builds the malformed frames with scapy and sends each `n` times from the client.
const BAD_FRAMES: &str = r#"
import sys
from scapy.all import Ether, IP, TCP, ICMP, Raw, IPOption_Router_Alert, sendp
iface, src, dst, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
C, S = "10.0.1.2", "198.51.100.2"
def eth(t=0x0800):
    return Ether(src=src, dst=dst, type=t)
def ping_pkt(**kw):
    return IP(src=C, dst=S, **kw) / ICMP(id=4242, seq=1) / Raw(b"flowgate-bad-frame")
frames = {}
# 14 bytes: an Ethernet header announcing a VLAN tag that isn't there (a frame shorter than
# 14 bytes can't be sent through a veth: the kernel refuses it).
frames["vlan_truncated"] = bytes(eth(0x8100))
frames["ipv4_truncated"] = bytes(eth()) + bytes(ping_pkt())[:12]
frames["ipv4_bad_ihl"] = bytes(eth() / ping_pkt(ihl=4))
frames["ipv4_bad_total_length"] = bytes(eth() / ping_pkt(len=1000))
b = bytearray(bytes(eth() / ping_pkt()))
b[14 + 10] ^= 0x5A
frames["ipv4_bad_checksum"] = bytes(b)
frames["unknown_ethertype"] = bytes(eth(0x88B5)) + b"\x00" * 46
frames["ipv4_options"] = bytes(eth() / ping_pkt(options=[IPOption_Router_Alert()]))
frames["tcp_truncated"] = bytes(eth() / IP(src=C, dst=S, proto=6) / Raw(b"\x00" * 10))
frames["udp_truncated"] = bytes(eth() / IP(src=C, dst=S, proto=17) / Raw(b"\x00" * 4))
frames["tcp_illegal_flags"] = bytes(eth() / IP(src=C, dst=S) / TCP(sport=40000, dport=80, flags="SF"))
for name, f in frames.items():
    sendp(Raw(f), iface=iface, count=n, verbose=False)
    print(name, len(f), flush=True)
"#;

#[test]
fn malformed_frames_dropped_and_counted() {
    let Some(_g) = setup("malformed_frames_dropped_and_counted") else {
        return;
    };
    let rig = Rig::standard("rtbad", 1500, &RouterOpts::default());
    assert!(ping_until_reply(rig.client(), SERVER_IP, 5));
    let app_mac = rig
        .client()
        .neighbor_mac(CLIENT_GW)
        .expect("client has no ARP entry for 10.0.1.1");
    let client_if = rig.topo.client_veth.peer.clone();
    let client_mac = rig.client().mac_of(&client_if);
    std::thread::sleep(Duration::from_millis(300));
    let before = rig.app.metrics();
    let mbufs_baseline = before
        .get(MBUFS_IN_USE, &[])
        .unwrap_or_else(|| panic!("no {MBUFS_IN_USE}\n{}", before.text));

    let cap = Capture::start(rig.server(), &rig.topo.server_veth.peer, "not arp");
    const N: u32 = 3;
    let o = python_in(
        rig.client(),
        BAD_FRAMES,
        &[&client_if, &client_mac, &app_mac, &N.to_string()],
        60,
    );
    assert!(o.ok(), "scapy sender failed\n{o}");

    let reasons = [
        "ipv4_truncated",
        "ipv4_bad_ihl",
        "ipv4_bad_total_length",
        "ipv4_bad_checksum",
        "ipv4_options",
        "tcp_truncated",
        "udp_truncated",
        "tcp_illegal_flags",
    ];
    let delta = |m: &Metrics, r: &str| m.dropped(r) - before.dropped(r);
    let m = rig.app.wait_metrics(Duration::from_secs(5), |m| {
        reasons.iter().all(|r| delta(m, r) >= N as f64) && delta(m, "unknown_ethertype") >= N as f64
    });
    std::thread::sleep(Duration::from_millis(300));
    let m2 = rig.app.metrics();
    let table: String = m2
        .drops()
        .iter()
        .map(|(r, v)| format!("  {r}: {} -> {v}\n", before.dropped(r)))
        .collect();
    for r in reasons {
        assert_eq!(
            delta(&m2, r),
            N as f64,
            "reason {r}: expected +{N}\n{table}"
        );
    }
    // The 14-byte VLAN frame may be dropped as a truncated Ethernet frame, as an unknown
    // ethertype, or under a reason of its own; either way every frame sent is counted
    // exactly once in the total (ARP chatter excluded).
    let unknown = delta(&m2, "unknown_ethertype");
    assert!(
        unknown == N as f64 || unknown == 2.0 * N as f64,
        "reason unknown_ethertype: expected +{N} (or +{} with the VLAN frame)\n{table}",
        2 * N
    );
    let total = |m: &Metrics| -> f64 {
        m.drops()
            .iter()
            .filter(|(r, _)| !r.starts_with("arp_"))
            .map(|(_, v)| v)
            .sum()
    };
    assert_eq!(
        total(&m2) - total(&before),
        (reasons.len() as u32 + 1) as f64 * N as f64,
        "dropped total != frames sent\n{table}"
    );
    drop(m);

    // None reached the server.
    let seen = cap.finish();
    assert!(
        seen.is_empty(),
        "malformed frames reached the server side:\n{}",
        seen.join("\n")
    );

    // Still alive, still forwarding, no mbuf leaked.
    assert_ping(rig.client(), CLIENT_GW, 3);
    assert_ping(rig.client(), SERVER_IP, 3);
    let m = rig.app.wait_metrics(Duration::from_secs(5), |m| {
        m.value(MBUFS_IN_USE, &[]) == mbufs_baseline
    });
    assert_eq!(
        m.value(MBUFS_IN_USE, &[]),
        mbufs_baseline,
        "mbufs in use did not return to the baseline"
    );
}

#[test]
fn metrics_exposition_and_clean_shutdown() {
    let Some(_g) = setup("metrics_exposition_and_clean_shutdown") else {
        return;
    };
    require_tool("promtool");
    let mut rig = Rig::standard("rtprom", 1500, &RouterOpts::default());
    assert!(ping_until_reply(rig.client(), SERVER_IP, 5));
    // Something under a few drop reasons, and a TTL error.
    let _ = rig.client().exec(
        &["ping", "-n", "-c", "1", "-W", "1", "-t", "1", SERVER_IP],
        5,
    );
    let _ = ping(rig.client(), "203.0.113.9", 1, &[]); // no route
    let text = rig.app.metrics_text();
    let dir = TempDir::new("prom");
    let f = dir.join("metrics.txt");
    fs::write(&f, &text).unwrap();
    let o = sh(&format!("promtool check metrics < {}", f.display()), 20);
    assert!(
        o.ok(),
        "promtool check metrics:\n{o}\n--- scraped ---\n{text}"
    );

    let m = Metrics::parse(&text);
    for name in [
        "flowgate_port_rx_packets_total",
        "flowgate_port_tx_packets_total",
        "flowgate_port_rx_bytes_total",
        "flowgate_port_tx_bytes_total",
        "flowgate_port_rx_errors_total",
        "flowgate_port_rx_missed_total",
        "flowgate_packets_dropped_total",
        "flowgate_icmp_echo_requests_total",
        "flowgate_forwarded_packets_total",
        "flowgate_icmp_errors_sent_total",
        "flowgate_fragments_created_total",
        "flowgate_neighbor_entries",
        "flowgate_mempool_mbufs_in_use",
        "flowgate_build_info",
    ] {
        assert!(m.has(name), "{name} missing from /metrics\n{text}");
    }
    for port in ["client", "server"] {
        assert!(
            m.get("flowgate_port_rx_packets_total", &[("port", port)])
                .is_some(),
            "no port=\"{port}\" series\n{text}"
        );
    }
    assert!(
        m.dropped("no_route") >= 1.0,
        "{}",
        m.excerpt("flowgate_packets_dropped")
    );
    let bi = m
        .matching("flowgate_build_info", &[])
        .next()
        .expect("flowgate_build_info");
    assert_eq!(
        bi.labels.get("version").map(String::as_str),
        Some(env!("CARGO_PKG_VERSION")),
        "{bi:?}"
    );
    assert!(
        bi.labels.get("dpdk").is_some_and(|v| v.contains("22.11")),
        "{bi:?}"
    );

    let st = rig.app.stop();
    assert!(st.success(), "SIGTERM: exit {st}\n{}", rig.app.log());
    let log = rig.app.log();
    assert!(
        log.contains("client") && log.contains("server"),
        "no per-port summary in the log:\n{log}"
    );
}

/// A config with `ports[0].mtu: 70000` and the (1-based) line it is on.
fn bad_mtu_config(good: &str) -> (String, usize) {
    let i = good.find("mtu: 1500").expect("mtu in config");
    let line = good[..i].matches('\n').count() + 1;
    let mut bad = good.to_string();
    bad.replace_range(i..i + "mtu: 1500".len(), "mtu: 70000");
    (bad, line)
}

#[test]
fn check_config_reports_file_line_field() {
    // Needs no root and no DPDK: check-config only parses and validates.
    let dir = TempDir::new("checkcfg");
    let good = router_yaml(
        "net_af_packet0,iface=rtcfgc0,framesz=10240,blocksz=20480",
        "net_af_packet1,iface=rtcfgs0,framesz=10240,blocksz=20480",
        1500,
        &RouterOpts::default(),
    );
    let good_path = dir.join("good.yaml");
    fs::write(&good_path, &good).unwrap();
    let bin = flowgate_bin();
    let bin_s = bin.to_string_lossy().into_owned();
    let o = run(&[&bin_s, "check-config", &good_path.to_string_lossy()], 10);
    assert!(o.ok(), "good config refused\n{o}");

    let (bad, line) = bad_mtu_config(&good);
    let bad_path = dir.join("bad.yaml");
    fs::write(&bad_path, &bad).unwrap();
    let p = bad_path.to_string_lossy().into_owned();
    let o = run(&[&bin_s, "check-config", &p], 10);
    assert!(!o.ok(), "bad mtu accepted\n{o}");
    let prefix = format!("{p}:{line}:");
    let l = o
        .stderr
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?}\n{o}"));
    let rest = &l[prefix.len()..];
    let (col, msg) = rest.split_once(':').unwrap_or(("", ""));
    assert!(col.trim().parse::<u32>().is_ok(), "no column in {l:?}");
    assert!(
        msg.trim_start().starts_with("ports[0].mtu:"),
        "expected `FILE:LINE:COL: ports[0].mtu: ...`, got {l:?}"
    );

    // The example configs in conf/ are valid.
    let conf = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conf");
    if let Ok(rd) = fs::read_dir(&conf) {
        for e in rd.flatten() {
            let path = e.path();
            if path.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                let o = run(&[&bin_s, "check-config", &path.to_string_lossy()], 10);
                assert!(o.ok(), "{} refused\n{o}", path.display());
            }
        }
    }
}

#[test]
fn sighup_with_broken_config_keeps_forwarding() {
    let Some(_g) = setup("sighup_with_broken_config_keeps_forwarding") else {
        return;
    };
    let mut rig = Rig::standard("rthup", 1500, &RouterOpts::default());
    assert!(ping_until_reply(rig.client(), SERVER_IP, 5));
    let good = fs::read_to_string(&rig.app.config_path).unwrap();

    // Broken file + SIGHUP: refused, the running config stays.
    let (bad, _) = bad_mtu_config(&good);
    fs::write(&rig.app.config_path, &bad).unwrap();
    rig.app.signal(libc::SIGHUP);
    let refused = wait_for(Duration::from_secs(10), || {
        let l = rig.app.log().to_lowercase();
        (l.contains("reload") && (l.contains("refus") || l.contains("reject"))).then_some(())
    });
    assert!(
        refused.is_some(),
        "log does not say the reload was refused:\n{}",
        rig.app.log()
    );
    assert!(
        rig.app.log().contains("ports[0].mtu"),
        "refusal does not name the field"
    );
    assert!(rig.app.running(), "appliance exited after a bad SIGHUP");
    assert_ping(rig.client(), SERVER_IP, 3);
    assert_ping(rig.client(), CLIENT_GW, 2);

    // A good change (a 1280-MTU route to the server) is applied without a restart.
    let changed = good.replace(
        "routes: []\n",
        "routes:\n  - prefix: \"198.51.100.0/24\"\n    port: server\n    mtu: 1280\n",
    );
    assert_ne!(changed, good);
    fs::write(&rig.app.config_path, &changed).unwrap();
    rig.app.signal(libc::SIGHUP);
    let applied = wait_for(Duration::from_secs(10), || {
        let o = rig.client().exec(
            &[
                "ping", "-n", "-c", "1", "-W", "1", "-M", "do", "-s", "1300", SERVER_IP,
            ],
            5,
        );
        o.stdout.contains("mtu = 1280").then_some(())
    });
    assert!(
        applied.is_some(),
        "reloaded route MTU not in effect\n{}",
        rig.app.log()
    );
    assert_ping(rig.client(), SERVER_IP, 2);
    let st = rig.app.stop();
    assert!(st.success(), "exit {st}");
}

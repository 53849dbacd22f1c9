//! Issue 8 item 11 (SPEC §4): jumbo frames received into small buffers. The mempool's
//! data room is 2048 bytes, the ports' MTU 9001, `mempool.scatter: true`: net_tap receives
//! a 9001-byte frame as a chain of mbufs, which the worker linearizes into one jumbo
//! buffer and then routes, translates and fragments like any frame.
//!
//! net_tap (DPDK 22.11) cannot *transmit* a frame above 1522 bytes (it reports that as its
//! maximum frame, which caps the ethdev MTU, and its tx path refuses larger frames), so
//! the egress routes here have MTU 1500 and the jumbo packets leave fragmented, in both
//! directions. Jumbo egress is tested on af_packet (`routing.rs` `jumbo_frames_9001`).

mod common;
#[path = "common/nat_topology.rs"]
mod nat_topology;

use common::*;
use std::time::Duration;

fn small_buffers(yaml: String) -> String {
    let y = yaml.replacen(
        "  data_room: 10240\n",
        "  data_room: 2048\n  scatter: true\n",
        1,
    );
    assert!(y.contains("scatter: true"), "{y}");
    y
}

fn check_linearized(app: &Appliance) {
    let m = app.wait_metrics(Duration::from_secs(5), |m| {
        m.value("flowgate_linearized_total", &[]) > 0.0
    });
    assert!(
        m.value("flowgate_linearized_total", &[]) > 0.0,
        "no chained mbuf was seen: the test did not exercise scatter rx\n{}",
        app.log()
    );
    assert_eq!(
        m.dropped("multi_segment"),
        0.0,
        "{}",
        m.excerpt("flowgate_packets_dropped")
    );
}

fn require_tun() {
    assert!(
        std::path::Path::new("/dev/net/tun").exists(),
        "/dev/net/tun missing: net_tap needs the tun driver (modprobe tun)"
    );
}

#[test]
fn scatter_rx_chains_are_fragmented_toward_a_1500_route() {
    let Some(_g) = setup("scatter_rx_chains_are_fragmented_toward_a_1500_route") else {
        return;
    };
    require_tun();
    let topo = TapTopology::new("jsfrag", 9001);
    let opts = RouterOpts {
        server_route_mtu: Some(1500),
        ..RouterOpts::default()
    };
    // Both connected subnets get a 1500-byte egress MTU (the server's via RouterOpts).
    let yaml = small_buffers(topo.router_config(&opts)).replacen(
        "routes:\n",
        "routes:\n  - prefix: \"10.0.1.0/24\"\n    port: client\n    mtu: 1500\n",
        1,
    );
    let app = Appliance::start(&yaml);
    topo.attach();
    assert!(ping_until_reply(&topo.client, SERVER_IP, 10));
    // DF clear: the appliance fragments the 8928-byte packets to 1500 toward the server.
    let o = ping(&topo.client, SERVER_IP, 3, &["-M", "dont", "-s", "8900"]);
    assert_eq!(ping_counts(&o.stdout), Some((3, 3)), "{o}");
    let m = app.wait_metrics(Duration::from_secs(5), |m| {
        m.value("flowgate_fragments_created_total", &[]) >= 36.0
    });
    assert!(
        m.value("flowgate_fragments_created_total", &[]) >= 36.0,
        "{}",
        m.excerpt("flowgate_fragments")
    );
    check_linearized(&app);
}

#[test]
fn scatter_rx_carries_9001_byte_frames_through_the_nat() {
    use nat_topology::*;
    let Some(_g) = setup("scatter_rx_carries_9001_byte_frames_through_the_nat") else {
        return;
    };
    require_tun();
    let topo = NatTopology::new_tap("jsnat");
    // Ports at MTU 9001, egress routes at 1500 (see the module docs).
    let yaml = small_buffers(topo.config(&NatOpts::default()))
        .replace("    mtu: 1500\n", "    mtu: 9001\n")
        .replace(
            "    via: \"192.0.2.254\"\n",
            "    via: \"192.0.2.254\"\n    mtu: 1500\n",
        )
        .replacen(
            "routes:\n",
            "routes:\n  - prefix: \"10.0.1.0/24\"\n    port: inside\n    mtu: 1500\n",
            1,
        );
    let app = Appliance::start(&yaml);
    let rig = NatRig { app, topo };
    rig.topo.attach_taps();
    for (ns, ifn) in [
        (rig.a(), rig.topo.inside_if()),
        (rig.router(), rig.topo.outside_if()),
    ] {
        ns.must(&["ip", "link", "set", &ifn, "mtu", "9001"], 5);
    }
    rig.topo.set_far_mtu(9001);
    for (ns, dst) in [(rig.a(), INSIDE_GW), (rig.router(), OUTSIDE_IP)] {
        assert!(ping_until_reply(ns, dst, 10), "no ping answer on {dst}");
    }
    let o = ping(rig.a(), SERVER, 3, &["-M", "dont", "-s", "8900"]);
    assert_eq!(ping_counts(&o.stdout), Some((3, 3)), "{o}");
    // A 8900-byte UDP datagram each way, translated (the server sees a public IP).
    let dir = TempDir::new("jsnat");
    let _srv = udp_echo_server(rig.server(), SERVER, 7000, &dir.join("udp.log"));
    let big = "j".repeat(8900);
    let o = udp_request(rig.a(), SERVER, 7000, &big);
    assert!(
        o.ok() && o.stdout.len() == 8905,
        "{} bytes back: {}",
        o.stdout.len(),
        o.stderr
    );
    let log = std::fs::read_to_string(dir.join("udp.log")).unwrap_or_default();
    assert!(
        PUBLIC_IPS
            .iter()
            .any(|p| log.contains(&format!("from {p}:"))),
        "the server saw a private address: {log}"
    );
    check_linearized(&rig.app);
}

//! One-armed operation, as an EC2 next hop with a single ENI: packets come in and go out
//! of the same port. A bridge (the "VPC subnet") joins the appliance's only port, a
//! private client and a server:
//!
//! ```text
//!  netns oa-c 10.0.1.2/24 (203.0.113.0/24 via 10.0.1.1) ----+
//!                                                           +-- br0 in netns oa-l -- oal1 ==veth== oal0
//!  netns oa-s 203.0.113.2/24 (routing test only:      ------+   flowgate port "eni": 10.0.1.1/24
//!             10.0.1.0/24 via 203.0.113.1)                      and 203.0.113.1/24 (af_packet)
//! ```

mod common;

use common::*;

/// A veth from `lan`'s bridge to `host`, with `addr` and, if given, a route (prefix, gw).
/// No default routes: nothing (not even a resolver query) may head out of the machine.
fn attach_host(lan: &Netns, host: &Netns, tag: &str, addr: &str, route: Option<(&str, &str)>) {
    let l = format!("oa{tag}0");
    let h = format!("oa{tag}1");
    lan.must(
        &[
            "ip", "link", "add", &l, "type", "veth", "peer", "name", &h, "netns", &host.name,
        ],
        10,
    );
    segmentation_off(Some(lan), &l);
    segmentation_off(Some(host), &h);
    lan.must(&["ip", "link", "set", &l, "master", "br0"], 5);
    lan.must(&["ip", "link", "set", &l, "up"], 5);
    host.must(&["ip", "addr", "add", addr, "dev", &h], 5);
    host.must(&["ip", "link", "set", &h, "up"], 5);
    if let Some((prefix, gw)) = route {
        host.must(&["ip", "route", "add", prefix, "via", gw], 5);
    }
}

struct OneArm {
    // Drop order: the root-side veth first, then the namespaces.
    _veth: Veth,
    client: Netns,
    server: Netns,
    _lan: Netns,
}

/// `routed`: the server has a route back to the private subnet (plain routing); without
/// it only the NAT can bring replies back.
fn one_arm(routed: bool) -> OneArm {
    require_tool("ethtool");
    let client = Netns::new("oa-c");
    let server = Netns::new("oa-s");
    let lan = Netns::new("oa-l");
    let veth = Veth::new("oal0", "oal1", &lan, 1500);
    bridge_with(&lan, "oal1");
    attach_host(
        &lan,
        &client,
        "c",
        "10.0.1.2/24",
        Some(("203.0.113.0/24", "10.0.1.1")),
    );
    let back = routed.then_some(("10.0.1.0/24", "203.0.113.1"));
    attach_host(&lan, &server, "s", "203.0.113.2/24", back);
    OneArm {
        _veth: veth,
        client,
        server,
        _lan: lan,
    }
}

fn config(nat: bool) -> String {
    let nat = if nat {
        "nat_gateways:\n  - id: eni-nat\n    inside_prefixes: [10.0.1.0/24]\n    public_ips: [203.0.113.10]\n"
    } else {
        ""
    };
    format!(
        r#"lcores: {{main: 0, workers: [1]}}
mempool: {{mbufs: 4095, cache: 256, data_room: 10240}}
ports:
  - name: eni
    device: "net_af_packet0,iface=oal0,framesz=10240,blocksz=20480"
    addresses: [10.0.1.1/24, 203.0.113.1/24]
    mtu: 1500
routes: []
{nat}worker: {{idle_sleep_us: 50}}
"#
    )
}

#[test]
fn one_armed_routing_in_and_out_of_one_port() {
    let Some(_g) = setup("one_armed_routing_in_and_out_of_one_port") else {
        return;
    };
    let t = one_arm(true);
    let mut app = Appliance::start(&config(false));
    assert!(ping_until_reply(&t.client, "10.0.1.1", 5));
    assert_ping(&t.client, "203.0.113.2", 3);
    let www = HttpServer::start(&t.server, "203.0.113.2", 8080);
    www.put("x", b"one arm\n");
    assert_eq!(curl_get(&t.client, &www.url("x")), b"one arm\n");
    // Routed, not NATed: the server sees the client's own address.
    assert!(
        www.access_log().contains("10.0.1.2"),
        "{}",
        www.access_log()
    );
    let m = app.metrics();
    assert!(m.value("flowgate_forwarded_packets_total", &[]) >= 6.0);
    let rx = m.value("flowgate_port_rx_packets_total", &[("port", "eni")]);
    let tx = m.value("flowgate_port_tx_packets_total", &[("port", "eni")]);
    assert!(rx >= 6.0 && tx >= 6.0, "rx {rx} tx {tx}");
    drop(www);
    assert!(app.stop().success());
}

#[test]
fn one_armed_nat_gateway() {
    let Some(_g) = setup("one_armed_nat_gateway") else {
        return;
    };
    let t = one_arm(false);
    let mut app = Appliance::start(&config(true));
    assert!(ping_until_reply(&t.client, "10.0.1.1", 5));
    let www = HttpServer::start(&t.server, "203.0.113.2", 8080);
    www.put("x", b"one arm nat\n");
    for _ in 0..3 {
        assert_eq!(curl_get(&t.client, &www.url("x")), b"one arm nat\n");
    }
    let log = www.access_log();
    assert!(log.contains("203.0.113.10"), "server saw: {log}");
    assert!(!log.contains("10.0.1.2"), "private address leaked: {log}");
    let m = app.metrics();
    assert!(
        m.value(
            "flowgate_nat_connections_established_total",
            &[("gateway", "eni-nat")]
        ) >= 3.0
    );
    drop(www);
    assert!(app.stop().success());
}

//! Control-plane behaviour under real traffic: live route reloads lose no packets, and
//! the exception path carries the appliance's own non-data-plane traffic to the kernel
//! (a tap port) and back.

mod common;

use common::*;
use std::fs;
use std::time::Duration;

/// SIGHUP five times while a client pings the server every 10 ms: every reload is
/// applied (generation 6), no echo is lost.
#[test]
fn route_reloads_under_traffic_lose_no_packets() {
    let Some(_g) = setup("route_reloads_under_traffic_lose_no_packets") else {
        return;
    };
    let mut rig = Rig::standard("cprl", 1500, &RouterOpts::default());
    assert!(ping_until_reply(rig.client(), SERVER_IP, 5));
    let base = fs::read_to_string(&rig.app.config_path).unwrap();
    // Alternate between two route sets that both keep the client<->server path.
    let with_route = base.replace(
        "routes: []\n",
        "routes:\n  - prefix: \"192.0.2.0/24\"\n    port: server\n    via: 198.51.100.2\n  - prefix: \"198.51.100.0/24\"\n    port: server\n    mtu: 1400\n",
    );
    assert_ne!(with_route, base);

    let dir = TempDir::new("cprl");
    let log = dir.join("ping.log");
    let mut pinger = rig.client().spawn(
        &[
            "ping", "-n", "-i", "0.01", "-c", "400", "-W", "2", SERVER_IP,
        ],
        &log,
    );
    std::thread::sleep(Duration::from_millis(300));
    for i in 0..5 {
        let text = if i % 2 == 0 { &with_route } else { &base };
        fs::write(&rig.app.config_path, text).unwrap();
        rig.app.signal(libc::SIGHUP);
        std::thread::sleep(Duration::from_millis(500));
    }
    let st = pinger.wait_timeout(Duration::from_secs(20));
    assert!(st.is_some(), "ping did not finish");
    let out = pinger.log_text();
    let (sent, received) = ping_counts(&out).expect("ping summary");
    assert_eq!(sent, 400, "{out}");
    assert_eq!(received, 400, "packets lost across reloads:\n{out}");

    let m = rig.app.metrics();
    assert_eq!(
        m.value("flowgate_config_reloads_total", &[("result", "ok")]),
        5.0
    );
    assert_eq!(m.value("flowgate_config_generation", &[]), 6.0);
    assert_eq!(m.value("flowgate_config_updates_total", &[]), 5.0);
    // The last config (index 4 = with_route) is in force: the 1400 route MTU applies.
    let o = rig.client().exec(
        &[
            "ping", "-n", "-c", "1", "-W", "1", "-M", "do", "-s", "1400", SERVER_IP,
        ],
        5,
    );
    assert!(o.stdout.contains("mtu = 1400"), "{o}");
    assert!(rig.app.stop().success());
}

/// An exception tap port: TCP to the appliance's own address reaches a server in the
/// kernel behind the tap (moved into its own namespace), and the kernel's replies are
/// routed back out of the data port. Echo requests stay in the data plane.
#[test]
fn exception_path_carries_appliance_traffic_to_the_kernel() {
    let Some(_g) = setup("exception_path_carries_appliance_traffic_to_the_kernel") else {
        return;
    };
    let topo = Topology::standard("cpex", 1500);
    let tap = "cpexk0";
    let kernel = Netns::new("cpex-k");
    let opts = RouterOpts {
        extra: "exception:\n  port: kernel\n".into(),
        ..RouterOpts::default()
    };
    let yaml = topo.router_config(&opts).replace(
        "    role: data\n  - name: server",
        &format!(
            "    role: data\n  - name: kernel\n    device: \"net_tap0,iface={tap}\"\n    role: exception\n  - name: server"
        ),
    );
    assert!(yaml.contains("role: exception"), "{yaml}");
    let mut app = Appliance::start(&yaml);
    must(&["ip", "link", "set", tap, "netns", &kernel.name], 5);
    kernel.must(&["ip", "addr", "add", "10.0.1.1/24", "dev", tap], 5);
    kernel.must(&["ip", "link", "set", tap, "up"], 5);
    kernel.must(&["ip", "link", "set", "lo", "up"], 5);

    let www = HttpServer::start(&kernel, "10.0.1.1", 8080);
    www.put("hello.txt", b"from the kernel behind the exception port\n");
    assert!(ping_until_reply(&topo.client, CLIENT_GW, 5));
    let body = curl_get(&topo.client, &www.url("hello.txt"));
    assert_eq!(body, b"from the kernel behind the exception port\n");
    assert!(
        www.access_log().contains("10.0.1.2"),
        "the kernel server saw: {}",
        www.access_log()
    );
    let m = app.metrics();
    assert!(m.value("flowgate_exception_to_kernel_total", &[]) >= 3.0);
    assert!(m.value("flowgate_exception_from_kernel_total", &[]) >= 3.0);
    assert!(m.value("flowgate_icmp_echo_requests_total", &[]) >= 1.0);
    drop(www);
    assert!(app.stop().success());
}

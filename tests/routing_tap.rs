//! The same ping / TCP / UDP path as tests/routing.rs, with net_tap ports: the appliance
//! creates the taps (`<p>tc0`, `<p>ts0`) in the root namespace; once /metrics answers, the
//! harness moves each tap into its host namespace and configures it there.

mod common;

use common::*;
use std::time::Duration;

#[test]
fn tap_ports_route_ping_tcp_udp() {
    let Some(_g) = setup("tap_ports_route_ping_tcp_udp") else {
        return;
    };
    if !std::path::Path::new("/dev/net/tun").exists() {
        panic!("/dev/net/tun missing: net_tap needs the tun driver (modprobe tun)");
    }
    // Declaration order = reverse drop order: the appliance (and its taps) goes first.
    let topo = TapTopology::new("rttap", 1500);
    let mut app = Appliance::start(&topo.router_config(&RouterOpts::default()));
    topo.attach();

    assert!(
        ping_until_reply(&topo.client, CLIENT_GW, 10),
        "no reply from 10.0.1.1 over the tap"
    );
    assert!(ping_until_reply(&topo.server, SERVER_GW, 10));
    assert!(ping_until_reply(&topo.client, SERVER_IP, 5));
    let o = ping(&topo.client, SERVER_IP, 5, &[]);
    assert_eq!(ping_counts(&o.stdout), Some((5, 5)), "{o}");
    assert!(o.stdout.contains("ttl=63"), "{o}");

    let http = HttpServer::start(&topo.server, SERVER_IP, 8080);
    let blob = test_bytes(512 * 1024, 5);
    http.put("blob.bin", &blob);
    let got = curl_get(&topo.client, &http.url("blob.bin"));
    assert!(
        got == blob,
        "512 KiB over taps differs ({} bytes)",
        got.len()
    );
    assert!(
        http.access_log().contains("10.0.1.2"),
        "{}",
        http.access_log()
    );

    let dir = TempDir::new("taptest");
    let _udp = udp_echo_server(&topo.server, SERVER_IP, 9999, &dir.join("udp.log"));
    let o = udp_request(&topo.client, SERVER_IP, 9999, "over-tap");
    assert!(o.ok() && o.stdout == "echo:over-tap", "{o}");

    let m = app.wait_metrics(Duration::from_secs(3), |m| {
        m.value("flowgate_forwarded_packets_total", &[]) > 100.0
    });
    assert!(
        m.value("flowgate_forwarded_packets_total", &[]) > 100.0,
        "{}",
        m.excerpt("flowgate_forwarded")
    );
    let st = app.stop();
    assert!(st.success(), "exit {st}");
}

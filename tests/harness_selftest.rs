//! Self-test of the integration harness, independent of flowgate: namespaces, veth pairs,
//! cleanup on panic, the metrics parser, and net_af_packet plumbing proved with Debian's
//! `dpdk-testpmd` as an L2 bridge (io forwarding) between two veths.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

#[test]
fn metrics_parser() {
    let text = "# HELP flowgate_packets_dropped_total Dropped packets.\n\
# TYPE flowgate_packets_dropped_total counter\n\
flowgate_packets_dropped_total{reason=\"no_route\"} 3\n\
flowgate_packets_dropped_total{reason=\"ttl_exceeded\"} 2 1700000000000\n\
flowgate_port_rx_packets_total{port=\"client\"} 10\n\
flowgate_port_rx_packets_total{port=\"server\"} 5\n\
flowgate_build_info{version=\"0.1.0\",dpdk=\"DPDK 22.11.4\"} 1\n\
weird{a=\"x\\\"y,z}\",b=\"\\\\\"} 1.5e3\n\
flowgate_icmp_echo_requests_total 7\n\
flowgate_mempool_mbufs_in_use 1234\n\
nan_metric NaN\n\
inf_metric +Inf\n";
    let m = Metrics::parse(text);
    assert_eq!(m.dropped("no_route"), 3.0);
    assert_eq!(m.dropped("ttl_exceeded"), 2.0);
    assert_eq!(m.dropped("ipv4_options"), 0.0);
    assert_eq!(
        m.get(
            "flowgate_packets_dropped_total",
            &[("reason", "ipv4_options")]
        ),
        None
    );
    assert_eq!(m.get("flowgate_port_rx_packets_total", &[]), Some(15.0));
    assert_eq!(
        m.get("flowgate_port_rx_packets_total", &[("port", "server")]),
        Some(5.0)
    );
    assert_eq!(m.get("flowgate_icmp_echo_requests_total", &[]), Some(7.0));
    assert_eq!(
        m.get("flowgate_build_info", &[("dpdk", "DPDK 22.11.4")]),
        Some(1.0)
    );
    assert_eq!(
        m.get("weird", &[("a", "x\"y,z}"), ("b", "\\")]),
        Some(1500.0)
    );
    assert!(m.value("nan_metric", &[]).is_nan());
    assert_eq!(m.value("inf_metric", &[]), f64::INFINITY);
    assert_eq!(m.drops().len(), 2);
    assert!(m.has("flowgate_mempool_mbufs_in_use"));
    assert_eq!(
        ping_counts("3 packets transmitted, 2 received, 33% packet loss"),
        Some((3, 2))
    );
    assert_eq!(
        ping_counts("1 packets transmitted, 0 received, +1 errors, 100% packet loss"),
        Some((1, 0))
    );
}

#[test]
fn scrape_over_plain_tcp() {
    // A one-shot HTTP server on a free port, answering like a Prometheus exporter would.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let t = std::thread::spawn(move || {
        use std::io::{Read, Write};
        for chunked in [false, true] {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = [0u8; 1024];
            let n = s.read(&mut buf).unwrap();
            assert!(String::from_utf8_lossy(&buf[..n]).starts_with("GET /metrics HTTP/1.0\r\n"));
            let body = "# TYPE x_total counter\nx_total{port=\"a\"} 42\n";
            if chunked {
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
                    body.len()
                );
            } else {
                let _ = write!(
                    s,
                    "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n{body}"
                );
            }
        }
    });
    for _ in 0..2 {
        let body = scrape(addr).unwrap();
        assert_eq!(
            Metrics::parse(&body).get("x_total", &[("port", "a")]),
            Some(42.0)
        );
    }
    t.join().unwrap();
}

#[test]
fn namespaces_cleaned_up_on_panic_and_leftovers_removed() {
    let Some(_g) = setup("namespaces_cleaned_up_on_panic_and_leftovers_removed") else {
        return;
    };
    // A "leftover from a crashed run": namespace + veth with our names, made by hand.
    delete_netns("fgst-l");
    must(&["ip", "netns", "add", "fgst-l"], 5);
    delete_link("fgstl0");
    must(
        &[
            "ip", "link", "add", "fgstl0", "type", "veth", "peer", "name", "fgstl1",
        ],
        5,
    );
    {
        let ns = Netns::new("fgst-l"); // removes the leftover, makes a fresh one
        let v = Veth::new("fgstl0", "fgstl1", &ns, 1500);
        v.add_addr(&ns, "10.0.9.1/24");
        let o = ns.must(&["ip", "-br", "addr", "show", "fgstl1"], 5);
        assert!(o.stdout.contains("10.0.9.1/24"), "{o}");
        // No route out of the machine in a test namespace.
        let r = ns.must(&["ip", "route", "show", "default"], 5);
        assert!(r.stdout.trim().is_empty(), "{r}");
    }
    assert!(!Path::new("/run/netns/fgst-l").exists());
    assert!(!Path::new("/sys/class/net/fgstl0").exists());

    // Panic in the middle of a test: Drop guards still remove everything.
    let dir = TempDir::new("selftest");
    let r = std::panic::catch_unwind(|| {
        let ns = Netns::new("fgst-p");
        let _v = Veth::new("fgstp0", "fgstp1", &ns, 9001);
        let p = ns.spawn(&["sleep", "300"], &dir.join("sleep.log"));
        let pid = p.pid();
        std::mem::forget(p); // even a leaked process handle: the Netns drop kills it
        std::panic::panic_any(pid);
    });
    let sleeper_pid = *r.unwrap_err().downcast::<i32>().unwrap();
    assert!(
        !Path::new("/run/netns/fgst-p").exists(),
        "netns left behind"
    );
    assert!(
        !Path::new("/sys/class/net/fgstp0").exists(),
        "veth left behind"
    );
    let gone = wait_for(Duration::from_secs(3), || {
        (!Path::new(&format!("/proc/{sleeper_pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{sleeper_pid}/stat"))
                .map(|s| s.contains(") Z "))
                .unwrap_or(true))
        .then_some(())
    });
    assert!(
        gone.is_some(),
        "process {sleeper_pid} in the namespace survived"
    );

    // Timeouts are enforced.
    let t0 = std::time::Instant::now();
    let o = run(&["sleep", "30"], 1);
    assert!(o.timed_out(), "{o}");
    assert!(t0.elapsed() < Duration::from_secs(5));
}

/// dpdk-testpmd in io-forward mode between two af_packet vdevs: a dumb L2 bridge.
struct Testpmd {
    proc: BgProc,
    prefix: String,
}

impl Testpmd {
    fn start(file_prefix: &str, if_a: &str, if_b: &str, log: &Path) -> Testpmd {
        Self::start_with(file_prefix, if_a, if_b, "", &[], log)
    }

    /// `vdev_opts` is appended to both vdev strings (e.g. `,framesz=10240,blocksz=20480`),
    /// `extra` to testpmd's own arguments.
    fn start_with(
        file_prefix: &str,
        if_a: &str,
        if_b: &str,
        vdev_opts: &str,
        extra: &[&str],
        log: &Path,
    ) -> Testpmd {
        require_tool("dpdk-testpmd");
        let mut cmd = Command::new("dpdk-testpmd");
        cmd.args([
            "--no-pci",
            "--no-huge",
            "-m",
            "512",
            "--file-prefix",
            file_prefix,
            "--vdev",
            &format!("net_af_packet0,iface={if_a}{vdev_opts}"),
            "--vdev",
            &format!("net_af_packet1,iface={if_b}{vdev_opts}"),
            "-l",
            "0-1",
            "--",
            "--forward-mode=io",
            "--auto-start",
            "--stats-period",
            "30",
            "--total-num-mbufs=8192",
        ]);
        cmd.args(extra);
        let mut proc = BgProc::spawn(cmd, "dpdk-testpmd", log);
        let ready = wait_for(Duration::from_secs(20), || {
            if proc.try_status().is_some() {
                return Some(false);
            }
            proc.log_text()
                .contains("io packet forwarding - ports=2")
                .then_some(true)
        });
        if ready != Some(true) {
            panic!(
                "dpdk-testpmd did not start forwarding:\n{}",
                proc.log_text()
            );
        }
        Testpmd {
            proc,
            prefix: file_prefix.to_string(),
        }
    }
}

impl Drop for Testpmd {
    fn drop(&mut self) {
        let (st, killed) = self.proc.stop_with(libc::SIGTERM, Duration::from_secs(10));
        if std::thread::panicking() || killed {
            eprintln!(
                "===== dpdk-testpmd ({st}, killed={killed}) =====\n{}",
                self.proc.log_text()
            );
        }
        let _ = std::fs::remove_dir_all(Path::new("/var/run/dpdk").join(&self.prefix));
    }
}

#[test]
fn testpmd_bridge_carries_ping_tcp_udp() {
    let Some(_g) = setup("testpmd_bridge_carries_ping_tcp_udp") else {
        return;
    };
    // Two hosts on ONE subnet, joined by testpmd through the root-side veth ends.
    let a = Netns::new("fgst-a");
    let b = Netns::new("fgst-b");
    let va = Veth::new("fgsta0", "fgsta1", &a, 1500);
    let vb = Veth::new("fgstb0", "fgstb1", &b, 1500);
    // testpmd's io forwarding leaves partial checksums as they are: offloads off here.
    checksum_offloads_off(&va, &a);
    checksum_offloads_off(&vb, &b);
    va.add_addr(&a, "10.0.7.1/24");
    vb.add_addr(&b, "10.0.7.2/24");

    let dir = TempDir::new("testpmd");
    let prefix = format!("fgst{}", std::process::id());
    let tp = Testpmd::start(&prefix, &va.root, &vb.root, &dir.join("testpmd.log"));

    // Nothing answers before the bridge has learned anything? It's a dumb bridge: it works
    // from the first packet; allow a couple of tries for ARP.
    assert!(
        ping_until_reply(&a, "10.0.7.2", 5),
        "no ping reply across testpmd"
    );
    assert_ping(&a, "10.0.7.2", 5);
    assert_ping(&b, "10.0.7.1", 3);
    // Full-size frames (1500-byte IP packets, DF set) cross too.
    let o = ping(&a, "10.0.7.2", 2, &["-s", "1472", "-M", "do"]);
    assert_eq!(ping_counts(&o.stdout), Some((2, 2)), "{o}");
    // NOTE: IP *fragments* sent toward a net_af_packet port never reach the PMD: DPDK 22.11's
    // af_packet joins a PACKET_FANOUT group with PACKET_FANOUT_FLAG_DEFRAG, so the root
    // kernel reassembles them (IpReasmOKs in the root namespace) and the PMD doesn't get the
    // reassembled packet either. Tests must not send fragments *into* af_packet ports.

    // TCP: 1 MiB over HTTP, byte-exact, and the server saw the client's address.
    let http = HttpServer::start(&b, "10.0.7.2", 8080);
    let blob = test_bytes(1 << 20, 42);
    http.put("blob.bin", &blob);
    http.put("hello.txt", b"hello through testpmd\n");
    assert_eq!(
        curl_get(&a, &http.url("hello.txt")),
        b"hello through testpmd\n"
    );
    let got = curl_get(&a, &http.url("blob.bin"));
    assert!(
        got == blob,
        "1 MiB transfer differs ({} bytes received)",
        got.len()
    );
    let log = http.access_log();
    assert!(
        log.contains("10.0.7.1") && log.contains("GET /blob.bin"),
        "server access log: {log}"
    );

    // TCP with nc too (netcat-openbsd): a line one way.
    require_tool("nc");
    let nc_log = dir.join("nc.log");
    let _srv = b.spawn(&["timeout", "15", "nc", "-l", "10.0.7.2", "9000"], &nc_log);
    b.wait_listen("tcp", 9000, Duration::from_secs(5));
    let o = a.sh("echo nc-line-ok | timeout 5 nc -N -w 3 10.0.7.2 9000", 10);
    assert!(o.ok(), "{o}");
    let seen = wait_for(Duration::from_secs(5), || {
        std::fs::read_to_string(&nc_log)
            .ok()
            .filter(|s| s.contains("nc-line-ok"))
    });
    assert!(seen.is_some(), "nc server did not receive the line");

    // UDP request/response.
    let udp = udp_echo_server(&b, "10.0.7.2", 9999, &dir.join("udp.log"));
    let o = udp_request(&a, "10.0.7.2", 9999, "ping-udp");
    assert!(o.ok() && o.stdout == "echo:ping-udp", "{o}");
    assert!(
        udp.log_text().contains("from 10.0.7.1:"),
        "{}",
        udp.log_text()
    );

    // testpmd exits cleanly on SIGTERM.
    drop(udp);
    drop(http);
    let mut tp = tp;
    let (st, killed) = tp.proc.stop_with(libc::SIGTERM, Duration::from_secs(10));
    assert!(
        !killed && st.success(),
        "testpmd exit {st}\n{}",
        tp.proc.log_text()
    );
    assert!(tp.proc.log_text().contains("Bye"), "{}", tp.proc.log_text());
}

#[test]
fn testpmd_bridge_carries_jumbo_frames() {
    let Some(_g) = setup("testpmd_bridge_carries_jumbo_frames") else {
        return;
    };
    // Veths at 9001 on both ends; af_packet with 10 KiB frames; 10 KiB mbufs. testpmd
    // leaves the ethdev MTU at 1500 (DPDK 22.11's af_packet reports max_rx_pktlen 1518, so
    // rte_eth_dev_configure / rte_eth_dev_set_mtu refuse 9001), yet jumbo frames pass:
    // the PMD's data path is bounded by framesz, not by the ethdev MTU.
    let a = Netns::new("fgst-ja");
    let b = Netns::new("fgst-jb");
    let va = Veth::new("fgstja0", "fgstja1", &a, 9001);
    let vb = Veth::new("fgstjb0", "fgstjb1", &b, 9001);
    // testpmd's io forwarding leaves partial checksums as they are: offloads off here.
    checksum_offloads_off(&va, &a);
    checksum_offloads_off(&vb, &b);
    va.add_addr(&a, "10.0.7.1/24");
    vb.add_addr(&b, "10.0.7.2/24");
    let dir = TempDir::new("testpmdj");
    let prefix = format!("fgsj{}", std::process::id());
    let _tp = Testpmd::start_with(
        &prefix,
        &va.root,
        &vb.root,
        ",framesz=10240,blocksz=20480",
        &["--mbuf-size=10400"],
        &dir.join("testpmd.log"),
    );
    assert!(
        ping_until_reply(&a, "10.0.7.2", 5),
        "no ping reply across testpmd"
    );
    let o = ping(&a, "10.0.7.2", 3, &["-M", "do", "-s", "8972"]);
    assert_eq!(ping_counts(&o.stdout), Some((3, 3)), "{o}");
    let http = HttpServer::start(&b, "10.0.7.2", 8080);
    let blob = test_bytes(1 << 20, 3);
    http.put("blob.bin", &blob);
    let got = curl_get(&a, &http.url("blob.bin"));
    assert!(
        got == blob,
        "1 MiB over jumbo frames differs ({} bytes)",
        got.len()
    );
}

/// Issue 8: under `CI=true` an integration test that cannot run fails instead of passing
/// silently (before, `setup` returned `None` and the test returned early, green).
#[test]
#[should_panic(expected = "cannot run under CI=true")]
fn a_skip_fails_under_ci() {
    skip_or_fail("demo", "not running as root", true);
}

#[test]
fn a_skip_outside_ci_is_reported_only() {
    skip_or_fail("demo", "not running as root", false);
}

//! Operating flowgate: the control HTTP server under slow clients, readiness that follows
//! port links, and (further down) the deployment kit and DPDK's own tools against the
//! running appliance.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// `GET path` (HTTP/1.1, Connection: close): status code and body.
fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let t = Duration::from_secs(5);
    let mut s = TcpStream::connect_timeout(&addr, t).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(t)).ok();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or(format!("no headers: {text:?}"))?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or(format!("bad status line: {head:?}"))?;
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    Ok((
        code,
        if chunked {
            dechunk(body)
        } else {
            body.to_string()
        },
    ))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Waits until `/healthz` answers `want`; returns the last (status, body).
fn healthz_until(addr: SocketAddr, want: u16, secs: u64) -> (u16, String) {
    let t0 = Instant::now();
    loop {
        let r = http_get(addr, "/healthz").unwrap_or((0, String::new()));
        if r.0 == want || t0.elapsed() > Duration::from_secs(secs) {
            return r;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Clients that connect and send half a request, send nothing, or ask and never read do
/// not delay other scrapes; eight scrapes at once all succeed.
#[test]
fn http_slow_clients_do_not_stall_scrapes() {
    let Some(_g) = setup("http_slow_clients_do_not_stall_scrapes") else {
        return;
    };
    let rig = Rig::standard("ophttp", 1500, &RouterOpts::default());
    let addr = rig.app.metrics_addr;
    let mut slow = Vec::new();
    for i in 0..6 {
        let mut s = TcpStream::connect(addr).unwrap();
        match i % 3 {
            0 => s
                .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
                .unwrap(),
            1 => {}
            _ => s
                .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap(),
        }
        slow.push(s);
    }
    std::thread::sleep(Duration::from_millis(200));
    for _ in 0..5 {
        let t0 = Instant::now();
        let (code, body) = http_get(addr, "/metrics").expect("scrape while slow clients wait");
        assert_eq!(code, 200);
        assert!(body.contains("flowgate_port_rx_packets_total"), "{body}");
        assert!(
            t0.elapsed() < Duration::from_secs(1),
            "scrape took {:?} with slow clients connected",
            t0.elapsed()
        );
    }
    let scrapers: Vec<_> = (0..8)
        .map(|_| std::thread::spawn(move || http_get(addr, "/metrics")))
        .collect();
    for s in scrapers {
        let (code, body) = s.join().unwrap().expect("concurrent scrape");
        assert_eq!(code, 200);
        assert!(body.contains("flowgate_workers 1"), "{body}");
    }
    let (code, body) = healthz_until(addr, 200, 5);
    assert_eq!(code, 200, "{body}");
    assert_eq!(body.trim(), "ok: 2 port(s) up, 1 worker(s) running");
    // The harness's own HTTP/1.0 scraper still works.
    assert!(rig.app.metrics().has("flowgate_build_info"));
    assert_eq!(http_get(addr, "/nope").unwrap().0, 404);
    drop(slow);
    let mut rig = rig;
    assert!(rig.app.stop().success());
}

/// `/healthz` is 200 with both links up and the worker's heartbeat moving, 503 naming the
/// port while its link is down, and 200 again once it is back. net_tap ports left in the
/// root namespace: the tap PMD reports the kernel interface's IFF_UP as its link (the
/// af_packet PMD always says up; a tap moved to another namespace always reads down).
#[test]
fn healthz_follows_links_and_workers() {
    let Some(_g) = setup("healthz_follows_links_and_workers") else {
        return;
    };
    let (t0, t1) = ("ophzt0", "ophzt1");
    delete_link(t0);
    delete_link(t1);
    let yaml = router_yaml(
        &format!("net_tap0,iface={t0}"),
        &format!("net_tap1,iface={t1}"),
        1500,
        &RouterOpts::default(),
    );
    let mut app = Appliance::start(&yaml);
    let addr = app.metrics_addr;
    let (code, body) = healthz_until(addr, 200, 5);
    assert_eq!(code, 200, "{body}");
    assert_eq!(body.trim(), "ok: 2 port(s) up, 1 worker(s) running");

    must(&["ip", "link", "set", t0, "down"], 5);
    let (code, body) = healthz_until(addr, 503, 5);
    assert_eq!(code, 503, "{body}");
    assert_eq!(body.trim(), "not ready: port client: link down");
    assert_eq!(
        app.metrics()
            .value("flowgate_port_link_up", &[("port", "client")]),
        0.0
    );

    must(&["ip", "link", "set", t0, "up"], 5);
    let (code, body) = healthz_until(addr, 200, 5);
    assert_eq!(code, 200, "{body}");
    assert!(app.stop().success());
    let (code, _) = http_get(addr, "/healthz").unwrap_or((0, String::new()));
    assert_eq!(code, 0, "the server is gone after stop");
}

/// Under systemd (stderr is the stream `JOURNAL_STREAM` names) log lines carry `<N>` syslog
/// priorities for journald; elsewhere they read `flowgate LEVEL: ...`. An unknown EAL option
/// makes the run fail right after its first info line, so no root or ports are needed.
#[test]
fn log_lines_carry_syslog_priorities_under_journald() {
    use std::os::unix::fs::MetadataExt;
    let dir = TempDir::new("opslog");
    let cfg = dir.join("f.yaml");
    std::fs::write(
        &cfg,
        router_yaml("net_null0", "net_null1", 1500, &RouterOpts::default()),
    )
    .unwrap();
    for journal in [true, false] {
        let log = dir.join(&format!("stderr-{journal}"));
        let f = std::fs::File::create(&log).unwrap();
        let m = f.metadata().unwrap();
        let mut cmd = std::process::Command::new(flowgate_bin());
        cmd.args(["run", "-c"])
            .arg(&cfg)
            .args(["--", "--no-such-eal-option"])
            .stdout(std::process::Stdio::null())
            .stderr(f);
        if journal {
            cmd.env("JOURNAL_STREAM", format!("{}:{}", m.dev(), m.ino()));
        } else {
            cmd.env_remove("JOURNAL_STREAM");
        }
        let st = cmd.status().unwrap();
        assert!(!st.success());
        let text = std::fs::read_to_string(&log).unwrap();
        let want = if journal {
            "<6>EAL arguments: "
        } else {
            "flowgate info: EAL arguments: "
        };
        assert!(text.lines().any(|l| l.starts_with(want)), "{text}");
    }
}

//! Flow logs (VPC Flow Logs v2 default format), the NAT translation log, `flowgate ctl who`
//! and the graceful stop, with real kernel traffic through the real binary on the NAT
//! topology (tests/common/nat_topology.rs), and the load balancer's flows on the LB
//! topology (tests/common/lb_topology.rs). Every flow-log line is checked by a strict
//! parser of the v2 default format (python3, below); the records must add up to what
//! the test sent.

mod common;
#[path = "common/lb_topology.rs"]
mod lb_topology;
#[path = "common/nat_topology.rs"]
mod nat_topology;

use common::*;
use nat_topology::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const ACCOUNT: &str = "123456789012";

/// A strict parser of the VPC Flow Logs version 2 default format: the header line (only as
/// the first line), then 14 space-separated fields per line with AWS's types. Prints one
/// JSON object per record, or `BAD <line>: <why>` and exits 1.
const V2_PARSER: &str = r#"
import ipaddress, json, sys
HEADER = "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status"
def bad(n, line, why):
    print("BAD %d %r: %s" % (n, line, why)); sys.exit(1)
lines = open(sys.argv[1]).read().split("\n")
if lines and lines[-1] == "":
    lines.pop()
for n, line in enumerate(lines):
    if n == 0 and line == HEADER:
        continue
    f = line.split(" ")
    if len(f) != 14: bad(n, line, "%d fields" % len(f))
    ver, acct, iface, src, dst, sp, dp, proto, pk, by, start, end, action, status = f
    if ver != "2": bad(n, line, "version")
    if not (acct == "-" or (acct.isdigit() and len(acct) == 12)): bad(n, line, "account-id")
    if not iface or iface == "-": bad(n, line, "interface-id")
    if not (start.isdigit() and end.isdigit() and int(start) <= int(end)): bad(n, line, "start/end")
    if status in ("NODATA", "SKIPDATA"):
        if any(x != "-" for x in (src, dst, sp, dp, proto, pk, by, action)): bad(n, line, "no-data fields")
        print(json.dumps({"iface": iface, "status": status, "start": int(start), "end": int(end)}))
        continue
    if status != "OK": bad(n, line, "log-status")
    try:
        ipaddress.IPv4Address(src); ipaddress.IPv4Address(dst)
    except ValueError:
        bad(n, line, "address")
    for x, hi in ((sp, 65535), (dp, 65535), (proto, 255)):
        if not x.isdigit() or int(x) > hi: bad(n, line, "port/protocol")
    if not (pk.isdigit() and by.isdigit() and int(pk) > 0 and int(by) >= 20 * int(pk)): bad(n, line, "packets/bytes")
    if action not in ("ACCEPT", "REJECT"): bad(n, line, "action")
    print(json.dumps({"iface": iface, "status": status, "src": src, "dst": dst, "sport": int(sp),
        "dport": int(dp), "proto": int(proto), "packets": int(pk), "bytes": int(by),
        "start": int(start), "end": int(end), "action": action}))
"#;

/// UDP server: echoes every datagram unchanged.
const UDP_ECHO: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
print("listening", flush=True)
while True:
    d, a = s.recvfrom(65535)
    s.sendto(d, a)
"#;

/// UDP client bound to argv[3]: argv[4] datagrams of argv[5] bytes, one echo each.
const UDP_CLIENT: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[3])))
s.settimeout(2.0)
got = 0
for i in range(int(sys.argv[4])):
    s.sendto(bytes(int(sys.argv[5])), (sys.argv[1], int(sys.argv[2])))
    d, a = s.recvfrom(65535)
    got += len(d) == int(sys.argv[5])
print("echoed=%d" % got, flush=True)
"#;

/// TCP sink: reads each connection to its end, prints the byte count.
const TCP_SINK: &str = r#"
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(8)
print("listening", flush=True)
while True:
    c, a = s.accept()
    n = 0
    while True:
        d = c.recv(65536)
        if not d:
            break
        n += len(d)
    c.close()
    print("got %d from %s:%d" % (n, a[0], a[1]), flush=True)
"#;

/// TCP client bound to argv[3]: sends argv[4] bytes and closes.
const TCP_CLIENT: &str = r#"
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[3])))
s.settimeout(5)
s.connect((sys.argv[1], int(sys.argv[2])))
s.sendall(bytes(int(sys.argv[4])))
s.shutdown(socket.SHUT_WR)
s.recv(10)
s.close()
print("sent", flush=True)
"#;

/// Unsolicited datagrams from outside to a public IP: dropped, a REJECT record.
const UDP_UNSOLICITED: &str = r#"
import socket, sys
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.bind(("0.0.0.0", 4444))
for i in range(int(sys.argv[3])):
    u.sendto(bytes(50), (sys.argv[1], int(sys.argv[2])))
"#;

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn logs_config(rig_yaml: &str, dir: &TempDir, interval_s: u32, drain_s: u32) -> String {
    format!(
        "{rig_yaml}flow_logs:\n  path: \"{}\"\n  interval_s: {interval_s}\n  account_id: \"{ACCOUNT}\"\n\
         translation_log:\n  path: \"{}\"\nstop_drain_s: {drain_s}\n",
        dir.join("flow.log").display(),
        dir.join("translation.log").display()
    )
}

/// A NAT rig whose appliance writes its logs into `dir`.
fn start(prefix: &str, dir: &TempDir, interval_s: u32, drain_s: u32) -> NatRig {
    start_with(prefix, dir, interval_s, drain_s, &NatOpts::default(), &[])
}

fn start_with(
    prefix: &str,
    dir: &TempDir,
    interval_s: u32,
    drain_s: u32,
    opts: &NatOpts,
    eal: &[&str],
) -> NatRig {
    let topo = NatTopology::new(prefix);
    let yaml = logs_config(&topo.config(opts), dir, interval_s, drain_s);
    let app = Appliance::start_with(&yaml, eal);
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

/// Every record of the flow log, parsed strictly (panics naming the bad line).
fn parse_flow_log(path: &Path) -> Vec<serde_json::Value> {
    let p = path.display().to_string();
    let o = run(&[PYTHON, "-c", V2_PARSER, &p], 20);
    assert!(
        o.ok(),
        "flow log does not parse as VPC v2: {o}\n{}",
        std::fs::read_to_string(path).unwrap_or_default()
    );
    o.stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("parser output"))
        .collect()
}

/// (packets, bytes) summed over the records of one direction of a flow.
fn sum(
    recs: &[serde_json::Value],
    src: &str,
    sport: Option<u64>,
    dst: &str,
    dport: u64,
    proto: u64,
    action: &str,
) -> (u64, u64) {
    recs.iter()
        .filter(|r| {
            r["status"] == "OK"
                && r["src"] == src
                && r["dst"] == dst
                && sport.is_none_or(|p| r["sport"] == p)
                && r["dport"] == dport
                && r["proto"] == proto
                && r["action"] == action
        })
        .fold((0, 0), |(p, b), r| {
            (
                p + r["packets"].as_u64().unwrap(),
                b + r["bytes"].as_u64().unwrap(),
            )
        })
}

fn ctl_who(args: &[&str]) -> Out {
    let bin = flowgate_bin();
    let mut a = vec![bin.to_str().unwrap(), "ctl", "who"];
    a.extend_from_slice(args);
    run(&a, 10)
}

/// The public endpoint of the mapping created for `inside` (translation log).
fn public_of(tlog: &str, inside: &str) -> Option<(String, u64)> {
    tlog.lines().find_map(|l| {
        let v: serde_json::Value = serde_json::from_str(l).ok()?;
        (v["event"] == "created" && v["inside"] == inside).then(|| {
            (
                v["public"].as_str().unwrap().to_string(),
                v["ts_ms"].as_u64().unwrap(),
            )
        })
    })
}

#[test]
fn flow_log_records_match_the_traffic_sent() {
    let Some(_g) = setup("flow_log_records_match_the_traffic_sent") else {
        return;
    };
    let dir = TempDir::new("flowlogs");
    let rig = start("nflog", &dir, 2, 0);
    let flow_log = dir.join("flow.log");
    let tlog = dir.join("translation.log");
    let t_before = now_s();
    std::thread::sleep(Duration::from_millis(1100));

    let _udp = rig.server().spawn(
        &[PYTHON, "-u", "-c", UDP_ECHO, SERVER, "9999"],
        &dir.join("udp.log"),
    );
    rig.server()
        .wait_listen("udp", 9999, Duration::from_secs(10));
    let _tcp = rig.server().spawn(
        &[PYTHON, "-u", "-c", TCP_SINK, SERVER, "8080"],
        &dir.join("tcp.log"),
    );
    rig.server()
        .wait_listen("tcp", 8080, Duration::from_secs(10));

    // 5 pings of 56 data bytes: 84-byte IP packets each way.
    assert_ping(rig.a(), SERVER, 5);
    // 3 datagrams of 100 bytes from 10.0.1.2:40001: 128-byte IP packets each way.
    let o = rig.a().exec(
        &[
            PYTHON, "-c", UDP_CLIENT, SERVER, "9999", "40001", "3", "100",
        ],
        15,
    );
    assert!(o.stdout.contains("echoed=3"), "{o}");
    // 200000 bytes over TCP from 10.0.1.3:40002.
    let o = rig.b().exec(
        &[PYTHON, "-c", TCP_CLIENT, SERVER, "8080", "40002", "200000"],
        20,
    );
    assert!(o.stdout.contains("sent"), "{o}");
    // 4 unsolicited datagrams to a public IP: dropped (nat_no_mapping), REJECT.
    python_in(
        rig.server(),
        UDP_UNSOLICITED,
        &[PUBLIC_IPS[0], "5353", "4"],
        10,
    );

    // Every interval is written about 1 s after it ends: wait for the REJECT line.
    let reject_line = format!("{SERVER} {} 4444 5353 17 ", PUBLIC_IPS[0]);
    let text = wait_for(Duration::from_secs(12), || {
        let t = std::fs::read_to_string(&flow_log).ok()?;
        (t.contains(&reject_line) && t.contains(" 40002 8080 6 ")).then_some(t)
    })
    .unwrap_or_else(|| {
        panic!(
            "no REJECT record `{reject_line}` in\n{}",
            std::fs::read_to_string(&flow_log).unwrap_or_default()
        )
    });
    // Let the TCP flow's last interval close too.
    std::thread::sleep(Duration::from_secs(4));
    let recs = parse_flow_log(&flow_log);
    let text_now = std::fs::read_to_string(&flow_log).unwrap();
    assert!(text_now.starts_with("version account-id"), "{text}");
    let all = || text_now.clone();
    println!("flow log:\n{text_now}");

    // ICMP: ports 0 (AWS), 5 packets of 84 bytes each way.
    assert_eq!(
        sum(&recs, HOST_A, Some(0), SERVER, 0, 1, "ACCEPT"),
        (5, 420),
        "{}",
        all()
    );
    assert_eq!(
        sum(&recs, SERVER, Some(0), HOST_A, 0, 1, "ACCEPT"),
        (5, 420),
        "{}",
        all()
    );
    // UDP: inside endpoint and remote, exact counts.
    assert_eq!(
        sum(&recs, HOST_A, Some(40001), SERVER, 9999, 17, "ACCEPT"),
        (3, 384),
        "{}",
        all()
    );
    assert_eq!(
        sum(&recs, SERVER, Some(9999), HOST_A, 40001, 17, "ACCEPT"),
        (3, 384),
        "{}",
        all()
    );
    // TCP: every byte sent, with headers (at least 40 per packet), in MSS-sized segments.
    let (p, b) = sum(&recs, HOST_B, Some(40002), SERVER, 8080, 6, "ACCEPT");
    assert!(
        p >= 200_000 / 1460 && b >= 200_000 + 40 * p && b <= 200_000 + 80 * p,
        "out {p} {b}\n{}",
        all()
    );
    let (rp, rb) = sum(&recs, SERVER, Some(8080), HOST_B, 40002, 6, "ACCEPT");
    assert!(rp >= 2 && rb >= 40 * rp, "acks {rp} {rb}\n{}", all());
    // The unsolicited datagrams: one REJECT record of 4 packets of 78 bytes.
    assert_eq!(
        sum(&recs, SERVER, Some(4444), PUBLIC_IPS[0], 5353, 17, "REJECT"),
        (4, 4 * 78),
        "{}",
        all()
    );
    // Intervals without traffic say NODATA; nothing was lost.
    assert!(recs.iter().any(|r| r["status"] == "NODATA"), "{}", all());
    assert!(!text_now.contains("SKIPDATA"), "{}", all());
    assert!(recs.iter().all(|r| r["iface"] == GW_ID), "{}", all());
    // Records lie within the test's time.
    let t_after = now_s() + 1;
    assert!(
        recs.iter()
            .all(|r| r["start"].as_u64().unwrap() >= t_before - 2
                && r["end"].as_u64().unwrap() <= t_after),
        "{}",
        all()
    );

    // Translation log: the UDP mapping, and `ctl who` names its inside host.
    let t = std::fs::read_to_string(&tlog).unwrap();
    let (public, created_ms) = public_of(&t, &format!("{HOST_A}:40001"))
        .unwrap_or_else(|| panic!("no mapping for {HOST_A}:40001 in\n{t}"));
    assert!(
        PUBLIC_IPS
            .iter()
            .any(|ip| public.starts_with(&format!("{ip}:"))),
        "{public}"
    );
    let log_arg = tlog.display().to_string();
    let o = ctl_who(&[&public, "--log", &log_arg]);
    println!("translation log:\n{t}\nctl who {public}: {}", o.stdout);
    assert!(
        o.ok() && o.stdout.contains(&format!("held by {HOST_A}:40001")),
        "{o}\n{t}"
    );
    assert!(o.stdout.contains(&format!("udp to {SERVER}:9999")), "{o}");
    let at = format!("{}", created_ms / 1000 + 1);
    let o = ctl_who(&[&public, "--at", &at, "--log", &log_arg]);
    assert!(
        o.ok() && o.stdout.contains(&format!("{HOST_A}:40001")),
        "{o}"
    );
    let before = t_before.to_string();
    let o = ctl_who(&[&public, "--at", &before, "--log", &log_arg]);
    assert!(o.code() == Some(1) && o.stdout.contains("none"), "{o}");
    // The TCP connection's mapping too, with its destination.
    let (tp, _) = public_of(&t, &format!("{HOST_B}:40002")).expect("tcp mapping");
    let o = ctl_who(&[&tp, "--log", &log_arg]);
    assert!(
        o.stdout.contains(&format!(
            "{HOST_B}:40002 (tcp to {SERVER}:8080, tenant {GW_ID})"
        )),
        "{o}"
    );
}

/// `GET path`: status code and body.
fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).map_err(|e| e.to_string())?;
    let code = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or(format!("bad answer {buf:?}"))?;
    Ok((
        code,
        buf.split_once("\r\n\r\n")
            .map(|x| x.1.to_string())
            .unwrap_or_default(),
    ))
}

#[test]
fn sigterm_drains_then_flushes_the_logs() {
    let Some(_g) = setup("sigterm_drains_then_flushes_the_logs") else {
        return;
    };
    let dir = TempDir::new("flowstop");
    // A long interval: nothing is written before the stop flushes it. Two workers (both
    // on cpu 1): each flushes its own flows; UDP goes through its designated owner.
    let opts = NatOpts {
        workers: vec![1, 2],
        queues: 2,
        ..NatOpts::default()
    };
    let mut rig = start_with("nfstop", &dir, 600, 2, &opts, &["--lcores", "0@0,1@1,2@1"]);
    let _udp = rig.server().spawn(
        &[PYTHON, "-u", "-c", UDP_ECHO, SERVER, "9999"],
        &dir.join("udp.log"),
    );
    rig.server()
        .wait_listen("udp", 9999, Duration::from_secs(10));
    let o = rig.b().exec(
        &[
            PYTHON, "-c", UDP_CLIENT, SERVER, "9999", "40003", "7", "200",
        ],
        15,
    );
    assert!(o.stdout.contains("echoed=7"), "{o}");
    let (code, _) = http_get(rig.app.metrics_addr, "/healthz").unwrap();
    assert_eq!(code, 200, "ready before the stop");
    let m = rig.app.wait_metrics(Duration::from_secs(3), |m| {
        m.value(
            "flowgate_log_lines_written_total",
            &[("log", "translation")],
        ) >= 1.0
    });
    assert_eq!(m.value("flowgate_flow_log_records_lost_total", &[]), 0.0);
    assert!(
        m.value(
            "flowgate_log_lines_written_total",
            &[("log", "translation")]
        ) >= 1.0,
        "{}",
        m.excerpt("flowgate_log")
    );

    rig.app.signal(libc::SIGTERM);
    // Draining: still forwarding, but not ready.
    let t0 = std::time::Instant::now();
    let healthz = wait_for(Duration::from_millis(1500), || {
        http_get(rig.app.metrics_addr, "/healthz")
            .ok()
            .filter(|(c, _)| *c == 503)
    });
    let (_, body) = healthz.expect("/healthz must answer 503 while draining");
    assert!(body.contains("stopping"), "{body}");
    let o = rig.b().exec(
        &[
            PYTHON, "-c", UDP_CLIENT, SERVER, "9999", "40004", "1", "200",
        ],
        5,
    );
    assert!(
        o.stdout.contains("echoed=1"),
        "forwarding continues while draining: {o}"
    );
    let st = rig
        .app
        .proc
        .as_mut()
        .unwrap()
        .wait_timeout(Duration::from_secs(15))
        .expect("flowgate did not exit within 15 s of SIGTERM");
    assert!(st.success(), "{st}\n{}", rig.app.log());
    assert!(
        t0.elapsed() >= Duration::from_millis(1900),
        "the drain lasted {:?}",
        t0.elapsed()
    );
    let log = rig.app.log();
    assert!(
        log.contains("draining for 2 s") && log.contains("logs flushed (0 records lost"),
        "{log}"
    );
    assert!(log.contains("Forward statistics"), "{log}");

    let recs = parse_flow_log(&dir.join("flow.log"));
    let text = std::fs::read_to_string(dir.join("flow.log")).unwrap();
    assert_eq!(
        sum(&recs, HOST_B, Some(40003), SERVER, 9999, 17, "ACCEPT"),
        (7, 7 * 228),
        "{text}"
    );
    assert_eq!(
        sum(&recs, SERVER, Some(9999), HOST_B, 40003, 17, "ACCEPT"),
        (7, 7 * 228),
        "{text}"
    );
    assert_eq!(
        sum(&recs, HOST_B, Some(40004), SERVER, 9999, 17, "ACCEPT"),
        (1, 228),
        "{text}"
    );
    // Every mapping created was ended in the translation log at the stop.
    let t = std::fs::read_to_string(dir.join("translation.log")).unwrap();
    let count = |ev: &str, inside: &str| {
        t.lines()
            .filter(|l| l.contains(&format!("\"event\":\"{ev}\"")) && l.contains(inside))
            .count()
    };
    for inside in ["10.0.1.3:40003", "10.0.1.3:40004"] {
        assert_eq!(
            (count("created", inside), count("deleted", inside)),
            (1, 1),
            "{t}"
        );
    }
}

/// From the LB client: HTTP/1.0 GETs to VIP:80 from local ports argv[2].. (argv[3] of
/// them), then argv[5] UDP datagrams of argv[6] bytes to VIP:53 from port argv[4] (prints
/// the reply bytes), then argv[7] datagrams of 50 bytes to VIP:5454 (no listener).
const LB_CLIENT: &str = r#"
import socket, sys
vip, base, n, uport, un, usize, rn = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
for i in range(n):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", base + i))
    s.settimeout(5)
    s.connect((vip, 80))
    s.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
    d = b""
    while True:
        x = s.recv(4096)
        if not x:
            break
        d += x
    s.close()
    print("http %d %s" % (base + i, d.split(b"\r\n\r\n", 1)[-1].decode().strip()), flush=True)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.bind(("0.0.0.0", uport))
u.settimeout(3)
got = 0
for i in range(un):
    u.sendto(bytes(usize), (vip, 53))
    d, a = u.recvfrom(2048)
    got += len(d)
print("udp replies=%d bytes=%d" % (un, got), flush=True)
r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
r.bind(("0.0.0.0", uport + 1))
for i in range(rn):
    r.sendto(bytes(50), (vip, 5454))
print("done", flush=True)
"#;

/// Load-balancer flows in both logs: HTTP through the DNAT group (client IP preserved) and
/// UDP through the full-NAT group give ACCEPT records on the client's side (client <->
/// VIP) and the target's side (client or LB address <-> target) with exactly the packets
/// and bytes sent, datagrams to a port without listener one REJECT record, every line
/// parses as VPC v2 with the LB's id as interface-id, and `ctl who LB_ADDRESS:PORT` names
/// the client of the full-NAT flow.
#[test]
fn lb_flows_in_flow_logs_and_ctl_who() {
    use lb_topology as lbt;
    let Some(_g) = setup("lb_flows_in_flow_logs_and_ctl_who") else {
        return;
    };
    let dir = TempDir::new("lbflowlogs");
    let rig = lbt::LbRig::start_yaml(
        "lblog",
        |t| logs_config(&t.config(&[1, 1, 1, 1], ""), &dir, 2, 0),
        &[],
    );
    let flow_log = dir.join("flow.log");
    let tlog = dir.join("translation.log");
    let t_before = now_s();
    let (udp_port, n_udp, udp_len, n_rej) = (42001u16, 4u64, 100u64, 3u64);
    let o = rig.topo.client.exec(
        &[
            PYTHON,
            "-c",
            LB_CLIENT,
            lbt::VIP,
            "41001",
            "3",
            &udp_port.to_string(),
            &n_udp.to_string(),
            &udp_len.to_string(),
            &n_rej.to_string(),
        ],
        60,
    );
    assert!(o.ok() && o.stdout.contains("done"), "{o}");
    let replied: u64 = o
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("udp replies={n_udp} bytes=")))
        .and_then(|b| b.trim().parse().ok())
        .unwrap_or_else(|| panic!("udp replies missing\n{o}"));
    assert_eq!(o.stdout.matches("name=t").count(), 3, "{o}");

    let reject_line = format!("{} {} {} 5454 17 ", lbt::CLIENT, lbt::VIP, udp_port + 1);
    wait_for(Duration::from_secs(12), || {
        let t = std::fs::read_to_string(&flow_log).ok()?;
        t.contains(&reject_line).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "no REJECT record `{reject_line}` in\n{}",
            std::fs::read_to_string(&flow_log).unwrap_or_default()
        )
    });
    // The flows' last interval closes too.
    std::thread::sleep(Duration::from_secs(3));
    let recs = parse_flow_log(&flow_log);
    let text = std::fs::read_to_string(&flow_log).unwrap();
    println!("flow log:\n{text}");
    assert!(recs.iter().all(|r| r["iface"] == lbt::LB_ID), "{text}");
    assert!(!text.contains("SKIPDATA"), "{text}");
    let t_after = now_s() + 1;
    assert!(
        recs.iter()
            .all(|r| r["start"].as_u64().unwrap() >= t_before - 2
                && r["end"].as_u64().unwrap() <= t_after),
        "{text}"
    );

    // Full NAT (UDP 53 -> t5:5353): the LB address:port the target saw, from the
    // translation log.
    let t = std::fs::read_to_string(&tlog).unwrap();
    println!("translation log:\n{t}");
    let client_ep = format!("{}:{udp_port}", lbt::CLIENT);
    let ev: serde_json::Value = t
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "created" && v["client"] == client_ep.as_str())
        .unwrap_or_else(|| panic!("no LB event for {client_ep} in\n{t}"));
    assert_eq!(ev["kind"], "lb", "{ev}");
    assert_eq!(ev["tenant"], lbt::LB_ID, "{ev}");
    assert_eq!(ev["vip"], format!("{}:53", lbt::VIP), "{ev}");
    let t5 = lbt::target_ip(5);
    assert_eq!(ev["target"], format!("{t5}:5353"), "{ev}");
    let lb_ep = ev["lb_address"].as_str().expect("lb_address").to_string();
    let (lb_ip, lb_port) = lb_ep.split_once(':').unwrap();
    assert_eq!(lb_ip, lbt::LB_ADDR, "{ev}");
    let lb_port: u64 = lb_port.parse().unwrap();
    let up = u64::from(udp_port);
    let out = (n_udp, n_udp * (28 + udp_len));
    let back = (n_udp, replied + 28 * n_udp);
    assert_eq!(
        sum(&recs, lbt::CLIENT, Some(up), lbt::VIP, 53, 17, "ACCEPT"),
        out,
        "{text}"
    );
    assert_eq!(
        sum(&recs, lbt::VIP, Some(53), lbt::CLIENT, up, 17, "ACCEPT"),
        back,
        "{text}"
    );
    assert_eq!(
        sum(&recs, lbt::LB_ADDR, Some(lb_port), &t5, 5353, 17, "ACCEPT"),
        out,
        "{text}"
    );
    assert_eq!(
        sum(&recs, &t5, Some(5353), lbt::LB_ADDR, lb_port, 17, "ACCEPT"),
        back,
        "{text}"
    );
    // The datagrams to a port without listener: one REJECT record.
    assert_eq!(
        sum(
            &recs,
            lbt::CLIENT,
            Some(up + 1),
            lbt::VIP,
            5454,
            17,
            "REJECT"
        ),
        (n_rej, n_rej * 78),
        "{text}"
    );

    // DNAT (TCP 80 -> t1..t4:8080, client IP preserved): each connection's client side and
    // target side carry the same packets and bytes, a whole HTTP exchange.
    for p in 41001u64..41004 {
        let (cp, cb) = sum(&recs, lbt::CLIENT, Some(p), lbt::VIP, 80, 6, "ACCEPT");
        let (rp, rb) = sum(&recs, lbt::VIP, Some(80), lbt::CLIENT, p, 6, "ACCEPT");
        assert!(
            cp >= 4 && cb >= 40 * cp + 20,
            "client {p}: {cp} {cb}\n{text}"
        );
        assert!(
            rp >= 3 && rb >= 40 * rp + 100,
            "reply {p}: {rp} {rb}\n{text}"
        );
        let target_side = (1..=4)
            .map(|i| {
                let ti = lbt::target_ip(i);
                (
                    sum(&recs, lbt::CLIENT, Some(p), &ti, 8080, 6, "ACCEPT"),
                    sum(&recs, &ti, Some(8080), lbt::CLIENT, p, 6, "ACCEPT"),
                )
            })
            .find(|(o, _)| o.0 > 0)
            .unwrap_or_else(|| panic!("no target-side record for {p}\n{text}"));
        assert_eq!(target_side, ((cp, cb), (rp, rb)), "{p}\n{text}");
    }

    // `ctl who` on the full-NAT LB address:port names the client, as an LB flow.
    let log_arg = tlog.display().to_string();
    let o = ctl_who(&[&lb_ep, "--log", &log_arg]);
    println!("ctl who {lb_ep}: {}", o.stdout);
    assert!(
        o.ok()
            && o.stdout
                .contains(&format!("{lb_ep} held by {client_ep} (load-balancer flow")),
        "{o}\n{t}"
    );
    assert!(
        o.stdout.contains(&format!(
            "VIP {}:53, target {t5}:5353, load balancer {}",
            lbt::VIP,
            lbt::LB_ID
        )),
        "{o}"
    );
    let at = (ev["ts_ms"].as_u64().unwrap() / 1000 + 1).to_string();
    let o = ctl_who(&[&lb_ep, "--at", &at, "--log", &log_arg]);
    assert!(o.ok() && o.stdout.contains(&client_ep), "{o}");
    drop(rig);
}

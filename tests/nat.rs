//! The NAT gateway (SPEC.md §2, issue 3) with real kernel traffic through the real binary:
//! two private hosts behind flowgate (af_packet), a router namespace on the gateway's
//! outside subnet, and an "internet" server beyond it (see tests/common/nat_topology.rs).
//!
//! Every test builds its own namespaces (prefix `n...`), starts its own appliance with short
//! timeouts, and is bounded in time (the harness watchdog, `timeout` on every command).

mod common;
#[path = "common/nat_topology.rs"]
mod nat_topology;

use common::*;
use nat_topology::*;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::time::{Duration, Instant};

const MBUFS_IN_USE: &str = "flowgate_mempool_mbufs_in_use";

// ---------------------------------------------------------------------------------------------
// Python helpers (system python3; scapy where needed)
// ---------------------------------------------------------------------------------------------

/// Threaded TCP echo server on several ports of one address. Logs `ACCEPT <lport> <ip> <port>`
/// per accepted connection.
const TCP_ECHO_SERVER: &str = r#"
import socket, sys, threading
host = sys.argv[1]
ports = [int(p) for p in sys.argv[2].split(",")]
def serve(c, a, lp):
    try:
        while True:
            d = c.recv(65536)
            if not d:
                break
            c.sendall(d)
    except OSError as e:
        print("ERR %d %s %d %s" % (lp, a[0], a[1], e), flush=True)
    finally:
        c.close()
def listen(p):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, p))
    s.listen(1024)
    while True:
        c, a = s.accept()
        print("ACCEPT %d %s %d" % (p, a[0], a[1]), flush=True)
        threading.Thread(target=serve, args=(c, a, p), daemon=True).start()
for p in ports:
    threading.Thread(target=listen, args=(p,), daemon=True).start()
print("listening", flush=True)
threading.Event().wait()
"#;

/// Opens N connections to srv:port (connect timeout T each) and holds them; optionally one
/// more to srv:extra_port; then sends a message on every open connection and checks the
/// echo. Prints key=value lines.
const TCP_HOLD_CLIENT: &str = r#"
import socket, sys
srv, port, n, to = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
extra = int(sys.argv[5]) if len(sys.argv) > 5 else 0
socks, fails = [], []
for i in range(n):
    s = socket.socket()
    s.settimeout(to)
    try:
        s.connect((srv, port))
        socks.append(s)
    except OSError as e:
        fails.append("%d:%s" % (i, e))
        s.close()
print("ok=%d" % len(socks))
print("fail=%s" % ";".join(fails))
if extra:
    s = socket.socket()
    s.settimeout(to)
    try:
        s.connect((srv, extra))
        s.sendall(b"x")
        print("extra=%s" % s.recv(10).decode())
        socks.append(s)
    except OSError as e:
        print("extra=ERR %s" % e)
good = 0
for i, s in enumerate(socks):
    msg = b"ping-%d" % i
    try:
        s.sendall(msg)
        got = b""
        while len(got) < len(msg):
            d = s.recv(100)
            if not d:
                break
            got += d
        good += got == msg
    except OSError:
        pass
print("data_ok=%d" % good, flush=True)
"#;

/// One TCP connection: exchange, stay idle for argv[3] seconds, send again; prints RESET,
/// DATA, EOF or TIMEOUT for the second exchange.
const TCP_IDLE_CLIENT: &str = r#"
import socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
s.sendall(b"hello")
print("first=%r" % s.recv(100), flush=True)
time.sleep(float(sys.argv[3]))
try:
    s.sendall(b"again")
    d = s.recv(100)
    print(("DATA %r" % d) if d else "EOF", flush=True)
except ConnectionResetError as e:
    print("RESET %s" % e, flush=True)
except socket.timeout:
    print("TIMEOUT", flush=True)
"#;

/// HTTP/1.1 keep-alive server: the body names the client address it saw and the path.
const HTTP11_SERVER: &str = r#"
import sys, http.server
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = ("ok %s %d %s\n" % (self.client_address[0], self.client_address[1], self.path)).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, fmt, *a):
        sys.stderr.write("%s %d %s\n" % (self.client_address[0], self.client_address[1], fmt % a))
        sys.stderr.flush()
http.server.ThreadingHTTPServer.daemon_threads = True
http.server.ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), H).serve_forever()
"#;

/// N HTTP GETs, one connection each (so each from a new source port). Prints ok=, fail=.
const HTTP_MANY_CLIENT: &str = r#"
import sys, urllib.request
url, n = sys.argv[1], int(sys.argv[2])
ok, fails = 0, []
for i in range(n):
    try:
        with urllib.request.urlopen("%s/r%d" % (url, i), timeout=5) as r:
            body = r.read().decode()
            if r.status == 200 and body.startswith("ok "):
                ok += 1
            else:
                fails.append("%d:%s" % (i, body))
    except Exception as e:
        fails.append("%d:%s" % (i, e))
print("ok=%d" % ok)
print("fail=%s" % ";".join(fails), flush=True)
"#;

/// One keep-alive HTTP connection: a GET, then wait for the trigger file, then a GET on the
/// same connection. Prints `before ...`, `ready`, `after ...` (the body names the client
/// address the server saw, so the test can tell it was the same connection).
const HTTP_HOLD_CLIENT: &str = r#"
import http.client, os, sys, time
host, port, trigger = sys.argv[1], int(sys.argv[2]), sys.argv[3]
c = http.client.HTTPConnection(host, port, timeout=5)
c.request("GET", "/before")
r = c.getresponse()
print("before %d %s" % (r.status, r.read().decode().strip()), flush=True)
local = c.sock.getsockname()
print("ready", flush=True)
t0 = time.time()
while not os.path.exists(trigger) and time.time() - t0 < 200:
    time.sleep(0.1)
c.request("GET", "/after")
r = c.getresponse()
same = c.sock.getsockname() == local
print("after %d %s same_socket=%s" % (r.status, r.read().decode().strip(), same), flush=True)
"#;

/// A UDP datagram of argv[3] bytes; the server answers with the length it received.
const UDP_LEN_SERVER: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
print("listening", flush=True)
while True:
    d, a = s.recvfrom(65535)
    print("from %s:%d len=%d" % (a[0], a[1], len(d)), flush=True)
    s.sendto(b"len=%d" % len(d), a)
"#;

const UDP_LEN_CLIENT: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1.0)
msg = bytes((i * 7) % 251 for i in range(int(sys.argv[3])))
for attempt in range(5):
    s.sendto(msg, (sys.argv[1], int(sys.argv[2])))
    try:
        d, a = s.recvfrom(65535)
        print(d.decode())
        sys.exit(0)
    except socket.timeout:
        continue
sys.exit(1)
"#;

/// A UDP socket bound to argv[1]:argv[2]: talks to each destination in argv[3] ("ip:port,...")
/// with payload argv[4] (waiting for the echo), prints MAPPED, then listens argv[5] seconds
/// and prints `GOT <ip> <port> <payload>` for whatever arrives.
const UDP_EIM_CLIENT: &str = r#"
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
s.settimeout(1.0)
for d in sys.argv[3].split(","):
    ip, port = d.split(":")
    for attempt in range(5):
        s.sendto(sys.argv[4].encode(), (ip, int(port)))
        try:
            s.recvfrom(65535)
            print("echo from %s" % d, flush=True)
            break
        except socket.timeout:
            continue
print("MAPPED", flush=True)
t0 = time.time()
s.settimeout(0.2)
while time.time() - t0 < float(sys.argv[5]):
    try:
        data, a = s.recvfrom(65535)
        print("GOT %s %d %s" % (a[0], a[1], data.decode(errors="replace")), flush=True)
    except socket.timeout:
        pass
"#;

/// Hairpin peer: bound to argv[1]:argv[2], learns its mapping through the server argv[3]
/// (payload argv[4]), prints MAPPED, waits for the file argv[5] ("ip port" of the other
/// peer's public endpoint), then sends argv[4] there 10 times while printing `GOT ...`.
const UDP_HAIRPIN_PEER: &str = r#"
import os, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
s.settimeout(1.0)
sip, sport = sys.argv[3].split(":")
for attempt in range(5):
    s.sendto(sys.argv[4].encode(), (sip, int(sport)))
    try:
        s.recvfrom(65535)
        break
    except socket.timeout:
        continue
print("MAPPED", flush=True)
t0 = time.time()
while not os.path.exists(sys.argv[5]) and time.time() - t0 < 60:
    time.sleep(0.1)
pip, pport = open(sys.argv[5]).read().split()
s.settimeout(0.3)
for i in range(10):
    s.sendto(("%s-%d" % (sys.argv[4], i)).encode(), (pip, int(pport)))
    t1 = time.time()
    while time.time() - t1 < 0.3:
        try:
            data, a = s.recvfrom(65535)
            print("GOT %s %d %s" % (a[0], a[1], data.decode(errors="replace")), flush=True)
        except socket.timeout:
            break
print("DONE", flush=True)
"#;

/// scapy: a fragmented TCP segment (SYN with 200 bytes of payload, 64-byte fragments)
/// sent on argv[1] to the MAC argv[2], toward argv[3]:argv[4]. Prints the fragment count.
const SCAPY_TCP_FRAGMENTS: &str = r#"
import sys
from scapy.all import Ether, IP, TCP, Raw, fragment, sendp, conf, get_if_addr
conf.verb = 0
iface, mac, dst, dport = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
src = get_if_addr(iface)
p = IP(src=src, dst=dst, id=4242, ttl=64) / TCP(sport=40001, dport=dport, flags="S", seq=1000) / Raw(b"x" * 200)
frags = fragment(p, fragsize=64)
sendp([Ether(dst=mac) / f for f in frags], iface=iface)
print(len(frags))
"#;

/// scapy: the hostile battery from the server side toward the public IPs (argv[3], argv[4]),
/// sent on argv[1] to the router's MAC argv[2]. Prints `<category> <count>` per category.
const SCAPY_HOSTILE_OUTSIDE: &str = r#"
import sys, random
from scapy.all import Ether, IP, ICMP, UDP, TCP, Raw, sendp, conf, get_if_addr
conf.verb = 0
iface, mac, pub1, pub2 = sys.argv[1:5]
src = get_if_addr(iface)
E = lambda: Ether(dst=mac)
cats = {}
def out(cat, pkts):
    sendp(pkts, iface=iface, inter=0.002)
    cats[cat] = cats.get(cat, 0) + len(pkts)
# ICMP errors quoting flows that have no mapping (well-formed, correct checksums).
out("no_mapping", [E() / IP(src=src, dst=pub) / ICMP(type=3, code=3) /
    IP(src=pub, dst=src, ttl=1) / UDP(sport=random.randint(1024, 65535), dport=53) / Raw(b"q" * 12)
    for pub in (pub1, pub2) for _ in range(10)])
out("no_mapping", [E() / IP(src=src, dst=pub1) / ICMP(type=11, code=0) /
    IP(src=pub1, dst=src, ttl=1) / TCP(sport=random.randint(1024, 65535), dport=443, flags="S")
    for _ in range(10)])
# Wrong checksum in the embedded (quoted) IP header.
out("bad_inner_csum", [E() / IP(src=src, dst=pub1) / ICMP(type=3, code=1) /
    IP(src=pub1, dst=src, chksum=0x1234) / UDP(sport=20000 + i, dport=53) / Raw(b"q" * 12)
    for i in range(10)])
# Wrong ICMP checksum on the error itself.
out("bad_outer_csum", [E() / IP(src=src, dst=pub1) / ICMP(type=3, code=1, chksum=0xdead) /
    IP(src=pub1, dst=src) / UDP(sport=20000 + i, dport=53) / Raw(b"q" * 12)
    for i in range(10)])
# Truncated errors: the quote stops inside the quoted IP header / before 8 transport bytes.
def trunc(n):
    inner = bytes(IP(src=pub1, dst=src) / UDP(sport=20001, dport=53) / Raw(b"q" * 12))[:n]
    return E() / IP(src=src, dst=pub1) / ICMP(type=3, code=3) / Raw(inner)
out("truncated", [trunc(n) for n in (0, 4, 12, 20, 24) for _ in range(2)])
# Truncated transport headers to a public IP.
out("truncated_l4", [E() / IP(src=src, dst=pub1, proto=6) / Raw(b"\x00" * 10) for _ in range(5)])
out("truncated_l4", [E() / IP(src=src, dst=pub1, proto=17) / Raw(b"\x00" * 4) for _ in range(5)])
for k, v in sorted(cats.items()):
    print(k, v)
"#;

/// scapy: N SYNs with random source ports from this host (argv[1], gateway MAC argv[2])
/// toward argv[3]:argv[4], as fast as scapy goes.
const SCAPY_SYN_FLOOD: &str = r#"
import sys, random
from scapy.all import Ether, IP, TCP, sendp, conf, get_if_addr
conf.verb = 0
iface, mac, dst, dport, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
src = get_if_addr(iface)
ports = random.sample(range(1024, 65536), n)
pkts = [Ether(dst=mac) / IP(src=src, dst=dst) / TCP(sport=p, dport=dport, flags="S", seq=random.randint(0, 2**32 - 1)) for p in ports]
for i in range(0, n, 200):
    sendp(pkts[i:i + 200], iface=iface)
print(n)
"#;

fn py_spawn(ns: &Netns, script: &str, args: &[&str], log: &std::path::Path) -> BgProc {
    let mut a = vec![PYTHON, "-u", "-c", script];
    a.extend_from_slice(args);
    ns.spawn(&a, log)
}

/// Waits until `p`'s log contains `needle`.
fn wait_log(p: &BgProc, needle: &str, secs: u64) -> bool {
    wait_for(Duration::from_secs(secs), || {
        p.log_text().contains(needle).then_some(())
    })
    .is_some()
}

/// Value of `key=` in key=value output lines.
fn kv<'a>(out: &'a str, key: &str) -> Option<&'a str> {
    let k = format!("{key}=");
    out.lines().find_map(|l| l.strip_prefix(k.as_str()))
}

fn kv_num(out: &str, key: &str) -> i64 {
    kv(out, key)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(-1)
}

/// The TCP echo server on the server namespace, listening on `ports`.
fn tcp_echo_server(rig: &NatRig, dir: &TempDir, ports: &[u16]) -> BgProc {
    let list: Vec<String> = ports.iter().map(|p| p.to_string()).collect();
    let p = py_spawn(
        rig.server(),
        TCP_ECHO_SERVER,
        &[SERVER, &list.join(",")],
        &dir.join("tcp-server.log"),
    );
    for port in ports {
        rig.server()
            .wait_listen("tcp", *port, Duration::from_secs(10));
    }
    p
}

/// `(ip, port)` of every connection the echo server accepted on `lport`, in order.
fn accepted(log: &str, lport: u16) -> Vec<(String, u16)> {
    log.lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w.len() == 4 && w[0] == "ACCEPT" && w[1] == lport.to_string())
                .then(|| (w[2].to_string(), w[3].parse().unwrap_or(0)))
        })
        .collect()
}

fn is_public(ip: &str) -> bool {
    PUBLIC_IPS.contains(&ip)
}

/// Metric delta helper: `after - before` for a gateway metric.
fn nat_delta(
    rig: &NatRig,
    before: &Metrics,
    after: &Metrics,
    name: &str,
    l: &[(&str, &str)],
) -> f64 {
    rig.nat(after, name, l) - rig.nat(before, name, l)
}

/// Scrapes until `pred` holds (workers publish their counters every few polls), at most
/// 5 s; returns the last scrape either way (the caller's assertions tell what is missing).
fn settle(rig: &NatRig, pred: impl FnMut(&Metrics) -> bool) -> Metrics {
    rig.app.wait_metrics(Duration::from_secs(5), pred)
}

fn drop_delta(before: &Metrics, after: &Metrics, reason: &str) -> f64 {
    after.dropped(reason) - before.dropped(reason)
}

// ---------------------------------------------------------------------------------------------
// 1. HTTP from two private hosts: the server sees only the public IPs
// ---------------------------------------------------------------------------------------------

#[test]
fn http_from_two_hosts_sees_only_public_ips() {
    let Some(_g) = setup("http_from_two_hosts_sees_only_public_ips") else {
        return;
    };
    let rig = NatRig::start("nhttp", &NatOpts::default());
    let http = HttpServer::start(rig.server(), SERVER, 8080);
    http.put("hello.txt", b"hello through the NAT gateway\n");
    let blob = test_bytes(256 * 1024, 11);
    http.put("blob.bin", &blob);
    let before = rig.app.metrics();

    let per_host = 8;
    for host in [rig.a(), rig.b()] {
        for _ in 0..per_host {
            assert_eq!(
                curl_get(host, &http.url("hello.txt")),
                b"hello through the NAT gateway\n"
            );
        }
    }
    let got = curl_get(rig.a(), &http.url("blob.bin"));
    assert!(got == blob, "256 KiB body differs ({} bytes)", got.len());

    let log = http.access_log();
    let clients: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\"GET "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        clients.len(),
        2 * per_host + 1,
        "expected {} requests in the access log:\n{log}",
        2 * per_host + 1
    );
    assert!(
        !log.contains("10.0."),
        "a private address reached the server:\n{log}"
    );
    for c in &clients {
        assert!(
            is_public(c),
            "client address {c} is not a public IP:\n{log}"
        );
    }
    let seen: BTreeSet<&str> = clients.iter().copied().collect();
    assert_eq!(
        seen.len(),
        2,
        "with 2 public IPs and {} connections both should be used (P(miss) ~ 2^-16):\n{log}",
        clients.len()
    );

    // Counters are published by the worker every few polls: wait for the download's.
    let m = settle(&rig, |m| {
        nat_delta(
            &rig,
            &before,
            m,
            "bytes_total",
            &[("direction", "in_from_destination")],
        ) > blob.len() as f64
            && nat_delta(&rig, &before, m, "connections_established_total", &[])
                >= (2 * per_host + 1) as f64
    });
    let conns = (2 * per_host + 1) as f64;
    for name in ["connection_attempts_total", "connections_established_total"] {
        let d = nat_delta(&rig, &before, &m, name, &[]);
        assert!(
            d >= conns,
            "{name} grew by {d} < {conns}\n{}",
            m.excerpt("flowgate_nat")
        );
    }
    for dir in [
        "in_from_source",
        "out_to_destination",
        "in_from_destination",
        "out_to_source",
    ] {
        let p = nat_delta(&rig, &before, &m, "packets_total", &[("direction", dir)]);
        let b = nat_delta(&rig, &before, &m, "bytes_total", &[("direction", dir)]);
        assert!(
            p >= 5.0 * conns && b > 0.0,
            "{dir}: {p} packets / {b} bytes\n{}",
            m.excerpt("flowgate_nat")
        );
    }
    // Downloads: far more bytes came in from the destination than went out to it.
    assert!(
        nat_delta(
            &rig,
            &before,
            &m,
            "bytes_total",
            &[("direction", "in_from_destination")]
        ) > blob.len() as f64
    );
    assert_eq!(
        rig.nat(&m, "port_allocation_errors_total", &[]),
        0.0,
        "{}",
        m.excerpt("flowgate_nat")
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Port allocation: uniqueness, randomness, range; exhaustion per destination
// ---------------------------------------------------------------------------------------------

#[test]
fn concurrent_connections_get_unique_random_ports() {
    let Some(_g) = setup("concurrent_connections_get_unique_random_ports") else {
        return;
    };
    let (first, last) = (20000u16, 20999u16);
    let opts = NatOpts {
        port_first: first as u32,
        port_last: last as u32,
        ..NatOpts::default()
    };
    let rig = NatRig::start("nuniq", &opts);
    let dir = TempDir::new("nuniq");
    let srv = tcp_echo_server(&rig, &dir, &[8080]);
    let n = 40;
    let o = python_in(
        rig.a(),
        TCP_HOLD_CLIENT,
        &[SERVER, "8080", &n.to_string(), "5"],
        120,
    );
    assert!(o.ok(), "{o}");
    assert_eq!(kv_num(&o.stdout, "ok"), n, "{o}");
    assert_eq!(kv_num(&o.stdout, "data_ok"), n, "{o}");

    let peers = accepted(&srv.log_text(), 8080);
    assert_eq!(peers.len() as i64, n, "server log:\n{}", srv.log_text());
    let distinct: BTreeSet<&(String, u16)> = peers.iter().collect();
    assert_eq!(
        distinct.len(),
        peers.len(),
        "duplicate (public IP, port) pairs toward one destination: {peers:?}"
    );
    for (ip, port) in &peers {
        assert!(is_public(ip), "peer {ip}:{port} is not a public IP");
        assert!(
            (first..=last).contains(port),
            "public port {port} outside the range {first}..={last}: {peers:?}"
        );
    }
    // RFC 6056 random choice: not a sequence. In accept order, successive ports one apart
    // would be the signature of a sequential allocator; with 1000 ports at random the
    // expected count is ~0.08.
    let ports: Vec<i64> = peers.iter().map(|(_, p)| *p as i64).collect();
    let adjacent = ports
        .windows(2)
        .filter(|w| (w[1] - w[0]).abs() == 1)
        .count();
    assert!(
        adjacent < ports.len() / 4,
        "{adjacent} of {} successive ports are consecutive: {ports:?}",
        ports.len()
    );
    let mut sorted = ports.clone();
    sorted.sort();
    let spread = sorted.last().unwrap() - sorted.first().unwrap();
    assert!(
        spread > 200,
        "40 random ports out of 1000 should spread widely, spread {spread}: {sorted:?}"
    );
    let ips: BTreeSet<&str> = peers.iter().map(|(ip, _)| ip.as_str()).collect();
    assert_eq!(ips.len(), 2, "both public IPs should be used: {peers:?}");
}

#[test]
fn port_exhaustion_per_destination_and_reuse_toward_others() {
    let Some(_g) = setup("port_exhaustion_per_destination_and_reuse_toward_others") else {
        return;
    };
    // 16 ports x 2 public IPs: 32 concurrent connections to one server ip:port, not 33.
    let (first, last) = (30000u16, 30015u16);
    let range = (last - first + 1) as i64;
    let opts = NatOpts {
        port_first: first as u32,
        port_last: last as u32,
        ..NatOpts::default()
    };
    let rig = NatRig::start("nexh", &opts);
    let dir = TempDir::new("nexh");
    let srv = tcp_echo_server(&rig, &dir, &[8080, 8081]);
    let before = rig.app.metrics();

    let cap = 2 * range;
    let o = python_in(
        rig.a(),
        TCP_HOLD_CLIENT,
        &[SERVER, "8080", &(cap + 1).to_string(), "3", "8081"],
        120,
    );
    assert!(o.ok(), "{o}");
    // The first 2R connections succeed; number 2R+1 times out (its SYNs are dropped).
    assert_eq!(kv_num(&o.stdout, "ok"), cap, "{o}");
    let fails = kv(&o.stdout, "fail").unwrap_or("");
    assert!(
        fails.starts_with(&format!("{cap}:")) && fails.contains("timed out"),
        "connection {} should time out: {o}",
        cap + 1
    );
    // Another destination port still gets a mapping (the same public ports are reused).
    assert_eq!(kv(&o.stdout, "extra"), Some("x"), "{o}");
    // And every held connection still carries data.
    assert_eq!(kv_num(&o.stdout, "data_ok"), cap + 1, "{o}");

    let log = srv.log_text();
    let peers = accepted(&log, 8080);
    assert_eq!(peers.len() as i64, cap, "server log:\n{log}");
    let distinct: BTreeSet<&(String, u16)> = peers.iter().collect();
    assert_eq!(distinct.len() as i64, cap, "duplicates: {peers:?}");
    for (ip, port) in &peers {
        assert!(
            is_public(ip) && (first..=last).contains(port),
            "{ip}:{port}"
        );
    }
    let other = accepted(&log, 8081);
    assert_eq!(other.len(), 1, "server log:\n{log}");
    assert!(
        distinct.contains(&other[0]),
        "toward 8081 the mapping {:?} must reuse one of the (all busy) pairs used toward 8080",
        other[0]
    );

    let m = rig.app.wait_metrics(Duration::from_secs(3), |m| {
        rig.nat(m, "port_allocation_errors_total", &[]) >= 1.0
    });
    let errs = nat_delta(&rig, &before, &m, "port_allocation_errors_total", &[]);
    assert!(
        errs >= 1.0,
        "port_allocation_errors did not grow\n{}",
        m.excerpt("flowgate_nat")
    );
    assert!(
        drop_delta(&before, &m, "nat_port_exhausted") >= errs,
        "{}",
        m.excerpt("flowgate_packets_dropped")
    );
    assert!(rig.nat(&m, "active_connections", &[]) >= cap as f64);
}

// ---------------------------------------------------------------------------------------------
// 3. UDP request/response and ICMP echo through the NAT
// ---------------------------------------------------------------------------------------------

#[test]
fn udp_and_ping_through_nat() {
    let Some(_g) = setup("udp_and_ping_through_nat") else {
        return;
    };
    let opts = NatOpts::default();
    let rig = NatRig::start("nudp", &opts);
    let dir = TempDir::new("nudp");
    let srv = udp_echo_server(rig.server(), SERVER, 9999, &dir.join("udp.log"));
    let before = rig.app.metrics();
    for (host, msg) in [(rig.a(), "hello-from-a"), (rig.b(), "hello-from-b")] {
        let o = udp_request(host, SERVER, 9999, msg);
        assert!(o.ok() && o.stdout == format!("echo:{msg}"), "{o}");
    }
    let log = srv.log_text();
    assert!(
        !log.contains("from 10."),
        "private source reached the server:\n{log}"
    );
    let froms: Vec<&str> = log
        .lines()
        .filter_map(|l| l.strip_prefix("from ").and_then(|r| r.split(':').next()))
        .collect();
    assert!(
        froms.len() >= 2 && froms.iter().all(|ip| is_public(ip)),
        "{log}"
    );

    // ICMP echo: the server sees the request from a public IP with a translated identifier.
    let cap = Capture::start(rig.server(), &rig.topo.server_if(), "icmp");
    assert_ping(rig.a(), SERVER, 3);
    assert_ping(rig.b(), SERVER, 2);
    let lines = cap.finish();
    let reqs: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("echo request"))
        .collect();
    assert!(reqs.len() >= 5, "{lines:#?}");
    for l in &reqs {
        assert!(!l.contains("10.0.1."), "untranslated echo: {l}");
        assert!(
            l.contains("192.0.2.10 > 203.0.113.10") || l.contains("192.0.2.11 > 203.0.113.10"),
            "echo request not from a public IP: {l}"
        );
        let id: u32 = l
            .split("id ")
            .nth(1)
            .and_then(|r| r.split(',').next())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or_else(|| panic!("no id in {l}"));
        assert!(
            (opts.port_first..=opts.port_last).contains(&id),
            "echo identifier {id} not from the gateway's range: {l}"
        );
    }

    let m = settle(&rig, |m| {
        nat_delta(
            &rig,
            &before,
            m,
            "packets_total",
            &[("direction", "out_to_source")],
        ) >= 7.0
    });
    for dir in [
        "in_from_source",
        "out_to_destination",
        "in_from_destination",
        "out_to_source",
    ] {
        let d = nat_delta(&rig, &before, &m, "packets_total", &[("direction", dir)]);
        assert!(
            d >= 7.0,
            "{dir} +{d} (2 UDP + 5 echo)\n{}",
            m.excerpt("flowgate_nat")
        );
    }
    assert!(nat_delta(&rig, &before, &m, "connections_established_total", &[]) >= 4.0);
}

// ---------------------------------------------------------------------------------------------
// 4. TTL expiry, traceroute and PMTU discovery across the NAT
// ---------------------------------------------------------------------------------------------

#[test]
fn ttl_exceeded_and_traceroute_through_nat() {
    let Some(_g) = setup("ttl_exceeded_and_traceroute_through_nat") else {
        return;
    };
    require_tool("traceroute");
    let rig = NatRig::start("nttl", &NatOpts::default());
    assert!(
        ping_until_reply(rig.a(), SERVER, 5),
        "no echo reply through the NAT"
    );

    // TTL 1: the appliance itself answers, from its inside address.
    let o = rig
        .a()
        .exec(&["ping", "-n", "-c", "1", "-W", "2", "-t", "1", SERVER], 8);
    assert!(
        o.stdout.contains("From 10.0.1.1") && o.stdout.contains("Time to live exceeded"),
        "{o}"
    );
    // TTL 2: the router's time exceeded, sent to the public IP, is translated back.
    let o = rig
        .a()
        .exec(&["ping", "-n", "-c", "1", "-W", "2", "-t", "2", SERVER], 8);
    assert!(
        o.stdout.contains("From 192.0.2.254") && o.stdout.contains("Time to live exceeded"),
        "the router's ICMP time exceeded did not reach the private host:\n{o}"
    );
    let o = rig
        .b()
        .exec(&["ping", "-n", "-c", "1", "-W", "2", "-t", "2", SERVER], 8);
    assert!(o.stdout.contains("From 192.0.2.254"), "{o}");

    for method in [&["-I"][..], &[][..]] {
        let mut args = vec!["traceroute", "-n", "-q", "1", "-w", "2", "-m", "6"];
        args.extend_from_slice(method);
        args.push(SERVER);
        let o = rig.a().exec(&args, 40);
        let hops: BTreeMap<u32, String> = o
            .stdout
            .lines()
            .skip(1)
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                let n = w.next()?.parse().ok()?;
                Some((n, w.next().unwrap_or("").to_string()))
            })
            .collect();
        assert_eq!(hops.get(&1).map(String::as_str), Some(INSIDE_GW), "{o}");
        assert_eq!(hops.get(&2).map(String::as_str), Some(ROUTER_OUT), "{o}");
        assert_eq!(hops.get(&3).map(String::as_str), Some(SERVER), "{o}");
        assert_eq!(hops.len(), 3, "{o}");
    }
    let m = settle(&rig, |m| {
        m.value(
            "flowgate_icmp_errors_sent_total",
            &[("type", "time_exceeded")],
        ) >= 3.0
    });
    assert!(
        m.value(
            "flowgate_icmp_errors_sent_total",
            &[("type", "time_exceeded")]
        ) >= 3.0,
        "{}",
        m.excerpt("flowgate_icmp")
    );
}

#[test]
fn pmtu_frag_needed_reaches_private_host() {
    let Some(_g) = setup("pmtu_frag_needed_reaches_private_host") else {
        return;
    };
    let rig = NatRig::start("npmtu", &NatOpts::default());
    rig.topo.set_far_mtu(1280);
    assert!(
        ping_until_reply(rig.a(), SERVER, 5),
        "no echo reply through the NAT"
    );
    let before = rig.app.metrics();
    // 1300 + 28 > 1280 with DF: the router answers frag-needed (mtu 1280) to the public IP,
    // the NAT translates the quoted echo back, and the host learns the path MTU.
    let o = rig.a().exec(
        &[
            "ping", "-n", "-c", "3", "-i", "0.5", "-W", "2", "-M", "do", "-s", "1300", SERVER,
        ],
        12,
    );
    let text = o.all();
    assert!(
        text.contains("mtu = 1280") || text.contains("mtu=1280"),
        "the frag-needed (mtu 1280) did not reach the private host:\n{o}"
    );
    let r = rig.a().must(&["ip", "route", "get", SERVER], 5);
    assert!(
        r.stdout.contains("mtu 1280"),
        "no cached path MTU on the private host:\n{r}"
    );
    // What fits the path still works.
    let o = rig.a().exec(
        &[
            "ping", "-n", "-c", "2", "-W", "2", "-M", "do", "-s", "1200", SERVER,
        ],
        8,
    );
    assert_eq!(ping_counts(&o.stdout), Some((2, 2)), "{o}");
    std::thread::sleep(Duration::from_millis(300));
    let m = rig.app.metrics();
    assert_eq!(
        drop_delta(&before, &m, "nat_icmp_error_no_mapping")
            + drop_delta(&before, &m, "nat_icmp_error_malformed"),
        0.0,
        "{}",
        m.excerpt("flowgate_packets_dropped")
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Idle timeout (RST on the next packet) and unsolicited inbound traffic
// ---------------------------------------------------------------------------------------------

/// An established TCP connection left idle past `tcp_established_s` (3 s; 6 s idle leaves a
/// margin for the timer wheel), then used again. Returns the rig, the metrics before and
/// after, and the client's output.
fn idle_timeout_scenario(prefix: &str) -> (NatRig, Metrics, Metrics, Out) {
    let opts = NatOpts {
        tcp_established_s: 3,
        tcp_transitory_s: 3,
        ..NatOpts::default()
    };
    let rig = NatRig::start(prefix, &opts);
    let dir = TempDir::new(prefix);
    let _srv = tcp_echo_server(&rig, &dir, &[8080]);
    let before = rig.app.metrics();
    let o = python_in(rig.a(), TCP_IDLE_CLIENT, &[SERVER, "8080", "6"], 30);
    let m = rig.app.wait_metrics(Duration::from_secs(3), |m| {
        rig.nat(
            m,
            "packets_dropped_total",
            &[("reason", "nat_idle_timeout_rst")],
        ) >= 1.0
    });
    (rig, before, m, o)
}

#[test]
fn idle_tcp_connection_gets_rst_after_timeout() {
    let Some(_g) = setup("idle_tcp_connection_gets_rst_after_timeout") else {
        return;
    };
    let (rig, before, m, o) = idle_timeout_scenario("nidle");
    assert!(o.stdout.contains("first=b'hello'"), "{o}");
    assert!(
        o.stdout.contains("RESET"),
        "after the idle timeout the next segment should be answered by a RST:\n{o}"
    );
    assert!(
        nat_delta(&rig, &before, &m, "idle_timeouts_total", &[]) >= 1.0,
        "{}",
        m.excerpt("flowgate_nat")
    );
    assert!(
        nat_delta(
            &rig,
            &before,
            &m,
            "packets_dropped_total",
            &[("reason", "nat_idle_timeout_rst")]
        ) >= 1.0,
        "{}",
        m.excerpt("flowgate_nat")
    );
    assert_eq!(
        rig.nat(&m, "active_connections", &[]),
        0.0,
        "{}",
        m.excerpt("flowgate_nat")
    );
}

/// Regression: the global `flowgate_packets_dropped_total{reason="nat_idle_timeout_rst"}`
/// was exported but never incremented (the gateway counted it, but the pipeline only counted
/// `Drop` verdicts globally, not the `Respond` that turns the packet into the RST); it must
/// match the per-gateway count.
#[test]
fn idle_timeout_rst_is_counted_in_global_drops() {
    let Some(_g) = setup("idle_timeout_rst_is_counted_in_global_drops") else {
        return;
    };
    let (rig, before, _, o) = idle_timeout_scenario("nidleg");
    assert!(o.stdout.contains("RESET"), "{o}");
    let m = rig.app.wait_metrics(Duration::from_secs(3), |x| {
        x.dropped("nat_idle_timeout_rst") > before.dropped("nat_idle_timeout_rst")
    });
    assert_eq!(
        drop_delta(&before, &m, "nat_idle_timeout_rst"),
        nat_delta(
            &rig,
            &before,
            &m,
            "packets_dropped_total",
            &[("reason", "nat_idle_timeout_rst")]
        ),
        "global and per-gateway counts differ\n{}\n{}",
        m.excerpt("flowgate_packets_dropped_total{reason=\"nat_"),
        m.excerpt("flowgate_nat_packets_dropped")
    );
    assert!(drop_delta(&before, &m, "nat_idle_timeout_rst") >= 1.0);
}

#[test]
fn unsolicited_inbound_is_dropped_and_counted() {
    let Some(_g) = setup("unsolicited_inbound_is_dropped_and_counted") else {
        return;
    };
    let rig = NatRig::start("nunsol", &NatOpts::default());
    // A mapping exists (so the public IPs are "live"), but not for what the server sends.
    assert!(ping_until_reply(rig.a(), SERVER, 5));
    let before = rig.app.metrics();
    let cap_a = Capture::start(rig.a(), &rig.topo.a_if(), "tcp or udp");
    let cap_b = Capture::start(rig.b(), &rig.topo.b_if(), "tcp or udp");
    let probe = r#"
import socket, sys
s = socket.socket()
s.settimeout(2.5)
try:
    s.connect((sys.argv[1], 12345))
    print("CONNECTED")
except socket.timeout:
    print("TIMEOUT")
except OSError as e:
    print("ERR %s" % e)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.sendto(b"unsolicited", (sys.argv[2], 5353))
"#;
    let o = python_in(rig.server(), probe, &[PUBLIC_IPS[0], PUBLIC_IPS[1]], 10);
    assert!(
        o.stdout.contains("TIMEOUT"),
        "the SYN must get no answer at all: {o}"
    );
    // Echo requests to a public IP are unsolicited too (no answer, not forwarded).
    let p = ping(rig.router(), PUBLIC_IPS[1], 2, &[]);
    assert_eq!(ping_counts(&p.stdout).map(|c| c.1), Some(0), "{p}");

    let m = rig.wait_dropped("nat_no_mapping", before.dropped("nat_no_mapping") + 4.0, 3);
    let d = drop_delta(&before, &m, "nat_no_mapping");
    // SYN + at least one retransmission, the datagram, two echo requests.
    assert!(
        d >= 4.0,
        "nat_no_mapping +{d}\n{}",
        m.excerpt("flowgate_packets_dropped")
    );
    assert!(
        nat_delta(
            &rig,
            &before,
            &m,
            "packets_dropped_total",
            &[("reason", "nat_no_mapping")]
        ) >= 4.0,
        "{}",
        m.excerpt("flowgate_nat_packets_dropped")
    );
    for (cap, who) in [(cap_a, "a"), (cap_b, "b")] {
        let lines = cap.finish();
        assert!(
            lines.is_empty(),
            "unsolicited traffic reached private host {who}: {lines:#?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 6. Fragments: UDP forwarded both ways, TCP/ICMP dropped in aws mode
// ---------------------------------------------------------------------------------------------

#[test]
fn udp_fragments_are_delivered_whole() {
    let Some(_g) = setup("udp_fragments_are_delivered_whole") else {
        return;
    };
    // net_tap: the af_packet PMD's fanout group has the kernel reassemble fragments before
    // the appliance sees them (see `NatTopology::new_tap`), so the NAT's fragment path would
    // never run.
    let rig = NatRig::start_tap("nfragu", &NatOpts::default());
    let dir = TempDir::new("nfragu");
    let srv = py_spawn(
        rig.server(),
        UDP_LEN_SERVER,
        &[SERVER, "9998"],
        &dir.join("udp.log"),
    );
    rig.server()
        .wait_listen("udp", 9998, Duration::from_secs(10));
    let echo = udp_echo_server(rig.server(), SERVER, 9999, &dir.join("echo.log"));
    let before = rig.app.metrics();

    // DF clear (the datagrams exceed the 1500 MTU): the kernel sends 3 fragments each
    // (1480 + 1480 + rest).
    for len in ["3000", "4000"] {
        let o = python_in(rig.a(), UDP_LEN_CLIENT, &[SERVER, "9998", len], 15);
        assert!(o.ok() && o.stdout.trim() == format!("len={len}"), "{o}");
    }
    let log = srv.log_text();
    assert!(
        log.contains("len=3000") && log.contains("len=4000") && !log.contains("from 10."),
        "{log}"
    );

    // Both directions fragmented: the echo of 3000 bytes comes back as 3 fragments.
    let msg: String = (0..3000).map(|i| (b'a' + (i % 26) as u8) as char).collect();
    let o = udp_request(rig.a(), SERVER, 9999, &msg);
    assert!(
        o.ok() && o.stdout == format!("echo:{msg}"),
        "fragmented echo not reassembled: exit {:?}, {} bytes",
        o.code(),
        o.stdout.len()
    );
    assert!(
        echo.log_text().contains("from 192.0.2.1"),
        "{}",
        echo.log_text()
    );

    // Every fragment crossed the NAT as a packet of its own: 3 + 3 + 3 out; back, the two
    // short answers and the 3 fragments of the echo.
    let m = settle(&rig, |m| {
        nat_delta(
            &rig,
            &before,
            m,
            "packets_total",
            &[("direction", "out_to_source")],
        ) >= 5.0
    });
    let out = nat_delta(
        &rig,
        &before,
        &m,
        "packets_total",
        &[("direction", "out_to_destination")],
    );
    let back = nat_delta(
        &rig,
        &before,
        &m,
        "packets_total",
        &[("direction", "out_to_source")],
    );
    assert!(
        out >= 9.0 && back >= 5.0,
        "out {out} back {back}\n{}",
        m.excerpt("flowgate_nat")
    );
    assert_eq!(drop_delta(&before, &m, "nat_fragment_no_flow"), 0.0);
    assert_eq!(drop_delta(&before, &m, "nat_fragment_not_allowed"), 0.0);
}

/// Per socket: a small datagram (whole), then a 3000-byte one (fragmented both ways), then
/// another small one; checks every echo. Prints `sock <i> ok` or `sock <i> FAIL <why>`,
/// then `ok=<n>`.
const UDP_MIXED_CLIENT: &str = r#"
import socket, sys
srv, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
big = bytes((i * 7) % 251 for i in range(3000))
good = 0
for i in range(n):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(1.0)
    why = None
    for msg in (b"small-%d" % i, big, b"again-%d" % i):
        for attempt in range(4):
            s.sendto(msg, (srv, port))
            try:
                d, a = s.recvfrom(65535)
                break
            except socket.timeout:
                d = None
        if d != b"echo:" + msg:
            why = "len %d: got %r" % (len(msg), None if d is None else len(d))
            break
    print("sock %d %s" % (i, "ok" if why is None else "FAIL " + why), flush=True)
    good += why is None
    s.close()
print("ok=%d" % good, flush=True)
"#;

/// Issue 8 item 6: with two workers, UDP fragments cross the NAT both ways. On a
/// multi-queue tap the kernel spreads fragments by addresses and whole datagrams by
/// 4-tuple, so fragments and whole datagrams of one socket reach different workers:
/// every socket still gets one mapping (the server sees one source port per socket) and
/// no later fragment is dropped on a worker that does not own its flow.
#[test]
fn udp_fragments_with_two_workers() {
    let Some(_g) = setup("udp_fragments_with_two_workers") else {
        return;
    };
    let opts = NatOpts {
        workers: vec![1, 2],
        queues: 2,
        ..NatOpts::default()
    };
    let rig = NatRig::start_tap_with("nfrag2", &opts, &["--lcores", "0@0,1@1,2@1"]);
    let dir = TempDir::new("nfrag2");
    let echo = udp_echo_server(rig.server(), SERVER, 9999, &dir.join("echo.log"));
    let before = rig.app.metrics();
    let n = 24;
    let o = python_in(
        rig.a(),
        UDP_MIXED_CLIENT,
        &[SERVER, "9999", &n.to_string()],
        150,
    );
    assert!(o.ok() && o.stdout.contains(&format!("ok={n}")), "{o}");
    // One public source port per socket: small-i, the big one and again-i from one port.
    let log = echo.log_text();
    let mut port_of: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut current = String::new();
    for line in log.lines().filter(|l| l.starts_with("from ")) {
        let src = line.split_whitespace().nth(1).unwrap_or("").to_string();
        assert!(src.starts_with("192.0.2."), "untranslated source: {line}");
        if let Some(i) = line.find("b'small-") {
            current = line[i + 8..].trim_end_matches('\'').to_string();
        }
        port_of.entry(current.clone()).or_default().insert(src);
    }
    for (sock, srcs) in &port_of {
        assert_eq!(
            srcs.len(),
            1,
            "socket {sock} got several mappings: {srcs:?}"
        );
    }
    let m = settle(&rig, |m| {
        nat_delta(
            &rig,
            &before,
            m,
            "packets_total",
            &[("direction", "out_to_source")],
        ) >= (n * 4) as f64
    });
    assert_eq!(
        drop_delta(&before, &m, "nat_fragment_no_flow"),
        0.0,
        "{}",
        m.excerpt("flowgate_nat")
    );
    let handed = m.value("flowgate_handoff_sent_total", &[])
        - before.value("flowgate_handoff_sent_total", &[]);
    println!("handoffs: {handed}");
}

/// Bulk sender: on each connection sends argv[3] MB of a deterministic pattern in 64 KiB
/// chunks, pausing argv[4] s between chunks; logs `ACCEPT <ip> <port>`.
const TCP_BULK_SERVER: &str = r#"
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(8)
print("listening", flush=True)
mb, pause = int(sys.argv[3]), float(sys.argv[4])
chunk = bytes((i * 31 + 7) % 256 for i in range(65536))
while True:
    c, a = s.accept()
    print("ACCEPT %s %d" % a, flush=True)
    try:
        for i in range(mb * 16):
            c.sendall(chunk)
            time.sleep(pause)
        c.shutdown(socket.SHUT_WR)
        c.recv(1)
    except OSError as e:
        print("ERR %s" % e, flush=True)
    c.close()
"#;

/// Receives everything from argv[1]:argv[2]; prints bytes=, sha_ok= (against the pattern).
const TCP_BULK_CLIENT: &str = r#"
import hashlib, socket, sys
mb = int(sys.argv[3])
chunk = bytes((i * 31 + 7) % 256 for i in range(65536))
want = hashlib.sha256(chunk * (mb * 16)).hexdigest()
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=20)
h, n = hashlib.sha256(), 0
try:
    while True:
        d = s.recv(1 << 20)
        if not d:
            break
        h.update(d)
        n += len(d)
except OSError as e:
    print("error=%s" % e, flush=True)
print("bytes=%d" % n)
print("sha_ok=%s" % (h.hexdigest() == want), flush=True)
"#;

/// scapy: spoofed segments "from" argv[3]:argv[4] (the server) to the public endpoint
/// argv[5]:argv[6], sent on argv[1] to the next hop MAC argv[2]: RSTs, SYNs, SYN-ACKs
/// and data at random sequence numbers, and ACKs of data never sent. Prints the count.
const SCAPY_TCP_SPOOF: &str = r#"
import sys, random
from scapy.all import Ether, IP, TCP, Raw, sendp, conf
conf.verb = 0
iface, mac, src, sport, dst, dport = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], int(sys.argv[6])
E = lambda: Ether(dst=mac) / IP(src=src, dst=dst)
r = lambda: random.randint(0, 2**32 - 1)
pkts = []
pkts += [E() / TCP(sport=sport, dport=dport, flags="R", seq=r()) for _ in range(40)]
pkts += [E() / TCP(sport=sport, dport=dport, flags="RA", seq=r(), ack=r()) for _ in range(40)]
pkts += [E() / TCP(sport=sport, dport=dport, flags="S", seq=r()) for _ in range(20)]
pkts += [E() / TCP(sport=sport, dport=dport, flags="SA", seq=r(), ack=r()) for _ in range(20)]
pkts += [E() / TCP(sport=sport, dport=dport, flags="PA", seq=r(), ack=r()) / Raw(b"evil" * 100) for _ in range(40)]
random.shuffle(pkts)
for i in range(0, len(pkts), 20):
    sendp(pkts[i:i + 20], iface=iface, inter=0.01)
print(len(pkts), flush=True)
"#;

/// Issue 8 item 4: while a real TCP transfer runs through the NAT, spoofed RSTs, SYNs,
/// SYN-ACKs and out-of-window segments "from the server" hit the flow's public endpoint;
/// the NAT drops them (counted as `nat_tcp_out_of_window`) and the transfer completes
/// byte-exact.
#[test]
fn spoofed_segments_do_not_break_a_running_transfer() {
    let Some(_g) = setup("spoofed_segments_do_not_break_a_running_transfer") else {
        return;
    };
    let rig = NatRig::start("nspoof", &NatOpts::default());
    let dir = TempDir::new("nspoof");
    let mb = "6";
    let srv = py_spawn(
        rig.server(),
        TCP_BULK_SERVER,
        &[SERVER, "8090", mb, "0.1"],
        &dir.join("srv.log"),
    );
    rig.server()
        .wait_listen("tcp", 8090, Duration::from_secs(10));
    let before = rig.app.metrics();
    let client = py_spawn(
        rig.a(),
        TCP_BULK_CLIENT,
        &[SERVER, "8090", mb],
        &dir.join("client.log"),
    );
    assert!(wait_log(&srv, "ACCEPT", 20), "{}", srv.log_text());
    let log = srv.log_text();
    let acc = log.lines().find(|l| l.starts_with("ACCEPT")).unwrap();
    let f: Vec<&str> = acc.split_whitespace().collect();
    let (pub_ip, pub_port) = (f[1], f[2]);
    assert!(is_public(pub_ip), "{acc}");
    let mac = rig.topo.router.mac_of(&rig.topo.router_server_if());
    let o = python_in(
        rig.server(),
        SCAPY_TCP_SPOOF,
        &[
            &rig.topo.server_if(),
            &mac,
            SERVER,
            "8090",
            pub_ip,
            pub_port,
        ],
        60,
    );
    assert!(o.ok(), "{o}");
    let sent: f64 = o.stdout.trim().parse().unwrap_or(0.0);
    assert!(
        !client.log_text().contains("sha_ok="),
        "the transfer ended before the spoofing did; make it slower"
    );
    assert!(
        wait_log(&client, "sha_ok=", 60),
        "transfer did not finish: {}",
        client.log_text()
    );
    let out = client.log_text();
    let want = format!("bytes={}", 6 * 1024 * 1024);
    assert!(
        out.contains(&want) && out.contains("sha_ok=True"),
        "transfer broken by spoofed segments:\n{out}\n{}",
        srv.log_text()
    );
    let m = settle(&rig, |m| {
        drop_delta(&before, m, "nat_tcp_out_of_window") >= sent * 0.8
    });
    let dropped = drop_delta(&before, &m, "nat_tcp_out_of_window");
    // Random sequence numbers: a few may fall inside the (large) window and be forwarded
    // to the host, which answers them with a challenge ACK (RFC 5961).
    assert!(
        dropped >= sent * 0.8,
        "only {dropped} of {sent} spoofed segments dropped\n{}",
        m.excerpt("flowgate_nat")
    );
}

/// Issue 8 item 12: a churn of short HTTP connections (the server closes first, so it
/// holds each one in TIME_WAIT for 60 s) to one server with a 5 s transitory timeout:
/// mappings expire long before the server forgets the connections, yet no public port is
/// handed out again toward the server while it may still be in TIME_WAIT — zero failures.
#[test]
fn short_connection_churn_with_short_transitory_timeout_never_hits_time_wait() {
    let Some(_g) =
        setup("short_connection_churn_with_short_transitory_timeout_never_hits_time_wait")
    else {
        return;
    };
    let opts = NatOpts {
        tcp_transitory_s: 5,
        ..NatOpts::default()
    };
    let rig = NatRig::start("ntw", &opts);
    let dir = TempDir::new("ntw");
    let _srv = py_spawn(
        rig.server(),
        HTTP11_SERVER,
        &[SERVER, "8080"],
        &dir.join("http.log"),
    );
    rig.server()
        .wait_listen("tcp", 8080, Duration::from_secs(10));
    let before = rig.app.metrics();
    let url = format!("http://{SERVER}:8080");
    let n = 1500;
    let bg = py_spawn(
        rig.b(),
        HTTP_MANY_CLIENT,
        &[&url, &n.to_string()],
        &dir.join("client-b.log"),
    );
    let o = python_in(rig.a(), HTTP_MANY_CLIENT, &[&url, &n.to_string()], 200);
    assert!(wait_log(&bg, "fail=", 200), "{}", bg.log_text());
    for (who, out) in [("a", o.stdout.clone()), ("b", bg.log_text())] {
        assert_eq!(kv_num(&out, "ok"), n, "host {who}: {out}");
        assert_eq!(kv(&out, "fail"), Some(""), "host {who}: {out}");
    }
    let m = settle(&rig, |_| true);
    // An event of the gateway's counters (not a drop of the pipeline).
    let reuse = |m: &Metrics| {
        m.value(
            "flowgate_nat_packets_dropped_total",
            &[("reason", "nat_time_wait_reuse")],
        )
    };
    assert!(m.has("flowgate_nat_packets_dropped_total"));
    assert_eq!(reuse(&m) - reuse(&before), 0.0);
    assert_eq!(drop_delta(&before, &m, "nat_tcp_out_of_window"), 0.0);
    assert_eq!(drop_delta(&before, &m, "nat_port_exhausted"), 0.0);
}

#[test]
fn tcp_and_icmp_fragments_are_dropped_in_aws_mode() {
    let Some(_g) = setup("tcp_and_icmp_fragments_are_dropped_in_aws_mode") else {
        return;
    };
    // net_tap, so that the fragments reach the appliance as fragments (see above).
    let rig = NatRig::start_tap("nfragt", &NatOpts::default());
    let dir = TempDir::new("nfragt");
    let _srv = tcp_echo_server(&rig, &dir, &[8080]);
    let cap = Capture::start(rig.server(), &rig.topo.server_if(), "tcp or icmp");
    let before = rig.app.metrics();
    let o = python_in(
        rig.a(),
        SCAPY_TCP_FRAGMENTS,
        &[&rig.topo.a_if(), &rig.topo.inside_mac(), SERVER, "8080"],
        60,
    );
    assert!(o.ok(), "{o}");
    let nfrags: f64 = o.stdout.trim().parse().unwrap_or(0.0);
    assert!(nfrags >= 3.0, "{o}");
    let m = rig.wait_dropped(
        "nat_fragment_not_allowed",
        before.dropped("nat_fragment_not_allowed") + nfrags,
        3,
    );
    assert_eq!(
        drop_delta(&before, &m, "nat_fragment_not_allowed"),
        nfrags,
        "every TCP fragment dropped and counted\n{}",
        m.excerpt("flowgate_packets_dropped")
    );
    // ICMP echo of 3000 bytes: fragmented by the host, dropped by the NAT.
    let p = ping(rig.a(), SERVER, 2, &["-s", "3000"]);
    assert_eq!(ping_counts(&p.stdout).map(|c| c.1), Some(0), "{p}");
    let m2 = rig.wait_dropped(
        "nat_fragment_not_allowed",
        m.dropped("nat_fragment_not_allowed") + 6.0,
        3,
    );
    assert!(
        drop_delta(&m, &m2, "nat_fragment_not_allowed") >= 6.0,
        "{}",
        m2.excerpt("flowgate_packets_dropped")
    );
    let lines = cap.finish();
    assert!(
        lines.iter().all(|l| !l.contains("192.0.2.1")),
        "a TCP or ICMP fragment crossed the NAT: {lines:#?}"
    );
    assert_eq!(rig.nat(&m2, "active_connections", &[]), 0.0);
}

// ---------------------------------------------------------------------------------------------
// 7. Two worker lcores: flows on both, return traffic handed to the owner
// ---------------------------------------------------------------------------------------------

#[test]
fn two_workers_spread_flows_and_hand_off_return_traffic() {
    let Some(_g) = setup("two_workers_spread_flows_and_hand_off_return_traffic") else {
        return;
    };
    let opts = NatOpts {
        workers: vec![1, 2],
        queues: 2,
        ..NatOpts::default()
    };
    // Both workers on cpu 1 (a 2-core machine).
    let rig = NatRig::start_with("nmc", &opts, &["--lcores", "0@0,1@1,2@1"]);
    let dir = TempDir::new("nmc");
    let _srv = py_spawn(
        rig.server(),
        HTTP11_SERVER,
        &[SERVER, "8080"],
        &dir.join("http.log"),
    );
    rig.server()
        .wait_listen("tcp", 8080, Duration::from_secs(10));
    let before = rig.app.metrics();
    let url = format!("http://{SERVER}:8080");
    let n = 30;
    let bg = py_spawn(
        rig.b(),
        HTTP_MANY_CLIENT,
        &[&url, &n.to_string()],
        &dir.join("client-b.log"),
    );
    let o = python_in(rig.a(), HTTP_MANY_CLIENT, &[&url, &n.to_string()], 150);
    let mut bg = bg;
    bg.wait_timeout(Duration::from_secs(150));
    let ob = bg.log_text();
    assert_eq!(kv_num(&o.stdout, "ok"), n as i64, "host a: {o}");
    assert_eq!(kv_num(&ob, "ok"), n as i64, "host b: {ob}");
    assert_eq!(kv(&o.stdout, "fail"), Some(""), "{o}");
    assert_eq!(kv(&ob, "fail"), Some(""), "{ob}");

    let m = settle(&rig, |m| {
        m.value("flowgate_handoff_sent_total", &[])
            == m.value("flowgate_handoff_received_total", &[])
            && nat_delta(&rig, &before, m, "connections_established_total", &[]) >= 2.0 * n as f64
    });
    let rx = |m: &Metrics, w: &str| m.value("flowgate_worker_rx_packets_total", &[("worker", w)]);
    let (w0, w1) = (
        rx(&m, "0") - rx(&before, "0"),
        rx(&m, "1") - rx(&before, "1"),
    );
    assert!(
        w0 > 50.0 && w1 > 50.0,
        "both workers should take packets: worker 0 +{w0}, worker 1 +{w1}\n{}",
        m.excerpt("flowgate_worker")
    );
    let sent = m.value("flowgate_handoff_sent_total", &[]);
    let recv = m.value("flowgate_handoff_received_total", &[]);
    println!("worker rx: 0 +{w0}, 1 +{w1}; handoff sent {sent} received {recv}");
    assert_eq!(sent, recv, "handoff sent {sent} != received {recv}");
    // af_packet fanout spreads by the kernel's flow hash, which knows nothing of the NAT:
    // for ~half of the 60 flows the return traffic lands on the worker that does not own
    // the port, and must be handed over.
    assert!(
        sent > 0.0,
        "no handoff observed over {} flows\n{}",
        2 * n,
        m.excerpt("flowgate_handoff")
    );
    assert_eq!(m.dropped("handoff_full"), 0.0);
    let flows: Vec<f64> = m
        .matching("flowgate_nat_flows", &[])
        .map(|s| s.value)
        .collect();
    assert_eq!(flows.len(), 2, "{}", m.excerpt("flowgate_nat_flows"));
    let est = nat_delta(&rig, &before, &m, "connections_established_total", &[]);
    assert!(
        est >= 2.0 * n as f64,
        "established +{est}\n{}",
        m.excerpt("flowgate_nat")
    );
    assert_eq!(rig.nat(&m, "port_allocation_errors_total", &[]), 0.0);
}

// ---------------------------------------------------------------------------------------------
// 8. Hostile input: ICMP battery, SYN flood until the table is full
// ---------------------------------------------------------------------------------------------

#[test]
fn hostile_input_and_syn_flood_leave_established_flows_working() {
    let Some(_g) = setup("hostile_input_and_syn_flood_leave_established_flows_working") else {
        return;
    };
    let opts = NatOpts {
        port_first: 1024,
        port_last: 65535,
        flows_per_core: 256,
        tcp_established_s: 60,
        tcp_transitory_s: 2,
        ..NatOpts::default()
    };
    let mut rig = NatRig::start("nhost", &opts);
    let dir = TempDir::new("nhost");
    let _srv = py_spawn(
        rig.server(),
        HTTP11_SERVER,
        &[SERVER, "8080"],
        &dir.join("http.log"),
    );
    rig.server()
        .wait_listen("tcp", 8080, Duration::from_secs(10));
    // An established keep-alive HTTP connection from host b, before the storm.
    let trigger = dir.join("go");
    let trigger_s = trigger.to_string_lossy().into_owned();
    let mut held = py_spawn(
        rig.b(),
        HTTP_HOLD_CLIENT,
        &[SERVER, "8080", &trigger_s],
        &dir.join("held.log"),
    );
    assert!(wait_log(&held, "ready", 15), "{}", held.log_text());
    assert!(
        held.log_text().contains("before 200 ok 192.0.2.1"),
        "{}",
        held.log_text()
    );
    std::thread::sleep(Duration::from_millis(500));
    let base = rig.app.metrics();
    assert!(base.has(MBUFS_IN_USE), "{MBUFS_IN_USE} not exported");
    let mbufs_base = base.value(MBUFS_IN_USE, &[]);

    // The ICMP battery from the server side.
    let router_mac = rig.router().mac_of(&rig.topo.router_server_if());
    let o = python_in(
        rig.server(),
        SCAPY_HOSTILE_OUTSIDE,
        &[
            &rig.topo.server_if(),
            &router_mac,
            PUBLIC_IPS[0],
            PUBLIC_IPS[1],
        ],
        120,
    );
    assert!(o.ok(), "{o}");
    let sent: BTreeMap<String, f64> = o
        .stdout
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect();
    let total_sent: f64 = sent.values().sum();
    let m = rig.app.wait_metrics(Duration::from_secs(5), |m| {
        let d: f64 = m.drops().values().sum::<f64>() - base.drops().values().sum::<f64>();
        d >= total_sent
    });
    let drops_now = m.drops();
    let base_drops = base.drops();
    let delta = |r: &str| drops_now.get(r).unwrap_or(&0.0) - base_drops.get(r).unwrap_or(&0.0);
    let all_delta: f64 = drops_now.values().sum::<f64>() - base_drops.values().sum::<f64>();
    let report = format!(
        "sent {sent:?}\ndrops delta {:?}",
        drops_now
            .iter()
            .map(|(k, v)| (k.clone(), v - base_drops.get(k).unwrap_or(&0.0)))
            .filter(|(_, v)| *v != 0.0)
            .collect::<BTreeMap<_, _>>()
    );
    println!("{report}");
    assert_eq!(
        all_delta, total_sent,
        "every hostile packet dropped and counted\n{report}"
    );
    assert_eq!(
        delta("nat_icmp_error_no_mapping"),
        sent["no_mapping"],
        "{report}"
    );
    assert_eq!(
        delta("nat_icmp_error_malformed") + delta("icmp_bad_checksum") + delta("icmp_truncated"),
        sent["bad_inner_csum"] + sent["bad_outer_csum"] + sent["truncated"],
        "{report}"
    );
    assert!(
        delta("nat_icmp_error_malformed") >= sent["bad_inner_csum"],
        "{report}"
    );
    assert_eq!(
        delta("tcp_truncated") + delta("udp_truncated") + delta("udp_bad_length"),
        sent["truncated_l4"],
        "{report}"
    );

    // The SYN flood from host a: random source ports until the flow table is full.
    let flood = 3000;
    let o = python_in(
        rig.a(),
        SCAPY_SYN_FLOOD,
        &[
            &rig.topo.a_if(),
            &rig.topo.inside_mac(),
            SERVER,
            "8080",
            &flood.to_string(),
        ],
        180,
    );
    assert!(o.ok(), "{o}");
    let m = rig.app.wait_metrics(Duration::from_secs(3), |m| {
        m.dropped("nat_table_full") + m.dropped("nat_port_exhausted") > 0.0
    });
    let full =
        drop_delta(&base, &m, "nat_table_full") + drop_delta(&base, &m, "nat_port_exhausted");
    assert!(
        full >= (flood - 2 * 256) as f64 * 0.5,
        "a 3000-SYN flood into a 256-flow table: only {full} refused\n{}",
        m.excerpt("flowgate_packets_dropped")
    );
    let flows = m.value("flowgate_nat_flows", &[]);
    println!(
        "SYN flood of {flood}: refused {full} (table_full {}, port_exhausted {}), flows {flows}",
        drop_delta(&base, &m, "nat_table_full"),
        drop_delta(&base, &m, "nat_port_exhausted")
    );
    assert!(flows <= 256.0, "flows {flows} above the table capacity");
    assert!(rig.app.running(), "the appliance died");

    // The established connection still works.
    fs::write(&trigger, b"go").unwrap();
    held.wait_timeout(Duration::from_secs(15));
    let hl = held.log_text();
    assert!(
        hl.contains("after 200 ok 192.0.2.1") && hl.contains("same_socket=True"),
        "the established connection broke:\n{hl}"
    );
    // Server side: both requests came from the same public ip:port.
    let before_line = hl.lines().find(|l| l.starts_with("before")).unwrap_or("");
    let after_line = hl.lines().find(|l| l.starts_with("after")).unwrap_or("");
    let peer = |l: &str| {
        l.split_whitespace()
            .skip(3)
            .take(2)
            .collect::<Vec<_>>()
            .join(":")
    };
    assert_eq!(peer(before_line), peer(after_line), "{hl}");

    // The flood's half-open flows expire (transitory 2 s): new connections work again.
    let m = rig.app.wait_metrics(Duration::from_secs(15), |m| {
        m.value("flowgate_nat_flows", &[]) < 64.0
    });
    assert!(
        m.value("flowgate_nat_flows", &[]) < 64.0,
        "{}",
        m.excerpt("flowgate_nat_flows")
    );
    let o = python_in(
        rig.a(),
        HTTP_MANY_CLIENT,
        &[&format!("http://{SERVER}:8080"), "3"],
        30,
    );
    assert_eq!(kv_num(&o.stdout, "ok"), 3, "{o}");

    // No mbuf leaked.
    let t0 = Instant::now();
    let m = rig.app.wait_metrics(Duration::from_secs(10), |m| {
        m.value(MBUFS_IN_USE, &[]) <= mbufs_base
    });
    let now = m.value(MBUFS_IN_USE, &[]);
    println!("mbufs in use: baseline {mbufs_base}, now {now}");
    assert!(
        now <= mbufs_base,
        "mbufs in use {now} did not return to the baseline {mbufs_base} within {:?}",
        t0.elapsed()
    );
    assert!(rig.app.running(), "the appliance died");
}

// ---------------------------------------------------------------------------------------------
// 9. rfc4787 mode: endpoint-independent mapping, address-dependent filtering, hairpinning
// ---------------------------------------------------------------------------------------------

fn rfc4787_opts() -> NatOpts {
    NatOpts {
        mode: "rfc4787",
        ..NatOpts::default()
    }
}

/// (ip, port) the UDP echo server logged for payload `tag`.
fn udp_peer_of(log: &str, tag: &str) -> Option<(String, u16)> {
    log.lines().find_map(|l| {
        if !l.contains(&format!("'{tag}'")) {
            return None;
        }
        let a = l.strip_prefix("from ")?.split_whitespace().next()?;
        let (ip, port) = a.split_once(':')?;
        Some((ip.to_string(), port.parse().ok()?))
    })
}

#[test]
fn rfc4787_one_socket_keeps_one_public_port() {
    let Some(_g) = setup("rfc4787_one_socket_keeps_one_public_port") else {
        return;
    };
    let rig = NatRig::start("nrfcm", &rfc4787_opts());
    let dir = TempDir::new("nrfcm");
    let s1 = udp_echo_server(rig.server(), SERVER, 9001, &dir.join("s1.log"));
    let s2 = udp_echo_server(rig.server(), SERVER, 9002, &dir.join("s2.log"));
    let s3 = udp_echo_server(rig.server(), SERVER2, 9001, &dir.join("s3.log"));
    let dests = format!("{SERVER}:9001,{SERVER}:9002,{SERVER2}:9001");
    let mut client = py_spawn(
        rig.a(),
        UDP_EIM_CLIENT,
        &[HOST_A, "40000", &dests, "eim", "6"],
        &dir.join("client.log"),
    );
    assert!(wait_log(&client, "MAPPED", 20), "{}", client.log_text());
    let peers: Vec<(String, u16)> = [&s1, &s2, &s3]
        .iter()
        .map(|s| {
            udp_peer_of(&s.log_text(), "eim")
                .unwrap_or_else(|| panic!("no datagram at a server: {}", s.log_text()))
        })
        .collect();
    assert!(is_public(&peers[0].0), "{peers:?}");
    assert!(
        peers.iter().all(|p| *p == peers[0]),
        "endpoint-independent mapping: one inside socket, one public endpoint toward every \
         destination, got {peers:?}"
    );
    // Address-dependent filtering: the server's address may answer from another port;
    // the router (never contacted) may not.
    let before = rig.app.metrics();
    let send_from = r#"
import socket, sys
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.bind((sys.argv[1], int(sys.argv[2])))
for i in range(3):
    u.sendto(sys.argv[5].encode(), (sys.argv[3], int(sys.argv[4])))
"#;
    let (pip, pport) = (&peers[0].0, peers[0].1.to_string());
    python_in(
        rig.server(),
        send_from,
        &[SERVER, "9003", pip, &pport, "same-addr"],
        10,
    )
    .expect_ok("send from the server");
    python_in(
        rig.router(),
        send_from,
        &[ROUTER_OUT, "9004", pip, &pport, "other-addr"],
        10,
    )
    .expect_ok("send from the router");
    client.wait_timeout(Duration::from_secs(15));
    let log = client.log_text();
    assert!(
        log.contains(&format!("GOT {SERVER} 9003 same-addr")),
        "a known remote address, new port: should pass address-dependent filtering\n{log}"
    );
    assert!(
        !log.contains("other-addr"),
        "an address never contacted must be filtered\n{log}"
    );
    let m = settle(&rig, |m| drop_delta(&before, m, "nat_filtered") >= 3.0);
    assert!(
        drop_delta(&before, &m, "nat_filtered") >= 3.0,
        "{}",
        m.excerpt("flowgate_packets_dropped")
    );
}

#[test]
fn rfc4787_hairpinning_between_private_hosts() {
    let Some(_g) = setup("rfc4787_hairpinning_between_private_hosts") else {
        return;
    };
    let rig = NatRig::start("nrfch", &rfc4787_opts());
    let dir = TempDir::new("nrfch");
    let srv = udp_echo_server(rig.server(), SERVER, 9001, &dir.join("srv.log"));
    let server_ep = format!("{SERVER}:9001");
    let peer_a = dir.join("peer-for-a");
    let peer_b = dir.join("peer-for-b");
    let mut pa = py_spawn(
        rig.a(),
        UDP_HAIRPIN_PEER,
        &[
            HOST_A,
            "7001",
            &server_ep,
            "from-a",
            &peer_a.to_string_lossy(),
        ],
        &dir.join("a.log"),
    );
    let mut pb = py_spawn(
        rig.b(),
        UDP_HAIRPIN_PEER,
        &[
            HOST_B,
            "7002",
            &server_ep,
            "from-b",
            &peer_b.to_string_lossy(),
        ],
        &dir.join("b.log"),
    );
    assert!(wait_log(&pa, "MAPPED", 20), "{}", pa.log_text());
    assert!(wait_log(&pb, "MAPPED", 20), "{}", pb.log_text());
    let log = srv.log_text();
    let ea = udp_peer_of(&log, "from-a").unwrap_or_else(|| panic!("{log}"));
    let eb = udp_peer_of(&log, "from-b").unwrap_or_else(|| panic!("{log}"));
    assert!(is_public(&ea.0) && is_public(&eb.0), "{log}");
    // Each peer sends to the other's public endpoint (through the gateway and back in).
    fs::write(&peer_a, format!("{} {}", eb.0, eb.1)).unwrap();
    fs::write(&peer_b, format!("{} {}", ea.0, ea.1)).unwrap();
    pa.wait_timeout(Duration::from_secs(20));
    pb.wait_timeout(Duration::from_secs(20));
    let (la, lb) = (pa.log_text(), pb.log_text());
    // What A receives comes from B's public endpoint (RFC 4787 REQ-9), and vice versa.
    assert!(
        la.contains(&format!("GOT {} {} from-b", eb.0, eb.1)),
        "host a got nothing from b's public endpoint {eb:?}:\n{la}\n--- b ---\n{lb}"
    );
    assert!(
        lb.contains(&format!("GOT {} {} from-a", ea.0, ea.1)),
        "host b got nothing from a's public endpoint {ea:?}:\n{lb}\n--- a ---\n{la}"
    );
    assert!(
        !la.contains("GOT 10.") && !lb.contains("GOT 10."),
        "{la}\n{lb}"
    );
}

//! Flow-state replication between two flowgate nodes (issue 10, docs/replication.md), with
//! real processes and real kernel traffic. Each node runs in its own network namespace
//! (so the sync link between them is a real veth that netem can degrade):
//!
//! ```text
//!  netns rp-c 10.0.1.2/24 --rpc1==rpc0-- netns rp-r (router, "the fabric")
//!  (203.0.113.0/24 via 10.0.1.1)         10.0.1.1/24 | 203.0.113.1/24 --rps0==rps1-- netns rp-s
//!                                        rule: from rpc0 -> table 100:                  203.0.113.10/24
//!                                          203.0.113.0/24 via 198.18.1.1 (A) or .2.1 (B)
//!                                        main: 192.0.2.10/32 via A or B
//!                                        rpa0 198.18.1.254/24   rpb0 198.18.2.254/24
//!                                          ||                     ||
//!  netns rp-na: flowgate A on rpa1 (198.18.1.1, af_packet)   netns rp-nb: flowgate B on rpb1
//!               sync rpy0 198.19.0.1/24  ======== veth ========  sync rpy1 198.19.0.2/24
//! ```
//!
//! Both nodes have the same NAT gateway (inside 10.0.1.0/24, public IP 192.0.2.10), one arm
//! each. Failover is a route change in the router (`ip route replace`), as the fabric would
//! do when a node's lease expires.

mod common;
#[path = "common/failover.rs"]
mod failover;

use common::*;
use failover::{py, resets, server_peer, sha256, wait_log, KEEPALIVE_CLIENT, NAMED_HTTP};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const PUBLIC_IP: &str = "192.0.2.10";
const SERVER: &str = "203.0.113.10";
const NODE_IP: [&str; 2] = ["198.18.1.1", "198.18.2.1"];
const SYNC_IP: [&str; 2] = ["198.19.0.1", "198.19.0.2"];
const SYNC_PORT: u16 = 7788;
const METRICS: &str = "127.0.0.1:9400";

/// A flowgate node running in its namespace.
struct Node {
    proc: BgProc,
    log: PathBuf,
}

struct Rig {
    // Drop order: the nodes first, then the namespaces (which kill what runs in them).
    nodes: [Option<Node>; 2],
    na: Netns,
    nb: Netns,
    router: Netns,
    client: Netns,
    server: Netns,
    dir: TempDir,
    starts: u32,
    /// Replication peer address per node when a lossy relay sits between them.
    peer: [Option<String>; 2],
    relay: Option<BgProc>,
    /// Appended to both nodes' configs (e.g. a `load_balancers:` section).
    extra: String,
}

fn veth(left: &Netns, l: &str, right: &Netns, r: &str) {
    left.must(
        &[
            "ip",
            "link",
            "add",
            l,
            "type",
            "veth",
            "peer",
            "name",
            r,
            "netns",
            &right.name,
        ],
        10,
    );
    for (ns, i) in [(left, l), (right, r)] {
        segmentation_off(Some(ns), i);
        ns.must(&["ip", "link", "set", i, "up"], 5);
    }
}

fn addr(ns: &Netns, cidr: &str, dev: &str) {
    ns.must(&["ip", "addr", "add", cidr, "dev", dev], 5);
}

/// `peer`: where node `i` sends its replication (default: the other node's listen address).
fn node_yaml(i: usize, peer: Option<&str>) -> String {
    let dev = ["rpa1", "rpb1"][i];
    let gw = ["198.18.1.254", "198.18.2.254"][i];
    format!(
        r#"lcores: {{main: 0, workers: [1]}}
mempool: {{mbufs: 8191, cache: 256, data_room: 10240}}
ports:
  - name: up
    device: "net_af_packet{i},iface={dev},framesz=10240,blocksz=20480"
    addresses: [{ip}/24]
    mtu: 1500
routes:
  - {{prefix: 0.0.0.0/0, port: up, via: {gw}}}
nat_gateways:
  - id: gw
    inside_prefixes: [10.0.1.0/24]
    public_ips: [{PUBLIC_IP}]
worker: {{idle_sleep_us: 50}}
metrics: {{listen: "{METRICS}"}}
replication:
  listen: {me}:{SYNC_PORT}
  peers: [{peer}]
  retransmit_ms: 100
  resync_timeout_ms: 1500
"#,
        ip = NODE_IP[i],
        me = SYNC_IP[i],
        peer = peer
            .map(str::to_string)
            .unwrap_or_else(|| format!("{}:{SYNC_PORT}", SYNC_IP[1 - i])),
    )
}

impl Rig {
    fn new() -> Rig {
        require_tool("ethtool");
        require_tool("curl");
        let client = Netns::new("rp-c");
        let server = Netns::new("rp-s");
        let router = Netns::new("rp-r");
        let na = Netns::new("rp-na");
        let nb = Netns::new("rp-nb");
        veth(&router, "rpc0", &client, "rpc1");
        veth(&router, "rps0", &server, "rps1");
        veth(&router, "rpa0", &na, "rpa1");
        veth(&router, "rpb0", &nb, "rpb1");
        veth(&na, "rpy0", &nb, "rpy1");
        addr(&router, "10.0.1.1/24", "rpc0");
        addr(&router, "203.0.113.1/24", "rps0");
        addr(&router, "198.18.1.254/24", "rpa0");
        addr(&router, "198.18.2.254/24", "rpb0");
        addr(&client, "10.0.1.2/24", "rpc1");
        addr(&server, "203.0.113.10/24", "rps1");
        addr(&na, "198.19.0.1/24", "rpy0");
        addr(&nb, "198.19.0.2/24", "rpy1");
        client.must(
            &["ip", "route", "add", "203.0.113.0/24", "via", "10.0.1.1"],
            5,
        );
        // Small socket buffers: a rate-limited download must really be on the wire for its
        // whole duration, not parked in the endpoints' buffers.
        client.must(&["sysctl", "-qw", "net.ipv4.tcp_rmem=4096 65536 131072"], 5);
        server.must(&["sysctl", "-qw", "net.ipv4.tcp_wmem=4096 65536 131072"], 5);
        server.must(
            &["ip", "route", "add", "192.0.2.0/24", "via", "203.0.113.1"],
            5,
        );
        router.must(
            &[
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
                "net.ipv4.conf.all.rp_filter=0",
                "net.ipv4.conf.default.rp_filter=0",
                "net.ipv4.conf.all.send_redirects=0",
            ],
            5,
        );
        for i in ["rpc0", "rps0", "rpa0", "rpb0"] {
            router.must(
                &["sysctl", "-qw", &format!("net.ipv4.conf.{i}.rp_filter=0")],
                5,
            );
        }
        // The fabric: inside traffic (from the client's link) and the public IP to node A.
        router.must(
            &[
                "ip", "rule", "add", "iif", "rpc0", "lookup", "100", "pref", "100",
            ],
            5,
        );
        router.must(
            &[
                "ip",
                "route",
                "add",
                "203.0.113.0/24",
                "via",
                NODE_IP[0],
                "table",
                "100",
            ],
            5,
        );
        router.must(
            &[
                "ip",
                "route",
                "add",
                &format!("{PUBLIC_IP}/32"),
                "via",
                NODE_IP[0],
            ],
            5,
        );
        Rig {
            nodes: [None, None],
            na,
            nb,
            router,
            client,
            server,
            dir: TempDir::new("repl"),
            starts: 0,
            peer: [None, None],
            relay: None,
            extra: String::new(),
        }
    }

    fn ns(&self, i: usize) -> &Netns {
        [&self.na, &self.nb][i]
    }

    /// Starts node `i` (does not wait for readiness).
    fn start(&mut self, i: usize) {
        self.starts += 1;
        let n = self.starts;
        let cfg = self.dir.join(&format!("node{i}-{n}.yaml"));
        let yaml = node_yaml(i, self.peer[i].as_deref()) + &self.extra;
        std::fs::write(&cfg, yaml).expect("write config");
        let log = self.dir.join(&format!("node{i}-{n}.log"));
        let prefix = format!("fgrp{}_{i}_{n}", std::process::id());
        let bin = flowgate_bin();
        let args = [
            bin.to_str().expect("path"),
            "run",
            "-c",
            cfg.to_str().expect("path"),
            "--",
            "--no-pci",
            "--no-huge",
            "-m",
            "512",
            "--file-prefix",
            &prefix,
        ];
        let proc = self.ns(i).spawn(&args, &log);
        self.nodes[i] = Some(Node { proc, log });
    }

    fn log(&self, i: usize) -> String {
        self.nodes[i]
            .as_ref()
            .map(|n| std::fs::read_to_string(&n.log).unwrap_or_default())
            .unwrap_or_default()
    }

    fn http(&self, i: usize, path: &str) -> Option<(u16, String)> {
        let url = format!("http://{METRICS}{path}");
        let o = self.ns(i).exec(
            &[
                "curl",
                "-s",
                "--max-time",
                "2",
                "-w",
                "\n%{http_code}",
                &url,
            ],
            5,
        );
        if !o.ok() {
            return None;
        }
        let (body, code) = o.stdout.trim_end().rsplit_once('\n')?;
        Some((code.trim().parse().ok()?, body.to_string()))
    }

    fn metrics(&self, i: usize) -> Metrics {
        let (_, body) = self
            .http(i, "/metrics")
            .unwrap_or_else(|| panic!("node {i} /metrics\n{}", self.log(i)));
        Metrics::parse(&body)
    }

    /// Waits until node `i` reports ready on /healthz; returns how long that took.
    fn wait_ready(&mut self, i: usize, secs: u64) -> Duration {
        let t0 = Instant::now();
        let ok = wait_for(Duration::from_secs(secs), || {
            if let Some(n) = self.nodes[i].as_mut() {
                if let Some(st) = n.proc.try_status() {
                    return Some(Err(format!("exited: {st}")));
                }
            }
            match self.http(i, "/healthz") {
                Some((200, _)) => Some(Ok(())),
                _ => None,
            }
        });
        match ok {
            Some(Ok(())) => t0.elapsed(),
            other => panic!("node {i} not ready ({other:?})\n{}", self.log(i)),
        }
    }

    fn flows(&self, i: usize) -> f64 {
        self.metrics(i).value("flowgate_nat_flows", &[])
    }

    /// The fabric moves the tenant (inside prefix's traffic and the public IP) to node `i`.
    fn route_to(&self, i: usize) {
        self.router.must(
            &[
                "ip",
                "route",
                "replace",
                "203.0.113.0/24",
                "via",
                NODE_IP[i],
                "table",
                "100",
            ],
            5,
        );
        self.router.must(
            &[
                "ip",
                "route",
                "replace",
                &format!("{PUBLIC_IP}/32"),
                "via",
                NODE_IP[i],
            ],
            5,
        );
    }

    /// 10 % loss each way on the sync link: netem on both ends if the kernel has it, else
    /// a userspace relay in A's namespace that drops 10 % of the datagrams each way (A's
    /// peer is its port 7789, B's peer its port 7790). Returns which one.
    fn lossy_sync_link(&mut self) -> &'static str {
        let netem = |ns: &Netns, dev: &str| {
            ns.exec(
                &[
                    "tc", "qdisc", "add", "dev", dev, "root", "netem", "loss", "10%",
                ],
                5,
            )
            .ok()
        };
        if netem(&self.na, "rpy0") && netem(&self.nb, "rpy1") {
            return "netem";
        }
        let relay = py(
            &self.na,
            LOSSY_RELAY,
            &[SYNC_IP[0], &format!("{}:{SYNC_PORT}", SYNC_IP[1]), "0.1"],
            &self.dir.join("relay.log"),
        );
        assert!(wait_log(&relay, "relaying", 10), "{}", relay.log_text());
        self.peer = [
            Some(format!("{}:7789", SYNC_IP[0])),
            Some(format!("{}:7790", SYNC_IP[0])),
        ];
        self.relay = Some(relay);
        "relay (no sch_netem in this kernel)"
    }

    fn kill(&mut self, i: usize) {
        if let Some(n) = self.nodes[i].as_mut() {
            n.proc.signal(libc::SIGKILL);
            n.proc.wait_timeout(Duration::from_secs(5));
        }
    }

    /// Both nodes up and ready, and the router's ARP entries for both warm.
    fn start_both(&mut self) {
        self.start(0);
        let ta = self.wait_ready(0, 30);
        self.start(1);
        let tb = self.wait_ready(1, 30);
        println!("ready: A after {ta:?} (alone), B after {tb:?} (resync from A)");
        assert!(
            self.log(1).contains("resync done"),
            "B resynced from A\n{}",
            self.log(1)
        );
        for ip in NODE_IP {
            let ok = wait_for(Duration::from_secs(10), || {
                self.router
                    .exec(&["ping", "-c", "1", "-W", "1", ip], 3)
                    .ok()
                    .then_some(())
            });
            assert!(ok.is_some(), "router pings {ip}");
        }
    }
}

/// Sends one datagram per `interval` ms for `secs` seconds from one socket, each carrying
/// its sequence number.
const UDP_SENDER: &str = r#"
import socket, sys, time
dst, port, secs, interval = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]) / 1000
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
n = 0
end = time.time() + secs
nxt = time.time()
while time.time() < end:
    s.sendto(b"%d" % n, (dst, port))
    n += 1
    nxt += interval
    d = nxt - time.time()
    if d > 0:
        time.sleep(d)
print("sent=%d" % n, flush=True)
"#;

/// Receives the stream; once it stops (3 s quiet), prints what arrived, from where, and
/// the longest silence between two consecutive arrivals.
const UDP_RECEIVER: &str = r#"
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
print("listening", flush=True)
seen, srcs, last, gap, gap_at = set(), set(), None, 0.0, 0
s.settimeout(60)
while True:
    try:
        d, a = s.recvfrom(100)
    except socket.timeout:
        break
    now = time.time()
    if last is not None and now - last > gap:
        gap, gap_at = now - last, int(d)
    last = now
    seen.add(int(d))
    srcs.add("%s:%d" % a)
    s.settimeout(3)
top = max(seen) + 1 if seen else 0
print("recv=%d" % len(seen))
print("missing=%d" % (top - len(seen)))
print("srcs=%s" % ",".join(sorted(srcs)))
print("maxgap_ms=%d" % int(gap * 1000))
print("gap_at=%d" % gap_at, flush=True)
"#;

/// The lossy sync link without netem: A (argv[1]:7788) talks to its port 7789, B (argv[2])
/// to its port 7790; each datagram is dropped with probability argv[3], else forwarded.
const LOSSY_RELAY: &str = r#"
import random, select, socket, sys
a_ip = sys.argv[1]
b_ip, b_port = sys.argv[2].split(":")
p = float(sys.argv[3])
to_b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
to_b.bind((a_ip, 7789))
to_a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
to_a.bind((a_ip, 7790))
print("relaying", flush=True)
fwd = dropped = 0
while True:
    r, _, _ = select.select([to_b, to_a], [], [])
    for s in r:
        d, _ = s.recvfrom(4096)
        if random.random() < p:
            dropped += 1
            continue
        fwd += 1
        if s is to_b:
            to_a.sendto(d, (b_ip, int(b_port)))
        else:
            to_b.sendto(d, (a_ip, 7788))
"#;

/// Many UDP flows: N sockets each send "i" (phase 1); after the file argv[4] appears, each
/// sends "i" again (phase 2).
const UDP_MANY: &str = r#"
import socket, sys, time, os
dst, port, n, go = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(n)]
for i, s in enumerate(socks):
    s.sendto(b"1 %d" % i, (dst, port))
    time.sleep(0.002)
print("phase1", flush=True)
while not os.path.exists(go):
    time.sleep(0.05)
for i, s in enumerate(socks):
    s.sendto(b"2 %d" % i, (dst, port))
    time.sleep(0.002)
print("phase2", flush=True)
"#;

/// Logs every datagram as "<phase> <i> <src ip>:<src port>".
const UDP_LOGGER: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
print("listening", flush=True)
while True:
    d, a = s.recvfrom(100)
    print("%s %s:%d" % (d.decode(), a[0], a[1]), flush=True)
"#;

fn kv<'a>(out: &'a str, key: &str) -> Option<&'a str> {
    let k = format!("{key}=");
    out.lines().find_map(|l| l.strip_prefix(k.as_str()))
}

fn kv_num(out: &str, key: &str) -> i64 {
    kv(out, key)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(-1)
}

#[test]
fn failover_keeps_tcp_download_and_udp_stream_then_restarted_node_resyncs() {
    let Some(_g) = setup("failover_keeps_tcp_download_and_udp_stream_then_restarted_node_resyncs")
    else {
        return;
    };
    let mut rig = Rig::new();
    rig.start_both();

    // 12 MB at 1 MB/s through A, and a UDP stream (one datagram per 2 ms).
    let www = rig.dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    let blob = www.join("blob");
    must(
        &[
            "dd",
            "if=/dev/urandom",
            &format!("of={}", blob.display()),
            "bs=1M",
            "count=12",
        ],
        30,
    );
    let http = rig.server.spawn(
        &[
            PYTHON,
            "-m",
            "http.server",
            "8080",
            "--bind",
            SERVER,
            "--directory",
            www.to_str().unwrap(),
        ],
        &rig.dir.join("http.log"),
    );
    rig.server.wait_listen("tcp", 8080, Duration::from_secs(10));
    let recv = py(
        &rig.server,
        UDP_RECEIVER,
        &[SERVER, "9999"],
        &rig.dir.join("udprecv.log"),
    );
    assert!(wait_log(&recv, "listening", 10));
    let got = rig.dir.join("got");
    let t0 = Instant::now();
    let mut curl = rig.client.spawn(
        &[
            "curl",
            "-sS",
            "--max-time",
            "90",
            "--limit-rate",
            "1M",
            "-o",
            got.to_str().unwrap(),
            &format!("http://{SERVER}:8080/blob"),
        ],
        &rig.dir.join("curl.log"),
    );
    let mut udp = py(
        &rig.client,
        UDP_SENDER,
        &[SERVER, "9999", "14", "2"],
        &rig.dir.join("udpsend.log"),
    );

    // Replicated: B holds both flows (as replicas) while A carries them.
    std::thread::sleep(Duration::from_secs(4));
    let before = server_peer(&rig.server).expect("download running");
    assert!(before.starts_with(PUBLIC_IP), "{before}");
    let fa = rig.flows(0);
    let ok = wait_for(Duration::from_secs(5), || {
        (rig.flows(1) >= 2.0).then_some(())
    });
    let ma = rig.metrics(0);
    println!(
        "before failover: server sees {before}; flows A={fa} B={}; A sent {} acked {} events, \
         lag {} ms, ack delay {} us",
        rig.flows(1),
        ma.value("flowgate_replication_events_sent_total", &[]),
        ma.value("flowgate_replication_events_acked_total", &[]),
        ma.value("flowgate_replication_lag_milliseconds", &[]),
        ma.value("flowgate_replication_ack_delay_microseconds", &[]),
    );
    assert!(ok.is_some(), "B holds the replicas\n{}", rig.log(1));

    // Node A dies; the fabric moves the tenant to B.
    let t_kill = Instant::now();
    rig.kill(0);
    rig.route_to(1);
    println!(
        "A killed at {:?}; routes switched in {:?}",
        t_kill.duration_since(t0),
        t_kill.elapsed()
    );
    std::thread::sleep(Duration::from_secs(2));
    let after = server_peer(&rig.server);
    let st = curl.wait_timeout(Duration::from_secs(60));
    let took = t0.elapsed();
    assert!(
        st.is_some_and(|s| s.success()),
        "download completes: {st:?}\n{}\nB: {}",
        curl.log_text(),
        rig.log(1)
    );
    assert_eq!(sha256(&got), sha256(&blob), "byte-exact download");
    assert_eq!(
        after.as_deref(),
        Some(before.as_str()),
        "the server sees the same public IP:port after failover"
    );
    for (name, ns) in [("client", &rig.client), ("server", &rig.server)] {
        let (out, estab) = resets(ns);
        assert_eq!(
            (out, estab),
            (0, 0),
            "{name}: TCP resets (out, established)"
        );
    }
    udp.wait_timeout(Duration::from_secs(20));
    let recv_out = wait_for(Duration::from_secs(20), || {
        recv.log_text().contains("gap_at=").then(|| recv.log_text())
    })
    .expect("udp receiver report");
    let sent = kv_num(&udp.log_text(), "sent");
    let srcs = kv(&recv_out, "srcs").unwrap_or("").to_string();
    let gap = kv_num(&recv_out, "maxgap_ms");
    let mb = rig.metrics(1);
    println!(
        "after failover: download {} MB in {took:?}, sha256 ok, server peer {after:?}; \
         UDP sent {sent} received {} missing {} from [{srcs}], loss window (longest gap) {gap} ms; \
         B: flows {}, drops tcp_out_of_window {}",
        12,
        kv_num(&recv_out, "recv"),
        kv_num(&recv_out, "missing"),
        mb.value("flowgate_nat_flows", &[]),
        mb.dropped("nat_tcp_out_of_window"),
    );
    assert_eq!(
        srcs.split(',').count(),
        1,
        "one public source for the UDP stream: {srcs}"
    );
    assert!(srcs.starts_with(PUBLIC_IP), "{srcs}");
    assert!((0..3000).contains(&gap), "UDP loss window {gap} ms");
    drop(http);

    // A restarts: not ready until it pulled B's flows; then it holds the same flows.
    rig.start(0);
    let t_ready = rig.wait_ready(0, 30);
    let (fa, fb) = (rig.flows(0), rig.flows(1));
    let ma = rig.metrics(0);
    println!(
        "A restarted: ready after {t_ready:?}, resync {} ms; flows A={fa} B={fb}; \
         B served {} dump(s)",
        ma.value("flowgate_replication_resync_milliseconds", &[]),
        rig.metrics(1)
            .value("flowgate_replication_dumps_served_total", &[])
    );
    assert!(
        rig.log(0).contains("full dump from [\"198.19.0.2:7788\"]"),
        "A resynced from B\n{}",
        rig.log(0)
    );
    assert!(fb >= 2.0, "B still holds the flows: {fb}");
    assert_eq!(fa, fb, "A holds B's flows when it declares itself ready");
}

#[test]
fn lossy_sync_link_loses_no_state_and_counts_retransmissions() {
    let Some(_g) = setup("lossy_sync_link_loses_no_state_and_counts_retransmissions") else {
        return;
    };
    let mut rig = Rig::new();
    let how = rig.lossy_sync_link();
    println!("sync link loses 10 % each way: {how}");
    rig.start_both();
    // Spread over ~1.2 s: hundreds of datagrams on the lossy link, not a handful.
    let n = 600;
    let log = py(
        &rig.server,
        UDP_LOGGER,
        &[SERVER, "9999"],
        &rig.dir.join("udplog.log"),
    );
    assert!(wait_log(&log, "listening", 10));
    let go = rig.dir.join("go");
    let ns_ = n.to_string();
    let client = py(
        &rig.client,
        UDP_MANY,
        &[SERVER, "9999", &ns_, go.to_str().unwrap()],
        &rig.dir.join("udpmany.log"),
    );
    assert!(wait_log(&client, "phase1", 20));
    // Every flow reaches B despite 10 % loss each way.
    let synced = wait_for(Duration::from_secs(20), || {
        let (a, b) = (rig.flows(0), rig.flows(1));
        (a >= n as f64 && a == b).then_some((a, b))
    });
    let ma = rig.metrics(0);
    let mb = rig.metrics(1);
    let m = |m: &Metrics, k: &str| m.value(&format!("flowgate_replication_{k}_total"), &[]);
    println!(
        "10% loss on the sync link: flows A={} B={}; A sent {} retransmitted {} acked {} lost {}; \
         B received {} out_of_order {} duplicate {}",
        rig.flows(0),
        rig.flows(1),
        m(&ma, "events_sent"),
        m(&ma, "events_retransmitted"),
        m(&ma, "events_acked"),
        m(&ma, "events_lost"),
        m(&mb, "events_received"),
        m(&mb, "events_out_of_order"),
        m(&mb, "events_duplicate"),
    );
    assert!(synced.is_some(), "B holds all of A's {n} flows");
    assert!(
        m(&ma, "events_retransmitted") > 0.0,
        "retransmissions counted"
    );
    assert_eq!(m(&ma, "events_lost"), 0.0, "nothing given up");

    // Fail over: every flow keeps its public port on B.
    rig.kill(0);
    rig.route_to(1);
    std::fs::write(&go, b"").unwrap();
    assert!(wait_log(&client, "phase2", 20));
    let ok = wait_for(Duration::from_secs(10), || {
        let t = log.log_text();
        (t.lines().filter(|l| l.starts_with("2 ")).count() >= n).then_some(t)
    });
    let text = ok.unwrap_or_else(|| log.log_text());
    let mut phase: [std::collections::BTreeMap<String, String>; 2] = Default::default();
    for l in text.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() == 3 {
            let p = if f[0] == "1" { 0 } else { 1 };
            phase[p].insert(f[1].to_string(), f[2].to_string());
        }
    }
    assert_eq!(phase[0].len(), n, "phase 1 delivered");
    assert_eq!(phase[1].len(), n, "phase 2 delivered after failover");
    let moved: Vec<_> = phase[0]
        .iter()
        .filter(|(i, src)| phase[1].get(*i) != Some(src))
        .collect();
    assert!(
        moved.is_empty(),
        "flows whose public port changed: {moved:?}"
    );
}

const LB_VIP: &str = "192.0.2.100";
const LB_ADDR: &str = "192.0.2.101";
const LB_TARGETS: [&str; 2] = ["203.0.113.11", "203.0.113.12"];

/// The same full-NAT load balancer on both nodes: two targets, Maglev picks one per flow.
fn lb_yaml() -> String {
    format!(
        r#"load_balancers:
  - id: web
    vips: [{LB_VIP}]
    lb_addresses: [{LB_ADDR}]
    maglev_table_size: 251
    listeners:
      - {{protocol: tcp, port: 80, target_group: web}}
    target_groups:
      - name: web
        preserve_client_ip: false
        targets:
          - {{ip: {t0}, port: 8080}}
          - {{ip: {t1}, port: 8080}}
"#,
        t0 = LB_TARGETS[0],
        t1 = LB_TARGETS[1],
    )
}

fn epoch_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[test]
fn failover_keeps_lb_keepalive_session_on_its_target() {
    let Some(_g) = setup("failover_keeps_lb_keepalive_session_on_its_target") else {
        return;
    };
    let mut rig = Rig::new();
    rig.extra = lb_yaml();
    for t in LB_TARGETS {
        addr(&rig.server, &format!("{t}/24"), "rps1");
    }
    rig.client.must(
        &["ip", "route", "add", "192.0.2.0/24", "via", "10.0.1.1"],
        5,
    );
    // The fabric: VIP and LB address to A (B after the failover).
    let lb_route_to = |rig: &Rig, i: usize| {
        for ip in [LB_VIP, LB_ADDR] {
            rig.router.must(
                &[
                    "ip",
                    "route",
                    "replace",
                    &format!("{ip}/32"),
                    "via",
                    NODE_IP[i],
                ],
                5,
            );
        }
    };
    lb_route_to(&rig, 0);
    rig.start_both();
    let servers: Vec<BgProc> = LB_TARGETS
        .iter()
        .enumerate()
        .map(|(i, t)| {
            py(
                &rig.server,
                NAMED_HTTP,
                &[&format!("t{i}"), t, "8080"],
                &rig.dir.join(&format!("target{i}.log")),
            )
        })
        .collect();
    rig.server.wait_listen("tcp", 8080, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(300));

    let mut client = py(
        &rig.client,
        KEEPALIVE_CLIENT,
        &[LB_VIP, "8"],
        &rig.dir.join("keepalive.log"),
    );
    assert!(
        wait_log(&client, "r ", 10),
        "first response\n{}\nA: {}",
        client.log_text(),
        rig.log(0)
    );
    // B holds the pin before A dies.
    let installed = |rig: &Rig| {
        rig.metrics(1).value(
            "flowgate_replication_installs_total",
            &[("family", "lb"), ("outcome", "installed")],
        )
    };
    let ok = wait_for(Duration::from_secs(5), || {
        (installed(&rig) >= 1.0).then_some(())
    });
    assert!(ok.is_some(), "B holds the LB pin\n{}", rig.log(1));
    std::thread::sleep(Duration::from_secs(2));
    let ma = rig.metrics(0);
    println!(
        "before failover: A sent {} events (acked {}), B installed {} LB pin(s)",
        ma.value("flowgate_replication_events_sent_total", &[]),
        ma.value("flowgate_replication_events_acked_total", &[]),
        installed(&rig)
    );

    let t_kill = epoch_ms();
    rig.kill(0);
    rig.route_to(1);
    lb_route_to(&rig, 1);
    let t_switched = epoch_ms();
    let st = client.wait_timeout(Duration::from_secs(40));
    let out = client.log_text();
    assert!(st.is_some(), "client finished\n{out}");
    assert!(
        out.contains("\ndone"),
        "the session ran to its end without error\n{out}\nB: {}",
        rig.log(1)
    );
    let resp: Vec<(i64, String, String)> = out
        .lines()
        .filter_map(|l| l.strip_prefix("r "))
        .filter_map(|l| {
            let mut it = l.splitn(3, ' ');
            Some((
                it.next()?.parse().ok()?,
                it.next()?.to_string(),
                it.next()?.to_string(),
            ))
        })
        .collect();
    let before = resp.iter().filter(|r| r.0 < t_kill).count();
    let after = resp.len() - before;
    let gap = resp
        .windows(2)
        .filter(|w| w[1].0 >= t_kill)
        .map(|w| w[1].0 - w[0].0)
        .max()
        .unwrap_or(-1);
    let first = &resp[0];
    println!(
        "LB session: {before} responses before the kill, {after} after; all from {:?}; \
         longest gap between responses {gap} ms (requests every 200 ms; kill + route switch \
         {} ms)",
        first.2,
        t_switched - t_kill
    );
    assert!(before >= 5 && after >= 5, "{before} / {after}\n{out}");
    for r in &resp {
        assert_eq!(r.1, first.1, "same client connection throughout\n{out}");
        assert_eq!(
            r.2, first.2,
            "same target and same LB address:port throughout\n{out}"
        );
    }
    assert!(first.2.contains(LB_ADDR), "full NAT: {}", first.2);
    assert!((0..5000).contains(&gap), "gap {gap} ms");
    let mb = rig.metrics(1);
    println!(
        "B: LB active flows {}, LB installs rejected {}",
        mb.value("flowgate_lb_active_flows", &[]),
        mb.value(
            "flowgate_replication_install_rejects_total",
            &[("family", "lb")]
        )
    );
    drop(servers);
}

//! Flow replication inside the fleet (issue 10, docs/fleet.md "Replication and failover"):
//! three real flowgate nodes supervised by their node agents (`--repl-listen`: peers come
//! from the shards in etcd), etcd, the controller (k=2, m=1), the fabric; one NAT tenant t0
//! with a client namespace behind the router and a server namespace on the public side.
//!
//! ```text
//!  frc0 10.100.0.2 --+                        +-- frn1 [flowgate n1 10.99.1.2] sync 127.0.0.1:P1
//!                    +-- frr (router) --------+-- frn2 [flowgate n2 10.99.2.2] sync 127.0.0.1:P2
//!  frs 198.51.100.2 -+   fabric: ECMP + rules +-- frn3 [flowgate n3 10.99.3.2] sync 127.0.0.1:P3
//! ```
//!
//! Proves: a rate-limited 12 MB download and 8 UDP streams through t0; SIGKILL of the flowgate
//! that carries the download (slice owner of its public port) -> the download completes
//! byte-exact with no reset, the server sees the same public IP:port, UDP loss only in the
//! failover window (printed in ms); the agent restarts the killed flowgate, it resyncs and
//! takes traffic again; then the other node of the shard dies whole (agent and flowgate: only
//! the peer heartbeat tells the fabric) and the download still completes. Last, a churn of
//! concurrent short TCP and UDP flows over both nodes: the server never sees one (public IP,
//! port) used by two flows at once.
//!
//! A full-NAT load balancer tenant `web` (kind lb, VIP 192.0.2.100, LB address 192.0.2.101)
//! shares t0's shard (the controller runs with m=2 and the test pins the placement): a
//! keep-alive HTTP session from a second client namespace (frc1, 10.110.0.2) to the VIP, a
//! request every 200 ms on one TCP connection, runs across both kills; every response names
//! the same target (python servers 198.51.100.11/.12 in the server namespace) and the same LB
//! address:port. The fabric routes the VIP and the LB address to the shard by ECMP (an LB
//! has no port slices): a target's replies may reach the node that did not pick the target,
//! which forwards them with its replica of the pin.
mod common;
#[path = "common/failover.rs"]
mod failover;
#[path = "common/fleet.rs"]
mod fleet_common;

use common::{BgProc, Netns, TempDir, Veth};
use failover::{py, resets, server_peer, sha256, wait_log, KEEPALIVE_CLIENT, NAMED_HTTP};
use fleet_common::{
    nat_tenant_spec, node_addr, public_ip, route_vias, start_controller_and_fabric_m, Etcd,
};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

const NODES: usize = 3;
const TTL: u64 = 3;
const FLEET: &str = "frtest";
const SERVER: &str = "198.51.100.2";
const PORTS: (u16, u16) = (20000, 29999);
const CLIENT: &str = "10.100.0.2";
const MB: usize = 12;
const LB_VIP: &str = "192.0.2.100";
const LB_ADDR: &str = "192.0.2.101";
const LB_TARGETS: [&str; 2] = ["198.51.100.11", "198.51.100.12"];
const LB_CLIENT: &str = "10.110.0.2";
/// Not 8080: the download's server port, which `server_peer` looks at.
const LB_TARGET_PORT: &str = "8081";

/// The LB tenant's spec in etcd: full NAT, two targets, Maglev picks one per flow.
fn lb_tenant_spec() -> String {
    format!(
        r#"kind: lb
public: [{LB_VIP}/32, {LB_ADDR}/32]
config:
  vips: [{LB_VIP}]
  lb_addresses: [{LB_ADDR}]
  maglev_table_size: 251
  listeners:
    - {{protocol: tcp, port: 80, target_group: web}}
  target_groups:
    - name: web
      preserve_client_ip: false
      targets:
        - {{ip: {t0}, port: {LB_TARGET_PORT}}}
        - {{ip: {t1}, port: {LB_TARGET_PORT}}}
"#,
        t0 = LB_TARGETS[0],
        t1 = LB_TARGETS[1],
    )
}

fn base_config(i: usize, metrics: u16) -> String {
    format!(
        r#"lcores: {{main: 0, workers: [1]}}
mempool: {{mbufs: 4095, cache: 128, data_room: 2048}}
ports:
  - name: fabric
    device: "net_af_packet0,iface=frn{i}"
    addresses: [{addr}/24]
    mtu: 1500
routes:
  - prefix: 0.0.0.0/0
    port: fabric
    via: 10.99.{i}.1
metrics: {{listen: "127.0.0.1:{metrics}"}}
worker: {{idle_sleep_us: 200}}
log_level: info
"#,
        addr = node_addr(i)
    )
}

/// `n` UDP streams (one socket each), one datagram per `interval` ms each, for `secs`.
const UDP_SENDER: &str = r#"
import socket, sys, time
dst, port, n, secs, interval = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]) / 1000
ss = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(n)]
k = 0
end = time.time() + secs
nxt = time.time()
while time.time() < end:
    for i, s in enumerate(ss):
        s.sendto(b"%d %d" % (i, k), (dst, port))
    k += 1
    nxt += interval
    d = nxt - time.time()
    if d > 0:
        time.sleep(d)
print("sent=%d" % k, flush=True)
"#;

/// Per stream: datagrams received, missing, its sources, its longest silence (ms).
const UDP_RECEIVER: &str = r#"
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
print("listening", flush=True)
st = {}
s.settimeout(90)
while True:
    try:
        d, a = s.recvfrom(100)
    except socket.timeout:
        break
    now = time.time()
    i, k = map(int, d.split())
    e = st.setdefault(i, {"seen": set(), "srcs": set(), "last": None, "gap": 0.0})
    if e["last"] is not None and now - e["last"] > e["gap"]:
        e["gap"] = now - e["last"]
    e["last"] = now
    e["seen"].add(k)
    e["srcs"].add("%s:%d" % a)
    s.settimeout(3)
for i, e in sorted(st.items()):
    top = max(e["seen"]) + 1
    print("stream=%d recv=%d missing=%d gap_ms=%d srcs=%s" % (i, len(e["seen"]), top - len(e["seen"]), int(e["gap"] * 1000), ",".join(sorted(e["srcs"]))))
print("done", flush=True)
"#;

/// Churn server: UDP and TCP on one port, echoes, logs "<proto> <peer> <round>-<id>".
const CHURN_SERVER: &str = r#"
import socket, sys, threading
ip, port = sys.argv[1], int(sys.argv[2])
lock = threading.Lock()
def log(p, a, d):
    with lock:
        for w in d.decode().split():
            print("%s %s:%d %s" % (p, a[0], a[1], w), flush=True)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.bind((ip, port))
t = socket.socket()
t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t.bind((ip, port))
t.listen(1024)
def udp():
    while True:
        d, a = u.recvfrom(100)
        log("udp", a, d)
        u.sendto(d, a)
def conn(c, a):
    # A reset by the closing client is normal here; a traceback on stderr would interleave
    # with the log lines on stdout (same file).
    try:
        while True:
            d = c.recv(100)
            if not d:
                break
            log("tcp", a, d)
            c.sendall(d)
    except OSError:
        pass
    c.close()
threading.Thread(target=udp, daemon=True).start()
print("listening", flush=True)
while True:
    c, a = t.accept()
    threading.Thread(target=conn, args=(c, a), daemon=True).start()
"#;

/// Churn client: per round, `n` UDP and `n` TCP flows open at once (each says its id twice,
/// 0.3 s apart), then all closed.
const CHURN_CLIENT: &str = r#"
import socket, sys, time
dst, port, n, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
ok = bad = 0
for r in range(rounds):
    us, ts = [], []
    for i in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(2)
        s.sendto(b"%d-%d" % (r, i), (dst, port))
        us.append(s)
        try:
            t = socket.create_connection((dst, port), timeout=3)
            t.sendall(b"%d-%d\n" % (r, i))
            ts.append(t)
        except OSError:
            bad += 1
    time.sleep(0.3)
    for i, s in enumerate(us):
        s.sendto(b"%d-%d" % (r, i), (dst, port))
    for i, t in enumerate(ts):
        try:
            t.sendall(b"%d-%d\n" % (r, i))
        except OSError:
            bad += 1
    time.sleep(0.3)
    for s in us:
        try:
            s.recv(100)
            ok += 1
        except OSError:
            bad += 1
        s.close()
    for t in ts:
        t.close()
print("ok=%d bad=%d" % (ok, bad), flush=True)
"#;

struct Fr {
    agents: BTreeMap<usize, BgProc>,
    daemons: Vec<BgProc>,
    _veths: Vec<Veth>,
    router: Netns,
    client: Netns,
    lb_client: Netns,
    server: Netns,
    etcd: Etcd,
    metrics: BTreeMap<usize, u16>,
    repl: BTreeMap<usize, u16>,
    dir: TempDir,
}

impl Drop for Fr {
    fn drop(&mut self) {
        fleet_common::stop_node_agents(&mut self.agents, &self.dir.path, NODES);
    }
}

impl Fr {
    fn agent(&self, i: usize) -> BgProc {
        fleet_common::node_agent(
            &self.dir.path,
            &self.etcd.endpoint,
            FLEET,
            i,
            TTL,
            &base_config(i, self.metrics[&i]),
            "fgfr",
            &[
                "--repl-listen".to_string(),
                format!("127.0.0.1:{}", self.repl[&i]),
            ],
        )
    }

    fn flowgate_pid(&self, i: usize) -> Option<i32> {
        fleet_common::flowgate_pid(&self.dir.path, i)
    }

    fn metrics(&self, i: usize) -> Option<common::Metrics> {
        let addr = format!("127.0.0.1:{}", self.metrics[&i]).parse().unwrap();
        common::scrape(addr)
            .ok()
            .map(|t| common::Metrics::parse(&t))
    }

    fn flows(&self, i: usize) -> f64 {
        self.metrics(i)
            .map(|m| m.value("flowgate_nat_flows", &[]))
            .unwrap_or(-1.0)
    }

    fn slots(&self) -> Vec<String> {
        self.etcd
            .list(&format!("/flowgate/{FLEET}/placements/"))
            .get("t0")
            .map(|v| v.split(',').map(String::from).collect())
            .unwrap_or_default()
    }

    /// The router's next hops for t0's public IP.
    fn hops(&self) -> BTreeSet<String> {
        route_vias(&self.router, &[&format!("{}/32", public_ip(0))])
    }

    fn flowgate_log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.join(&format!("n{i}.flowgate.log"))).unwrap_or_default()
    }

    fn dump(&self) -> String {
        let mut s = format!("placements: {:?}\n", self.slots());
        s += &self.router.exec(&["ip", "rule", "show"], 5).stdout;
        s += &self
            .router
            .exec(&["ip", "route", "show", "table", "all"], 5)
            .stdout;
        for p in self.daemons.iter().chain(self.agents.values()) {
            s += &format!("--- {} ---\n{}\n", p.what, p.log_text());
        }
        for i in 1..=NODES {
            let l = self.flowgate_log(i);
            let tail: Vec<&str> = l.lines().rev().take(25).collect();
            s += &format!("--- flowgate n{i} (tail) ---\n");
            for line in tail.iter().rev() {
                s += line;
                s.push('\n');
            }
        }
        s
    }
}

fn wait<T>(secs: u64, f: impl FnMut() -> Option<T>) -> Option<T> {
    common::wait_for(Duration::from_secs(secs), f)
}

fn node_no(n: &str) -> usize {
    n[1..].parse().unwrap()
}

/// The node (slot order) whose slice of t0's port range holds `port`.
fn slice_owner(slots: &[String], port: u16) -> Option<usize> {
    (0..slots.len()).find_map(|i| {
        let (a, b) = flowgate::fleet::keys::port_slice(PORTS.0, PORTS.1, i, slots.len())?;
        (a..=b).contains(&port).then(|| node_no(&slots[i]))
    })
}

fn now_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// The first "... at <unix time>" number after `needle` in `log`, at or after `since`.
fn stamp_after(log: &str, needle: &str, since: f64) -> Option<f64> {
    log.lines()
        .filter(|l| l.contains(needle))
        .filter_map(|l| {
            let rest = &l[l.rfind(" at ")? + 4..];
            rest.split(|c: char| !(c.is_ascii_digit() || c == '.'))
                .next()?
                .parse::<f64>()
                .ok()
        })
        .find(|t| *t >= since)
}

fn build() -> Fr {
    common::require_tool("curl");
    let dir = TempDir::new("fleetrepl");
    let etcd = Etcd::start(&dir);
    let router = Netns::new("frr");
    for kv in [
        "net.ipv4.ip_forward=1",
        "net.ipv4.conf.all.rp_filter=0",
        "net.ipv4.conf.default.rp_filter=0",
    ] {
        router.must(&["sysctl", "-qw", kv], 5);
    }
    let mut veths = Vec::new();
    let (mut metrics, mut repl) = (BTreeMap::new(), BTreeMap::new());
    for i in 1..=NODES {
        let v = Veth::new(&format!("frn{i}"), &format!("frr{i}"), &router, 1500);
        v.add_addr(&router, &format!("10.99.{i}.1/24"));
        veths.push(v);
        metrics.insert(i, fleet_common::free_port());
        repl.insert(i, fleet_common::free_port());
    }
    let link = |ns: &Netns, rname: &str, raddr: &str, addr: &str, gw: &str| {
        router.must(
            &[
                "ip", "link", "add", rname, "type", "veth", "peer", "name", "eth0", "netns",
                &ns.name,
            ],
            10,
        );
        common::segmentation_off(Some(&router), rname);
        common::segmentation_off(Some(ns), "eth0");
        router.must(&["ip", "addr", "add", raddr, "dev", rname], 5);
        router.must(&["ip", "link", "set", rname, "up"], 5);
        ns.must(&["ip", "addr", "add", addr, "dev", "eth0"], 5);
        ns.must(&["ip", "link", "set", "eth0", "up"], 5);
        ns.must(&["ip", "route", "add", "default", "via", gw], 5);
    };
    let client = Netns::new("frc0");
    link(
        &client,
        "frrc0",
        "10.100.0.1/24",
        &format!("{CLIENT}/24"),
        "10.100.0.1",
    );
    let lb_client = Netns::new("frc1");
    link(
        &lb_client,
        "frrc1",
        "10.110.0.1/24",
        &format!("{LB_CLIENT}/24"),
        "10.110.0.1",
    );
    let server = Netns::new("frs");
    link(
        &server,
        "frrs",
        "198.51.100.1/24",
        &format!("{SERVER}/24"),
        "198.51.100.1",
    );
    for t in LB_TARGETS {
        server.must(&["ip", "addr", "add", &format!("{t}/24"), "dev", "eth0"], 5);
    }
    // Small socket buffers: the rate-limited download is really on the wire, not in buffers.
    client.must(&["sysctl", "-qw", "net.ipv4.tcp_rmem=4096 65536 131072"], 5);
    server.must(&["sysctl", "-qw", "net.ipv4.tcp_wmem=4096 65536 131072"], 5);
    Fr {
        agents: BTreeMap::new(),
        daemons: vec![],
        _veths: veths,
        router,
        client,
        lb_client,
        server,
        etcd,
        metrics,
        repl,
        dir,
    }
}

#[test]
fn fleet_replication_failover_resync_second_failover_and_port_churn() {
    let Some(_g) =
        common::setup("fleet_replication_failover_resync_second_failover_and_port_churn")
    else {
        return;
    };
    let t_start = Instant::now();
    let mut f = build();
    f.etcd.put(
        &format!("/flowgate/{FLEET}/tenants/t0"),
        &nat_tenant_spec(0, PORTS, ", flows_per_core: 16384"),
    );
    for i in 1..=NODES {
        let a = f.agent(i);
        f.agents.insert(i, a);
    }
    // m=2: the LB tenant may share t0's whole shard.
    f.daemons.extend(start_controller_and_fabric_m(
        &f.etcd,
        FLEET,
        NODES,
        TTL,
        "frr",
        &[],
        &f.dir.path,
        2,
    ));

    // 1. t0 placed on two nodes, both replicate to each other, both routed.
    let slots = wait(30, || {
        let s = f.slots();
        (s.len() == 2).then_some(s)
    })
    .unwrap_or_else(|| panic!("t0 not placed\n{}", f.dump()));
    let shard: Vec<usize> = slots.iter().map(|n| node_no(n)).collect();
    let want: BTreeSet<String> = shard.iter().map(|&i| node_addr(i)).collect();
    wait(60, || (f.hops() == want).then_some(()))
        .unwrap_or_else(|| panic!("t0 not routed to {want:?}\n{}", f.dump()));
    for &i in &shard {
        let other = shard.iter().find(|&&j| j != i).unwrap();
        let peer = format!("127.0.0.1:{}", f.repl[other]);
        wait(20, || {
            let m = f.metrics(i)?;
            (m.value("flowgate_replication_peer_up", &[("peer", &peer)]) == 1.0).then_some(())
        })
        .unwrap_or_else(|| panic!("n{i} does not hear its peer {peer}\n{}", f.dump()));
    }
    println!(
        "fleet up after {:?}: t0 on {slots:?}, replication peers from etcd, both up",
        t_start.elapsed()
    );

    // 1b. The LB tenant `web`, moved onto t0's shard (same slot order), its two targets.
    let lb_key = format!("/flowgate/{FLEET}/placements/web");
    f.etcd
        .put(&format!("/flowgate/{FLEET}/tenants/web"), &lb_tenant_spec());
    wait(20, || f.etcd.list(&lb_key).get("").cloned())
        .unwrap_or_else(|| panic!("web not placed\n{}", f.dump()));
    f.etcd.put(&lb_key, &slots.join(","));
    let lb_hops = |f: &Fr| route_vias(&f.router, &[&format!("{LB_VIP}/32")]);
    wait(30, || {
        let on = f.etcd.list(&lb_key).get("").cloned() == Some(slots.join(","));
        (on && lb_hops(&f) == want && route_vias(&f.router, &[&format!("{LB_ADDR}/32")]) == want)
            .then_some(())
    })
    .unwrap_or_else(|| panic!("web not routed to t0's shard {want:?}\n{}", f.dump()));
    let _targets: Vec<BgProc> = LB_TARGETS
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let p = py(
                &f.server,
                NAMED_HTTP,
                &[&format!("target{i}"), t, LB_TARGET_PORT],
                &f.dir.join(&format!("target{i}.log")),
            );
            assert!(wait_log(&p, "listening", 10), "target {t}");
            p
        })
        .collect();
    println!(
        "LB tenant web on {slots:?} after {:?}: VIP and LB address routed to the shard",
        t_start.elapsed()
    );

    // 2. A 12 MB download at 1 MB/s and 8 UDP streams (one datagram per 5 ms each).
    let www = f.dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    let blob = www.join("blob");
    common::must(
        &[
            "dd",
            "if=/dev/urandom",
            &format!("of={}", blob.display()),
            "bs=1M",
            &format!("count={MB}"),
        ],
        30,
    );
    let _http = f.server.spawn(
        &[
            common::PYTHON,
            "-m",
            "http.server",
            "8080",
            "--bind",
            SERVER,
            "--directory",
            www.to_str().unwrap(),
        ],
        &f.dir.join("http.log"),
    );
    f.server.wait_listen("tcp", 8080, Duration::from_secs(30));
    let recv = py(
        &f.server,
        UDP_RECEIVER,
        &[SERVER, "9999"],
        &f.dir.join("udprecv.log"),
    );
    assert!(wait_log(&recv, "listening", 10));
    let got = f.dir.join("got");
    let t0 = Instant::now();
    let mut curl = f.client.spawn(
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
        &f.dir.join("curl.log"),
    );
    let mut udp = py(
        &f.client,
        UDP_SENDER,
        &[SERVER, "9999", "8", "13", "5"],
        &f.dir.join("udpsend.log"),
    );
    let mut lb = py(
        &f.lb_client,
        KEEPALIVE_CLIENT,
        &[LB_VIP, "12"],
        &f.dir.join("keepalive.log"),
    );
    let before = wait(10, || server_peer(&f.server))
        .unwrap_or_else(|| panic!("download not running\n{}", f.dump()));
    assert!(before.starts_with(&public_ip(0)), "{before}");
    let port: u16 = before.rsplit_once(':').unwrap().1.parse().unwrap();
    let a = slice_owner(&slots, port).expect("port in t0's range");
    let b = *shard.iter().find(|&&j| j != a).unwrap();
    // The download's flow is on both nodes (the owner's, and B's replica).
    wait(10, || {
        (f.flows(b) >= 1.0 && f.flows(a) >= 1.0).then_some(())
    })
    .unwrap_or_else(|| panic!("flows not replicated\n{}", f.dump()));
    // The LB session answers, and its pin is on both nodes (a node installs a replica).
    assert!(
        wait_log(&lb, "r ", 10),
        "first LB response\n{}\n{}",
        lb.log_text(),
        f.dump()
    );
    let lb_installs = |f: &Fr, i: usize| {
        f.metrics(i).map_or(0.0, |m| {
            m.value(
                "flowgate_replication_installs_total",
                &[("family", "lb"), ("outcome", "installed")],
            )
        })
    };
    wait(5, || {
        (lb_installs(&f, a) + lb_installs(&f, b) >= 1.0).then_some(())
    })
    .unwrap_or_else(|| panic!("LB pin not replicated\n{}", f.dump()));
    std::thread::sleep(Duration::from_millis(2500));
    println!(
        "download from {before} carried by n{a} (its slice); flows n{a}={} n{b}={}",
        f.flows(a),
        f.flows(b)
    );

    // 3. SIGKILL n{a}'s flowgate. Its agent notices (and restarts it); n{b}'s flowgate stops
    //    hearing it and n{b}'s agent reports it suspect; the fabric moves it out either way.
    let pid_a = f.flowgate_pid(a).unwrap();
    let t_kill = now_s();
    let k_at = t0.elapsed();
    common::must(&["kill", "-KILL", &pid_a.to_string()], 5);
    let gone = wait(5, || {
        (f.hops() == BTreeSet::from([node_addr(b)])).then(Instant::now)
    });
    let out_ms = gone.map(|g| (now_s() - t_kill) * 1000.0 - g.elapsed().as_secs_f64() * 1000.0);
    println!("n{a}'s flowgate killed at {k_at:?}; out of t0's route after {out_ms:?} ms");
    assert!(gone.is_some(), "n{a} not taken out\n{}", f.dump());

    // 4. The agent restarts it; it resyncs from n{b} and only then takes traffic again.
    let back = wait(30, || (f.hops() == want).then(Instant::now))
        .unwrap_or_else(|| panic!("n{a} not back\n{}", f.dump()));
    let back_s = now_s() - back.elapsed().as_secs_f64() - t_kill;
    let la = f.flowgate_log(a);
    let resync = la
        .lines()
        .rfind(|l| l.contains("resync done"))
        .unwrap_or("")
        .to_string();
    println!(
        "n{a} restarted by its agent, back in t0's route {back_s:.2} s after the kill; {}; flows n{a}={} n{b}={}",
        resync.trim(),
        f.flows(a),
        f.flows(b)
    );
    assert!(
        resync.contains(&format!("127.0.0.1:{}", f.repl[&b])),
        "n{a} resynced from n{b}: {resync}\n{}",
        f.dump()
    );
    std::thread::sleep(Duration::from_secs(1));

    // 5. n{b} dies whole (agent first, so nobody restarts or deregisters it): only the peer
    //    heartbeat tells the fabric before its lease expires.
    let pid_b = f.flowgate_pid(b).unwrap();
    let mut agent_b = f.agents.remove(&b).unwrap();
    agent_b.signal(libc::SIGKILL);
    let t_kill_b = now_s();
    let kb_at = t0.elapsed();
    common::must(&["kill", "-KILL", &pid_b.to_string()], 5);
    let _ = agent_b.wait_timeout(Duration::from_secs(5));
    let gone_b = wait(5, || (!f.hops().contains(&node_addr(b))).then(Instant::now));
    let gone_b_ms = gone_b.map(|g| (now_s() - g.elapsed().as_secs_f64() - t_kill_b) * 1000.0);
    println!(
        "n{b} (agent + flowgate) killed at {kb_at:?}; out of t0's route after {gone_b_ms:?} ms"
    );
    assert!(gone_b.is_some(), "n{b} not taken out\n{}", f.dump());
    let agent_a_log = f.agents[&a].log_text();
    let fabric_log = f.daemons[1].log_text();
    let suspect_at = stamp_after(&agent_a_log, "reported suspect at", t_kill_b);
    let fabric_at = stamp_after(&fabric_log, &format!("suspected nodes [n{b}] at"), t_kill_b);
    println!(
        "heartbeat path: n{a}'s agent reported n{b} suspect {:?} ms after the kill, fabric acted {:?} ms after",
        suspect_at.map(|t| ((t - t_kill_b) * 1000.0).round()),
        fabric_at.map(|t| ((t - t_kill_b) * 1000.0).round())
    );
    assert!(
        suspect_at.is_some_and(|t| t - t_kill_b < 1.0),
        "n{b} reported suspect within 1 s\n{agent_a_log}"
    );

    // 6. The download completes byte-exact, same public IP:port, no reset.
    let after = server_peer(&f.server);
    let st = curl.wait_timeout(Duration::from_secs(60));
    let took = t0.elapsed();
    assert!(
        st.is_some_and(|s| s.success()),
        "download completes: {st:?}\n{}\n{}",
        curl.log_text(),
        f.dump()
    );
    assert_eq!(sha256(&got), sha256(&blob), "byte-exact download");
    assert_eq!(
        after.as_deref(),
        Some(before.as_str()),
        "the server sees the same public IP:port after both failovers"
    );
    for (name, ns) in [("client", &f.client), ("server", &f.server)] {
        assert_eq!(resets(ns), (0, 0), "{name}: TCP resets (out, established)");
    }
    udp.wait_timeout(Duration::from_secs(20));
    let report = wait(20, || {
        recv.log_text().contains("done").then(|| recv.log_text())
    })
    .expect("udp receiver report");
    println!("download {MB} MB in {took:?}, sha256 ok, server peer {before} throughout");
    let mut streams = 0;
    for l in report.lines().filter(|l| l.starts_with("stream=")) {
        let kv: BTreeMap<&str, &str> = l
            .split_whitespace()
            .filter_map(|w| w.split_once('='))
            .collect();
        let srcs: Vec<&str> = kv["srcs"].split(',').collect();
        let port: u16 = srcs[0].rsplit_once(':').unwrap().1.parse().unwrap();
        let owner = slice_owner(&slots, port).unwrap_or(0);
        println!("UDP {l} (slice of n{owner})");
        assert_eq!(srcs.len(), 1, "one public source per UDP stream: {l}");
        assert!(srcs[0].starts_with(&public_ip(0)), "{l}");
        let gap: i64 = kv["gap_ms"].parse().unwrap();
        assert!(gap < 3000, "UDP loss window {gap} ms: {l}");
        streams += 1;
    }
    assert_eq!(streams, 8, "{report}");

    // 6b. The LB session ran to its end on one connection, always the same target and LB
    //     address:port, across both kills.
    let st = lb.wait_timeout(Duration::from_secs(30));
    let out = lb.log_text();
    assert!(st.is_some(), "LB client finished\n{out}");
    assert!(
        out.contains("\ndone"),
        "the LB session ran to its end without error\n{out}\n{}",
        f.dump()
    );
    let resp: Vec<(f64, String, String)> = out
        .lines()
        .filter_map(|l| l.strip_prefix("r "))
        .filter_map(|l| {
            let mut it = l.splitn(3, ' ');
            Some((
                it.next()?.parse::<f64>().ok()? / 1000.0,
                it.next()?.to_string(),
                it.next()?.to_string(),
            ))
        })
        .collect();
    let n_in = |from: f64, to: f64| resp.iter().filter(|r| r.0 >= from && r.0 < to).count();
    let (before_a, between, after_b) = (
        n_in(0.0, t_kill),
        n_in(t_kill, t_kill_b),
        n_in(t_kill_b, f64::MAX),
    );
    let gap_in = |from: f64, to: f64| {
        resp.windows(2)
            .filter(|w| w[1].0 >= from && w[1].0 < to)
            .map(|w| ((w[1].0 - w[0].0) * 1000.0).round() as i64)
            .max()
            .unwrap_or(-1)
    };
    let gap = |from: f64| gap_in(from, f64::MAX);
    let first = resp.first().expect("LB responses").clone();
    println!(
        "LB session: {} responses ({before_a} before n{a}'s kill, {between} between the kills, \
         {after_b} after n{b}'s), all from {:?} on client port {}; longest gap between \
         responses {} ms overall, {} ms after the first kill (flowgate only), {} ms after \
         the second (whole node) (requests every 200 ms)",
        resp.len(),
        first.2,
        first.1,
        gap(0.0),
        gap_in(t_kill, t_kill_b),
        gap(t_kill_b)
    );
    assert!(
        before_a >= 3 && between >= 1 && after_b >= 5,
        "{before_a} / {between} / {after_b}\n{out}"
    );
    for r in &resp {
        assert_eq!(r.1, first.1, "same client connection throughout\n{out}");
        assert_eq!(
            r.2, first.2,
            "same target and same LB address:port throughout\n{out}"
        );
    }
    assert!(first.2.contains(LB_ADDR), "full NAT: {}", first.2);
    assert!((0..3000).contains(&gap(0.0)), "LB gap {} ms", gap(0.0));

    // 7. Churn: 3 rounds of 100 UDP + 100 TCP flows open at once, spread by ECMP over n{a}
    //    and (after re-placement) its new partner: no public port is used by two flows.
    let churn = py(
        &f.server,
        CHURN_SERVER,
        &[SERVER, "7000"],
        &f.dir.join("churn-server.log"),
    );
    assert!(wait_log(&churn, "listening", 10));
    let o = f.client.exec(
        &[
            common::PYTHON,
            "-c",
            CHURN_CLIENT,
            SERVER,
            "7000",
            "100",
            "3",
        ],
        60,
    );
    println!(
        "churn client: {} (slots now {:?})",
        o.stdout.trim(),
        f.slots()
    );
    std::thread::sleep(Duration::from_millis(500));
    let mut by_key: BTreeMap<(String, String, String), BTreeSet<String>> = BTreeMap::new();
    let mut by_owner: BTreeMap<usize, usize> = BTreeMap::new();
    let now_slots = f.slots();
    for l in churn.log_text().lines() {
        let w: Vec<&str> = l.split_whitespace().collect();
        if w.len() != 3 {
            continue;
        }
        let Some((round, id)) = w[2].split_once('-') else {
            continue;
        };
        if !id.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Some((ip, port)) = w[1].rsplit_once(':') else {
            continue;
        };
        assert_eq!(ip, public_ip(0), "server saw a non-public source: {l}");
        let port: u16 = port.parse().unwrap();
        if by_key
            .entry((w[0].to_string(), w[1].to_string(), round.to_string()))
            .or_default()
            .insert(id.to_string())
        {
            *by_owner
                .entry(slice_owner(&now_slots, port).unwrap_or(0))
                .or_default() += 1;
        }
    }
    let dup: Vec<_> = by_key.iter().filter(|(_, ids)| ids.len() > 1).collect();
    let flows = by_key.len();
    println!("churn: {flows} concurrent flows seen by the server, by slice owner {by_owner:?}, {} public (ip, port) used twice at once", dup.len());
    assert!(dup.is_empty(), "public ports used twice: {dup:?}");
    assert!(flows >= 540, "churn flows seen: {flows}\n{}", o.stdout);
    assert!(
        o.stdout.contains("bad=0") || flows >= 580,
        "churn: {}",
        o.stdout
    );
    println!("fleet_replication done in {:?}", t_start.elapsed());
}

//! The fleet with real flowgate data paths: six `flowgate run` nodes (one worker each, idle
//! sleep, `--no-huge`, net_af_packet on a veth into the router namespace), each supervised by
//! its `flowgate node-agent`, real etcd, the controller, the fabric agent, eight NAT tenants
//! (k=2, m=1) with a client namespace each behind the router, and a server on the public side.
//!
//! ```text
//!  fdc0 10.100.0.2 --+                        +-- fdn1 [flowgate n1 10.99.1.2] (root ns, af_packet)
//!  fdc1 10.101.0.2 --+-- fdr (router) --------+-- fdn2 [flowgate n2 10.99.2.2]
//!  ...               |   fabric: ECMP + rules +-- ...  (6 nodes)
//!  fds 198.51.100.2 -+
//! ```
//!
//! Proves: every tenant works through its NAT (HTTP, UDP, ping); its traffic crosses only its
//! shard's nodes (per-node, per-tenant counters of each flowgate's /metrics; the server sees
//! only the tenant's public IP, from source ports in a shard node's slice of the port range);
//! tenant A floods (SYNs, UDP) -> a tenant sharing one node with A keeps >= 95 % of its
//! requests, one sharing none all, A's excess is dropped under its limits on the shared node;
//! SIGKILL of a node (agent and flowgate) -> new connections of its tenants succeed within
//! the lease TTL + a few seconds; the node restarts and rejoins; etcd stopped -> forwarding
//! continues with no restart, and a tenant added after etcd returns works.
mod common;
#[path = "common/fleet.rs"]
mod fleet_common;
#[path = "common/flood.rs"]
mod flood;

use common::{BgProc, HttpServer, Metrics, Netns, TempDir, Veth};
use fleet_common::{
    gauge, nat_tenant_spec, node_addr, public_ip, route_vias, shard, start_controller_and_fabric,
    Etcd,
};
use flood::{kv, FLOOD, HTTP_CLIENT};
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

const NODES: usize = 6;
const TENANTS: usize = 8;
const TTL: u64 = 3;
const FLEET: &str = "dptest";
const SERVER: &str = "198.51.100.2";
const PORTS: (u16, u16) = (20000, 29999);

fn client_ip(t: usize) -> String {
    format!("10.{}.0.2", 100 + t)
}

/// Every tenant's node-wide limits (one worker per node). The one-second bucket depth lets
/// the phases' bursts of fresh flows (16 at once) through; the flood of phase 3 exceeds them.
const LIMIT_PPS: f64 = 2000.0;
const LIMIT_NEW_FLOWS: f64 = 200.0;
const LIMIT_FLOWS: f64 = 8000.0;

fn tenant_spec(t: usize) -> String {
    nat_tenant_spec(
        t,
        PORTS,
        &format!(
            ", flows_per_core: 16384, limits: {{packets_per_s: {}, new_flows_per_s: {}, \
             max_flows: {}, burst_ms: 1000}}",
            LIMIT_PPS as u64, LIMIT_NEW_FLOWS as u64, LIMIT_FLOWS as u64
        ),
    )
}

/// A node's own config (the agent adds its tenants): one af_packet port on the fabric.
fn base_config(i: usize, metrics: u16) -> String {
    format!(
        r#"lcores: {{main: 0, workers: [1]}}
mempool: {{mbufs: 4095, cache: 128, data_room: 2048}}
ports:
  - name: fabric
    device: "net_af_packet0,iface=fdn{i}"
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

/// From a client: `n` UDP flows (one socket each) to the server's echo port; prints how many
/// were answered within `secs`.
const UDP_FLOWS: &str = "import socket,sys,select,time\nn=int(sys.argv[2])\nss=[]\nfor i in range(n):\n    s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n    s.setblocking(False)\n    s.sendto(b'hi',(sys.argv[1],7777))\n    ss.append(s)\ngot=set()\nend=time.time()+float(sys.argv[3])\nwhile len(got)<n and time.time()<end:\n    r,_,_=select.select([s for s in ss if s not in got],[],[],0.1)\n    for s in r:\n        try:\n            s.recv(100)\n            got.add(s)\n        except OSError:\n            pass\nprint(len(got))\n";

struct Dp {
    agents: BTreeMap<usize, BgProc>,
    daemons: Vec<BgProc>,
    echo: Option<BgProc>,
    www: Option<HttpServer>,
    _veths: Vec<Veth>,
    router: Netns,
    clients: Vec<Netns>,
    _server: Netns,
    etcd: Etcd,
    metrics: BTreeMap<usize, u16>,
    dir: TempDir,
}

impl Drop for Dp {
    fn drop(&mut self) {
        fleet_common::stop_node_agents(&mut self.agents, &self.dir.path, NODES);
    }
}

impl Dp {
    fn agent(&self, i: usize) -> BgProc {
        fleet_common::node_agent(
            &self.dir.path,
            &self.etcd.endpoint,
            FLEET,
            i,
            TTL,
            &base_config(i, self.metrics[&i]),
            "fgfd",
            &[
                "--status".to_string(),
                self.dir.join(&format!("n{i}.prom")).display().to_string(),
            ],
        )
    }

    fn flowgate_pid(&self, i: usize) -> Option<i32> {
        fleet_common::flowgate_pid(&self.dir.path, i)
    }

    fn status(&self, i: usize, name: &str) -> Option<f64> {
        gauge(&self.dir.join(&format!("n{i}.prom")), name)
    }

    fn node_metrics(&self, i: usize) -> Option<Metrics> {
        let addr = format!("127.0.0.1:{}", self.metrics[&i]).parse().unwrap();
        common::scrape(addr).ok().map(|t| Metrics::parse(&t))
    }

    /// Gateways configured on node i's running flowgate.
    fn gateways(&self, i: usize) -> Option<BTreeSet<String>> {
        let m = self.node_metrics(i)?;
        Some(
            m.matching("flowgate_nat_active_connections", &[])
                .filter_map(|s| s.labels.get("gateway").cloned())
                .collect(),
        )
    }

    /// Packets of tenant t through node i's NAT (both directions).
    fn packets(&self, i: usize, t: &str) -> f64 {
        self.node_metrics(i)
            .map(|m| m.value("flowgate_nat_packets_total", &[("gateway", t)]))
            .unwrap_or(0.0)
    }

    fn placements(&self) -> BTreeMap<String, BTreeSet<String>> {
        self.etcd
            .list(&format!("/flowgate/{FLEET}/placements/"))
            .into_iter()
            .map(|(t, v)| (t, shard(&v)))
            .collect()
    }

    fn slots(&self) -> BTreeMap<String, Vec<String>> {
        self.etcd
            .list(&format!("/flowgate/{FLEET}/placements/"))
            .into_iter()
            .map(|(t, v)| (t, v.split(',').map(String::from).collect()))
            .collect()
    }

    fn live_nodes(&self) -> BTreeMap<String, String> {
        self.etcd.list(&format!("/flowgate/{FLEET}/nodes/"))
    }

    /// Every node runs flowgate with exactly its placed tenants.
    fn nodes_serve(&self, p: &BTreeMap<String, BTreeSet<String>>) -> Result<(), String> {
        for i in self.agents.keys() {
            let node = format!("n{i}");
            let want: BTreeSet<String> = p
                .iter()
                .filter(|(_, s)| s.contains(&node))
                .map(|(t, _)| t.clone())
                .collect();
            let got = self
                .gateways(*i)
                .ok_or(format!("{node}: /metrics not answering"))?;
            if got != want {
                return Err(format!(
                    "{node}: flowgate has gateways {got:?}, placed {want:?}"
                ));
            }
        }
        Ok(())
    }

    /// The router sends each tenant's public IP to its whole shard (every node ready).
    fn routed(&self, p: &BTreeMap<String, BTreeSet<String>>) -> Result<(), String> {
        for (id, s) in p {
            let t: usize = id[1..].parse().unwrap();
            let want: BTreeSet<String> = s
                .iter()
                .map(|n| node_addr(n[1..].parse().unwrap()))
                .collect();
            let got = route_vias(&self.router, &[&format!("{}/32", public_ip(t))]);
            if got != want {
                return Err(format!("{id}: routed via {got:?}, shard {want:?}"));
            }
        }
        Ok(())
    }

    fn udp(&self, t: usize, n: usize, secs: f64) -> usize {
        let o = self.clients[t].exec(
            &[
                common::PYTHON,
                "-c",
                UDP_FLOWS,
                SERVER,
                &n.to_string(),
                &secs.to_string(),
            ],
            15,
        );
        o.stdout.trim().parse().unwrap_or(0)
    }

    fn http(&self, t: usize) -> Result<(), String> {
        let o = self.clients[t].exec(
            &[
                "curl",
                "-sS",
                "--fail",
                "--max-time",
                "3",
                "--connect-timeout",
                "2",
                &format!("http://{SERVER}:8080/hello"),
            ],
            10,
        );
        if o.ok() && o.stdout == "hello fleet\n" {
            Ok(())
        } else {
            Err(format!("t{t}: HTTP failed: {o}"))
        }
    }

    fn ping(&self, t: usize) -> Result<(), String> {
        let o = self.clients[t].exec(
            &["ping", "-c", "3", "-i", "0.2", "-W", "1", "-q", SERVER],
            10,
        );
        if o.ok() {
            Ok(())
        } else {
            Err(format!("t{t}: ping failed: {o}"))
        }
    }

    /// New connections of tenant t succeed: `flows` fresh UDP flows all answered, HTTP, ping.
    fn works(&self, t: usize, flows: usize) -> Result<(), String> {
        let got = self.udp(t, flows, 2.0);
        if got != flows {
            return Err(format!("t{t}: {got} of {flows} UDP flows answered"));
        }
        self.http(t)?;
        self.ping(t)
    }

    fn dump(&self) -> String {
        let mut s = format!(
            "placements: {:?}\nnodes: {:?}\n",
            self.slots(),
            self.live_nodes()
        );
        s += &self.router.exec(&["ip", "rule", "show"], 5).stdout;
        s += &self
            .router
            .exec(&["ip", "route", "show", "table", "all"], 5)
            .stdout;
        for p in self.daemons.iter().chain(self.agents.values()) {
            s += &format!("--- {} ---\n{}\n", p.what, p.log_text());
        }
        for i in 1..=NODES {
            let l = std::fs::read_to_string(self.dir.join(&format!("n{i}.flowgate.log")))
                .unwrap_or_default();
            let tail: Vec<&str> = l.lines().rev().take(15).collect();
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

/// The node (slot order of the placement) whose slice of the port range holds `port`.
fn slice_owner(slots: &[String], port: u16) -> Option<&String> {
    (0..slots.len()).find_map(|i| {
        let (a, b) = flowgate::fleet::keys::port_slice(PORTS.0, PORTS.1, i, slots.len())?;
        (a..=b).contains(&port).then(|| &slots[i])
    })
}

fn build() -> Dp {
    common::require_tool("curl");
    let dir = TempDir::new("fleetdp");
    let etcd = Etcd::start(&dir);
    let router = Netns::new("fdr");
    for kv in [
        "net.ipv4.ip_forward=1",
        "net.ipv4.conf.all.rp_filter=0",
        "net.ipv4.conf.default.rp_filter=0",
    ] {
        router.must(&["sysctl", "-qw", kv], 5);
    }
    let mut veths = Vec::new();
    let mut metrics = BTreeMap::new();
    for i in 1..=NODES {
        // Root end: the node's af_packet port; router end: 10.99.i.1 (offloads off on both,
        // so the router never hands the node a GSO super-frame).
        let v = Veth::new(&format!("fdn{i}"), &format!("fdr{i}"), &router, 1500);
        v.add_addr(&router, &format!("10.99.{i}.1/24"));
        veths.push(v);
        metrics.insert(i, fleet_common::free_port());
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
    let mut clients = Vec::new();
    for t in 0..=TENANTS {
        let c = Netns::new(&format!("fdc{t}"));
        link(
            &c,
            &format!("fdrc{t}"),
            &format!("10.{}.0.1/24", 100 + t),
            &format!("{}/24", client_ip(t)),
            &format!("10.{}.0.1", 100 + t),
        );
        clients.push(c);
    }
    let server = Netns::new("fds");
    link(
        &server,
        "fdrs",
        "198.51.100.1/24",
        &format!("{SERVER}/24"),
        "198.51.100.1",
    );
    let www = HttpServer::start(&server, SERVER, 8080);
    www.put("hello", b"hello fleet\n");
    let echo = common::udp_echo_server(&server, SERVER, 7777, &dir.join("echo.log"));
    Dp {
        agents: BTreeMap::new(),
        daemons: vec![],
        echo: Some(echo),
        www: Some(www),
        _veths: veths,
        router,
        clients,
        _server: server,
        etcd,
        metrics,
        dir,
    }
}

const LIMIT_REASONS: [&str; 3] = [
    "nat_tenant_pps_limit",
    "nat_tenant_new_flow_limit",
    "nat_tenant_flow_limit",
];

/// Tenant `t`'s NAT drops for `reason` in a node's scrape.
fn limit_drops(m: &Metrics, t: &str, reason: &str) -> f64 {
    m.value(
        "flowgate_nat_packets_dropped_total",
        &[("gateway", t), ("reason", reason)],
    )
}

/// Packets of tenant `t` a node received from either side (before its limits).
fn offered(m: &Metrics, t: &str) -> f64 {
    ["in_from_source", "in_from_destination"]
        .iter()
        .map(|d| {
            m.value(
                "flowgate_nat_packets_total",
                &[("gateway", t), ("direction", d)],
            )
        })
        .sum()
}

/// A flooding tenant A, a tenant B whose shard shares exactly one node with A's (returned),
/// and a tenant C whose shard shares none.
fn flood_trio(p: &BTreeMap<String, BTreeSet<String>>) -> Option<(usize, usize, usize, String)> {
    let s = |t: usize| &p[&format!("t{t}")];
    (0..TENANTS).find_map(|a| {
        let b = (0..TENANTS).find(|&b| b != a && s(b).intersection(s(a)).count() == 1)?;
        let c = (0..TENANTS).find(|&c| c != a && s(c).is_disjoint(s(a)))?;
        let shared = s(b).intersection(s(a)).next()?.clone();
        Some((a, b, c, shared))
    })
}

/// Tenant A floods (raw-socket SYNs from many source ports plus UDP, bounded) while B (one
/// node shared with A) and C (none shared) each make 100 short HTTP requests through their NAT.
fn flood_phase(f: &Dp, placed: &BTreeMap<String, BTreeSet<String>>) {
    let (a, b, c, shared) = flood_trio(placed)
        .unwrap_or_else(|| panic!("no tenants A, B, C with 1 and 0 shared nodes: {placed:?}"));
    let (ta, tb, tc) = (format!("t{a}"), format!("t{b}"), format!("t{c}"));
    let si: usize = shared[1..].parse().unwrap();
    let pids: Vec<Option<i32>> = (1..=NODES).map(|i| f.flowgate_pid(i)).collect();
    let scrape = |i: usize| {
        f.node_metrics(i)
            .unwrap_or_else(|| panic!("n{i}: /metrics not answering\n{}", f.dump()))
    };
    let m0: BTreeMap<usize, Metrics> = (1..=NODES).map(|i| (i, scrape(i))).collect();
    let src = client_ip(a);
    let gen = |mode: &str, log: &str| {
        f.clients[a].spawn(
            &[
                common::PYTHON,
                "-u",
                "-c",
                FLOOD,
                mode,
                &src,
                SERVER,
                "9",
                "6000",
                "8",
                "100000",
            ],
            &f.dir.join(log),
        )
    };
    let mut syn = gen("syn", "flood-syn.log");
    let mut udp = gen("udp", "flood-udp.log");
    wait(30, || {
        (syn.log_text().contains("ready") && udp.log_text().contains("ready")).then_some(())
    })
    .unwrap_or_else(|| panic!("flood did not start: {} {}", syn.log_text(), udp.log_text()));
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    let client = |t: usize| {
        f.clients[t].spawn(
            &[
                common::PYTHON,
                "-u",
                "-c",
                HTTP_CLIENT,
                SERVER,
                "8080",
                "/hello",
                "12",
                "100",
                "0.05",
            ],
            &f.dir.join(&format!("flood-client-t{t}.log")),
        )
    };
    let (mut bp, mut cp) = (client(b), client(c));
    while syn.running() || udp.running() {
        assert!(
            t0.elapsed() < Duration::from_secs(40),
            "the flood did not end"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let secs = t0.elapsed().as_secs_f64();
    let m1: BTreeMap<usize, Metrics> = (1..=NODES).map(|i| (i, scrape(i))).collect();
    for p in [&mut bp, &mut cp] {
        assert!(
            p.wait_timeout(Duration::from_secs(60)).is_some(),
            "client did not finish: {}",
            p.log_text()
        );
    }
    let (b_out, c_out) = (bp.log_text(), cp.log_text());
    let (b_ok, c_ok) = (kv(&b_out, "ok"), kv(&c_out, "ok"));
    let sent = kv(&syn.log_text(), "sent") + kv(&udp.log_text(), "sent");
    let d = |i: usize, t: &str, r: &str| limit_drops(&m1[&i], t, r) - limit_drops(&m0[&i], t, r);
    let offered_a = offered(&m1[&si], &ta) - offered(&m0[&si], &ta);
    let admitted = (offered_a - d(si, &ta, LIMIT_REASONS[0])) / secs;
    println!(
        "flood: {ta} (shard {:?}) sent {sent} packets in {secs:.1} s; on the shared node {shared} \
         {:.0} pps offered, {admitted:.0} pps admitted (limit {LIMIT_PPS}, 1 s burst); drops there \
         {:?}",
        placed[&ta],
        offered_a / secs,
        LIMIT_REASONS.map(|r| (r, d(si, &ta, r)))
    );
    println!(
        "during the flood: {tb} (shard {:?}, shares {shared}) {b_ok}/100 HTTP ok, p50 {} p99 {} ms; \
         {tc} (shard {:?}, shares none) {c_ok}/100 ok, p50 {} p99 {} ms",
        placed[&tb],
        kv(&b_out, "p50_ms"),
        kv(&b_out, "p99_ms"),
        placed[&tc],
        kv(&c_out, "p50_ms"),
        kv(&c_out, "p99_ms"),
    );
    assert!(b_ok >= 95.0, "{tb}: {b_ok}/100 during the flood\n{b_out}");
    assert_eq!(c_ok, 100.0, "{tc}: {c_ok}/100 during the flood\n{c_out}");
    // A's excess is dropped and counted on the shared node, within A's own limits.
    let excess: f64 = LIMIT_REASONS.iter().map(|r| d(si, &ta, r)).sum();
    assert!(
        d(si, &ta, LIMIT_REASONS[0]) > 0.0 && excess > 0.0,
        "{ta}'s excess not counted on {shared}\n{}",
        m1[&si].excerpt("flowgate_nat_packets_dropped_total")
    );
    assert!(
        admitted <= 1.1 * LIMIT_PPS * (secs + 1.0) / secs,
        "{ta} admitted {admitted:.0} pps on {shared}, limit {LIMIT_PPS}"
    );
    for i in 1..=NODES {
        for t in [&tb, &tc] {
            for r in LIMIT_REASONS {
                assert_eq!(d(i, t, r), 0.0, "{t} hit its own limit {r} on n{i}");
            }
        }
        // C's nodes never saw A's flood.
        if placed[&tc].contains(&format!("n{i}")) {
            assert_eq!(
                offered(&m1[&i], &ta) - offered(&m0[&i], &ta),
                0.0,
                "{ta}'s packets reached n{i} of {tc}'s shard"
            );
        }
    }
    let after: Vec<Option<i32>> = (1..=NODES).map(|i| f.flowgate_pid(i)).collect();
    assert_eq!(
        pids,
        after,
        "a flowgate restarted during the flood\n{}",
        f.dump()
    );
}

#[test]
fn fleet_dataplane_nat_through_shards_failover_and_etcd_outage() {
    let Some(_g) = common::setup("fleet_dataplane_nat_through_shards_failover_and_etcd_outage")
    else {
        return;
    };
    let t_start = Instant::now();
    let mut f = build();
    for t in 0..TENANTS {
        f.etcd
            .put(&format!("/flowgate/{FLEET}/tenants/t{t}"), &tenant_spec(t));
    }
    for i in 1..=NODES {
        let a = f.agent(i);
        f.agents.insert(i, a);
    }
    f.daemons.extend(start_controller_and_fabric(
        &f.etcd,
        FLEET,
        NODES,
        TTL,
        "fdr",
        &[],
        &f.dir.path,
    ));

    // 1. Placed, and every node's flowgate runs exactly its tenants.
    let placed = wait(30, || {
        let p = f.placements();
        (p.len() == TENANTS).then_some(p)
    })
    .unwrap_or_else(|| panic!("tenants not placed\n{}", f.dump()));
    wait(60, || f.nodes_serve(&placed).ok())
        .unwrap_or_else(|| panic!("nodes: {:?}\n{}", f.nodes_serve(&placed), f.dump()));
    // Nodes become next hops once their agent reports the tenant applied.
    wait(10, || f.routed(&placed).ok())
        .unwrap_or_else(|| panic!("{:?}\n{}", f.routed(&placed), f.dump()));
    println!(
        "fleet up: {TENANTS} tenants on {NODES} flowgate nodes after {:?}",
        t_start.elapsed()
    );

    // 2. Every tenant works through its NAT, on its shard only.
    let before: BTreeMap<(usize, usize), f64> = (1..=NODES)
        .flat_map(|i| (0..TENANTS).map(move |t| (i, t)))
        .map(|(i, t)| ((i, t), f.packets(i, &format!("t{t}"))))
        .collect();
    for t in 0..TENANTS {
        // The first packets may wait for a neighbour resolution: a few tries.
        wait(15, || f.works(t, 16).ok())
            .unwrap_or_else(|| panic!("{:?}\n{}", f.works(t, 16), f.dump()));
    }
    let slots = f.slots();
    for t in 0..TENANTS {
        let id = format!("t{t}");
        for i in 1..=NODES {
            let d = f.packets(i, &id) - before[&(i, t)];
            let in_shard = placed[&id].contains(&format!("n{i}"));
            // ECMP (L4 hash) spreads 16+ flows over both nodes of the shard; others see none.
            assert_eq!(
                d > 0.0,
                in_shard,
                "{id}: {d} packets through n{i}, shard {:?}\n{}",
                placed[&id],
                f.dump()
            );
        }
    }
    // The server sees only public IPs, and each tenant's source ports lie in the slice of
    // one of its shard's nodes.
    let echo_log = f.echo.as_ref().unwrap().log_text();
    let mut by_node: BTreeMap<String, usize> = BTreeMap::new();
    for line in echo_log.lines().filter(|l| l.starts_with("from ")) {
        let addr = line.split_whitespace().nth(1).unwrap();
        let (ip, port) = addr.rsplit_once(':').unwrap();
        let t = (0..TENANTS)
            .find(|&t| public_ip(t) == ip)
            .unwrap_or_else(|| panic!("server saw a non-public source: {line}"));
        let port: u16 = port.parse().unwrap();
        let owner = slice_owner(&slots[&format!("t{t}")], port)
            .unwrap_or_else(|| panic!("t{t}: source port {port} outside {PORTS:?}"));
        *by_node.entry(format!("t{t}@{owner}")).or_default() += 1;
    }
    let access = f.www.as_ref().unwrap().access_log();
    assert!(
        access.lines().all(|l| !l.starts_with("10.")),
        "private address leaked:\n{access}"
    );
    println!("UDP flows by tenant@slice owner: {by_node:?}");

    // 2b. A noisy tenant: its neighbours keep working, its excess is dropped where it lands.
    flood_phase(&f, &placed);

    // 3. SIGKILL a node (its flowgate and its agent).
    let victim: usize = placed["t0"].iter().next().unwrap()[1..].parse().unwrap();
    let vname = format!("n{victim}");
    let hit: Vec<usize> = (0..TENANTS)
        .filter(|t| placed[&format!("t{t}")].contains(&vname))
        .collect();
    let fpid = f.flowgate_pid(victim).expect("victim pid");
    let _ = Command::new("kill")
        .args(["-KILL", &fpid.to_string()])
        .status();
    f.agents
        .get_mut(&victim)
        .unwrap()
        .stop_with(libc::SIGKILL, Duration::from_secs(1));
    let mut victim_agent = f.agents.remove(&victim);
    let killed = Instant::now();
    let mut recovered: BTreeMap<usize, Duration> = BTreeMap::new();
    let deadline = Duration::from_secs(TTL + 15);
    while recovered.len() < hit.len() && killed.elapsed() < deadline {
        for &t in &hit {
            if !recovered.contains_key(&t) && f.udp(t, 8, 1.0) == 8 && f.http(t).is_ok() {
                recovered.insert(t, killed.elapsed());
            }
        }
    }
    assert_eq!(
        recovered.len(),
        hit.len(),
        "tenants {hit:?} of {vname}: only {recovered:?} recovered within {deadline:?}\n{}",
        f.dump()
    );
    let after = f.placements();
    for &t in &hit {
        let id = format!("t{t}");
        assert!(!after[&id].contains(&vname), "{id} still on {vname}");
        f.works(t, 16)
            .unwrap_or_else(|e| panic!("after failover: {e}\n{}", f.dump()));
    }
    let worst = recovered.values().max().copied().unwrap_or_default();
    println!(
        "{vname} SIGKILLed: new connections of its tenants {hit:?} succeed after {recovered:?} (lease TTL {TTL} s)"
    );
    wait(30, || f.nodes_serve(&after).ok())
        .unwrap_or_else(|| panic!("after failover: {:?}\n{}", f.nodes_serve(&after), f.dump()));
    for t in 0..TENANTS {
        wait(10, || f.works(t, 8).ok())
            .unwrap_or_else(|| panic!("after failover: {:?}\n{}", f.works(t, 8), f.dump()));
    }
    let restarts: f64 = f
        .agents
        .keys()
        .map(|&i| {
            f.status(i, "flowgate_fleet_flowgate_restarts_for_reload")
                .unwrap_or(0.0)
        })
        .sum();
    println!("config changes applied by restart so far (reload refused): {restarts}");

    // 4. The node restarts and rejoins (new flowgate, no tenants moved back).
    if let Some(mut a) = victim_agent.take() {
        a.stop_with(libc::SIGKILL, Duration::from_secs(1));
    }
    // (Its old status file says flowgate_up 1: start from a clean one.)
    let _ = std::fs::remove_file(f.dir.join(&format!("n{victim}.prom")));
    let a = f.agent(victim);
    f.agents.insert(victim, a);
    let rejoin = Instant::now();
    wait(30, || {
        (f.live_nodes().len() == NODES
            && f.status(victim, "flowgate_fleet_flowgate_up") == Some(1.0)
            && f.flowgate_pid(victim) != Some(fpid)
            && f.node_metrics(victim).is_some())
        .then_some(())
    })
    .unwrap_or_else(|| panic!("{vname} did not rejoin\n{}", f.dump()));
    println!(
        "{vname} rejoined with a running flowgate after {:?}",
        rejoin.elapsed()
    );
    assert_eq!(
        f.placements(),
        after,
        "placements moved when {vname} rejoined"
    );

    // 5. etcd down: forwarding goes on, nothing restarts; then it catches up.
    println!("[{:?}] stopping etcd", t_start.elapsed());
    let pids: BTreeMap<usize, Option<i32>> = (1..=NODES).map(|i| (i, f.flowgate_pid(i))).collect();
    f.etcd.stop();
    let down = Instant::now();
    wait(10, || {
        (1..=NODES)
            .all(|i| f.status(i, "flowgate_fleet_etcd_up") == Some(0.0))
            .then_some(())
    })
    .unwrap_or_else(|| panic!("agents did not report etcd down\n{}", f.dump()));
    println!("[{:?}] agents report etcd down", t_start.elapsed());
    while down.elapsed() < Duration::from_secs(TTL + 2) {
        for t in 0..TENANTS {
            f.works(t, 8)
                .unwrap_or_else(|e| panic!("etcd down: {e}\n{}", f.dump()));
        }
    }
    let new_pids: BTreeMap<usize, Option<i32>> =
        (1..=NODES).map(|i| (i, f.flowgate_pid(i))).collect();
    assert_eq!(pids, new_pids, "a flowgate restarted while etcd was down");
    println!(
        "etcd down {:?}: all {TENANTS} tenants kept working",
        down.elapsed()
    );
    f.etcd.resume();
    let back = Instant::now();
    wait(15, || {
        (1..=NODES)
            .all(|i| f.status(i, "flowgate_fleet_etcd_up") == Some(1.0))
            .then_some(())
    })
    .unwrap_or_else(|| panic!("agents did not reconnect\n{}", f.dump()));
    assert_eq!(
        f.placements(),
        after,
        "placements moved across the etcd outage"
    );
    f.etcd.put(
        &format!("/flowgate/{FLEET}/tenants/t{TENANTS}"),
        &tenant_spec(TENANTS),
    );
    wait(30, || f.works(TENANTS, 8).ok())
        .unwrap_or_else(|| panic!("t{TENANTS}: {:?}\n{}", f.works(TENANTS, 8), f.dump()));
    println!(
        "etcd back: a new tenant works through its NAT {:?} after etcd returned",
        back.elapsed()
    );
    let fin = f.placements();
    wait(20, || f.nodes_serve(&fin).ok())
        .unwrap_or_else(|| panic!("final: {:?}\n{}", f.nodes_serve(&fin), f.dump()));
    assert!(
        f.daemons.iter_mut().all(|d| d.running()) && f.agents.values_mut().all(|a| a.running()),
        "a daemon died\n{}",
        f.dump()
    );
    println!(
        "worst failover {worst:?}; whole test {:?}",
        t_start.elapsed()
    );
}

//! The fleet control plane end to end, with real processes: etcd (Debian etcd-server) on
//! loopback, six `flowgate node-agent`s, the `flowgate controller`, and the `flowgate fabric`
//! agent programming a router namespace wired by veths to six node namespaces.
//!
//! Proves: placements obey k and the overlap bound m; the router's routes (public IPs by
//! destination, inside prefixes by source via policy rules) list exactly each tenant's shard
//! nodes as ECMP next hops; a SIGKILLed node's tenants are re-placed (survivors kept, other
//! tenants untouched) and its routes fixed within lease TTL + a few seconds; with etcd down
//! the agents keep their last state and the routes stay, and after etcd returns everything
//! catches up (a tenant added afterwards is placed and routed, the killed node rejoins).
//! Real traffic checks it: every node namespace answers UDP for every tenant IP with its
//! name, and 32 flows from a client behind the router to a tenant's IP are answered by
//! exactly the tenant's shard (ECMP with the L4 hash spreads them over all of it).
//!
//! Six nodes rather than five: with k=2, m=1 each tenant takes one node pair; five nodes have
//! 10 pairs, four (after a loss) only 6, too few to re-place 8 tenants without breaking m.
mod common;
#[path = "common/fleet.rs"]
mod fleet_common;

use common::{BgProc, Netns, TempDir};
use fleet_common::{
    gauge, inside, nat_tenant_spec, node_addr, public_ip, route_vias, rules, shard,
    start_controller_and_fabric, Etcd,
};
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

const NODES: usize = 6;
const TENANTS: usize = 8;
const TTL: u64 = 3;
const FLEET: &str = "citest";

/// (The NAT port range keeps the probes' port 7777 out of the fabric's return-traffic rules,
/// which send a public IP's ports in a node's slice to that node only.)
fn tenant_spec(t: usize) -> String {
    nat_tenant_spec(t, (20000, 29999), "")
}

/// The base config of a node whose agent renders its data-path config: the test NAT config
/// (ports, lcores, routes) without its own gateway.
fn base_config(dir: &TempDir) -> std::path::PathBuf {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/test-nat.yaml");
    let mut v: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v["nat_gateways"] = serde_yaml::Value::Sequence(vec![]);
    let out = dir.join("base.yaml");
    std::fs::write(&out, serde_yaml::to_string(&v).unwrap()).unwrap();
    out
}

/// Gateway ids in a node's rendered config.
fn rendered_gateways(path: &std::path::Path) -> Option<Vec<String>> {
    let v: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    let ids = v["nat_gateways"]
        .as_sequence()?
        .iter()
        .filter_map(|g| g["id"].as_str().map(String::from));
    Some(ids.collect())
}

fn table_of(t: &str) -> u32 {
    flowgate::fleet::fabric::table_of(t)
}

struct Fleet {
    dir: TempDir,
    etcd: Etcd,
    agents: BTreeMap<usize, BgProc>,
    daemons: Vec<BgProc>,
    router: Netns,
    _nodes: Vec<Netns>,
}

impl Fleet {
    fn agent(&self, i: usize) -> BgProc {
        let bin = common::flowgate_bin();
        let mut c = Command::new(&bin);
        c.args([
            "node-agent",
            "--etcd",
            &self.etcd.endpoint,
            "--fleet",
            FLEET,
        ])
        .args([
            "--node",
            &format!("n{i}"),
            "--addr",
            &node_addr(i),
            "--ttl",
            &TTL.to_string(),
        ])
        .arg("--state")
        .arg(self.dir.join(&format!("n{i}.state")))
        .arg("--status")
        .arg(self.dir.join(&format!("n{i}.prom")));
        if i == 1 {
            // Node 1 also renders its flowgate config through the apply hook.
            c.arg("--base-config")
                .arg(base_config(&self.dir))
                .arg("--config-out")
                .arg(self.dir.join("n1.yaml"));
        }
        BgProc::spawn(
            c,
            &format!("node-agent n{i}"),
            &self.dir.join(&format!("n{i}.log")),
        )
    }

    fn placements(&self) -> BTreeMap<String, BTreeSet<String>> {
        self.etcd
            .list(&format!("/flowgate/{FLEET}/placements/"))
            .into_iter()
            .map(|(t, v)| (t, shard(&v)))
            .collect()
    }

    fn live_nodes(&self) -> BTreeMap<String, String> {
        self.etcd.list(&format!("/flowgate/{FLEET}/nodes/"))
    }

    /// Whether the router's routes and rules match `placements` for tenants 0..n exactly.
    fn routes_match(
        &self,
        placements: &BTreeMap<String, BTreeSet<String>>,
        n: usize,
    ) -> Result<(), String> {
        let rules = rules(&self.router);
        for t in 0..n {
            let id = format!("t{t}");
            let want: BTreeSet<String> = placements
                .get(&id)
                .ok_or(format!("{id} not placed"))?
                .iter()
                .map(|n| node_addr(n[1..].parse().unwrap()))
                .collect();
            let got = route_vias(&self.router, &[&format!("{}/32", public_ip(t))]);
            if got != want {
                return Err(format!(
                    "{id}: route to {} via {got:?}, shard {want:?}",
                    public_ip(t)
                ));
            }
            let table = table_of(&id);
            if !rules.contains(&format!("from {} lookup {table}", inside(t))) {
                return Err(format!(
                    "{id}: no rule from {} lookup {table}:\n{rules}",
                    inside(t)
                ));
            }
            let got = route_vias(&self.router, &["default", "table", &table.to_string()]);
            if got != want {
                return Err(format!(
                    "{id}: table {table} default via {got:?}, shard {want:?}"
                ));
            }
        }
        Ok(())
    }

    fn dump(&self) -> String {
        let mut s = format!(
            "placements: {:?}\nnodes: {:?}\n",
            self.placements(),
            self.live_nodes()
        );
        s += &self
            .router
            .exec(&["ip", "route", "show", "table", "all"], 5)
            .stdout;
        for p in self.daemons.iter().chain(self.agents.values()) {
            s += &format!("--- {} ---\n{}\n", p.what, p.log_text());
        }
        s
    }
}

/// UDP responder in a node namespace: answers every datagram on port 7777 with the node name.
const RESPONDER: &str = "import socket,sys\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('0.0.0.0',7777))\nwhile True:\n    d,a=s.recvfrom(100)\n    s.sendto(sys.argv[1].encode(),a)\n";

/// From the client namespace: 32 datagrams from 32 source ports to `ip:7777`; the set of node
/// names that answered (the router spreads them over the tenant's ECMP group by L4 hash).
const PROBE: &str = "import socket,sys,select\nss=[socket.socket(socket.AF_INET,socket.SOCK_DGRAM) for _ in range(32)]\nfor s in ss:\n    s.sendto(b'?',(sys.argv[1],7777))\nseen=set()\nfor s in ss:\n    r,_,_=select.select([s],[],[],0.5)\n    if r: seen.add(s.recv(100).decode())\nprint(' '.join(sorted(seen)))\n";

fn probe(client: &Netns, ip: &str) -> BTreeSet<String> {
    let o = client.exec(&[common::PYTHON, "-c", PROBE, ip], 10);
    o.stdout.split_whitespace().map(String::from).collect()
}

/// Real traffic: every tenant's public IP is answered by exactly its shard's nodes.
fn traffic_matches(
    client: &Netns,
    placements: &BTreeMap<String, BTreeSet<String>>,
    n: usize,
) -> Result<(), String> {
    for t in 0..n {
        let id = format!("t{t}");
        let got = probe(client, &public_ip(t));
        if Some(&got) != placements.get(&id) {
            return Err(format!(
                "{id}: UDP to {} answered by {got:?}, shard {:?}",
                public_ip(t),
                placements.get(&id)
            ));
        }
    }
    Ok(())
}

fn wait<T>(secs: u64, f: impl FnMut() -> Option<T>) -> Option<T> {
    common::wait_for(Duration::from_secs(secs), f)
}

#[test]
fn fleet_placement_fabric_failover_and_etcd_outage() {
    let Some(_g) = common::setup("fleet_placement_fabric_failover_and_etcd_outage") else {
        return;
    };
    let dir = TempDir::new("fleet");
    let etcd = Etcd::start(&dir);

    // Router namespace + six node namespaces, router side 10.99.i.1/24, node 10.99.i.2/24.
    let router = Netns::new("fltr");
    let mut nodes = Vec::new();
    let mut responders = Vec::new();
    for i in 1..=NODES {
        let ns = Netns::new(&format!("fltn{i}"));
        common::must(
            &[
                "ip",
                "link",
                "add",
                &format!("fltr{i}"),
                "netns",
                "fltr",
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &ns.name,
            ],
            10,
        );
        router.must(
            &[
                "ip",
                "addr",
                "add",
                &format!("10.99.{i}.1/24"),
                "dev",
                &format!("fltr{i}"),
            ],
            5,
        );
        router.must(&["ip", "link", "set", &format!("fltr{i}"), "up"], 5);
        ns.must(
            &[
                "ip",
                "addr",
                "add",
                &format!("{}/24", node_addr(i)),
                "dev",
                "eth0",
            ],
            5,
        );
        ns.must(&["ip", "link", "set", "eth0", "up"], 5);
        ns.must(
            &[
                "ip",
                "route",
                "add",
                "default",
                "via",
                &format!("10.99.{i}.1"),
            ],
            5,
        );
        // Every node can answer for every tenant: only the fabric decides who gets what.
        for t in 0..=TENANTS {
            ns.must(
                &[
                    "ip",
                    "addr",
                    "add",
                    &format!("{}/32", public_ip(t)),
                    "dev",
                    "lo",
                ],
                5,
            );
        }
        let log = dir.join(&format!("responder{i}.log"));
        responders.push(ns.spawn(&[common::PYTHON, "-c", RESPONDER, &format!("n{i}")], &log));
        nodes.push(ns);
    }
    // A client behind the router.
    let client = Netns::new("fltc");
    common::must(
        &[
            "ip", "link", "add", "fltrc", "netns", "fltr", "type", "veth", "peer", "name", "eth0",
            "netns", "fltc",
        ],
        10,
    );
    router.must(&["ip", "addr", "add", "10.97.0.1/24", "dev", "fltrc"], 5);
    router.must(&["ip", "link", "set", "fltrc", "up"], 5);
    client.must(&["ip", "addr", "add", "10.97.0.2/24", "dev", "eth0"], 5);
    client.must(&["ip", "link", "set", "eth0", "up"], 5);
    client.must(&["ip", "route", "add", "default", "via", "10.97.0.1"], 5);

    for t in 0..TENANTS {
        etcd.put(&format!("/flowgate/{FLEET}/tenants/t{t}"), &tenant_spec(t));
    }
    let mut f = Fleet {
        dir,
        etcd,
        agents: BTreeMap::new(),
        daemons: vec![],
        router,
        _nodes: nodes,
    };
    for i in 1..=NODES {
        let a = f.agent(i);
        f.agents.insert(i, a);
    }
    let status = f.dir.join("fabric.prom");
    f.daemons.extend(start_controller_and_fabric(
        &f.etcd,
        FLEET,
        NODES,
        TTL,
        "fltr",
        &["--status", status.to_str().unwrap()],
        &f.dir.path,
    ));

    // 1. Placement: every tenant on k=2 live nodes, no two sharing more than m=1.
    let t0 = Instant::now();
    let placed = wait(20, || {
        let p = f.placements();
        (p.len() == TENANTS).then_some(p)
    })
    .unwrap_or_else(|| panic!("tenants not placed within 20 s\n{}", f.dump()));
    let all: Vec<&BTreeSet<String>> = placed.values().collect();
    for (t, s) in &placed {
        assert_eq!(s.len(), 2, "{t}: {s:?}");
        assert!(
            s.iter().all(|n| f.live_nodes().contains_key(n)),
            "{t}: {s:?}"
        );
    }
    for i in 0..all.len() {
        for j in i + 1..all.len() {
            assert!(
                all[i].intersection(all[j]).count() <= 1,
                "overlap > m: {all:?}"
            );
        }
    }
    // 2. Fabric: routes and rules list exactly each shard's nodes.
    wait(15, || f.routes_match(&placed, TENANTS).ok()).unwrap_or_else(|| {
        panic!(
            "routes: {:?}\n{}",
            f.routes_match(&placed, TENANTS),
            f.dump()
        )
    });
    println!("placed and routed {TENANTS} tenants in {:?}", t0.elapsed());
    wait(10, || traffic_matches(&client, &placed, TENANTS).ok()).unwrap_or_else(|| {
        panic!(
            "traffic: {:?}\n{}",
            traffic_matches(&client, &placed, TENANTS),
            f.dump()
        )
    });
    let multipath = f
        .router
        .exec(&["sysctl", "-n", "net.ipv4.fib_multipath_hash_policy"], 5);
    assert_eq!(multipath.stdout.trim(), "1");
    // Node agents serve exactly their tenants.
    for i in 1..=NODES {
        let node = format!("n{i}");
        let want: Vec<&String> = placed
            .iter()
            .filter(|(_, s)| s.contains(&node))
            .map(|(t, _)| t)
            .collect();
        let path = f.dir.join(&format!("n{i}.state"));
        wait(10, || {
            let text = std::fs::read_to_string(&path).ok()?;
            let v: serde_yaml::Value = serde_yaml::from_str(&text).ok()?;
            let got: Vec<String> = v["tenants"]
                .as_mapping()?
                .keys()
                .filter_map(|k| k.as_str().map(String::from))
                .collect();
            (got.iter().collect::<Vec<_>>() == want).then_some(())
        })
        .unwrap_or_else(|| panic!("{node}: state file does not list {want:?}\n{}", f.dump()));
    }

    // The apply hook rendered node 1's config with exactly its gateways (validated by the
    // real config loader before it was written).
    let n1: Vec<String> = placed
        .iter()
        .filter(|(_, s)| s.contains("n1"))
        .map(|(t, _)| t.clone())
        .collect();
    wait(10, || {
        (rendered_gateways(&f.dir.join("n1.yaml"))? == n1).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "n1.yaml gateways {:?}, want {n1:?}\n{}",
            rendered_gateways(&f.dir.join("n1.yaml")),
            f.dump()
        )
    });

    // 3. SIGKILL the node agent of t0's first node: its tenants move, the others stay.
    let victim: usize = placed["t0"].iter().next().unwrap()[1..].parse().unwrap();
    let vname = format!("n{victim}");
    f.agents
        .get_mut(&victim)
        .unwrap()
        .stop_with(libc::SIGKILL, Duration::from_secs(1));
    let killed = Instant::now();
    let after = wait(TTL + 10, || {
        let p = f.placements();
        (p.len() == TENANTS && p.values().all(|s| s.len() == 2 && !s.contains(&vname))).then_some(p)
    })
    .unwrap_or_else(|| panic!("{vname}'s tenants not re-placed\n{}", f.dump()));
    let replaced_in = killed.elapsed();
    wait(10, || f.routes_match(&after, TENANTS).ok()).unwrap_or_else(|| {
        panic!(
            "routes after failover: {:?}\n{}",
            f.routes_match(&after, TENANTS),
            f.dump()
        )
    });
    let routed_in = killed.elapsed();
    // (A new next hop may still be resolving its neighbour: a few seconds of grace.)
    wait(5, || traffic_matches(&client, &after, TENANTS).ok()).unwrap_or_else(|| {
        let e = traffic_matches(&client, &after, TENANTS);
        panic!("traffic after failover: {e:?}\n{}", f.dump())
    });
    println!("node {vname} SIGKILLed: re-placed after {replaced_in:?}, routes updated after {routed_in:?} (lease TTL {TTL} s)");
    assert!(
        routed_in < Duration::from_secs(TTL + 5),
        "failover took {routed_in:?}"
    );
    let mut kept = 0;
    for (t, before) in &placed {
        if before.contains(&vname) {
            // The survivor stays unless the overlap bound forced a whole new shard.
            kept += usize::from(before.iter().any(|n| n != &vname && after[t].contains(n)));
        } else {
            assert_eq!(&after[t], before, "{t} did not lose a node but moved");
        }
    }
    let moved = placed.values().filter(|s| s.contains(&vname)).count();
    println!("{moved} tenants re-placed, {kept} kept their surviving node");
    let all: Vec<&BTreeSet<String>> = after.values().collect();
    for i in 0..all.len() {
        for j in i + 1..all.len() {
            assert!(
                all[i].intersection(all[j]).count() <= 1,
                "overlap > m after failover: {all:?}"
            );
        }
    }

    // 4. etcd down: agents keep their state and say so; the routes stay.
    let states: Vec<(usize, String)> = f
        .agents
        .keys()
        .filter(|&&i| i != victim)
        .map(|&i| {
            (
                i,
                std::fs::read_to_string(f.dir.join(&format!("n{i}.state"))).unwrap(),
            )
        })
        .collect();
    f.etcd.stop();
    let down = wait(10, || {
        states
            .iter()
            .all(|(i, _)| {
                gauge(&f.dir.join(&format!("n{i}.prom")), "flowgate_fleet_etcd_up") == Some(0.0)
            })
            .then_some(())
    });
    assert!(
        down.is_some(),
        "agents did not report etcd down\n{}",
        f.dump()
    );
    std::thread::sleep(Duration::from_secs(TTL + 1));
    for (i, s) in &states {
        assert_eq!(
            &std::fs::read_to_string(f.dir.join(&format!("n{i}.state"))).unwrap(),
            s,
            "n{i} state changed while etcd was down"
        );
    }
    f.routes_match(&after, TENANTS)
        .unwrap_or_else(|e| panic!("routes changed while etcd was down: {e}"));
    assert!(f.agents[&states[0].0]
        .log_text()
        .contains("keeping last known state"));

    // 5. etcd back: agents reconnect, nothing moves, and new work is picked up: a ninth
    // tenant is placed and routed, and the killed node rejoins.
    f.etcd.resume();
    let back = Instant::now();
    wait(15, || {
        states
            .iter()
            .all(|(i, _)| {
                gauge(&f.dir.join(&format!("n{i}.prom")), "flowgate_fleet_etcd_up") == Some(1.0)
            })
            .then_some(())
    })
    .unwrap_or_else(|| panic!("agents did not reconnect to etcd\n{}", f.dump()));
    println!(
        "agents reconnected {:?} after etcd returned",
        back.elapsed()
    );
    f.etcd.put(
        &format!("/flowgate/{FLEET}/tenants/t{TENANTS}"),
        &tenant_spec(TENANTS),
    );
    let a = f.agent(victim);
    f.agents.insert(victim, a);
    let fin = wait(20, || {
        let p = f.placements();
        (p.len() == TENANTS + 1 && f.live_nodes().len() == NODES).then_some(p)
    })
    .unwrap_or_else(|| {
        panic!(
            "ninth tenant not placed / node not rejoined after etcd returned\n{}",
            f.dump()
        )
    });
    wait(10, || f.routes_match(&fin, TENANTS + 1).ok()).unwrap_or_else(|| {
        panic!(
            "routes after etcd returned: {:?}\n{}",
            f.routes_match(&fin, TENANTS + 1),
            f.dump()
        )
    });
    for (t, s) in &after {
        assert_eq!(&fin[t], s, "{t} moved across the etcd outage");
    }
    wait(5, || traffic_matches(&client, &fin, TENANTS + 1).ok()).unwrap_or_else(|| {
        let e = traffic_matches(&client, &fin, TENANTS + 1);
        panic!("traffic after etcd returned: {e:?}\n{}", f.dump())
    });
    println!(
        "after etcd outage: ninth tenant placed and routed {:?} after etcd returned",
        back.elapsed()
    );
    assert!(
        f.daemons.iter_mut().all(|d| d.running()),
        "a daemon died\n{}",
        f.dump()
    );
}

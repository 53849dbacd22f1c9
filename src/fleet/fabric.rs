//! `flowgate fabric`: programs the router in front of the fleet from the placements.
//!
//! Here the "VPC router" is a Linux network namespace; the agent drives it with iproute2:
//! - each tenant's public IPs / VIPs: `ip route replace P proto 77 nexthop via A nexthop via B`,
//!   an ECMP group of exactly the live nodes of its shard (addresses from `nodes/<id>`);
//! - each tenant's inside prefixes: policy routing by source, `ip rule add pref 10000 from P
//!   table T` with T the tenant's table (`default` via the same ECMP group);
//! - `net.ipv4.fib_multipath_hash_policy=1`: the ECMP hash covers the L4 ports, so a tenant's
//!   flows spread over its nodes while each flow stays on one.
//! - return traffic of a NAT tenant (priority 9000, before all of the above): node i of the
//!   shard (slot order of the placement) owns slice i of the tenant's port range, so
//!   `ip rule add to P ipproto tcp|udp dport A-B table T(node i)`; ICMP (no ports to match)
//!   goes both ways through the first live node of the shard (docs/fleet.md has the picture).
//!
//! A node whose lease expired is dropped from every group at once (before the controller
//! has re-placed its tenants), so traffic stops going to a dead node within the lease TTL.
//! Our routes carry protocol 77 and our rules priority 10000, so the agent removes its own
//! leftovers at start and never touches anything else. etcd unreachable: the routes stay.
//! In a real deployment this agent is replaced by whatever owns the network: VPC route tables
//! / GWLB on EC2, or each node announcing its tenants' prefixes over BGP with ECMP in a data
//! centre (see docs/fleet.md).
use super::hash;
use super::keys::{decode_shard, decode_slots, port_slice, Keys, Prefix, TenantSpec};
use super::status;
use super::store;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

pub const PROTO: &str = "77";
pub const RULE_PREF: &str = "10000";
/// Priority of the return-traffic rules (before the inside-prefix rules: ICMP from an inside
/// prefix goes to the tenant's ICMP owner, not to the ECMP group).
pub const RETURN_PREF: &str = "9000";

#[derive(Clone, Debug)]
pub struct FabricOpts {
    pub endpoints: Vec<String>,
    pub fleet: String,
    pub netns: String,
    pub status: Option<PathBuf>,
    pub resync: Duration,
}

/// Routing table of a tenant's inside prefixes: fixed from its id (100000..1000000).
pub fn table_of(tenant: &str) -> u32 {
    100_000 + (hash::fnv1a64(tenant.as_bytes()) % 900_000) as u32
}

/// Routing table of a node (`default via <node>`), the target of the return-traffic rules
/// (1000000..1900000, disjoint from the tenant tables).
pub fn node_table(node: &str) -> u32 {
    1_000_000 + (hash::fnv1a64(node.as_bytes()) % 900_000) as u32
}

/// The router's desired state.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Desired {
    /// destination prefix -> ECMP next hops (public IPs / VIPs).
    pub routes: BTreeMap<Prefix, Vec<Ipv4Addr>>,
    /// source prefix -> table (inside prefixes).
    pub rules: BTreeMap<Prefix, u32>,
    /// table -> ECMP next hops of its default route.
    pub tables: BTreeMap<u32, Vec<Ipv4Addr>>,
    /// node table -> the node's address (one default route each).
    pub node_tables: BTreeMap<u32, Ipv4Addr>,
    /// Return-traffic rules (priority [`RETURN_PREF`]), selector and table as `ip rule` words:
    /// `to P ipproto tcp dport A-B table T` sends a NAT tenant's public IP and the port slice
    /// of node i of its shard to node i; `to P ipproto icmp` and `from I ipproto icmp` send
    /// its ICMP both ways to one node, the first live one of its shard (fib rules cannot
    /// match an ICMP identifier).
    pub return_rules: std::collections::BTreeSet<Vec<String>>,
}

/// Desired routes from the store's content; problems are reported, not fatal.
pub fn desired(
    nodes: &BTreeMap<String, String>,
    tenants: &BTreeMap<String, String>,
    placements: &BTreeMap<String, String>,
) -> (Desired, Vec<String>) {
    desired_ready(nodes, tenants, placements, &BTreeMap::new())
}

/// [`desired`], where a node is a next hop of a tenant only once it serves it: `applied`
/// (`applied/<node>`, written by agents that supervise their flowgate) lists the tenants
/// the node's running flowgate has. A node without such a key (an agent without a data
/// path to supervise) counts as serving all its tenants. A tenant with no ready node keeps
/// its inside-prefix rule to a blackhole table: its private sources never leak out
/// untranslated through the router's main table.
pub fn desired_ready(
    nodes: &BTreeMap<String, String>,
    tenants: &BTreeMap<String, String>,
    placements: &BTreeMap<String, String>,
    applied: &BTreeMap<String, String>,
) -> (Desired, Vec<String>) {
    let mut d = Desired::default();
    let mut errs = Vec::new();
    let mut owner: BTreeMap<Prefix, &str> = BTreeMap::new();
    for (t, shard) in placements {
        let Some(text) = tenants.get(t) else { continue };
        let spec = match TenantSpec::parse(text) {
            Ok(s) => s,
            Err(e) => {
                errs.push(format!("tenant {t}: {e}"));
                continue;
            }
        };
        let ready: BTreeMap<String, String> = nodes
            .iter()
            .filter(|(n, _)| {
                applied
                    .get(*n)
                    .is_none_or(|v| decode_shard(v).iter().any(|x| x == t))
            })
            .map(|(n, a)| (n.clone(), a.clone()))
            .collect();
        let nodes = &ready;
        let mut hops: Vec<Ipv4Addr> = decode_shard(shard)
            .iter()
            .filter_map(|n| nodes.get(n)?.parse().ok())
            .collect();
        hops.sort();
        hops.dedup();
        if hops.is_empty() {
            errs.push(format!(
                "tenant {t}: no live and ready node in its shard {shard}"
            ));
        }
        for p in spec.public.iter().chain(&spec.inside) {
            if let Some(o) = owner.insert(*p, t) {
                if o != t {
                    errs.push(format!(
                        "prefix {p} claimed by tenants {o} and {t}; {t} ignored"
                    ));
                    owner.insert(*p, o);
                }
            }
        }
        for p in &spec.public {
            if owner[p] == t && !hops.is_empty() {
                d.routes.insert(*p, hops.clone());
            }
        }
        if spec.kind == "nat" {
            return_rules(&mut d, nodes, &spec, shard, |p| owner[p] == t);
        }
        if !spec.inside.is_empty() {
            let table = table_of(t);
            d.tables.insert(table, hops.clone());
            for p in &spec.inside {
                if owner[p] == t {
                    d.rules.insert(*p, table);
                }
            }
        }
    }
    (d, errs)
}

/// The return rules of one NAT tenant (see [`Desired::return_rules`]); only live nodes.
fn return_rules(
    d: &mut Desired,
    nodes: &BTreeMap<String, String>,
    spec: &TenantSpec,
    shard: &str,
    mine: impl Fn(&Prefix) -> bool,
) {
    let slots = decode_slots(shard);
    let (first, last) = spec.port_range();
    let w = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<String>>();
    let addr_of = |n: &String| nodes.get(n).and_then(|a| a.parse::<Ipv4Addr>().ok());
    // The node that takes over the slice of a dead (or not ready) node: the first ready one
    // of the shard. Every node of the shard replicates its flows to every other one, so it
    // holds the dead node's flows; and the slice stays the dead node's (reserved) until the
    // controller hands the slot to a replacement, which resyncs before it is ready.
    let holder = slots.iter().find(|n| addr_of(n).is_some());
    let mut owner = None;
    for (i, n) in slots.iter().enumerate() {
        let Some((n, addr)) = addr_of(n)
            .map(|a| (n, a))
            .or_else(|| holder.and_then(|h| Some((h, addr_of(h)?))))
        else {
            continue;
        };
        let table = node_table(n);
        d.node_tables.insert(table, addr);
        owner.get_or_insert(table);
        let Some((a, b)) = port_slice(first, last, i, slots.len()) else {
            continue;
        };
        for p in spec.public.iter().filter(|p| mine(p)) {
            for proto in ["tcp", "udp"] {
                d.return_rules.insert(w(&[
                    "to",
                    &p.to_string(),
                    "ipproto",
                    proto,
                    "dport",
                    &format!("{a}-{b}"),
                    "table",
                    &table.to_string(),
                ]));
            }
        }
    }
    let Some(table) = owner else { return };
    for p in spec.public.iter().filter(|p| mine(p)) {
        d.return_rules.insert(w(&[
            "to",
            &p.to_string(),
            "ipproto",
            "icmp",
            "table",
            &table.to_string(),
        ]));
    }
    for p in spec.inside.iter().filter(|p| mine(p)) {
        d.return_rules.insert(w(&[
            "from",
            &p.to_string(),
            "ipproto",
            "icmp",
            "table",
            &table.to_string(),
        ]));
    }
}

fn nexthops(h: &[Ipv4Addr]) -> Vec<String> {
    h.iter()
        .flat_map(|a| ["nexthop".to_string(), "via".to_string(), a.to_string()])
        .collect()
}

/// iproute2 argument lists (after `ip -n NS`) that take the router from `old` to `new`.
pub fn commands(old: &Desired, new: &Desired) -> Vec<Vec<String>> {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<String>>();
    let mut out = Vec::new();
    for (t, a) in &new.node_tables {
        if old.node_tables.get(t) != Some(a) {
            out.push(s(&[
                "route",
                "replace",
                "default",
                "table",
                &t.to_string(),
                "proto",
                PROTO,
                "via",
                &a.to_string(),
            ]));
        }
    }
    for r in new.return_rules.difference(&old.return_rules) {
        let mut c = s(&["rule", "add", "pref", RETURN_PREF]);
        c.extend(r.iter().cloned());
        out.push(c);
    }
    for r in old.return_rules.difference(&new.return_rules) {
        let mut c = s(&["rule", "del", "pref", RETURN_PREF]);
        c.extend(r.iter().cloned());
        out.push(c);
    }
    for t in old
        .node_tables
        .keys()
        .filter(|t| !new.node_tables.contains_key(t))
    {
        out.push(s(&[
            "route",
            "del",
            "default",
            "table",
            &t.to_string(),
            "proto",
            PROTO,
        ]));
    }
    for (p, h) in &new.routes {
        if old.routes.get(p) != Some(h) {
            let mut c = s(&["route", "replace", &p.to_string(), "proto", PROTO]);
            c.extend(nexthops(h));
            out.push(c);
        }
    }
    for (t, h) in &new.tables {
        if old.tables.get(t) != Some(h) {
            let mut c = s(&["route", "replace"]);
            // No ready node: drop the tenant's inside traffic rather than route it untranslated.
            if h.is_empty() {
                c.push("blackhole".into());
            }
            c.extend(s(&["default", "table", &t.to_string(), "proto", PROTO]));
            c.extend(nexthops(h));
            out.push(c);
        }
    }
    for (p, t) in &new.rules {
        if old.rules.get(p) != Some(t) {
            if let Some(ot) = old.rules.get(p) {
                out.push(s(&[
                    "rule",
                    "del",
                    "pref",
                    RULE_PREF,
                    "from",
                    &p.to_string(),
                    "table",
                    &ot.to_string(),
                ]));
            }
            out.push(s(&[
                "rule",
                "add",
                "pref",
                RULE_PREF,
                "from",
                &p.to_string(),
                "table",
                &t.to_string(),
            ]));
        }
    }
    for (p, t) in &old.rules {
        if !new.rules.contains_key(p) {
            out.push(s(&[
                "rule",
                "del",
                "pref",
                RULE_PREF,
                "from",
                &p.to_string(),
                "table",
                &t.to_string(),
            ]));
        }
    }
    for t in old.tables.keys().filter(|t| !new.tables.contains_key(t)) {
        out.push(s(&[
            "route",
            "del",
            "default",
            "table",
            &t.to_string(),
            "proto",
            PROTO,
        ]));
    }
    for p in old.routes.keys().filter(|p| !new.routes.contains_key(p)) {
        out.push(s(&["route", "del", &p.to_string(), "proto", PROTO]));
    }
    out
}

fn ip(netns: &str, args: &[String]) -> Result<(), String> {
    let o = Command::new("ip")
        .arg("-n")
        .arg(netns)
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if o.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip -n {netns} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        ))
    }
}

/// Router settings and removal of our leftovers from an earlier run.
fn prepare(netns: &str) -> Result<(), String> {
    for kv in [
        "net.ipv4.ip_forward=1",
        "net.ipv4.fib_multipath_hash_policy=1",
    ] {
        let o = Command::new("ip")
            .args(["netns", "exec", netns, "sysctl", "-qw", kv])
            .output()
            .map_err(|e| format!("sysctl: {e}"))?;
        if !o.status.success() {
            return Err(format!(
                "netns {netns}: sysctl {kv}: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ));
        }
    }
    let args = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    // Flush fails when there is nothing to flush on some iproute2 versions: ignore.
    let _ = ip(
        netns,
        &args(&["route", "flush", "table", "all", "proto", PROTO]),
    );
    // One rule per call; bounded.
    for pref in [RULE_PREF, RETURN_PREF] {
        for _ in 0..10_000 {
            if ip(netns, &args(&["rule", "del", "pref", pref])).is_err() {
                break;
            }
        }
    }
    Ok(())
}

struct State {
    suspected: std::collections::BTreeSet<String>,
    applied: Desired,
    etcd_up: bool,
    errors: Vec<String>,
}

fn write_status(o: &FabricOpts, s: &State) {
    let Some(p) = &o.status else { return };
    let text = status::render(
        "fabric",
        &o.netns,
        &[
            (
                "etcd_up",
                "1 when the last etcd sync succeeded, 0 while keeping the last routes",
                f64::from(u8::from(s.etcd_up)),
            ),
            (
                "routes",
                "tenant public-prefix routes programmed",
                s.applied.routes.len() as f64,
            ),
            (
                "rules",
                "tenant inside-prefix rules programmed",
                s.applied.rules.len() as f64,
            ),
        ],
    );
    let _ = status::write_atomic(p, &text);
}

async fn session(o: &FabricOpts, st: &mut State) -> store::Result<()> {
    let keys = Keys::new(&o.fleet);
    let mut c = store::connect(&o.endpoints, Some(Duration::from_secs(2))).await?;
    let (_w, mut stream) = store::watch(&mut c, &keys.root).await?;
    loop {
        let nodes = store::list(&mut c, &keys.nodes()).await?;
        let tenants = store::list(&mut c, &keys.tenants()).await?;
        let placements = store::list(&mut c, &keys.placements()).await?;
        let applied = store::list(&mut c, &keys.applied()).await?;
        // A node whose flowgate a replication peer reports silent is out of every group at
        // once (its lease may live on: the agent is up, or has not expired yet).
        let suspects = store::list(&mut c, &keys.suspects()).await?;
        let out: std::collections::BTreeSet<String> = suspects
            .keys()
            .filter_map(|k| super::keys::suspected_node(k).map(String::from))
            .collect();
        if out != st.suspected {
            info!(
                "fabric {}: suspected nodes [{}] at {:.3} (reports: {:?})",
                o.netns,
                out.iter().cloned().collect::<Vec<_>>().join(" "),
                status::now_s(),
                suspects.keys().collect::<Vec<_>>()
            );
            st.suspected = out.clone();
        }
        let nodes: BTreeMap<String, String> = nodes
            .into_iter()
            .filter(|(n, _)| !out.contains(n))
            .collect();
        if !st.etcd_up {
            info!("fabric {}: etcd reachable, syncing", o.netns);
        }
        st.etcd_up = true;
        let (want, errs) = desired_ready(&nodes, &tenants, &placements, &applied);
        if errs != st.errors {
            errs.iter().for_each(|e| warn!("fabric {}: {e}", o.netns));
            st.errors = errs;
        }
        let mut failed = false;
        for cmd in commands(&st.applied, &want) {
            match ip(&o.netns, &cmd) {
                Ok(()) => info!(
                    "fabric {}: ip {} (at {:.3})",
                    o.netns,
                    cmd.join(" "),
                    status::now_s()
                ),
                Err(e) => {
                    error!("fabric {}: {e}", o.netns);
                    failed = true;
                }
            }
        }
        // After a failed command the kernel state is uncertain: start from scratch next time.
        st.applied = if failed {
            prepare(&o.netns)?;
            Desired::default()
        } else {
            want
        };
        write_status(o, st);
        store::wait_change(&mut stream, o.resync).await?;
    }
}

pub fn run(o: FabricOpts) -> Result<(), String> {
    prepare(&o.netns)?;
    info!("fabric {}: router ready (ECMP L4 hash on, our routes proto {PROTO}, rules pref {RULE_PREF})", o.netns);
    let rt = store::runtime();
    let mut st = State {
        suspected: Default::default(),
        applied: Desired::default(),
        etcd_up: false,
        errors: vec![],
    };
    loop {
        if let Err(e) = rt.block_on(session(&o, &mut st)) {
            if st.etcd_up {
                warn!(
                    "fabric {}: etcd unreachable ({e}): keeping the last routes",
                    o.netns
                );
            }
            st.etcd_up = false;
            write_status(&o, &st);
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(v: &[(&str, &str)]) -> BTreeMap<String, String> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn routes_follow_live_shard_nodes() {
        let nodes = map(&[
            ("n1", "10.99.1.2"),
            ("n2", "10.99.2.2"),
            ("n3", "10.99.3.2"),
        ]);
        let tenants = map(&[
            (
                "a",
                "kind: nat\npublic: [203.0.113.10]\ninside: [10.1.0.0/24]",
            ),
            ("b", "kind: lb\npublic: [198.18.0.1/32]"),
            ("c", "kind: nat\npublic: [203.0.113.10]"),
        ]);
        let placements = map(&[("a", "n1,n3"), ("b", "n2,n9"), ("c", "n2")]);
        let (d, errs) = desired(&nodes, &tenants, &placements);
        let p = |s| Prefix::parse(s).unwrap();
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert_eq!(
            d.routes[&p("203.0.113.10/32")],
            [ip("10.99.1.2"), ip("10.99.3.2")]
        );
        // n9 is not live: left out.
        assert_eq!(d.routes[&p("198.18.0.1/32")], [ip("10.99.2.2")]);
        assert_eq!(d.rules[&p("10.1.0.0/24")], table_of("a"));
        assert_eq!(d.tables[&table_of("a")].len(), 2);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].contains("claimed by tenants a and c"));

        let cmds = commands(&Desired::default(), &d);
        let text: Vec<String> = cmds.iter().map(|c| c.join(" ")).collect();
        assert!(text.contains(&"route replace 203.0.113.10/32 proto 77 nexthop via 10.99.1.2 nexthop via 10.99.3.2".to_string()), "{text:?}");
        assert!(text.contains(&format!(
            "rule add pref 10000 from 10.1.0.0/24 table {}",
            table_of("a")
        )));
        assert!(commands(&d, &d).is_empty(), "no change, no command");
        let gone = commands(&d, &Desired::default());
        // 4 routes/rules/tables + the NAT tenants' return paths: 3 node tables (a's two, c's
        // one), a's 2 x tcp/udp slices and 2 ICMP rules (c's prefix belongs to a).
        assert_eq!(gone.len(), 4 + 3 + 6, "{gone:?}");
        assert!(gone.iter().all(|c| c[1] == "del"));
    }

    /// Return traffic: node i of the shard (slot order) gets slice i of the port range.
    #[test]
    fn return_rules_follow_slots_and_live_nodes() {
        let nodes = map(&[("n1", "10.99.1.2"), ("n2", "10.99.2.2")]);
        let tenants = map(&[(
            "a",
            "kind: nat\npublic: [203.0.113.10]\ninside: [10.1.0.0/24]\nconfig: {port_range: {first: 20000, last: 20999}}",
        )]);
        let placements = map(&[("a", "n2,n1")]);
        let (d, errs) = desired(&nodes, &tenants, &placements);
        assert!(errs.is_empty(), "{errs:?}");
        let text: Vec<String> = commands(&Desired::default(), &d)
            .iter()
            .map(|c| c.join(" "))
            .collect();
        let (t1, t2) = (node_table("n1"), node_table("n2"));
        for want in [
            format!("route replace default table {t2} proto 77 via 10.99.2.2"),
            format!(
                "rule add pref 9000 to 203.0.113.10/32 ipproto tcp dport 20000-20499 table {t2}"
            ),
            format!(
                "rule add pref 9000 to 203.0.113.10/32 ipproto udp dport 20500-20999 table {t1}"
            ),
            format!("rule add pref 9000 to 203.0.113.10/32 ipproto icmp table {t2}"),
            format!("rule add pref 9000 from 10.1.0.0/24 ipproto icmp table {t2}"),
        ] {
            assert!(text.contains(&want), "{want}\n{text:#?}");
        }
        // n2 dies: its slice (kept as is, reserved) goes to n1, which holds n2's flows as
        // replicas; n2's table goes, ICMP moves to n1.
        let (e, _) = desired(&map(&[("n1", "10.99.1.2")]), &tenants, &placements);
        let text: Vec<String> = commands(&d, &e).iter().map(|c| c.join(" ")).collect();
        assert!(text.contains(&format!(
            "rule add pref 9000 to 203.0.113.10/32 ipproto icmp table {t1}"
        )));
        assert!(text.contains(&format!(
            "rule del pref 9000 to 203.0.113.10/32 ipproto tcp dport 20000-20499 table {t2}"
        )));
        assert!(text.contains(&format!(
            "rule add pref 9000 to 203.0.113.10/32 ipproto tcp dport 20000-20499 table {t1}"
        )));
        assert!(text.contains(&format!("route del default table {t2} proto 77")));
        assert_eq!(e.return_rules.len(), 4 + 2, "{:?}", e.return_rules);
    }

    /// A node is a next hop of a tenant only once its flowgate serves it; none ready: the
    /// inside prefix goes to a blackhole.
    #[test]
    fn only_ready_nodes_carry_a_tenant() {
        let nodes = map(&[("n1", "10.99.1.2"), ("n2", "10.99.2.2")]);
        let tenants = map(&[(
            "a",
            "kind: nat\npublic: [203.0.113.10]\ninside: [10.1.0.0/24]",
        )]);
        let placements = map(&[("a", "n1,n2")]);
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        let p = |s| Prefix::parse(s).unwrap();
        let (d, _) = desired_ready(
            &nodes,
            &tenants,
            &placements,
            &map(&[("n1", "a,b"), ("n2", "b")]),
        );
        assert_eq!(d.routes[&p("203.0.113.10/32")], [ip("10.99.1.2")]);
        assert_eq!(
            d.return_rules
                .iter()
                .filter(|r| r.contains(&"dport".to_string())
                    && r.last() == Some(&node_table("n1").to_string()))
                .count(),
            4,
            "n1 serves its slice and, until n2 is ready, n2's"
        );
        let (e, errs) = desired_ready(
            &nodes,
            &tenants,
            &placements,
            &map(&[("n1", ""), ("n2", "")]),
        );
        assert!(e.routes.is_empty() && errs.len() == 1, "{errs:?}");
        assert_eq!(e.rules[&p("10.1.0.0/24")], table_of("a"));
        let text: Vec<String> = commands(&d, &e).iter().map(|c| c.join(" ")).collect();
        assert!(
            text.contains(&format!(
                "route replace blackhole default table {} proto 77",
                table_of("a")
            )),
            "{text:?}"
        );
    }

    #[test]
    fn table_ids_are_stable() {
        assert_eq!(table_of("a"), table_of("a"));
        assert!((100_000..1_000_000).contains(&table_of("tenant-x")));
    }
}

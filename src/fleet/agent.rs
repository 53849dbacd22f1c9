//! `flowgate node-agent`: a node's membership and desired state.
//!
//! Registers `nodes/<id> = <addr>` under a lease (TTL `ttl`, kept alive every ttl/3), watches
//! the placements and serves the tenants whose shard contains the node: their specs go to the
//! state file (YAML, rewritten atomically on change) and, with `--base-config`, through the
//! [`apply`](super::apply) hook into the local flowgate's config + SIGHUP.
//!
//! etcd unreachable: the agent keeps the last known state (state file and data path are left
//! as they are), logs `etcd unreachable ... keeping last known state`, sets
//! `flowgate_fleet_etcd_up 0` in its status file, and retries every second; when etcd is back
//! it re-registers (new lease if the old one is gone) and catches up.
use super::apply;
use super::keys::{decode_shard, decode_slots, Keys, TenantSpec};
use super::status;
use super::store;
use super::supervise::{SuperviseOpts, Supervisor};
use etcd_client::PutOptions;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct AgentOpts {
    pub endpoints: Vec<String>,
    pub fleet: String,
    pub node: String,
    pub addr: std::net::Ipv4Addr,
    pub ttl: i64,
    pub state: PathBuf,
    pub status: Option<PathBuf>,
    pub base_config: Option<PathBuf>,
    pub config_out: Option<PathBuf>,
    pub reload_pid: Option<i32>,
    pub resync: Duration,
    /// The node's data path, run and supervised by the agent (see [`super::supervise`]).
    pub run_cmd: Vec<String>,
    pub flowgate_pid_file: Option<PathBuf>,
    pub flowgate_log: Option<PathBuf>,
    /// The node's replication address: published as `repl/<node>`, rendered as the config's
    /// `replication.listen`, with the other live nodes of its shards as peers.
    pub repl_listen: Option<std::net::SocketAddr>,
}

/// What the agent knows (survives etcd outages).
#[derive(Default)]
struct Known {
    /// tenant -> spec text, for the tenants placed on this node.
    tenants: BTreeMap<String, String>,
    etcd_up: bool,
    synced_at: f64,
    registered_at: f64,
    /// Lease of the last session, reused after an etcd restart (see `store::lease`).
    lease: Option<i64>,
    /// This node's slot in each of its tenants' shards (its slice of their port ranges).
    slots: apply::Slots,
    /// The supervised data path (with `run_cmd`).
    sup: Option<Supervisor>,
    /// The supervisor has been handed a config at least once.
    told: bool,
    /// Last value put under `applied/<node>` in this session.
    applied: Option<String>,
    /// Replication peers rendered into the config.
    peers: Vec<std::net::SocketAddr>,
    /// What our flowgate says about its peers (scraped every 100 ms).
    view: Option<std::sync::Arc<std::sync::Mutex<PeerView>>>,
    /// Peer nodes this agent reported under `suspect/` in this session.
    suspects: std::collections::BTreeSet<String>,
}

/// Our flowgate's view of its replication peers (`flowgate_replication_peer_up`).
#[derive(Default, Debug)]
pub struct PeerView {
    /// peer address -> up now.
    pub up: BTreeMap<String, bool>,
    /// Peers seen up since our flowgate started answering (only those can be "down": a
    /// peer never heard of since our start may just not run yet).
    pub seen_up: std::collections::BTreeSet<String>,
}

impl PeerView {
    /// Peers that answered before and are silent now.
    pub fn down(&self) -> Vec<String> {
        self.seen_up
            .iter()
            .filter(|a| self.up.get(*a) == Some(&false))
            .cloned()
            .collect()
    }

    /// One scrape of our flowgate's /metrics (None: it does not answer).
    pub fn update(&mut self, metrics: Option<&str>) {
        let Some(text) = metrics else {
            self.up.clear();
            self.seen_up.clear();
            return;
        };
        self.up.clear();
        for l in text.lines() {
            let Some(rest) = l.strip_prefix("flowgate_replication_peer_up{peer=\"") else {
                continue;
            };
            let Some((addr, v)) = rest.split_once("\"}") else {
                continue;
            };
            let up = v.trim().parse::<f64>().is_ok_and(|v| v > 0.0);
            if up {
                self.seen_up.insert(addr.to_string());
            }
            self.up.insert(addr.to_string(), up);
        }
    }
}

/// Scrapes our flowgate's peer view every 100 ms (its own thread: the agent's loop reads it).
fn watch_peers(config: PathBuf) -> std::sync::Arc<std::sync::Mutex<PeerView>> {
    let view = std::sync::Arc::new(std::sync::Mutex::new(PeerView::default()));
    let v = view.clone();
    let spawned = std::thread::Builder::new()
        .name("peer-view".into())
        .spawn(move || {
            let mut addr = None;
            loop {
                if addr.is_none() {
                    addr = crate::config::load(&config).ok().map(|c| c.metrics.listen);
                }
                let text = addr.and_then(|a| super::supervise::scrape(a).ok());
                if let Ok(mut g) = v.lock() {
                    let before = g.down();
                    g.update(text.as_deref());
                    let now = g.down();
                    for a in now.iter().filter(|a| !before.contains(a)) {
                        warn!("node-agent: replication peer {a} silent (flowgate reports it down)");
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
    if let Err(e) = spawned {
        error!("node-agent: peer-view thread: {e}");
    }
    view
}

/// Replication peers of `node`: the other live nodes sharing at least one of its shards,
/// at the addresses they published under `repl/`.
pub fn repl_peers(
    node: &str,
    placements: &BTreeMap<String, String>,
    nodes: &BTreeMap<String, String>,
    repl: &BTreeMap<String, String>,
) -> Vec<std::net::SocketAddr> {
    let mut out: Vec<std::net::SocketAddr> = placements
        .values()
        .map(|v| decode_shard(v))
        .filter(|s| s.iter().any(|n| n == node))
        .flatten()
        .filter(|n| n != node && nodes.contains_key(n))
        .filter_map(|n| repl.get(&n)?.parse().ok())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The state file: which tenants this node serves, with their specs.
pub fn render_state(node: &str, tenants: &BTreeMap<String, String>) -> String {
    let mut s =
        format!("# flowgate node-agent state: tenants placed on {node}\nnode: {node}\ntenants:\n");
    if tenants.is_empty() {
        s = s.replace("tenants:\n", "tenants: {}\n");
    }
    for (id, spec) in tenants {
        s += &format!("  {id}:\n");
        for line in spec.lines() {
            s += &format!("    {line}\n");
        }
    }
    s
}

/// This node's slot (position, shard size) in each of the shards that contain it.
pub fn my_slots(node: &str, placements: &BTreeMap<String, String>) -> apply::Slots {
    placements
        .iter()
        .filter_map(|(t, v)| {
            let s = decode_slots(v);
            let i = s.iter().position(|n| n == node)?;
            Some((t.clone(), (i, s.len())))
        })
        .collect()
}

/// The tenants of `node` given all placements.
pub fn mine(node: &str, placements: &BTreeMap<String, String>) -> Vec<String> {
    placements
        .iter()
        .filter(|(_, v)| decode_shard(v).iter().any(|n| n == node))
        .map(|(t, _)| t.clone())
        .collect()
}

fn write_status(o: &AgentOpts, k: &Known) {
    let Some(p) = &o.status else { return };
    let sup = k
        .sup
        .as_ref()
        .and_then(|s| s.status.lock().ok().map(|g| g.clone()));
    let mut text = status::render(
        "node-agent",
        &o.node,
        &[
            (
                "etcd_up",
                "1 when the last etcd sync succeeded, 0 while running on last known state",
                f64::from(u8::from(k.etcd_up)),
            ),
            (
                "tenants_served",
                "tenants placed on this node",
                k.tenants.len() as f64,
            ),
            (
                "last_sync_timestamp_seconds",
                "when the state was last confirmed with etcd",
                k.synced_at,
            ),
            (
                "registered_timestamp_seconds",
                "when the node last (re)registered its lease",
                k.registered_at,
            ),
        ],
    );
    if let Some(s) = sup {
        text += &status::render(
            "node-agent",
            &o.node,
            &[
                (
                    "flowgate_up",
                    "1 while the supervised flowgate runs",
                    f64::from(u8::from(s.up)),
                ),
                (
                    "flowgate_pid",
                    "pid of the supervised flowgate",
                    f64::from(s.pid),
                ),
                (
                    "flowgate_starts",
                    "times the agent (re)started flowgate",
                    s.starts as f64,
                ),
                (
                    "flowgate_reloads_ok",
                    "config changes applied live by SIGHUP",
                    s.reloads_ok as f64,
                ),
                (
                    "flowgate_restarts_for_reload",
                    "config changes applied by restarting flowgate (reload refused or unconfirmed)",
                    s.restarts_for_reload as f64,
                ),
                (
                    "flowgate_exits",
                    "times flowgate exited on its own",
                    s.exits as f64,
                ),
            ],
        );
    }
    if let Err(e) = status::write_atomic(p, &text) {
        warn!("node-agent {}: status file {}: {e}", o.node, p.display());
    }
}

fn set_tenants(
    o: &AgentOpts,
    k: &mut Known,
    now: BTreeMap<String, String>,
    slots: apply::Slots,
    peers: Vec<std::net::SocketAddr>,
) {
    if now == k.tenants
        && slots == k.slots
        && peers == k.peers
        && o.state.exists()
        && (k.sup.is_none() || k.told)
    {
        return;
    }
    if peers != k.peers {
        info!(
            "node-agent {}: replication peers {:?} (were {:?})",
            o.node, peers, k.peers
        );
    }
    let ids: Vec<&str> = now.keys().map(String::as_str).collect();
    info!(
        "node-agent {}: serving {} tenants: [{}]",
        o.node,
        ids.len(),
        ids.join(" ")
    );
    if let Err(e) = status::write_atomic(&o.state, &render_state(&o.node, &now)) {
        error!(
            "node-agent {}: state file {}: {e}",
            o.node,
            o.state.display()
        );
    }
    if let (Some(base), Some(out)) = (&o.base_config, &o.config_out) {
        let specs: Result<BTreeMap<String, TenantSpec>, String> = now
            .iter()
            .map(|(id, t)| {
                TenantSpec::parse(t)
                    .map(|s| (id.clone(), s))
                    .map_err(|e| format!("tenant {id}: {e}"))
            })
            .collect();
        let base_text = std::fs::read_to_string(base)
            .map_err(|e| format!("{}: {e}", base.display()))
            .and_then(|t| match o.repl_listen {
                Some(l) => apply::with_replication(&t, l, &peers),
                None => Ok(t),
            });
        match specs
            .and_then(|s| base_text.map(|b| (s, b)))
            .and_then(|(s, b)| apply::write_node_text(&b, out, &s, &slots))
        {
            Ok(changed) => {
                if let Some(sup) = &k.sup {
                    if changed || !k.told {
                        info!(
                            "node-agent {}: config {} ready for flowgate",
                            o.node,
                            out.display()
                        );
                        sup.config_changed();
                        k.told = true;
                    }
                } else if !changed {
                    info!("node-agent {}: {} unchanged", o.node, out.display());
                } else if let Some(pid) = o.reload_pid {
                    match apply::sighup(pid) {
                        Ok(()) => info!(
                            "node-agent {}: wrote {} and sent SIGHUP to pid {pid}",
                            o.node,
                            out.display()
                        ),
                        Err(e) => error!("node-agent {}: {e}", o.node),
                    }
                } else {
                    info!("node-agent {}: wrote {}", o.node, out.display());
                }
            }
            Err(e) => error!("node-agent {}: apply: {e}", o.node),
        }
    }
    k.tenants = now;
    k.slots = slots;
    k.peers = peers;
}

/// Puts `suspect/<peer>.by.<us>` for every peer node our flowgate reports silent, and
/// deletes it when the peer is heard again (or is no longer our peer).
async fn report_suspects(
    o: &AgentOpts,
    k: &mut Known,
    c: &mut etcd_client::Client,
    keys: &Keys,
    lease: i64,
    repl: &BTreeMap<String, String>,
) -> store::Result<()> {
    let Some(view) = &k.view else { return Ok(()) };
    let down = view.lock().map(|g| g.down()).unwrap_or_default();
    let want: std::collections::BTreeSet<String> = repl
        .iter()
        .filter(|(n, a)| {
            *n != &o.node
                && down.contains(a)
                && a.parse::<std::net::SocketAddr>()
                    .is_ok_and(|x| k.peers.contains(&x))
        })
        .map(|(n, _)| n.clone())
        .collect();
    for n in want.difference(&k.suspects.clone()) {
        c.put(
            keys.suspect(n, &o.node),
            format!("{:.3}", status::now_s()),
            Some(PutOptions::new().with_lease(lease)),
        )
        .await
        .map_err(|e| format!("etcd put: {e}"))?;
        warn!(
            "node-agent {}: peer {n} silent for >= {} ms: reported suspect at {:.3}",
            o.node,
            crate::repl::sync::DOWN_AFTER.as_millis(),
            status::now_s()
        );
        k.suspects.insert(n.clone());
    }
    for n in k.suspects.clone().difference(&want) {
        c.delete(keys.suspect(n, &o.node), None)
            .await
            .map_err(|e| format!("etcd delete: {e}"))?;
        info!(
            "node-agent {}: peer {n} heard again: suspicion withdrawn",
            o.node
        );
        k.suspects.remove(n);
    }
    Ok(())
}

async fn session(o: &AgentOpts, k: &mut Known) -> store::Result<()> {
    let keys = Keys::new(&o.fleet);
    let mut c = store::connect(&o.endpoints, Some(Duration::from_secs(2))).await?;
    let l = store::lease(&mut c, o.ttl, k.lease).await?;
    k.lease = Some(l.id);
    let (lease, mut lost) = (l.id, l.lost.clone());
    c.put(
        keys.node(&o.node),
        o.addr.to_string(),
        Some(PutOptions::new().with_lease(lease)),
    )
    .await
    .map_err(|e| format!("etcd put: {e}"))?;
    k.registered_at = status::now_s();
    info!(
        "node-agent {}: registered {} (lease {lease:x}, ttl {} s)",
        o.node, o.addr, o.ttl
    );
    if let Some(r) = o.repl_listen {
        c.put(
            keys.repl(&o.node),
            r.to_string(),
            Some(PutOptions::new().with_lease(lease)),
        )
        .await
        .map_err(|e| format!("etcd put: {e}"))?;
    }
    let (_w, mut stream) = store::watch(&mut c, &keys.root).await?;
    k.applied = None;
    k.suspects.clear();
    loop {
        let placements = store::list(&mut c, &keys.placements()).await?;
        let tenants = store::list(&mut c, &keys.tenants()).await?;
        let (nodes, repl) = if o.repl_listen.is_some() {
            (
                store::list(&mut c, &keys.nodes()).await?,
                store::list(&mut c, &keys.repls()).await?,
            )
        } else {
            Default::default()
        };
        let now: BTreeMap<String, String> = mine(&o.node, &placements)
            .into_iter()
            .map(|t| {
                let spec = tenants.get(&t).cloned().unwrap_or_default();
                (t, spec)
            })
            .collect();
        if !k.etcd_up {
            info!("node-agent {}: etcd reachable, state synced", o.node);
        }
        k.etcd_up = true;
        k.synced_at = status::now_s();
        let peers = repl_peers(&o.node, &placements, &nodes, &repl);
        set_tenants(o, k, now, my_slots(&o.node, &placements), peers);
        report_suspects(o, k, &mut c, &keys, lease, &repl).await?;
        write_status(o, k);
        // What the running flowgate serves, for the fabric (only ready nodes carry a tenant).
        let mut period = o.resync;
        if let Some(live) = k
            .sup
            .as_ref()
            .and_then(|s| s.status.lock().ok().map(|g| g.live.clone()))
        {
            let v = live.iter().cloned().collect::<Vec<_>>().join(",");
            if k.applied.as_ref() != Some(&v) {
                c.put(
                    keys.applied_node(&o.node),
                    v.clone(),
                    Some(PutOptions::new().with_lease(lease)),
                )
                .await
                .map_err(|e| format!("etcd put: {e}"))?;
                info!("node-agent {}: flowgate serves [{}]", o.node, v);
                k.applied = Some(v);
            }
            if live.iter().ne(k.tenants.keys()) || k.view.is_some() {
                period = period.min(Duration::from_millis(100));
            }
        }
        tokio::select! {
            r = store::wait_change(&mut stream, period) => r?,
            _ = lost.changed() => return Err("lease lost".into()),
        }
    }
}

pub fn run(o: AgentOpts) -> ! {
    let rt = store::runtime();
    let mut k = Known::default();
    if let (false, Some(config)) = (o.run_cmd.is_empty(), &o.config_out) {
        k.sup = Some(Supervisor::start(SuperviseOpts {
            node: o.node.clone(),
            cmd: o.run_cmd.clone(),
            config: config.clone(),
            pid_file: o.flowgate_pid_file.clone(),
            log: o.flowgate_log.clone(),
        }));
        if o.repl_listen.is_some() {
            k.view = Some(watch_peers(config.clone()));
        }
    }
    loop {
        if let Err(e) = rt.block_on(session(&o, &mut k)) {
            if k.etcd_up {
                warn!(
                    "node-agent {}: etcd unreachable ({e}): keeping last known state ({} tenants)",
                    o.node,
                    k.tenants.len()
                );
            }
            k.etcd_up = false;
            write_status(&o, &k);
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_own_tenants_and_renders_state() {
        let p: BTreeMap<String, String> = [("a", "n1,n2"), ("b", "n2,n3"), ("c", "n1,n3")]
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(mine("n1", &p), ["a", "c"]);
        assert!(mine("n9", &p).is_empty());
        let q: BTreeMap<String, String> = [("a".to_string(), "n3,n1".to_string())].into();
        assert_eq!(my_slots("n1", &q)["a"], (1, 2));
        assert_eq!(my_slots("n3", &q)["a"], (0, 2));
        assert!(my_slots("n2", &q).is_empty());
        let mut t = BTreeMap::new();
        t.insert(
            "a".to_string(),
            "kind: nat\npublic: [203.0.113.10]".to_string(),
        );
        let s = render_state("n1", &t);
        let v: serde_yaml::Value = serde_yaml::from_str(&s).unwrap();
        assert_eq!(v["tenants"]["a"]["kind"], serde_yaml::Value::from("nat"));
        let v: serde_yaml::Value =
            serde_yaml::from_str(&render_state("n1", &BTreeMap::new())).unwrap();
        assert!(v["tenants"].as_mapping().unwrap().is_empty());
    }

    #[test]
    fn peers_are_the_live_nodes_sharing_a_shard() {
        let m = |v: &[(&str, &str)]| -> BTreeMap<String, String> {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        let p = m(&[("a", "n1,n2"), ("b", "n3,n1"), ("c", "n2,n3")]);
        let nodes = m(&[("n1", "x"), ("n2", "x"), ("n3", "x")]);
        let repl = m(&[
            ("n1", "127.0.0.1:7001"),
            ("n2", "127.0.0.1:7002"),
            ("n3", "127.0.0.1:7003"),
        ]);
        let s = |v: Vec<std::net::SocketAddr>| v.iter().map(|a| a.port()).collect::<Vec<_>>();
        assert_eq!(s(repl_peers("n1", &p, &nodes, &repl)), [7002, 7003]);
        // n3's lease expired: not a peer any more.
        let two = m(&[("n1", "x"), ("n2", "x")]);
        assert_eq!(s(repl_peers("n1", &p, &two, &repl)), [7002]);
        // A node in no shard has no peers.
        assert!(repl_peers("n9", &p, &nodes, &repl).is_empty());
    }

    #[test]
    fn peer_view_reports_only_peers_seen_up_then_silent() {
        let mut v = PeerView::default();
        let m = |a: u8, b: u8| {
            format!("flowgate_replication_peer_up{{peer=\"127.0.0.1:1\"}} {a}\nflowgate_replication_peer_up{{peer=\"127.0.0.1:2\"}} {b}\n")
        };
        v.update(Some(&m(1, 0)));
        assert!(v.down().is_empty(), "peer 2 never heard: not down");
        v.update(Some(&m(0, 0)));
        assert_eq!(v.down(), ["127.0.0.1:1"]);
        v.update(Some(&m(1, 1)));
        assert!(v.down().is_empty());
        // Our flowgate gone: nothing known.
        v.update(None);
        assert!(v.down().is_empty() && v.seen_up.is_empty());
    }
}

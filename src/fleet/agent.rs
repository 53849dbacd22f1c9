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
use super::keys::{decode_shard, Keys, TenantSpec};
use super::status;
use super::store;
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
    let text = status::render(
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
    if let Err(e) = status::write_atomic(p, &text) {
        warn!("node-agent {}: status file {}: {e}", o.node, p.display());
    }
}

fn set_tenants(o: &AgentOpts, k: &mut Known, now: BTreeMap<String, String>) {
    if now == k.tenants && o.state.exists() {
        return;
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
        match specs.and_then(|s| apply::apply(base, out, &s, o.reload_pid)) {
            Ok(what) => info!("node-agent {}: {what}", o.node),
            Err(e) => error!("node-agent {}: apply: {e}", o.node),
        }
    }
    k.tenants = now;
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
    let (_w, mut stream) = store::watch(&mut c, &keys.root).await?;
    loop {
        let placements = store::list(&mut c, &keys.placements()).await?;
        let tenants = store::list(&mut c, &keys.tenants()).await?;
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
        set_tenants(o, k, now);
        write_status(o, k);
        tokio::select! {
            r = store::wait_change(&mut stream, o.resync) => r?,
            _ = lost.changed() => return Err("lease lost".into()),
        }
    }
}

pub fn run(o: AgentOpts) -> ! {
    let rt = store::runtime();
    let mut k = Known::default();
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
}

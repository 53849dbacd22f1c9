//! The hook from a node's set of tenants to its running data path.
//!
//! [`render`] turns a base node config (ports, lcores, routes: everything that is the node's
//! own) plus the specs of the tenants placed on the node into the node's full flowgate config:
//! each tenant's `config` goes under `nat_gateways:` (kind nat) or `load_balancers:` (kind lb).
//! [`apply`] writes it atomically, checks it with the same loader `flowgate run` uses, and
//! sends SIGHUP to the flowgate process.
//!
//! The data path applies the new tenant set live (`nat::reconcile`, `lb::reconcile`):
//! tenants that did not change keep their flows, removed ones drain for their
//! `drain_timeout_s`. What a reload cannot change (a kept tenant's `mode`, `flows_per_core`,
//! `lb_addresses`; ports, lcores, mempool) is refused and counted in flowgate's
//! `reloads_refused`; the node keeps its last good config.
use super::keys::TenantSpec;
use serde_yaml::{Mapping, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// The node's config: `base` with the tenants' configs appended to their kind's section
/// (sorted by tenant id, so the output is stable and a no-op change renders identically).
pub fn render(base: &str, tenants: &BTreeMap<String, TenantSpec>) -> Result<String, String> {
    render_node(base, tenants, &BTreeMap::new())
}

/// Slot of this node in each tenant's shard: (position, shard size) from the placement.
pub type Slots = BTreeMap<String, (usize, usize)>;

/// [`render`], with each NAT tenant's `port_range` narrowed to this node's slice of it
/// (`slots`: position i of k in the tenant's shard -> slice i of k, see `keys::port_slice`):
/// the shard's nodes never hand out the same public port, and the fabric routes return
/// traffic by destination port to the node that owns it.
pub fn render_node(
    base: &str,
    tenants: &BTreeMap<String, TenantSpec>,
    slots: &Slots,
) -> Result<String, String> {
    let mut doc: Value = serde_yaml::from_str(base).map_err(|e| format!("base config: {e}"))?;
    let map = doc.as_mapping_mut().ok_or("base config: not a mapping")?;
    for (id, t) in tenants {
        let Some(cfg) = &t.config else { continue };
        let section = match t.kind.as_str() {
            "lb" => "load_balancers",
            _ => "nat_gateways",
        };
        let list = map
            .entry(Value::from(section))
            .or_insert_with(|| Value::Sequence(vec![]));
        if list.is_null() {
            *list = Value::Sequence(vec![]);
        }
        let seq = list
            .as_sequence_mut()
            .ok_or(format!("base config: {section} is not a list"))?;
        let mut entry = cfg.clone();
        if let (Some(&(i, k)), "nat", Some(m)) =
            (slots.get(id), t.kind.as_str(), entry.as_mapping_mut())
        {
            let (first, last) = t.port_range();
            let (a, b) = super::keys::port_slice(first, last, i, k).ok_or(format!(
                "tenant {id}: port range {first}-{last} has fewer than {k} ports"
            ))?;
            let mut r = Mapping::new();
            r.insert(Value::from("first"), Value::from(a));
            r.insert(Value::from("last"), Value::from(b));
            m.insert(Value::from("port_range"), Value::Mapping(r));
            // The per-destination limit may not exceed the (now smaller) range.
            let size = u64::from(b - a) + 1;
            if let Some(v) = m.get_mut("max_connections_per_destination") {
                if v.as_u64().is_some_and(|x| x > size) {
                    *v = Value::from(size);
                }
            }
        }
        if let Some(m) = entry.as_mapping_mut() {
            m.entry(Value::from("id"))
                .or_insert_with(|| Value::from(id.as_str()));
        } else {
            let mut m = Mapping::new();
            m.insert(Value::from("id"), Value::from(id.as_str()));
            entry = Value::Mapping(m);
        }
        seq.push(entry);
    }
    serde_yaml::to_string(&doc).map_err(|e| e.to_string())
}

/// Renders, writes `out` atomically, validates it with the data path's own loader, and
/// signals `pid` (SIGHUP) if given. Returns what it did, for the log.
pub fn apply(
    base: &Path,
    out: &Path,
    tenants: &BTreeMap<String, TenantSpec>,
    pid: Option<i32>,
) -> Result<String, String> {
    if !write_node(base, out, tenants, &Slots::new())? {
        return Ok(format!("{} unchanged", out.display()));
    }
    let Some(pid) = pid else {
        return Ok(format!("wrote {}", out.display()));
    };
    sighup(pid)?;
    Ok(format!(
        "wrote {} and sent SIGHUP to pid {pid}",
        out.display()
    ))
}

/// `text` (a node config) with its `replication:` section set: this node's sync address and
/// its peers (the other live nodes sharing one of its shards, see `agent::repl_peers`).
pub fn with_replication(
    text: &str,
    listen: std::net::SocketAddr,
    peers: &[std::net::SocketAddr],
) -> Result<String, String> {
    let mut doc: Value = serde_yaml::from_str(text).map_err(|e| format!("base config: {e}"))?;
    let map = doc.as_mapping_mut().ok_or("base config: not a mapping")?;
    let mut r = match map.get("replication") {
        Some(Value::Mapping(m)) => m.clone(),
        _ => Mapping::new(),
    };
    r.insert(Value::from("listen"), Value::from(listen.to_string()));
    r.insert(
        Value::from("peers"),
        Value::Sequence(peers.iter().map(|p| Value::from(p.to_string())).collect()),
    );
    map.insert(Value::from("replication"), Value::Mapping(r));
    serde_yaml::to_string(&doc).map_err(|e| e.to_string())
}

/// Renders the node's config ([`render_node`]), validates it with the data path's own loader
/// and writes it atomically. Ok(false): the file already had that content.
pub fn write_node(
    base: &Path,
    out: &Path,
    tenants: &BTreeMap<String, TenantSpec>,
    slots: &Slots,
) -> Result<bool, String> {
    let base_text =
        std::fs::read_to_string(base).map_err(|e| format!("{}: {e}", base.display()))?;
    write_node_text(&base_text, out, tenants, slots)
}

/// [`write_node`] from the base config's text.
pub fn write_node_text(
    base_text: &str,
    out: &Path,
    tenants: &BTreeMap<String, TenantSpec>,
    slots: &Slots,
) -> Result<bool, String> {
    let text = render_node(base_text, tenants, slots)?;
    if std::fs::read_to_string(out).ok().as_deref() == Some(text.as_str()) {
        return Ok(false);
    }
    // Validated before it replaces the current file: a refused config never becomes live.
    let tmp = out.with_extension("new.yaml");
    std::fs::write(&tmp, &text).map_err(|e| format!("{}: {e}", tmp.display()))?;
    if let Err(e) = crate::config::load(&tmp) {
        return Err(format!(
            "rendered config refused (kept in {}): {e}",
            tmp.display()
        ));
    }
    std::fs::rename(&tmp, out).map_err(|e| format!("{}: {e}", out.display()))?;
    Ok(true)
}

/// Sends SIGHUP (the reload signal of `flowgate run`) to `pid`.
pub fn sighup(pid: i32) -> Result<(), String> {
    // kill(1) rather than libc::kill: no `unsafe` outside src/pmd, and this runs once per
    // placement change, not per packet.
    let st = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .map_err(|e| format!("kill: {e}"))?;
    if !st.success() {
        return Err(format!("SIGHUP to pid {pid} failed ({st})"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_tenants_into_sections() {
        let base = "ports: []\nnat_gateways: []\n";
        let mut t = BTreeMap::new();
        t.insert(
            "gw2".to_string(),
            TenantSpec::parse(
                "kind: nat\nconfig: {inside_prefixes: [10.2.0.0/24], public_ips: [203.0.113.12]}\n",
            )
            .unwrap(),
        );
        t.insert(
            "gw1".to_string(),
            TenantSpec::parse("kind: nat\nconfig: {id: custom}\n").unwrap(),
        );
        t.insert(
            "web".to_string(),
            TenantSpec::parse("kind: lb\nconfig: {vip: 198.18.0.1}\n").unwrap(),
        );
        let out = render(base, &t).unwrap();
        let v: Value = serde_yaml::from_str(&out).unwrap();
        let nat = v["nat_gateways"].as_sequence().unwrap();
        assert_eq!(nat.len(), 2);
        assert_eq!(nat[0]["id"], Value::from("custom"));
        assert_eq!(nat[1]["id"], Value::from("gw2"));
        assert_eq!(v["load_balancers"][0]["id"], Value::from("web"));
        assert_eq!(render(base, &t).unwrap(), out, "stable output");
        assert!(render("- a\n", &t).is_err());
    }

    #[test]
    fn sets_the_replication_section() {
        let a = |s: &str| s.parse::<std::net::SocketAddr>().unwrap();
        let out = with_replication(
            "ports: []\nreplication: {listen: 1.1.1.1:1, peers: [], replica_grace_s: 5}\n",
            a("127.0.0.1:7001"),
            &[a("127.0.0.1:7002"), a("127.0.0.1:7003")],
        )
        .unwrap();
        let v: Value = serde_yaml::from_str(&out).unwrap();
        assert_eq!(v["replication"]["listen"], Value::from("127.0.0.1:7001"));
        assert_eq!(v["replication"]["peers"][1], Value::from("127.0.0.1:7003"));
        assert_eq!(v["replication"]["replica_grace_s"], Value::from(5));
    }

    #[test]
    fn narrows_port_range_to_the_nodes_slice() {
        let base = "ports: []\n";
        let mut t = BTreeMap::new();
        t.insert(
            "gw".to_string(),
            TenantSpec::parse(
                "kind: nat\nconfig: {public_ips: [203.0.113.12], port_range: {first: 20000, last: 20999}, max_connections_per_destination: 1000}\n",
            )
            .unwrap(),
        );
        t.insert(
            "dflt".to_string(),
            TenantSpec::parse("kind: nat\nconfig: {public_ips: [203.0.113.13]}\n").unwrap(),
        );
        let slots: Slots = [("gw".to_string(), (1, 2)), ("dflt".to_string(), (0, 2))]
            .into_iter()
            .collect();
        let v: Value = serde_yaml::from_str(&render_node(base, &t, &slots).unwrap()).unwrap();
        let dflt = &v["nat_gateways"][0];
        assert_eq!(dflt["port_range"]["first"], Value::from(1024));
        assert_eq!(dflt["port_range"]["last"], Value::from(33279));
        let gw = &v["nat_gateways"][1];
        assert_eq!(gw["port_range"]["first"], Value::from(20500));
        assert_eq!(gw["port_range"]["last"], Value::from(20999));
        assert_eq!(gw["max_connections_per_destination"], Value::from(500));
        // Without slots: the tenant's own range, untouched.
        let v: Value = serde_yaml::from_str(&render(base, &t).unwrap()).unwrap();
        assert_eq!(
            v["nat_gateways"][1]["port_range"]["first"],
            Value::from(20000)
        );
    }

    /// The hook end to end: the test NAT config as the node's base, a second gateway placed on
    /// the node, the result validated by the real loader, and SIGHUP delivered to a process.
    #[test]
    fn apply_writes_validates_and_signals() {
        let dir = std::env::temp_dir().join(format!("fg-apply-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/test-nat.yaml");
        let out = dir.join("node.yaml");
        let mut t = BTreeMap::new();
        t.insert(
            "gw2".to_string(),
            TenantSpec::parse(
                "kind: nat\npublic: [203.0.113.20]\nconfig: {inside_prefixes: [10.0.2.0/24], public_ips: [203.0.113.20]}\n",
            )
            .unwrap(),
        );
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let what = apply(&base, &out, &t, Some(child.id() as i32)).unwrap();
        assert!(what.contains("SIGHUP"), "{what}");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGHUP));
        let cfg = crate::config::load(&out).unwrap();
        assert_eq!(cfg.nat_gateways.len(), 2);
        // Unchanged tenants: nothing written, nobody signalled.
        assert!(apply(&base, &out, &t, None).unwrap().contains("unchanged"));
        // A tenant config the loader refuses never replaces the live file.
        t.insert(
            "bad".into(),
            TenantSpec::parse("kind: nat\nconfig: {public_ips: [nope]}\n").unwrap(),
        );
        let e = apply(&base, &out, &t, None).unwrap_err();
        assert!(e.contains("refused"), "{e}");
        assert_eq!(crate::config::load(&out).unwrap().nat_gateways.len(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

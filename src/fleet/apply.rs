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
    let base_text =
        std::fs::read_to_string(base).map_err(|e| format!("{}: {e}", base.display()))?;
    let text = render(&base_text, tenants)?;
    if std::fs::read_to_string(out).ok().as_deref() == Some(text.as_str()) {
        return Ok(format!("{} unchanged", out.display()));
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
    let Some(pid) = pid else {
        return Ok(format!("wrote {}", out.display()));
    };
    // kill(1) rather than libc::kill: no `unsafe` outside src/pmd, and this runs once per
    // placement change, not per packet.
    let st = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .map_err(|e| format!("kill: {e}"))?;
    if !st.success() {
        return Err(format!("SIGHUP to pid {pid} failed ({st})"));
    }
    Ok(format!(
        "wrote {} and sent SIGHUP to pid {pid}",
        out.display()
    ))
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

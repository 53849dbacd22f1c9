//! `replication:` — flow-state replication between flowgate nodes (issue 10, see
//! docs/replication.md): the kernel UDP address the sync thread listens on, its peers, and
//! the reliability knobs (retransmission timer and bound, resync wait, replica grace).

use super::validate::Validator;
use super::Config;
use serde::Deserialize;
use std::net::SocketAddr;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReplicationConfig {
    /// Local UDP address of the sync channel (a dedicated address, not a DPDK port).
    pub listen: SocketAddr,
    /// The peers every flow is replicated to (their `listen` addresses). May be empty (a
    /// fleet node alone in its shards: nothing to replicate to yet; peers can change live).
    pub peers: Vec<SocketAddr>,
    /// Unacknowledged events are resent after this long. Default 100 ms.
    #[serde(default = "default_retransmit_ms")]
    pub retransmit_ms: u32,
    /// An event resent this many times without an ACK is given up and counted lost.
    /// Default 10.
    #[serde(default = "default_max_retransmits")]
    pub max_retransmits: u32,
    /// At start, no peer answering the resync request within this long means this node
    /// is alone (nothing to pull): it becomes ready. Default 2000 ms.
    #[serde(default = "default_resync_timeout_ms")]
    pub resync_timeout_ms: u32,
    /// A replica outlives its last word from the owner by this much (the owner refreshes
    /// live flows once per timeout period). Default 10 s.
    #[serde(default = "default_grace_s")]
    pub replica_grace_s: u32,
}

fn default_retransmit_ms() -> u32 {
    100
}
fn default_max_retransmits() -> u32 {
    10
}
fn default_resync_timeout_ms() -> u32 {
    2000
}
fn default_grace_s() -> u32 {
    10
}

pub fn check_replication(cfg: &Config, v: &mut Validator<'_>) {
    let Some(r) = &cfg.replication else {
        return;
    };
    for (i, p) in r.peers.iter().enumerate() {
        if *p == r.listen {
            v.fail(
                format!("replication.peers[{i}]"),
                format!("{p} is this node's own replication.listen"),
            );
        }
        if !p.is_ipv4() || p.port() == 0 {
            v.fail(
                format!("replication.peers[{i}]"),
                format!("{p}: an IPv4 address with a port is required"),
            );
        }
    }
    if !r.listen.is_ipv4() || r.listen.port() == 0 {
        v.fail(
            "replication.listen",
            format!("{}: an IPv4 address with a port is required", r.listen),
        );
    }
    v.in_range(
        "replication.retransmit_ms",
        r.retransmit_ms,
        1,
        60_000,
        " (milliseconds)",
    );
    v.in_range(
        "replication.max_retransmits",
        r.max_retransmits,
        1,
        1000,
        "",
    );
    v.in_range(
        "replication.resync_timeout_ms",
        r.resync_timeout_ms,
        1,
        600_000,
        " (milliseconds)",
    );
    check_tenant_keys(cfg, v);
    v.in_range(
        "replication.replica_grace_s",
        r.replica_grace_s,
        1,
        3600,
        " (seconds)",
    );
}

/// Replication names tenants on the wire by `repl::tenant_key` of their id (a 32-bit
/// hash): two gateways, or two load balancers, whose ids hash alike would be confused by
/// the peers, so such a config is refused (rename one).
fn check_tenant_keys(cfg: &Config, v: &mut Validator<'_>) {
    let nat: Vec<&str> = cfg.nat_gateways.iter().map(|g| g.id.as_str()).collect();
    let lb: Vec<&str> = cfg.load_balancers.iter().map(|l| l.id.as_str()).collect();
    for (section, ids) in [("nat_gateways", nat), ("load_balancers", lb)] {
        for (j, id) in ids.iter().enumerate() {
            let k = crate::repl::tenant_key(id);
            if let Some(i) = ids[..j]
                .iter()
                .position(|o| o != id && crate::repl::tenant_key(o) == k)
            {
                v.fail(
                    format!("{section}[{j}].id"),
                    format!(
                        "{id:?} has the same replication key ({k:#010x}) as {section}[{i}].id {:?}; rename one",
                        ids[i]
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    const BASE: &str = "lcores: {workers: [1]}
ports:
  - {name: a, device: net_null0, addresses: [10.0.1.1/24]}
";

    #[test]
    fn parses_with_defaults() {
        let y =
            format!("{BASE}replication: {{listen: 198.19.0.1:7788, peers: [198.19.0.2:7788]}}\n");
        let c = crate::config::parse_str(&y, "t.yaml").unwrap_or_else(|e| panic!("{e}"));
        let r = c.replication.expect("section");
        assert_eq!(r.peers.len(), 1);
        assert_eq!((r.retransmit_ms, r.max_retransmits), (100, 10));
    }

    #[test]
    fn bad_values_name_the_field_and_position() {
        let y = format!(
            "{BASE}replication:\n  listen: 198.19.0.1:7788\n  peers: [198.19.0.1:7788]\n  retransmit_ms: 0\n"
        );
        let e = crate::config::parse_str(&y, "t.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("t.yaml:6:") && e.contains("replication.peers[0]"),
            "{e}"
        );
        // No peers (yet): a fleet node alone in its shards.
        let y = format!("{BASE}replication: {{listen: 198.19.0.1:7788, peers: []}}\n");
        assert!(crate::config::parse_str(&y, "t.yaml").is_ok());
        let y = format!(
            "{BASE}replication: {{listen: 198.19.0.1:7788, peers: [198.19.0.2:1], retransmit_ms: 0}}\n"
        );
        let e = crate::config::parse_str(&y, "t.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("replication.retransmit_ms"), "{e}");
    }

    #[test]
    fn colliding_tenant_keys_are_refused() {
        // "costarring" and "liquid" are a known FNV-1a 32-bit collision.
        assert_eq!(
            crate::repl::tenant_key("costarring"),
            crate::repl::tenant_key("liquid")
        );
        let gw = |id: &str, n: u8| {
            format!(
                "  - {{id: {id}, inside_prefixes: [10.0.{n}.0/24], public_ips: [192.0.2.{n}]}}\n"
            )
        };
        let y = format!(
            "{BASE}nat_gateways:\n{}{}replication: {{listen: 198.19.0.1:7788, peers: [198.19.0.2:7788]}}\n",
            gw("costarring", 2),
            gw("liquid", 3)
        );
        let e = crate::config::parse_str(&y, "t.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("nat_gateways[1].id") && e.contains("rename"),
            "{e}"
        );
        let y = y.replace("liquid", "solid");
        crate::config::parse_str(&y, "t.yaml").unwrap_or_else(|e| panic!("{e}"));
    }
}

//! `limits:` of a tenant (a NAT gateway, a load balancer): its node-wide packets/s, new
//! flows/s and concurrent flows (noisy-neighbour isolation, issue 9 §4). Every limit is off
//! unless written; each worker enforces its share (see `crate::limits`).

use super::validate::Validator;
use super::Config;
use serde::Deserialize;

/// Highest rate accepted (packets or flows per second per node): far above what a node
/// forwards, low enough that a typo with three extra zeros is caught.
pub const RATE_MAX: u64 = 1_000_000_000;
/// Highest concurrent-flow limit per node.
pub const FLOWS_MAX: u64 = 1 << 32;
/// Bucket depth bounds (milliseconds of the rate).
pub const BURST_MS_MIN: u64 = 1;
pub const BURST_MS_MAX: u64 = 10_000;

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TenantLimits {
    /// Packets per second of the tenant on this node, both directions. Default unlimited.
    #[serde(default)]
    pub packets_per_s: Option<u64>,
    /// New flows (mappings, LB flows) per second on this node. Default unlimited.
    #[serde(default)]
    pub new_flows_per_s: Option<u64>,
    /// Concurrent flows of the tenant on this node. Default unlimited (the flow table's
    /// `flows_per_core` still bounds each worker).
    #[serde(default)]
    pub max_flows: Option<u64>,
    /// Bucket depth: a tenant may exceed its rates for this long after being quiet.
    /// Default 100 ms (at least one packet / flow).
    #[serde(default = "default_burst_ms")]
    pub burst_ms: u64,
}

fn default_burst_ms() -> u64 {
    100
}

impl Default for TenantLimits {
    fn default() -> Self {
        TenantLimits {
            packets_per_s: None,
            new_flows_per_s: None,
            max_flows: None,
            burst_ms: default_burst_ms(),
        }
    }
}

/// Checks one tenant's `limits` at `base` (e.g. `nat_gateways[0].limits`): every limit is
/// split over the workers, so it must give each worker at least one.
fn check_one(base: &str, l: &TenantLimits, workers: u64, v: &mut Validator<'_>) {
    let note = format!(
        " (node-wide; each of the {workers} workers enforces its share, so at least {workers})"
    );
    for (name, val, hi) in [
        ("packets_per_s", l.packets_per_s, RATE_MAX),
        ("new_flows_per_s", l.new_flows_per_s, RATE_MAX),
        ("max_flows", l.max_flows, FLOWS_MAX),
    ] {
        if let Some(x) = val {
            v.in_range(format!("{base}.{name}"), x, workers, hi, &note);
        }
    }
    v.in_range(
        format!("{base}.burst_ms"),
        l.burst_ms,
        BURST_MS_MIN,
        BURST_MS_MAX,
        " (bucket depth in milliseconds of the rate)",
    );
}

/// The `limits` of every tenant (registered in `validate::SECTIONS`).
pub(super) fn check_tenant_limits(cfg: &Config, v: &mut Validator<'_>) {
    let workers = (cfg.lcores.workers.len() as u64).max(1);
    for (i, g) in cfg.nat_gateways.iter().enumerate() {
        check_one(&format!("nat_gateways[{i}].limits"), &g.limits, workers, v);
    }
    for (i, lb) in cfg.load_balancers.iter().enumerate() {
        check_one(
            &format!("load_balancers[{i}].limits"),
            &lb.limits,
            workers,
            v,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse_str;

    const BASE: &str = "\
lcores:
  workers: [1, 2]
ports:
  - name: inside
    device: net_tap0,iface=a
    addresses: [10.0.1.1/24]
  - name: outside
    device: net_tap1,iface=b
    addresses: [203.0.113.1/24]
nat_gateways:
  - id: tenant-a
    inside_prefixes: [10.0.1.0/24]
    public_ips: [203.0.113.10]
";

    #[test]
    fn limits_default_to_unlimited() {
        let c = parse_str(BASE, "f.yaml").unwrap();
        assert_eq!(c.nat_gateways[0].limits, super::TenantLimits::default());
        assert_eq!(c.nat_gateways[0].limits.packets_per_s, None);
    }

    #[test]
    fn limits_parse() {
        let t = format!(
            "{BASE}    limits: {{packets_per_s: 20000, new_flows_per_s: 500, max_flows: 1000, \
             burst_ms: 50}}\n"
        );
        let c = parse_str(&t, "f.yaml").unwrap();
        let l = c.nat_gateways[0].limits;
        assert_eq!(l.packets_per_s, Some(20000));
        assert_eq!(l.new_flows_per_s, Some(500));
        assert_eq!(l.max_flows, Some(1000));
        assert_eq!(l.burst_ms, 50);
    }

    #[test]
    fn a_limit_below_the_worker_count_names_file_line_column() {
        let t = format!("{BASE}    limits:\n      new_flows_per_s: 1\n");
        let e = parse_str(&t, "f.yaml").unwrap_err().to_string();
        assert!(
            e.starts_with("f.yaml:15:24: nat_gateways[0].limits.new_flows_per_s"),
            "{e}"
        );
        assert!(e.contains("out of range 2..="), "{e}");
    }

    #[test]
    fn bad_burst_and_unknown_field_are_refused() {
        let t = format!("{BASE}    limits: {{burst_ms: 0}}\n");
        let e = parse_str(&t, "f.yaml").unwrap_err().to_string();
        assert!(e.contains("nat_gateways[0].limits.burst_ms"), "{e}");
        let t = format!("{BASE}    limits: {{pps: 10}}\n");
        let e = parse_str(&t, "f.yaml").unwrap_err().to_string();
        assert!(e.starts_with("f.yaml:14:"), "{e}");
        assert!(e.contains("pps"), "{e}");
    }
}

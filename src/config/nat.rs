//! `nat_gateways:` — Hyperplane-style NAT gateways (SPEC.md §2).
//!
//! Each gateway is a tenant: the traffic of its inside prefixes leaves with one of its
//! public IPs as source. Defaults are AWS NAT Gateway's numbers.

use super::validate::Validator;
use super::{Config, Ipv4Net, PortRole};
use serde::Deserialize;
use std::net::Ipv4Addr;

/// At most this many public IPs per gateway (AWS allows 8 EIPs per NAT gateway).
pub const MAX_PUBLIC_IPS: usize = 8;
/// Flow-table capacity bounds per gateway per worker core.
pub const FLOWS_MIN: u32 = 16;
pub const FLOWS_MAX: u32 = 16 * 1024 * 1024;
/// Longest timeout accepted (one day): the timer wheel re-arms longer deadlines anyway, but
/// a typo such as 3500000 is caught.
pub const TIMEOUT_MAX_S: u32 = 86_400;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NatGatewayConfig {
    /// Tenant name, unique among gateways (metrics label).
    pub id: String,
    /// Sources translated by this gateway (non-empty).
    pub inside_prefixes: Vec<Ipv4Net>,
    /// 1..=8 public addresses; ports are allocated from each of them in turn.
    pub public_ips: Vec<Ipv4Addr>,
    #[serde(default)]
    pub port_range: NatPortRange,
    /// Concurrent mappings per (public IP, remote IP, remote port, protocol). Default
    /// 55000, or the size of the port range when that is smaller.
    #[serde(default)]
    pub max_connections_per_destination: Option<u32>,
    #[serde(default)]
    pub timeouts: NatTimeouts,
    /// Flow-table capacity per worker core (preallocated). Default 200000: with the
    /// table's power-of-two index that is ~53 bytes per flow (see `nat::flow`).
    #[serde(default = "default_flows_per_core")]
    pub flows_per_core: u32,
    /// Of `flows_per_core`, how many slots can hold a TCP connection (they carry its
    /// 28-byte window state; UDP/ICMP flows use any slot). Default: all of them. Lower it
    /// for a load that is not all TCP to save 28 bytes per slot left out; a TCP SYN finding
    /// no TCP slot free is refused like one finding the table full.
    #[serde(default)]
    pub tcp_flows_per_core: Option<u32>,
    #[serde(default)]
    pub mode: NatMode,
    /// TIME_WAIT guard: after a TCP connection closed, its (public IP, port) is not handed
    /// out again toward the same remote for this long, even when the mapping expired.
    /// Default 120 s (2 x 60 s, Linux's TIME_WAIT); 0 disables it.
    #[serde(default = "default_time_wait_guard")]
    pub tcp_time_wait_guard_s: u32,
    /// Names of the data ports the gateway's private hosts are behind. Default: the ports
    /// through which an inside prefix is routed (connected or static route) and that do not
    /// carry the default route, so none in a one-armed deployment (one port is both sides).
    /// Used by `drop_foreign_inside_sources` and to keep east-west traffic untranslated.
    #[serde(default)]
    pub inside_ports: Option<Vec<String>>,
    /// Drop packets received on an inside port whose source is in no inside prefix of the
    /// gateway (a private host spoofing, or a leak of another network). Default true.
    #[serde(default = "default_true")]
    pub drop_foreign_inside_sources: bool,
    /// Destinations never translated (traffic to them is routed with its private source
    /// kept), in addition to the automatic ones: the gateway's inside prefixes and every
    /// destination routed out of an inside port (east-west traffic). Default none.
    #[serde(default)]
    pub no_translate: Vec<Ipv4Net>,
    /// Per-tenant limits on this node (packets/s, new flows/s, concurrent flows); none by
    /// default. See `config::limits`.
    #[serde(default)]
    pub limits: super::TenantLimits,
    /// Live reload: when the gateway or one of its public IPs is removed, its existing
    /// flows continue (no new ones) for at most this long, then are removed. Default 300 s
    /// (like an NLB target's deregistration delay).
    #[serde(default = "default_drain_timeout")]
    pub drain_timeout_s: u32,
}

/// Default `drain_timeout_s` of NAT gateways and load balancers.
pub fn default_drain_timeout() -> u32 {
    300
}

fn default_time_wait_guard() -> u32 {
    120
}

/// RFC 5382 REQ-5: the transitory TCP idle timeout MUST NOT be less than 4 minutes.
pub const RFC5382_TRANSITORY_MIN_S: u32 = 240;

/// Things `check-config` points out without refusing the file: a transitory TCP timeout
/// below RFC 5382's minimum (a remote may still hold the connection in TIME_WAIT when
/// the port is reused; the TIME_WAIT guard covers the NAT's side of it).
pub fn nat_warnings(cfg: &Config) -> Vec<String> {
    let mut w = Vec::new();
    for (i, g) in cfg.nat_gateways.iter().enumerate() {
        let t = g.timeouts.tcp_transitory_s;
        if t < RFC5382_TRANSITORY_MIN_S {
            w.push(format!(
                "warning: nat_gateways[{i}].timeouts.tcp_transitory_s: {t} s is below RFC 5382's \
                 4-minute minimum for transitory TCP connections (REQ-5); closing connections \
                 lose their mapping early (the TIME_WAIT guard of {} s still keeps their ports \
                 from being reused toward the same remote)",
                g.tcp_time_wait_guard_s
            ));
        }
    }
    w
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NatPortRange {
    /// First source port handed out (inclusive). Default 1024.
    #[serde(default = "default_first_port")]
    pub first: u32,
    /// Last source port (inclusive). Default 65535.
    #[serde(default = "default_last_port")]
    pub last: u32,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NatTimeouts {
    /// Idle timeout of an established TCP connection. Default 350 s.
    #[serde(default = "default_350")]
    pub tcp_established_s: u32,
    /// SYN sent but not answered, or FIN/RST seen. Default 60 s.
    #[serde(default = "default_60")]
    pub tcp_transitory_s: u32,
    /// Default 350 s.
    #[serde(default = "default_350")]
    pub udp_s: u32,
    /// ICMP query (echo). Default 60 s.
    #[serde(default = "default_60")]
    pub icmp_s: u32,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NatMode {
    /// AWS NAT Gateway: address-and-port-dependent mapping and filtering (symmetric NAT),
    /// TCP/ICMP fragments dropped.
    #[default]
    Aws,
    /// RFC 4787/5382: endpoint-independent mapping, address-dependent filtering,
    /// hairpinning.
    Rfc4787,
}

fn default_true() -> bool {
    true
}
fn default_flows_per_core() -> u32 {
    200_000
}
fn default_first_port() -> u32 {
    1024
}
fn default_last_port() -> u32 {
    65535
}
fn default_350() -> u32 {
    350
}
fn default_60() -> u32 {
    60
}

impl Default for NatPortRange {
    fn default() -> Self {
        NatPortRange {
            first: default_first_port(),
            last: default_last_port(),
        }
    }
}

impl Default for NatTimeouts {
    fn default() -> Self {
        NatTimeouts {
            tcp_established_s: 350,
            tcp_transitory_s: 60,
            udp_s: 350,
            icmp_s: 60,
        }
    }
}

impl NatPortRange {
    /// Number of ports (0 when empty or inverted).
    pub fn size(&self) -> u32 {
        if self.last >= self.first {
            self.last - self.first + 1
        } else {
            0
        }
    }
}

impl NatGatewayConfig {
    /// The per-destination limit in force (the default is clamped to the range size).
    pub fn connection_limit(&self) -> u32 {
        self.max_connections_per_destination
            .unwrap_or_else(|| 55_000.min(self.port_range.size()))
    }
}

impl NatGatewayConfig {
    /// Indices (into `cfg.ports`) of this gateway's inside ports: `inside_ports` when
    /// given, else the data ports through which an inside prefix is routed (connected or
    /// static route) that do not carry the default route. A single data port (one-armed)
    /// is never an inside port by default: it carries both sides.
    pub fn inside_port_indices(&self, cfg: &Config) -> Vec<usize> {
        if let Some(names) = &self.inside_ports {
            return names
                .iter()
                .filter_map(|n| cfg.ports.iter().position(|p| &p.name == n))
                .collect();
        }
        let data: Vec<usize> = (0..cfg.ports.len())
            .filter(|&i| cfg.ports[i].role == PortRole::Data)
            .collect();
        if data.len() < 2 {
            return Vec::new();
        }
        let inside = |n: &Ipv4Net| self.inside_prefixes.iter().any(|p| p.overlaps(n));
        data.into_iter()
            .filter(|&i| {
                let p = &cfg.ports[i];
                let default_here = cfg
                    .routes
                    .iter()
                    .any(|r| r.prefix.len == 0 && r.port == p.name);
                let connected = p.addresses.iter().any(inside);
                let routed = cfg
                    .routes
                    .iter()
                    .any(|r| r.port == p.name && r.prefix.len > 0 && inside(&r.prefix));
                !default_here && (connected || routed)
            })
            .collect()
    }
}

fn check_inside_ports(cfg: &Config, i: usize, g: &NatGatewayConfig, v: &mut Validator<'_>) {
    let Some(names) = &g.inside_ports else {
        return;
    };
    for (k, n) in names.iter().enumerate() {
        let path = format!("nat_gateways[{i}].inside_ports[{k}]");
        match cfg.ports.iter().find(|p| &p.name == n) {
            None => v.fail(path, format!("no port named `{n}`")),
            Some(p) if p.role != PortRole::Data => {
                v.fail(path, format!("port `{n}` is not a data port"))
            }
            Some(_) if names[..k].contains(n) => v.fail(path, format!("`{n}` is listed twice")),
            Some(_) => {}
        }
    }
}

/// The `nat_gateways` section check (registered in `validate::SECTIONS`).
pub(super) fn check_nat_gateways(cfg: &Config, v: &mut Validator<'_>) {
    for (i, g) in cfg.nat_gateways.iter().enumerate() {
        let base = format!("nat_gateways[{i}]");
        if g.id.is_empty() {
            v.fail(
                format!("{base}.id"),
                "id is empty; name the gateway (tenant)",
            );
        } else if let Some(j) = cfg.nat_gateways[..i].iter().position(|o| o.id == g.id) {
            v.fail(
                format!("{base}.id"),
                format!(
                    "duplicate gateway id `{}` (also nat_gateways[{j}].id)",
                    g.id
                ),
            );
        }

        if g.inside_prefixes.is_empty() {
            v.fail(
                format!("{base}.inside_prefixes"),
                "at least one inside prefix is required (e.g. [10.0.1.0/24])",
            );
        }
        for (k, p) in g.inside_prefixes.iter().enumerate() {
            if p.addr != p.network() {
                v.fail(
                    format!("{base}.inside_prefixes[{k}]"),
                    format!(
                        "prefix {p} has host bits set; did you mean {}/{}?",
                        p.network(),
                        p.len
                    ),
                );
            }
        }

        if g.public_ips.is_empty() || g.public_ips.len() > MAX_PUBLIC_IPS {
            v.fail(
                format!("{base}.public_ips"),
                format!(
                    "{} public IPs; a gateway needs 1..={MAX_PUBLIC_IPS}",
                    g.public_ips.len()
                ),
            );
        }
        for (k, ip) in g.public_ips.iter().enumerate() {
            check_public_ip(cfg, i, k, *ip, v);
        }

        check_inside_ports(cfg, i, g, v);

        let r = g.port_range;
        let rbase = format!("{base}.port_range");
        let first_ok = v.in_range(format!("{rbase}.first"), r.first, 1, 65535, "");
        let last_ok = v.in_range(format!("{rbase}.last"), r.last, 1, 65535, "");
        if first_ok && last_ok && r.first > r.last {
            v.fail(
                format!("{rbase}.last"),
                format!(
                    "port range {}..={} is empty (last below first)",
                    r.first, r.last
                ),
            );
        }
        if let Some(limit) = g.max_connections_per_destination {
            let size = r.size();
            if size > 0 {
                v.in_range(
                    format!("{base}.max_connections_per_destination"),
                    limit,
                    1,
                    size,
                    " (at most the number of ports in port_range)",
                );
            }
        }

        let t = g.timeouts;
        let tbase = format!("{base}.timeouts");
        for (name, val) in [
            ("tcp_established_s", t.tcp_established_s),
            ("tcp_transitory_s", t.tcp_transitory_s),
            ("udp_s", t.udp_s),
            ("icmp_s", t.icmp_s),
        ] {
            v.in_range(format!("{tbase}.{name}"), val, 1, TIMEOUT_MAX_S, "");
        }
        v.in_range(
            format!("{base}.tcp_time_wait_guard_s"),
            g.tcp_time_wait_guard_s,
            0,
            TIMEOUT_MAX_S,
            " (0 disables the guard)",
        );
        v.in_range(
            format!("{base}.drain_timeout_s"),
            g.drain_timeout_s,
            0,
            TIMEOUT_MAX_S,
            " (how long removed tenants and public IPs keep their flows on reload)",
        );
        v.in_range(
            format!("{base}.flows_per_core"),
            g.flows_per_core,
            FLOWS_MIN,
            FLOWS_MAX,
            " (flows preallocated per worker core)",
        );
        if let Some(t) = g.tcp_flows_per_core {
            v.in_range(
                format!("{base}.tcp_flows_per_core"),
                t,
                0,
                g.flows_per_core,
                " (at most flows_per_core)",
            );
        }
    }
}

fn check_public_ip(cfg: &Config, i: usize, k: usize, ip: Ipv4Addr, v: &mut Validator<'_>) {
    let path = format!("nat_gateways[{i}].public_ips[{k}]");
    if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() || ip.is_loopback() {
        v.fail(path, format!("{ip} cannot be a public (source) address"));
        return;
    }
    if let Some(l) = cfg.nat_gateways[i].public_ips[..k]
        .iter()
        .position(|&o| o == ip)
    {
        v.fail(
            path,
            format!("{ip} is listed twice (also nat_gateways[{i}].public_ips[{l}])"),
        );
        return;
    }
    for (j, o) in cfg.nat_gateways[..i].iter().enumerate() {
        if let Some(l) = o.public_ips.iter().position(|&x| x == ip) {
            v.fail(
                path,
                format!(
                    "{ip} already belongs to gateway `{}` (nat_gateways[{j}].public_ips[{l}]); \
                     a public IP belongs to one gateway",
                    o.id
                ),
            );
            return;
        }
    }
    for (pi, p) in cfg.ports.iter().enumerate() {
        if let Some(ai) = p.addresses.iter().position(|a| a.addr == ip) {
            v.fail(
                path,
                format!(
                    "{ip} is the address of port `{}` (ports[{pi}].addresses[{ai}]); public IPs \
                     must be addresses of their own",
                    p.name
                ),
            );
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse_str;
    use super::*;

    const BASE: &str = "\
lcores:
  workers: [1]
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
    public_ips: [203.0.113.10, 203.0.113.11]
    port_range: {first: 1024, last: 2047}
    max_connections_per_destination: 1000
    timeouts: {tcp_established_s: 10, tcp_transitory_s: 5, udp_s: 10, icmp_s: 5}
    flows_per_core: 4096
    mode: aws
  - id: tenant-b
    inside_prefixes: [10.0.2.0/24]
    public_ips: [203.0.113.20]
";

    /// BASE with line `n` (1-based) replaced.
    fn edit(n: usize, new: &str) -> String {
        BASE.lines()
            .enumerate()
            .map(|(i, l)| if i + 1 == n { new } else { l })
            .collect::<Vec<_>>()
            .join("\n")
            + "\n"
    }

    #[track_caller]
    fn rejects(text: &str, field: &str, line: usize, needle: &str) {
        match parse_str(text, "t.yaml") {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => {
                assert_eq!(e.field, field, "{e}");
                assert_eq!(e.line, line, "{e}");
                assert!(e.message.contains(needle), "{e}\nshould mention {needle:?}");
                assert!(e.to_string().starts_with(&format!("t.yaml:{line}:")), "{e}");
            }
        }
    }

    #[test]
    fn base_parses_with_defaults() {
        let cfg = parse_str(BASE, "t.yaml").unwrap();
        assert_eq!(cfg.nat_gateways.len(), 2);
        let a = &cfg.nat_gateways[0];
        assert_eq!(a.port_range.size(), 1024);
        assert_eq!(a.connection_limit(), 1000);
        assert_eq!(a.mode, NatMode::Aws);
        let b = &cfg.nat_gateways[1];
        assert_eq!(
            b.port_range,
            NatPortRange {
                first: 1024,
                last: 65535
            }
        );
        assert_eq!(b.connection_limit(), 55_000);
        assert_eq!(b.timeouts, NatTimeouts::default());
        assert_eq!(b.timeouts.tcp_established_s, 350);
        assert_eq!(b.timeouts.icmp_s, 60);
        assert_eq!(b.flows_per_core, 200_000);
        // No section at all: no gateways.
        let none = BASE.split("nat_gateways:").next().unwrap();
        assert!(parse_str(none, "t.yaml").unwrap().nat_gateways.is_empty());
    }

    #[test]
    fn default_limit_clamped_to_small_range() {
        let t = edit(14, "    port_range: {first: 2000, last: 2009}")
            .replace("    max_connections_per_destination: 1000\n", "");
        let cfg = parse_str(&t, "t.yaml").unwrap();
        assert_eq!(cfg.nat_gateways[0].connection_limit(), 10);
    }

    #[test]
    fn rfc4787_mode_parses() {
        let cfg = parse_str(&edit(18, "    mode: rfc4787"), "t.yaml").unwrap();
        assert_eq!(cfg.nat_gateways[0].mode, NatMode::Rfc4787);
        rejects(
            &edit(18, "    mode: cone"),
            "nat_gateways[0].mode",
            18,
            "unknown variant",
        );
    }

    #[test]
    fn duplicate_id() {
        rejects(
            &edit(19, "  - id: tenant-a"),
            "nat_gateways[1].id",
            19,
            "duplicate gateway id",
        );
        rejects(&edit(11, "  - id: \"\""), "nat_gateways[0].id", 11, "empty");
    }

    #[test]
    fn inside_prefixes_rules() {
        rejects(
            &edit(12, "    inside_prefixes: []"),
            "nat_gateways[0].inside_prefixes",
            12,
            "at least one",
        );
        rejects(
            &edit(12, "    inside_prefixes: [10.0.1.5/24]"),
            "nat_gateways[0].inside_prefixes[0]",
            12,
            "host bits",
        );
    }

    #[test]
    fn public_ip_count() {
        rejects(
            &edit(13, "    public_ips: []"),
            "nat_gateways[0].public_ips",
            13,
            "1..=8",
        );
        let nine: Vec<String> = (10..19).map(|i| format!("203.0.113.{i}")).collect();
        rejects(
            &edit(13, &format!("    public_ips: [{}]", nine.join(", "))),
            "nat_gateways[0].public_ips",
            13,
            "1..=8",
        );
    }

    #[test]
    fn public_ip_overlaps() {
        rejects(
            &edit(21, "    public_ips: [203.0.113.11]"),
            "nat_gateways[1].public_ips[0]",
            21,
            "already belongs to gateway `tenant-a`",
        );
        rejects(
            &edit(13, "    public_ips: [203.0.113.10, 203.0.113.10]"),
            "nat_gateways[0].public_ips[1]",
            13,
            "listed twice",
        );
        rejects(
            &edit(21, "    public_ips: [203.0.113.1]"),
            "nat_gateways[1].public_ips[0]",
            21,
            "address of port `outside`",
        );
        rejects(
            &edit(21, "    public_ips: [255.255.255.255]"),
            "nat_gateways[1].public_ips[0]",
            21,
            "cannot be a public",
        );
    }

    #[test]
    fn port_range_rules() {
        rejects(
            &edit(14, "    port_range: {first: 0, last: 2047}"),
            "nat_gateways[0].port_range.first",
            14,
            "out of range 1..=65535",
        );
        rejects(
            &edit(14, "    port_range: {first: 1024, last: 65536}"),
            "nat_gateways[0].port_range.last",
            14,
            "out of range 1..=65535",
        );
        rejects(
            &edit(14, "    port_range: {first: 3000, last: 2047}"),
            "nat_gateways[0].port_range.last",
            14,
            "empty",
        );
    }

    #[test]
    fn limit_above_range_size() {
        rejects(
            &edit(15, "    max_connections_per_destination: 1025"),
            "nat_gateways[0].max_connections_per_destination",
            15,
            "out of range 1..=1024",
        );
        rejects(
            &edit(15, "    max_connections_per_destination: 0"),
            "nat_gateways[0].max_connections_per_destination",
            15,
            "out of range",
        );
    }

    #[test]
    fn timeouts_at_least_one_second() {
        for (field, line) in [
            (
                "{tcp_established_s: 0, tcp_transitory_s: 5, udp_s: 10, icmp_s: 5}",
                "tcp_established_s",
            ),
            (
                "{tcp_established_s: 10, tcp_transitory_s: 0, udp_s: 10, icmp_s: 5}",
                "tcp_transitory_s",
            ),
            (
                "{tcp_established_s: 10, tcp_transitory_s: 5, udp_s: 0, icmp_s: 5}",
                "udp_s",
            ),
            (
                "{tcp_established_s: 10, tcp_transitory_s: 5, udp_s: 10, icmp_s: 0}",
                "icmp_s",
            ),
        ] {
            rejects(
                &edit(16, &format!("    timeouts: {field}")),
                &format!("nat_gateways[0].timeouts.{line}"),
                16,
                "out of range 1..=",
            );
        }
    }

    #[test]
    fn flows_per_core_bounded() {
        rejects(
            &edit(17, "    flows_per_core: 1"),
            "nat_gateways[0].flows_per_core",
            17,
            "out of range",
        );
        rejects(
            &edit(17, "    flows_per_core: 100000000"),
            "nat_gateways[0].flows_per_core",
            17,
            "out of range",
        );
    }

    #[test]
    fn tcp_flows_per_core_at_most_flows_per_core() {
        rejects(
            &edit(18, "    tcp_flows_per_core: 5000"),
            "nat_gateways[0].tcp_flows_per_core",
            18,
            "out of range",
        );
        let c = parse_str(&edit(18, "    tcp_flows_per_core: 2048"), "t.yaml").unwrap();
        assert_eq!(c.nat_gateways[0].tcp_flows_per_core, Some(2048));
        assert_eq!(
            c.nat_gateways[1].tcp_flows_per_core, None,
            "default: all slots"
        );
    }

    #[test]
    fn unknown_field_refused() {
        rejects(
            &edit(18, "    mood: aws"),
            "nat_gateways[0].mood",
            18,
            "unknown field",
        );
    }
}

#[cfg(test)]
mod conf_files {
    #[test]
    fn shipped_nat_configs_are_valid() {
        for (name, text) in [
            (
                "conf/test-nat.yaml",
                include_str!("../../conf/test-nat.yaml"),
            ),
            (
                "conf/ec2-nat-gateway.yaml",
                include_str!("../../conf/ec2-nat-gateway.yaml"),
            ),
        ] {
            let cfg = super::super::parse_str(text, name).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(cfg.nat_gateways.len(), 1, "{name}");
        }
    }
}

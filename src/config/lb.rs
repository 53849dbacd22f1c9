//! `load_balancers:` — AWS NLB-style network load balancers (SPEC.md §3, issue 7 §2).
//!
//! Each load balancer is a tenant with VIPs, listeners (protocol, port) forwarding to
//! target groups, and target groups of weighted targets. Defaults are AWS NLB's.

use super::validate::Validator;
use super::{Config, PortRole};
use serde::Deserialize;
use std::net::Ipv4Addr;

pub const MAGLEV_DEFAULT: u32 = 65537;
pub const MAGLEV_MAX: u32 = 655_373;
pub const LB_FLOWS_MIN: u32 = 16;
pub const LB_FLOWS_MAX: u32 = 16 * 1024 * 1024;
pub const WEIGHT_MAX: u32 = 100;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LoadBalancerConfig {
    /// Tenant name, unique among load balancers (metrics label).
    pub id: String,
    /// Virtual IPs clients connect to (the appliance answers ARP for them).
    pub vips: Vec<Ipv4Addr>,
    /// Source addresses of full-NAT flows (`preserve_client_ip: false`).
    #[serde(default)]
    pub lb_addresses: Vec<Ipv4Addr>,
    /// Maglev lookup table size: a prime, at least 100 x the largest target group.
    #[serde(default = "default_maglev")]
    pub maglev_table_size: u32,
    /// Flow-table capacity per worker core (preallocated).
    #[serde(default = "default_lb_flows")]
    pub flows_per_core: u32,
    pub listeners: Vec<ListenerConfig>,
    pub target_groups: Vec<TargetGroupConfig>,
    /// Source address of this load balancer's health probes (an address of one of the
    /// appliance's data ports, also held by the exception tap's kernel interface). Default:
    /// the kernel's choice for the route to the target.
    #[serde(default)]
    pub health_check_source: Option<Ipv4Addr>,
    /// Kernel interface the probe sockets are bound to (`SO_BINDTODEVICE`). Default: the
    /// exception port's kernel interface (its `iface=`), if an exception port is configured.
    #[serde(default)]
    pub health_check_device: Option<String>,
    /// TESTING ONLY: overrides every group's `health_check.interval_s` (AWS range 5..=300 s)
    /// with this many milliseconds (100..=300000), so integration tests run in seconds. The
    /// probe timeout is capped at the interval.
    #[serde(default)]
    pub health_check_interval_ms: Option<u32>,
    /// Per-tenant limits on this node (packets/s, new flows/s, concurrent flows); none by
    /// default. See `config::limits`.
    #[serde(default)]
    pub limits: super::TenantLimits,
    /// Live reload: a removed load balancer or VIP keeps serving its existing flows (no new
    /// ones) for at most this long, then they are removed. Default 300 s.
    #[serde(default = "super::nat::default_drain_timeout")]
    pub drain_timeout_s: u32,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ListenerProtocol {
    Tcp,
    Udp,
    TcpUdp,
}

impl ListenerProtocol {
    pub fn tcp(self) -> bool {
        matches!(self, ListenerProtocol::Tcp | ListenerProtocol::TcpUdp)
    }
    pub fn udp(self) -> bool {
        matches!(self, ListenerProtocol::Udp | ListenerProtocol::TcpUdp)
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    pub protocol: ListenerProtocol,
    pub port: u32,
    pub target_group: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TargetGroupConfig {
    pub name: String,
    /// true: destination NAT only (targets route replies back through the appliance);
    /// false: full NAT from an `lb_addresses` address.
    #[serde(default = "default_true")]
    pub preserve_client_ip: bool,
    /// 0..=3600 s, default 300.
    #[serde(default = "default_dereg")]
    pub deregistration_delay_s: u32,
    /// Reset a draining target's flows both ways when the delay ends (default false: drop).
    #[serde(default)]
    pub connection_termination: bool,
    /// 60..=6000 s, default 350.
    #[serde(default = "default_tcp_idle")]
    pub tcp_idle_timeout_s: u32,
    /// Default 120 s (AWS fixed value; 10..=6000 accepted).
    #[serde(default = "default_udp_idle")]
    pub udp_idle_timeout_s: u32,
    #[serde(default)]
    pub health_check: HealthCheckConfig,
    #[serde(default)]
    pub targets: Vec<TargetConfig>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    pub ip: Ipv4Addr,
    pub port: u32,
    /// 0..=100, default 1. 0 means draining: no new flows.
    #[serde(default = "default_weight")]
    pub weight: u32,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum HealthCheckProtocol {
    #[default]
    Tcp,
    Http,
}

/// Health check parameters of a target group (consumed by `lb::health`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawHealthCheck")]
pub struct HealthCheckConfig {
    pub protocol: HealthCheckProtocol,
    /// None: the target's traffic port.
    pub port: Option<u16>,
    /// HTTP request path.
    pub path: String,
    /// Accepted HTTP status codes, inclusive.
    pub matcher: (u16, u16),
    pub interval_s: u32,
    pub timeout_s: u32,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        HealthCheckConfig::try_from(RawHealthCheck::default()).expect("defaults are valid")
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealthCheck {
    #[serde(default)]
    protocol: HealthCheckProtocol,
    /// A number or `traffic-port`.
    #[serde(default)]
    port: Option<serde_yaml::Value>,
    #[serde(default)]
    path: Option<String>,
    /// `200`, or `200-399`.
    #[serde(default)]
    matcher: Option<serde_yaml::Value>,
    #[serde(default)]
    interval_s: Option<u32>,
    #[serde(default)]
    timeout_s: Option<u32>,
    #[serde(default)]
    healthy_threshold: Option<u32>,
    #[serde(default)]
    unhealthy_threshold: Option<u32>,
}

impl TryFrom<RawHealthCheck> for HealthCheckConfig {
    type Error = String;
    fn try_from(r: RawHealthCheck) -> Result<Self, String> {
        let port = match r.port {
            None => None,
            Some(serde_yaml::Value::String(s)) if s == "traffic-port" => None,
            Some(serde_yaml::Value::Number(n)) => match n.as_u64() {
                Some(p) if (1..=65535).contains(&p) => Some(p as u16),
                _ => return Err(format!("health_check.port {n} is out of range 1..=65535")),
            },
            Some(v) => {
                return Err(format!(
                    "health_check.port must be a port number or `traffic-port`, not {v:?}"
                ))
            }
        };
        let matcher = match r.matcher {
            None => (200, 399),
            Some(v) => parse_matcher(&v)?,
        };
        let http = r.protocol == HealthCheckProtocol::Http;
        Ok(HealthCheckConfig {
            protocol: r.protocol,
            port,
            path: r.path.unwrap_or_else(|| "/".into()),
            matcher,
            interval_s: r.interval_s.unwrap_or(30),
            timeout_s: r.timeout_s.unwrap_or(if http { 6 } else { 10 }),
            healthy_threshold: r.healthy_threshold.unwrap_or(5),
            unhealthy_threshold: r.unhealthy_threshold.unwrap_or(2),
        })
    }
}

fn parse_matcher(v: &serde_yaml::Value) -> Result<(u16, u16), String> {
    let s = match v {
        serde_yaml::Value::Number(n) => n.to_string(),
        serde_yaml::Value::String(s) => s.clone(),
        _ => return Err("health_check.matcher must be like `200` or `200-399`".into()),
    };
    let code = |x: &str| -> Result<u16, String> {
        match x.trim().parse::<u16>() {
            Ok(c) if (100..=599).contains(&c) => Ok(c),
            _ => Err(format!(
                "health_check.matcher `{s}`: `{x}` is not an HTTP status code 100..=599"
            )),
        }
    };
    let (lo, hi) = match s.split_once('-') {
        Some((a, b)) => (code(a)?, code(b)?),
        None => {
            let c = code(&s)?;
            (c, c)
        }
    };
    if lo > hi {
        return Err(format!("health_check.matcher `{s}` is an empty range"));
    }
    Ok((lo, hi))
}

fn default_maglev() -> u32 {
    MAGLEV_DEFAULT
}
fn default_lb_flows() -> u32 {
    65536
}
fn default_true() -> bool {
    true
}
fn default_dereg() -> u32 {
    300
}
fn default_tcp_idle() -> u32 {
    350
}
fn default_udp_idle() -> u32 {
    120
}
fn default_weight() -> u32 {
    1
}

pub fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2u32;
    while d.saturating_mul(d) <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

/// Addresses of the appliance outside this load balancer that a VIP / LB address must not
/// equal: port addresses, NAT public IPs, other load balancers' addresses.
fn owner_of_address(cfg: &Config, i: usize, ip: Ipv4Addr) -> Option<String> {
    for (pi, p) in cfg.ports.iter().enumerate() {
        if p.addresses.iter().any(|a| a.addr == ip) {
            return Some(format!("the address of port `{}` (ports[{pi}])", p.name));
        }
    }
    for (gi, g) in cfg.nat_gateways.iter().enumerate() {
        if g.public_ips.contains(&ip) {
            return Some(format!(
                "a public IP of NAT gateway `{}` (nat_gateways[{gi}])",
                g.id
            ));
        }
    }
    for (j, o) in cfg.load_balancers.iter().enumerate() {
        if j != i && (o.vips.contains(&ip) || o.lb_addresses.contains(&ip)) {
            return Some(format!(
                "an address of load balancer `{}` (load_balancers[{j}])",
                o.id
            ));
        }
    }
    None
}

/// Is `ip` reachable by a route or a connected subnet of a data port?
fn routable(cfg: &Config, ip: Ipv4Addr) -> bool {
    cfg.routes.iter().any(|r| r.prefix.contains(ip))
        || cfg
            .ports
            .iter()
            .filter(|p| p.role == PortRole::Data)
            .any(|p| p.addresses.iter().any(|a| a.contains(ip)))
}

/// The `load_balancers` section check (registered in `validate::SECTIONS`).
pub(super) fn check_load_balancers(cfg: &Config, v: &mut Validator<'_>) {
    for (i, lb) in cfg.load_balancers.iter().enumerate() {
        let base = format!("load_balancers[{i}]");
        if lb.id.is_empty() {
            v.fail(format!("{base}.id"), "id is empty; name the load balancer");
        } else if let Some(j) = cfg.load_balancers[..i].iter().position(|o| o.id == lb.id) {
            v.fail(
                format!("{base}.id"),
                format!(
                    "duplicate load balancer id `{}` (also load_balancers[{j}].id)",
                    lb.id
                ),
            );
        }
        if lb.vips.is_empty() {
            v.fail(format!("{base}.vips"), "at least one VIP is required");
        }
        if lb.lb_addresses.len() > 8 {
            // As a NAT gateway's public IPs: up to 8, each with its own 55,000 ports per
            // target endpoint.
            v.fail(
                format!("{base}.lb_addresses"),
                format!("{} addresses listed; at most 8", lb.lb_addresses.len()),
            );
        }
        let own: Vec<(String, Ipv4Addr)> = lb
            .vips
            .iter()
            .enumerate()
            .map(|(k, ip)| (format!("{base}.vips[{k}]"), *ip))
            .chain(
                lb.lb_addresses
                    .iter()
                    .enumerate()
                    .map(|(k, ip)| (format!("{base}.lb_addresses[{k}]"), *ip)),
            )
            .collect();
        for (n, (path, ip)) in own.iter().enumerate() {
            if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() || ip.is_loopback() {
                v.fail(
                    path.clone(),
                    format!("{ip} cannot be a load balancer address"),
                );
            } else if let Some((first, _)) = own[..n].iter().find(|(_, o)| o == ip) {
                v.fail(path.clone(), format!("{ip} is listed twice (also {first})"));
            } else if let Some(owner) = owner_of_address(cfg, i, *ip) {
                v.fail(
                    path.clone(),
                    format!("{ip} is already {owner}; a load balancer needs addresses of its own"),
                );
            }
        }
        let largest = lb
            .target_groups
            .iter()
            .map(|g| g.targets.len())
            .max()
            .unwrap_or(0) as u32;
        let m = lb.maglev_table_size;
        if v.in_range(format!("{base}.maglev_table_size"), m, 101, MAGLEV_MAX, "") {
            if !is_prime(m) {
                v.fail(
                    format!("{base}.maglev_table_size"),
                    format!("{m} is not prime (e.g. 65537, 655373)"),
                );
            } else if u64::from(m) < 100 * u64::from(largest.max(1)) {
                v.fail(
                    format!("{base}.maglev_table_size"),
                    format!("{m} is below 100 x {largest} targets: shares would drift past 1 %"),
                );
            }
        }
        v.in_range(
            format!("{base}.flows_per_core"),
            lb.flows_per_core,
            LB_FLOWS_MIN,
            LB_FLOWS_MAX,
            " (flows preallocated per worker core)",
        );
        check_listeners(lb, &base, v);
        check_groups(cfg, lb, &base, v);
        check_health_probe_path(cfg, lb, &base, v);
    }
}

/// The probe source must be an address of a data port (targets answer it; the pipeline
/// hands the replies to the kernel); the device name must be a valid interface name.
fn check_health_probe_path(
    cfg: &Config,
    lb: &LoadBalancerConfig,
    base: &str,
    v: &mut Validator<'_>,
) {
    if let Some(src) = lb.health_check_source {
        let on_data_port = cfg
            .ports
            .iter()
            .filter(|p| p.role == PortRole::Data)
            .any(|p| p.addresses.iter().any(|a| a.addr == src));
        if !on_data_port {
            v.fail(
                format!("{base}.health_check_source"),
                format!(
                    "{src} is not an address of a data port; probes need an address of the \
                     appliance that targets answer and the pipeline hands to the kernel"
                ),
            );
        }
    }
    if let Some(dev) = &lb.health_check_device {
        if dev.is_empty() || dev.len() > 15 || dev.contains(['/', ' ']) {
            v.fail(
                format!("{base}.health_check_device"),
                format!("`{dev}` is not a kernel interface name (1..=15 chars, no / or space)"),
            );
        }
    }
    if let Some(ms) = lb.health_check_interval_ms {
        v.in_range(
            format!("{base}.health_check_interval_ms"),
            ms,
            100,
            300_000,
            " (testing only)",
        );
    }
}

fn check_listeners(lb: &LoadBalancerConfig, base: &str, v: &mut Validator<'_>) {
    if lb.listeners.is_empty() {
        v.fail(
            format!("{base}.listeners"),
            "at least one listener is required",
        );
    }
    for (k, l) in lb.listeners.iter().enumerate() {
        let p = format!("{base}.listeners[{k}]");
        v.in_range(format!("{p}.port"), l.port, 1, 65535, "");
        if !lb.target_groups.iter().any(|g| g.name == l.target_group) {
            v.fail(
                format!("{p}.target_group"),
                format!(
                    "no target group named `{}` in this load balancer",
                    l.target_group
                ),
            );
        }
        let clash = lb.listeners[..k].iter().position(|o| {
            o.port == l.port
                && ((o.protocol.tcp() && l.protocol.tcp())
                    || (o.protocol.udp() && l.protocol.udp()))
        });
        if let Some(j) = clash {
            v.fail(
                format!("{p}.port"),
                format!(
                    "port {} already has a listener for this protocol ({base}.listeners[{j}])",
                    l.port
                ),
            );
        }
    }
}

fn check_groups(cfg: &Config, lb: &LoadBalancerConfig, base: &str, v: &mut Validator<'_>) {
    for (k, g) in lb.target_groups.iter().enumerate() {
        let p = format!("{base}.target_groups[{k}]");
        if g.name.is_empty() {
            v.fail(format!("{p}.name"), "name is empty");
        } else if let Some(j) = lb.target_groups[..k].iter().position(|o| o.name == g.name) {
            v.fail(
                format!("{p}.name"),
                format!(
                    "duplicate target group `{}` (also {base}.target_groups[{j}])",
                    g.name
                ),
            );
        }
        if !g.preserve_client_ip && lb.lb_addresses.is_empty() {
            v.fail(
                format!("{p}.preserve_client_ip"),
                "preserve_client_ip: false (full NAT) needs lb_addresses on the load balancer",
            );
        }
        v.in_range(
            format!("{p}.deregistration_delay_s"),
            g.deregistration_delay_s,
            0,
            3600,
            "",
        );
        v.in_range(
            format!("{p}.tcp_idle_timeout_s"),
            g.tcp_idle_timeout_s,
            60,
            6000,
            "",
        );
        v.in_range(
            format!("{p}.udp_idle_timeout_s"),
            g.udp_idle_timeout_s,
            10,
            6000,
            "",
        );
        let h = &g.health_check;
        let hp = format!("{p}.health_check");
        v.in_range(format!("{hp}.interval_s"), h.interval_s, 5, 300, "");
        v.in_range(format!("{hp}.timeout_s"), h.timeout_s, 2, 120, "");
        v.in_range(
            format!("{hp}.healthy_threshold"),
            h.healthy_threshold,
            2,
            10,
            "",
        );
        v.in_range(
            format!("{hp}.unhealthy_threshold"),
            h.unhealthy_threshold,
            2,
            10,
            "",
        );
        if !h.path.starts_with('/') {
            v.fail(
                format!("{hp}.path"),
                format!("`{}` must start with /", h.path),
            );
        }
        for (t, tg) in g.targets.iter().enumerate() {
            let tp = format!("{p}.targets[{t}]");
            v.in_range(format!("{tp}.port"), tg.port, 1, 65535, "");
            v.in_range(
                format!("{tp}.weight"),
                tg.weight,
                0,
                WEIGHT_MAX,
                " (0 = draining)",
            );
            if !routable(cfg, tg.ip) {
                v.fail(
                    format!("{tp}.ip"),
                    format!(
                        "target {} is not reachable by any route or connected subnet",
                        tg.ip
                    ),
                );
            } else if let Some(j) = g.targets[..t]
                .iter()
                .position(|o| o.ip == tg.ip && o.port == tg.port)
            {
                v.fail(
                    format!("{tp}.ip"),
                    format!(
                        "target {}:{} is listed twice (also {p}.targets[{j}])",
                        tg.ip, tg.port
                    ),
                );
            }
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
  - name: front
    device: net_tap0,iface=a
    addresses: [198.51.100.1/24]
  - name: back
    device: net_tap1,iface=b
    addresses: [10.1.0.1/24]
load_balancers:
  - id: web
    vips: [198.51.100.10]
    lb_addresses: [198.51.100.11]
    maglev_table_size: 65537
    listeners:
      - {protocol: tcp, port: 80, target_group: web-tg}
      - {protocol: udp, port: 53, target_group: dns}
    target_groups:
      - name: web-tg
        health_check: {protocol: http, path: /health, matcher: \"200-299\", interval_s: 5}
        targets:
          - {ip: 10.1.0.2, port: 8080, weight: 1}
          - {ip: 10.1.0.3, port: 8080, weight: 2}
      - name: dns
        preserve_client_ip: false
        targets:
          - {ip: 10.1.0.4, port: 53}
";

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
            }
        }
    }

    #[test]
    fn base_parses_with_defaults() {
        let cfg = parse_str(BASE, "t.yaml").unwrap();
        let lb = &cfg.load_balancers[0];
        assert_eq!(lb.flows_per_core, 65536);
        let web = &lb.target_groups[0];
        assert!(web.preserve_client_ip);
        assert_eq!(web.deregistration_delay_s, 300);
        assert_eq!(web.tcp_idle_timeout_s, 350);
        assert_eq!(web.udp_idle_timeout_s, 120);
        let h = &web.health_check;
        assert_eq!(h.protocol, HealthCheckProtocol::Http);
        assert_eq!((h.matcher, h.interval_s, h.timeout_s), ((200, 299), 5, 6));
        assert_eq!(h.port, None);
        let d = &lb.target_groups[1].health_check;
        assert_eq!(d, &HealthCheckConfig::default());
        assert_eq!(
            (d.timeout_s, d.healthy_threshold, d.unhealthy_threshold),
            (10, 5, 2)
        );
        assert_eq!(lb.target_groups[1].targets[0].weight, 1);
        assert!(lb.listeners[1].protocol.udp() && !lb.listeners[1].protocol.tcp());
    }

    #[test]
    fn addresses_checked() {
        rejects(
            &edit(12, "    vips: [198.51.100.1]"),
            "load_balancers[0].vips[0]",
            12,
            "port `front`",
        );
        rejects(
            &edit(12, "    vips: []"),
            "load_balancers[0].vips",
            12,
            "at least one",
        );
        rejects(
            &edit(13, "    lb_addresses: [198.51.100.10]"),
            "load_balancers[0].lb_addresses[0]",
            13,
            "listed twice",
        );
    }

    #[test]
    fn vip_equal_to_nat_public_ip() {
        let t = BASE.to_string()
            + "nat_gateways:\n  - id: n\n    inside_prefixes: [10.2.0.0/24]\n    public_ips: [198.51.100.10]\n";
        rejects(&t, "load_balancers[0].vips[0]", 12, "NAT gateway `n`");
    }

    #[test]
    fn maglev_size_rules() {
        rejects(
            &edit(14, "    maglev_table_size: 65536"),
            "load_balancers[0].maglev_table_size",
            14,
            "not prime",
        );
        rejects(
            &edit(14, "    maglev_table_size: 101"),
            "load_balancers[0].maglev_table_size",
            14,
            "100 x 2",
        );
        rejects(
            &edit(14, "    maglev_table_size: 700001"),
            "load_balancers[0].maglev_table_size",
            14,
            "out of range",
        );
    }

    #[test]
    fn listener_and_target_rules() {
        rejects(
            &edit(16, "      - {protocol: tcp, port: 80, target_group: nope}"),
            "load_balancers[0].listeners[0].target_group",
            16,
            "no target group named `nope`",
        );
        rejects(
            &edit(
                17,
                "      - {protocol: tcp_udp, port: 80, target_group: dns}",
            ),
            "load_balancers[0].listeners[1].port",
            17,
            "already has a listener",
        );
        rejects(
            &edit(23, "          - {ip: 10.9.0.3, port: 8080, weight: 2}"),
            "load_balancers[0].target_groups[0].targets[1].ip",
            23,
            "not reachable",
        );
        rejects(
            &edit(23, "          - {ip: 10.1.0.3, port: 8080, weight: 101}"),
            "load_balancers[0].target_groups[0].targets[1].weight",
            23,
            "out of range 0..=100",
        );
        rejects(
            &edit(20, "        health_check: {interval_s: 4}"),
            "load_balancers[0].target_groups[0].health_check.interval_s",
            20,
            "out of range 5..=300",
        );
        rejects(
            &edit(20, "        health_check: {matcher: \"399-200\"}"),
            "load_balancers[0].target_groups[0].health_check",
            19,
            "empty range",
        );
        rejects(
            &edit(13, "    lb_addresses: []"),
            "load_balancers[0].target_groups[1].preserve_client_ip",
            25,
            "lb_addresses",
        );
    }

    #[test]
    fn primes() {
        assert!(is_prime(65537) && is_prime(655_373) && !is_prime(65535) && !is_prime(1));
    }
}

#[cfg(test)]
mod conf_files {
    #[test]
    fn shipped_lb_config_is_valid() {
        let text = include_str!("../../conf/test-lb.yaml");
        let cfg =
            super::super::parse_str(text, "conf/test-lb.yaml").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.load_balancers.len(), 1);
        assert_eq!(cfg.load_balancers[0].target_groups[0].targets.len(), 4);
    }
}

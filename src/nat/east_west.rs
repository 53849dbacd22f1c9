//! Where translation applies (issue 8 item 10). AWS NAT Gateway translates what the VPC
//! route tables send to it: traffic toward the internet (or other networks beyond it).
//! Traffic between private networks never reaches it — the route table sends it
//! elsewhere. flowgate is also the router, so it sees that east-west traffic too, and
//! must leave it alone to match: a packet from an inside prefix is translated only when
//! its destination is not
//! - in one of the gateway's inside prefixes,
//! - routed out of one of the gateway's inside ports (connected or static route, by
//!   longest-prefix match: another private network behind the inside), or
//! - in the gateway's `no_translate` list.
//!
//! The table is a longest-prefix match over the config's routes (each marked "inside
//! port or not") overlaid with those prefixes, built when the worker starts; a reload
//! that would change it is refused (control.rs), like any NAT change.

use crate::config::{Config, Ipv4Net, NatGatewayConfig};
use crate::pipeline::route::Lpm;
use std::net::Ipv4Addr;

#[derive(Debug, Clone, Default)]
pub struct NoTranslate {
    table: Lpm<bool>,
    /// (network, length, no-translate) in insertion order: the table's identity.
    entries: Vec<(u32, u8, bool)>,
}

impl PartialEq for NoTranslate {
    fn eq(&self, other: &Self) -> bool {
        self.entries == other.entries
    }
}

impl NoTranslate {
    /// Only what the gateway's own config says (inside prefixes, `no_translate`).
    pub fn from_gateway(g: &NatGatewayConfig) -> NoTranslate {
        let mut t = NoTranslate::default();
        t.overlay(g);
        t
    }

    /// The routes of `cfg` (routed out of an inside port of `g` = east-west) overlaid
    /// with the gateway's own prefixes.
    pub fn from_config(cfg: &Config, g: &NatGatewayConfig) -> NoTranslate {
        let inside = g.inside_port_indices(cfg);
        let mut t = NoTranslate::default();
        for (i, p) in cfg.ports.iter().enumerate() {
            for a in &p.addresses {
                t.insert(a, inside.contains(&i));
            }
        }
        for r in &cfg.routes {
            let i = cfg.ports.iter().position(|p| p.name == r.port);
            t.insert(&r.prefix, i.is_some_and(|i| inside.contains(&i)));
        }
        t.overlay(g);
        t
    }

    fn overlay(&mut self, g: &NatGatewayConfig) {
        for p in g.inside_prefixes.iter().chain(&g.no_translate) {
            self.insert(p, true);
        }
    }

    fn insert(&mut self, p: &Ipv4Net, keep: bool) {
        let net = u32::from(p.network());
        self.entries.retain(|e| (e.0, e.1) != (net, p.len));
        self.entries.push((net, p.len, keep));
        self.table.insert(p.network(), p.len, keep);
    }

    /// True: traffic to `dst` keeps its private source (not translated).
    #[inline]
    pub fn keeps_source(&self, dst: Ipv4Addr) -> bool {
        self.table.lookup(dst).copied().unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_str;

    const YAML: &str = "lcores: {workers: [1]}
ports:
  - {name: inside, device: net_null0, addresses: [10.0.1.1/24]}
  - {name: outside, device: net_null1, addresses: [198.51.100.1/24]}
routes:
  - {prefix: 0.0.0.0/0, port: outside, via: 198.51.100.254}
  - {prefix: 10.0.2.0/24, port: inside, via: 10.0.1.3}
  - {prefix: 10.9.0.0/16, port: outside, via: 198.51.100.253}
nat_gateways:
  - id: g
    inside_prefixes: [10.0.1.0/24]
    public_ips: [198.51.100.10]
    no_translate: [192.0.2.0/24]
";

    fn a(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn east_west_and_listed_destinations_keep_their_source() {
        let cfg = parse_str(YAML, "t.yaml").unwrap();
        let t = NoTranslate::from_config(&cfg, &cfg.nat_gateways[0]);
        for (dst, keep) in [
            ("10.0.1.7", true),     // the inside prefix itself
            ("10.0.2.9", true),     // another private network behind the inside port
            ("192.0.2.5", true),    // no_translate
            ("203.0.113.5", false), // the internet (default route, outside)
            ("10.9.1.1", false),    // a private network routed outside (VPN, TGW): AWS translates
            ("198.51.100.7", false),
        ] {
            assert_eq!(t.keeps_source(a(dst)), keep, "{dst}");
        }
        let own = NoTranslate::from_gateway(&cfg.nat_gateways[0]);
        assert!(own.keeps_source(a("10.0.1.7")) && !own.keeps_source(a("10.0.2.9")));
        assert_eq!(t, NoTranslate::from_config(&cfg, &cfg.nat_gateways[0]));
        assert_ne!(t, own);
    }

    fn udp(src: &str, dst: &str) -> crate::packet::VecBuf {
        use crate::wire::{Ipv4Packet, UdpPacket, IPPROTO_UDP};
        let mut v = vec![0u8; 14 + 20 + 8 + 4];
        v[12..14].copy_from_slice(&[8, 0]);
        let mut ip = Ipv4Packet::new_unchecked(&mut v[14..]);
        ip.set_version_ihl(5);
        ip.set_total_len(32);
        ip.set_ttl(64);
        ip.set_protocol(IPPROTO_UDP);
        ip.set_src_addr(a(src));
        ip.set_dst_addr(a(dst));
        ip.fill_checksum();
        let mut u = UdpPacket::new_unchecked(ip.payload_mut());
        u.set_src_port(5000);
        u.set_dst_port(53);
        u.set_len(12);
        u.fill_checksum(a(src), a(dst));
        crate::packet::VecBuf::from_frame(&v)
    }

    #[test]
    fn the_gateway_passes_east_west_traffic_untranslated() {
        use crate::nat::{NatVerdict, NatWorker};
        use crate::packet::PacketBuf;
        let cfg = parse_str(YAML, "t.yaml").unwrap();
        let mut w = NatWorker::new(&cfg.nat_gateways, 0, 1, 1_000_000_000);
        w.set_routes(&cfg);
        let mut p = udp("10.0.1.2", "10.0.2.9");
        let orig = p.data().to_vec();
        assert_eq!(w.process(&mut p, 1), NatVerdict::Pass);
        assert_eq!(p.data(), &orig[..], "untouched");
        let mut p = udp("10.0.1.2", "203.0.113.5");
        assert_eq!(w.process(&mut p, 1), NatVerdict::Translated);
        assert_eq!(w.flows(), 1);
    }
}

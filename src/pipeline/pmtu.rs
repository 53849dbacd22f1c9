//! Path MTU discovery across a translation (issue 8 item 9).
//!
//! `forward` checks DF/MTU on the packet as received, so an ICMP fragmentation-needed
//! quotes what the sender sent. A stage can move the destination (NAT out2in: public IP
//! -> private host) onto a route with a smaller MTU; that packet has already been
//! rewritten when the second check finds it too big. So, before the stages run, a DF
//! packet larger than the smallest egress MTU of the appliance keeps a copy of the bytes
//! an ICMP error quotes (the IP header and 8 bytes, RFC 792); if the translated packet
//! turns out too big, they are put back and the error is built from them, to the remote
//! sender. Only packets that could hit this path pay the 28-byte copy.

use crate::config::{Config, PortRole};
use crate::packet::PacketBuf;

const ETH: usize = 14;
/// IPv4 header without options (options are dropped at ingress) + 8 bytes.
pub const QUOTE: usize = 28;

/// The first `QUOTE` bytes of an IPv4 packet, as received.
pub struct SavedQuote {
    bytes: [u8; QUOTE],
    len: usize,
}

impl SavedQuote {
    #[inline]
    pub fn take<B: PacketBuf>(pkt: &B) -> SavedQuote {
        let d = pkt.data().get(ETH..).unwrap_or(&[]);
        let len = d.len().min(QUOTE);
        let mut bytes = [0u8; QUOTE];
        bytes[..len].copy_from_slice(&d[..len]);
        SavedQuote { bytes, len }
    }

    /// Puts the saved bytes back over the (translated) packet: the quote of an ICMP error
    /// built from it is what the sender sent.
    pub fn restore<B: PacketBuf>(&self, pkt: &mut B) {
        if let Some(d) = pkt.data_mut().get_mut(ETH..ETH + self.len) {
            d.copy_from_slice(&self.bytes[..self.len]);
        }
    }
}

/// The smallest egress MTU of any data port or route: packets up to it never need the copy.
pub fn min_egress_mtu(cfg: &Config) -> u32 {
    let ports = cfg
        .ports
        .iter()
        .filter(|p| p.role == PortRole::Data)
        .map(|p| p.mtu);
    let routes = cfg.routes.iter().filter_map(|r| r.mtu);
    ports.chain(routes).min().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::super::counters::DropReason;
    use super::super::route::Fib;
    use super::super::{Output, Pipeline, PipelineParams};
    use crate::config;
    use crate::nat::stage::{NatPublished, NatStage};
    use crate::nat::NatWorker;
    use crate::packet::{PacketBuf, VecAlloc, VecBuf};
    use crate::wire::IPPROTO_UDP;
    use crate::wire::{EtherType, EthernetFrame, IcmpPacket, Ipv4Packet, MacAddr, UdpPacket};
    use std::net::Ipv4Addr;
    use std::sync::Arc;

    const MACS: [MacAddr; 2] = [MacAddr([2, 0, 0, 0, 0, 1]), MacAddr([2, 0, 0, 0, 0, 2])];
    const HOST_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0xa, 2]);
    const ROUTER_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0xfe, 0xfe]);
    const NOW: u64 = 10_000_000_000;

    const YAML: &str = "lcores: {workers: [1]}
ports:
  - {name: inside, device: net_null0, addresses: [10.0.1.1/24], mtu: 1280}
  - {name: outside, device: net_null1, addresses: [198.51.100.1/24], mtu: 1500}
routes:
  - {prefix: 0.0.0.0/0, port: outside, via: 198.51.100.254}
nat_gateways:
  - {id: g, inside_prefixes: [10.0.1.0/24], public_ips: [198.51.100.10]}
";

    #[derive(Default)]
    struct Rec(Vec<(u16, Vec<u8>)>);
    impl Output<VecBuf> for Rec {
        fn tx(&mut self, port: u16, pkt: VecBuf) {
            self.0.push((port, pkt.data().to_vec()));
        }
        fn discard(&mut self, _: VecBuf) {}
    }

    fn a(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[allow(clippy::too_many_arguments)]
    fn udp_frame(
        dmac: MacAddr,
        smac: MacAddr,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        sport: u16,
        dport: u16,
        payload: usize,
        df: bool,
    ) -> VecBuf {
        let mut v = vec![0u8; 14 + 28 + payload];
        {
            let mut e = EthernetFrame::new_unchecked(&mut v[..]);
            e.set_dst_addr(dmac);
            e.set_src_addr(smac);
            e.set_ethertype(EtherType::IPV4);
        }
        let total = v.len() - 14;
        let mut ip = Ipv4Packet::new_unchecked(&mut v[14..]);
        ip.set_version_ihl(5);
        ip.set_total_len(total as u16);
        ip.set_ident(0x1234);
        ip.set_flags_frag(df, false, 0);
        ip.set_ttl(60);
        ip.set_protocol(IPPROTO_UDP);
        ip.set_src_addr(src);
        ip.set_dst_addr(dst);
        ip.fill_checksum();
        let mut u = UdpPacket::new_unchecked(ip.payload_mut());
        u.set_src_port(sport);
        u.set_dst_port(dport);
        u.set_len((8 + payload) as u16);
        u.fill_checksum(src, dst);
        VecBuf::from_frame(&v)
    }

    fn pipeline() -> Pipeline<VecBuf> {
        let cfg = config::parse_str(YAML, "t.yaml").unwrap_or_else(|e| panic!("{e}"));
        let fib = Arc::new(Fib::build(&cfg, &[0, 1], &MACS, 1));
        assert_eq!(fib.min_egress_mtu, 1280);
        let mut p = Pipeline::new(fib, PipelineParams::for_tests());
        let nat = NatWorker::new(&cfg.nat_gateways, 0, 1, 1_000_000_000);
        p.stages = crate::stages::StageChain::build(
            None,
            Some(NatStage::new(nat, Arc::new(NatPublished::new(1)))),
        );
        let (mut al, mut out) = (VecAlloc::default(), Rec::default());
        p.neighbor_resolved(0, a("10.0.1.2"), HOST_MAC, NOW, &mut al, &mut out);
        p.neighbor_resolved(1, a("198.51.100.254"), ROUTER_MAC, NOW, &mut al, &mut out);
        p
    }

    /// Opens a UDP mapping 10.0.1.2:5000 -> 203.0.113.5:53; returns the public port.
    fn open_mapping(p: &mut Pipeline<VecBuf>) -> u16 {
        let mut out = Rec::default();
        let f = udp_frame(
            MACS[0],
            HOST_MAC,
            a("10.0.1.2"),
            a("203.0.113.5"),
            5000,
            53,
            10,
            true,
        );
        p.handle(f, 0, NOW, &mut VecAlloc::default(), &mut out);
        assert_eq!(out.0.len(), 1);
        let ip = Ipv4Packet::new_unchecked(&out.0[0].1[14..]);
        assert_eq!(ip.src_addr(), a("198.51.100.10"));
        UdpPacket::new_unchecked(ip.payload()).src_port()
    }

    #[test]
    fn inbound_df_packet_too_big_for_the_inside_mtu_gets_frag_needed_quoting_what_was_sent() {
        let mut p = pipeline();
        let pport = open_mapping(&mut p);
        let big = udp_frame(
            MACS[1],
            ROUTER_MAC,
            a("203.0.113.5"),
            a("198.51.100.10"),
            53,
            pport,
            1400,
            true,
        );
        let sent = big.data()[14..14 + 28].to_vec();
        let mut out = Rec::default();
        p.handle(big, 1, NOW, &mut VecAlloc::default(), &mut out);
        assert_eq!(p.counters.drops[DropReason::FragNeeded as usize], 1);
        assert_eq!(p.counters.events.icmp_frag_needed_sent, 1);
        assert_eq!(out.0.len(), 1, "one ICMP error");
        let (port, f) = &out.0[0];
        assert_eq!(*port, 1, "back out of the outside port");
        assert_eq!(EthernetFrame::new_unchecked(&f[..]).dst_addr(), ROUTER_MAC);
        let ip = Ipv4Packet::new_unchecked(&f[14..]);
        assert!(ip.verify_checksum());
        assert_eq!(ip.src_addr(), a("198.51.100.1"));
        assert_eq!(ip.dst_addr(), a("203.0.113.5"));
        let icmp = IcmpPacket::new_unchecked(ip.payload());
        assert!(icmp.verify_checksum());
        assert_eq!((icmp.msg_type(), icmp.msg_code()), (3, 4));
        let rest = &ip.payload()[4..8];
        assert_eq!(u16::from_be_bytes([rest[2], rest[3]]), 1280, "next-hop MTU");
        assert_eq!(
            &ip.payload()[8..8 + 28],
            &sent[..],
            "the quote is what the sender sent"
        );
    }

    #[test]
    fn inbound_packet_without_df_is_fragmented_to_the_inside_mtu() {
        let mut p = pipeline();
        let pport = open_mapping(&mut p);
        let big = udp_frame(
            MACS[1],
            ROUTER_MAC,
            a("203.0.113.5"),
            a("198.51.100.10"),
            53,
            pport,
            1400,
            false,
        );
        let mut out = Rec::default();
        p.handle(big, 1, NOW, &mut VecAlloc::default(), &mut out);
        assert_eq!(out.0.len(), 2, "two fragments");
        for (port, f) in &out.0 {
            assert_eq!(*port, 0);
            let ip = Ipv4Packet::new_unchecked(&f[14..]);
            assert_eq!(ip.dst_addr(), a("10.0.1.2"));
            assert!(ip.total_len() <= 1280);
        }
    }
}

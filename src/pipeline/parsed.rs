//! The parsed descriptor of a transit packet (issue 11 item 1, "parse once"): ingress
//! validates the Ethernet, IPv4 and transport headers once and records what later steps
//! need here. Routing, the TTL/MTU checks, the stateful stages (NAT, LB), the burst
//! lookahead and the MSS clamp read the descriptor instead of parsing the frame again.
//!
//! A descriptor describes the packet as received: a stage that rewrites the packet says so
//! in its verdict, and the pipeline then reads the new destination from the frame.

use crate::wire::{IPPROTO_TCP, IPPROTO_UDP};
use std::net::Ipv4Addr;

const ETH: usize = 14;

/// What ingress learned about an IPv4 packet (no options: ingress drops those).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parsed {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// IPv4 total length.
    pub total: u16,
    pub ident: u16,
    /// Fragment offset in 8-byte units.
    pub frag_off: u16,
    /// Transport ports of the first (or only) fragment of a TCP or UDP packet, else 0.
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub ttl: u8,
    /// IPv4 header length in bytes.
    pub hl: u8,
    /// TCP flags of the first (or only) fragment of a TCP packet, else 0.
    pub tcp_flags: u8,
    /// More-fragments flag.
    pub more: bool,
    /// Don't-fragment flag.
    pub df: bool,
}

#[inline(always)]
fn be16(d: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([d[i], d[i + 1]])
}

impl Parsed {
    /// Reads the descriptor of an Ethernet + IPv4 frame whose headers were already
    /// validated (by this worker's ingress, or by the worker that handed it over).
    /// `None` if the frame is too short for what it claims (never a panic).
    #[inline]
    pub fn read(frame: &[u8]) -> Option<Parsed> {
        let h = frame.get(ETH..ETH + 20)?;
        let hl = (h[0] & 0x0f) * 4;
        let flags = be16(h, 6);
        let mut p = Parsed {
            src: Ipv4Addr::new(h[12], h[13], h[14], h[15]),
            dst: Ipv4Addr::new(h[16], h[17], h[18], h[19]),
            total: be16(h, 2),
            ident: be16(h, 4),
            frag_off: flags & 0x1fff,
            sport: 0,
            dport: 0,
            proto: h[9],
            ttl: h[8],
            hl,
            tcp_flags: 0,
            more: flags & 0x2000 != 0,
            df: flags & 0x4000 != 0,
        };
        if hl < 20 {
            return None;
        }
        p.read_l4(frame);
        Some(p)
    }

    /// Fills the transport fields from `frame` (first fragment of TCP/UDP only).
    #[inline]
    fn read_l4(&mut self, frame: &[u8]) {
        if self.frag_off != 0 || (self.proto != IPPROTO_TCP && self.proto != IPPROTO_UDP) {
            return;
        }
        let l4 = ETH + self.hl as usize;
        if let Some(t) = frame.get(l4..l4 + 4) {
            self.sport = be16(t, 0);
            self.dport = be16(t, 2);
        }
        if self.proto == IPPROTO_TCP {
            if let Some(&f) = frame.get(l4 + 13) {
                self.tcp_flags = f;
            }
        }
    }

    /// A fragment (first or later).
    #[inline]
    pub fn is_fragment(&self) -> bool {
        self.more || self.frag_off != 0
    }

    /// (proto, src, sport, dst, dport) of an unfragmented TCP or UDP packet: what the
    /// flow-table lookahead hashes.
    #[inline]
    pub fn tuple(&self) -> Option<(u8, u32, u16, u32, u16)> {
        let plain = !self.is_fragment()
            && self.hl == 20
            && (self.proto == IPPROTO_TCP || self.proto == IPPROTO_UDP);
        plain.then_some((
            self.proto,
            u32::from(self.src),
            self.sport,
            u32::from(self.dst),
            self.dport,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(proto: u8, flags_frag: u16) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 20];
        f[12] = 0x08;
        f[14] = 0x45;
        f[16..18].copy_from_slice(&40u16.to_be_bytes());
        f[18..20].copy_from_slice(&0x1234u16.to_be_bytes());
        f[20..22].copy_from_slice(&flags_frag.to_be_bytes());
        f[22] = 63;
        f[23] = proto;
        f[26..30].copy_from_slice(&[10, 0, 0, 1]);
        f[30..34].copy_from_slice(&[192, 0, 2, 1]);
        f[34..36].copy_from_slice(&1234u16.to_be_bytes());
        f[36..38].copy_from_slice(&80u16.to_be_bytes());
        f[47] = 0x02; // SYN
        f
    }

    #[test]
    fn reads_what_the_header_says() {
        let p = Parsed::read(&frame(IPPROTO_TCP, 0x4000)).unwrap();
        assert_eq!(p.src, Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(p.dst, Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!((p.total, p.ident, p.ttl, p.hl), (40, 0x1234, 63, 20));
        assert_eq!((p.sport, p.dport, p.tcp_flags), (1234, 80, 0x02));
        assert!(p.df && !p.more && !p.is_fragment());
        assert_eq!(
            p.tuple(),
            Some((IPPROTO_TCP, 0x0a00_0001, 1234, 0xc000_0201, 80))
        );
    }

    #[test]
    fn udp_has_ports_but_no_flags_and_later_fragments_no_ports() {
        let u = Parsed::read(&frame(IPPROTO_UDP, 0)).unwrap();
        assert_eq!((u.sport, u.dport, u.tcp_flags), (1234, 80, 0));
        let first = Parsed::read(&frame(IPPROTO_UDP, 0x2000)).unwrap();
        assert!(first.is_fragment() && first.more && first.sport == 1234);
        assert_eq!(first.tuple(), None);
        let later = Parsed::read(&frame(IPPROTO_UDP, 0x0010)).unwrap();
        assert_eq!((later.frag_off, later.sport, later.dport), (0x10, 0, 0));
        let icmp = Parsed::read(&frame(1, 0)).unwrap();
        assert_eq!((icmp.sport, icmp.tuple()), (0, None));
    }

    #[test]
    fn short_or_bad_frames_are_refused_not_panicked_on() {
        let f = frame(IPPROTO_TCP, 0);
        assert_eq!(Parsed::read(&f[..30]), None);
        let mut bad = f.clone();
        bad[14] = 0x41; // IHL 1
        assert_eq!(Parsed::read(&bad), None);
        // Ports beyond the buffer: left 0.
        let p = Parsed::read(&f[..36]).unwrap();
        assert_eq!((p.sport, p.dport), (0, 0));
    }
}

//! ARP for Ethernet/IPv4 only (RFC 826).

use std::net::Ipv4Addr;

use super::ethernet::{EtherType, MacAddr};
use super::{get_array, get_ipv4, get_u16, get_u8, set_bytes, set_u16, set_u8, Malformed};

pub const ARP_REQUEST: u16 = 1;
pub const ARP_REPLY: u16 = 2;

/// Length of an Ethernet/IPv4 ARP packet.
pub const LEN: usize = 28;

/// Hardware type "Ethernet".
pub const HTYPE_ETHERNET: u16 = 1;

mod field {
    pub const HTYPE: usize = 0;
    pub const PTYPE: usize = 2;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: usize = 6;
    pub const SHA: usize = 8;
    pub const SPA: usize = 14;
    pub const THA: usize = 18;
    pub const TPA: usize = 24;
}

/// A read/write view of an Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl ArpPacket<&[u8]> {
    pub const LEN: usize = LEN;
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    /// Wrap without validation (accessors still never panic).
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        ArpPacket { buffer }
    }

    /// Wrap, requiring at least 28 bytes and htype 1 / ptype 0x0800 /
    /// hlen 6 / plen 4. Trailing bytes (Ethernet padding) are allowed.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, Malformed> {
        let d = buffer.as_ref();
        if d.len() < LEN
            || get_u16(d, field::HTYPE) != HTYPE_ETHERNET
            || get_u16(d, field::PTYPE) != EtherType::IPV4
            || get_u8(d, field::HLEN) != 6
            || get_u8(d, field::PLEN) != 4
        {
            return Err(Malformed::ArpMalformed);
        }
        Ok(ArpPacket { buffer })
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn hardware_type(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::HTYPE)
    }

    #[inline]
    pub fn protocol_type(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::PTYPE)
    }

    #[inline]
    pub fn hardware_len(&self) -> u8 {
        get_u8(self.buffer.as_ref(), field::HLEN)
    }

    #[inline]
    pub fn protocol_len(&self) -> u8 {
        get_u8(self.buffer.as_ref(), field::PLEN)
    }

    /// [`ARP_REQUEST`] or [`ARP_REPLY`] (or anything else on the wire).
    #[inline]
    pub fn operation(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::OPER)
    }

    #[inline]
    pub fn sender_hw_addr(&self) -> MacAddr {
        MacAddr(get_array(self.buffer.as_ref(), field::SHA))
    }

    #[inline]
    pub fn sender_ip(&self) -> Ipv4Addr {
        get_ipv4(self.buffer.as_ref(), field::SPA)
    }

    #[inline]
    pub fn target_hw_addr(&self) -> MacAddr {
        MacAddr(get_array(self.buffer.as_ref(), field::THA))
    }

    #[inline]
    pub fn target_ip(&self) -> Ipv4Addr {
        get_ipv4(self.buffer.as_ref(), field::TPA)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ArpPacket<T> {
    /// Write htype 1, ptype 0x0800, hlen 6, plen 4.
    #[inline]
    pub fn fill_header(&mut self) {
        let d = self.buffer.as_mut();
        set_u16(d, field::HTYPE, HTYPE_ETHERNET);
        set_u16(d, field::PTYPE, EtherType::IPV4);
        set_u8(d, field::HLEN, 6);
        set_u8(d, field::PLEN, 4);
    }

    #[inline]
    pub fn set_operation(&mut self, op: u16) {
        set_u16(self.buffer.as_mut(), field::OPER, op)
    }

    #[inline]
    pub fn set_sender_hw_addr(&mut self, addr: MacAddr) {
        set_bytes(self.buffer.as_mut(), field::SHA, &addr.0)
    }

    #[inline]
    pub fn set_sender_ip(&mut self, addr: Ipv4Addr) {
        set_bytes(self.buffer.as_mut(), field::SPA, &addr.octets())
    }

    #[inline]
    pub fn set_target_hw_addr(&mut self, addr: MacAddr) {
        set_bytes(self.buffer.as_mut(), field::THA, &addr.0)
    }

    #[inline]
    pub fn set_target_ip(&mut self, addr: Ipv4Addr) {
        set_bytes(self.buffer.as_mut(), field::TPA, &addr.octets())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ethernet::EthernetFrame;
    use crate::wire::testutil::{Rng, ARP_REQUEST_FRAME};

    #[test]
    fn parse_request() {
        let eth = EthernetFrame::new_checked(&ARP_REQUEST_FRAME[..]).unwrap();
        assert_eq!(eth.ethertype(), EtherType::ARP);
        assert!(eth.dst_addr().is_broadcast());
        let arp = ArpPacket::new_checked(eth.payload()).unwrap();
        assert_eq!(arp.hardware_type(), 1);
        assert_eq!(arp.protocol_type(), 0x0800);
        assert_eq!(arp.hardware_len(), 6);
        assert_eq!(arp.protocol_len(), 4);
        assert_eq!(arp.operation(), ARP_REQUEST);
        assert_eq!(
            arp.sender_hw_addr(),
            MacAddr([0x02, 0, 0, 0xaa, 0xbb, 0xcc])
        );
        assert_eq!(arp.sender_ip(), Ipv4Addr::new(192, 168, 1, 10));
        assert_eq!(arp.target_hw_addr(), MacAddr::ZERO);
        assert_eq!(arp.target_ip(), Ipv4Addr::new(192, 168, 1, 1));
        assert_eq!(ArpPacket::LEN, 28);
        assert_eq!(ArpPacket::<&[u8]>::LEN, 28);
    }

    #[test]
    fn malformed() {
        let good = &ARP_REQUEST_FRAME[14..];
        for len in 0..LEN {
            assert_eq!(
                ArpPacket::new_checked(&good[..len]),
                Err(Malformed::ArpMalformed)
            );
        }
        assert!(ArpPacket::new_checked(&good[..LEN]).is_ok());
        for (off, val) in [(1, 6u8), (2, 0x86), (3, 0xdd), (4, 8), (5, 16), (0, 1)] {
            let mut b = [0u8; LEN];
            b.copy_from_slice(&good[..LEN]);
            b[off] = val;
            assert_eq!(
                ArpPacket::new_checked(&b[..]),
                Err(Malformed::ArpMalformed),
                "byte {off}"
            );
        }
    }

    #[test]
    fn build_reply() {
        let req = ArpPacket::new_checked(&ARP_REQUEST_FRAME[14..]).unwrap();
        let me = MacAddr([0x52, 0x54, 0, 0x12, 0x34, 0x56]);
        let mut buf = [0xAAu8; LEN];
        let mut rep = ArpPacket::new_unchecked(&mut buf[..]);
        rep.fill_header();
        rep.set_operation(ARP_REPLY);
        rep.set_sender_hw_addr(me);
        rep.set_sender_ip(req.target_ip());
        rep.set_target_hw_addr(req.sender_hw_addr());
        rep.set_target_ip(req.sender_ip());
        let rep = ArpPacket::new_checked(&buf[..]).unwrap();
        assert_eq!(rep.operation(), ARP_REPLY);
        assert_eq!(rep.sender_hw_addr(), me);
        assert_eq!(rep.sender_ip(), Ipv4Addr::new(192, 168, 1, 1));
        assert_eq!(rep.target_hw_addr(), req.sender_hw_addr());
        assert_eq!(rep.target_ip(), Ipv4Addr::new(192, 168, 1, 10));
        assert_eq!(&buf[..8], &[0, 1, 8, 0, 6, 4, 0, 2]);
    }

    #[test]
    fn fuzz_no_panic() {
        let mut rng = Rng::new(826);
        for len in 0..80 {
            for _ in 0..200 {
                let mut buf = vec![0u8; len];
                rng.fill(&mut buf);
                if rng.bool() {
                    let n = len.min(6);
                    buf[..n].copy_from_slice(&[0, 1, 8, 0, 6, 4][..n]);
                }
                if let Ok(a) = ArpPacket::new_checked(&buf[..]) {
                    assert!(len >= LEN);
                    let _ = (a.operation(), a.sender_ip(), a.target_hw_addr());
                }
                let mut a = ArpPacket::new_unchecked(&mut buf[..]);
                let _ = (a.hardware_type(), a.protocol_type(), a.hardware_len());
                let _ = (a.protocol_len(), a.operation(), a.sender_hw_addr());
                let _ = (a.sender_ip(), a.target_hw_addr(), a.target_ip());
                a.fill_header();
                a.set_operation(ARP_REPLY);
                a.set_sender_hw_addr(MacAddr::BROADCAST);
                a.set_sender_ip(Ipv4Addr::LOCALHOST);
                a.set_target_hw_addr(MacAddr::ZERO);
                a.set_target_ip(Ipv4Addr::BROADCAST);
                assert_eq!(ArpPacket::new_checked(&buf[..]).is_ok(), len >= LEN);
            }
        }
    }
}

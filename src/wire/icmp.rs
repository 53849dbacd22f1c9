//! ICMPv4 messages (RFC 792, RFC 1191).
//!
//! The view covers the whole ICMP message: the buffer should be exactly the
//! IPv4 payload, since the checksum covers every byte of it.

use super::checksum;
use super::{get_u16, get_u32, get_u8, set_u16, set_u32, set_u8, sub, sub_mut, Malformed};

/// Length of the fixed ICMP header (type, code, checksum, rest-of-header).
pub const HEADER_LEN: usize = 8;

pub const ECHO_REPLY: u8 = 0;
pub const DEST_UNREACHABLE: u8 = 3;
pub const SOURCE_QUENCH: u8 = 4;
pub const REDIRECT: u8 = 5;
pub const ECHO_REQUEST: u8 = 8;
pub const TIME_EXCEEDED: u8 = 11;
pub const PARAMETER_PROBLEM: u8 = 12;

/// Destination unreachable code: fragmentation needed and DF set.
pub const CODE_FRAG_NEEDED: u8 = 4;

mod field {
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: usize = 2;
    pub const REST: usize = 4;
    pub const IDENT: usize = 4;
    pub const SEQ: usize = 6;
    pub const MTU: usize = 6;
}

/// A read/write view of an ICMPv4 message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IcmpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl IcmpPacket<&[u8]> {
    pub const HEADER_LEN: usize = HEADER_LEN;
    pub const ECHO_REPLY: u8 = ECHO_REPLY;
    pub const DEST_UNREACHABLE: u8 = DEST_UNREACHABLE;
    pub const ECHO_REQUEST: u8 = ECHO_REQUEST;
    pub const TIME_EXCEEDED: u8 = TIME_EXCEEDED;
    pub const CODE_FRAG_NEEDED: u8 = CODE_FRAG_NEEDED;
}

impl<T: AsRef<[u8]>> IcmpPacket<T> {
    /// Wrap without validation (accessors still never panic).
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        IcmpPacket { buffer }
    }

    /// Wrap, requiring at least the 8-byte header. Does not verify the
    /// checksum (see [`verify_checksum`](Self::verify_checksum)).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, Malformed> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(Malformed::IcmpTruncated);
        }
        Ok(IcmpPacket { buffer })
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn msg_type(&self) -> u8 {
        get_u8(self.buffer.as_ref(), field::TYPE)
    }

    #[inline]
    pub fn msg_code(&self) -> u8 {
        get_u8(self.buffer.as_ref(), field::CODE)
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Echo request/reply identifier (bytes 4..6).
    #[inline]
    pub fn echo_ident(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::IDENT)
    }

    /// Echo request/reply sequence number (bytes 6..8).
    #[inline]
    pub fn echo_seq(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::SEQ)
    }

    /// Next-hop MTU of a "fragmentation needed" message (bytes 6..8).
    #[inline]
    pub fn next_hop_mtu(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::MTU)
    }

    /// The whole 32-bit rest-of-header (bytes 4..8).
    #[inline]
    pub fn rest_of_header(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::REST)
    }

    /// Bytes after the 8-byte header: echo payload, or the quoted IP header
    /// (+ at least 8 bytes of its payload) of an error message.
    #[inline]
    pub fn data(&self) -> &[u8] {
        let d = self.buffer.as_ref();
        sub(d, HEADER_LEN, d.len())
    }

    /// True if the checksum over the whole buffer is correct.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::checksum(self.buffer.as_ref()) == 0
    }

    /// True for error messages (types 3, 4, 5, 11, 12), which quote the
    /// offending IP header and must never be answered with another error.
    #[inline]
    pub fn is_error(&self) -> bool {
        matches!(
            self.msg_type(),
            DEST_UNREACHABLE | SOURCE_QUENCH | REDIRECT | TIME_EXCEEDED | PARAMETER_PROBLEM
        )
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> IcmpPacket<T> {
    #[inline]
    pub fn set_msg_type(&mut self, t: u8) {
        set_u8(self.buffer.as_mut(), field::TYPE, t)
    }

    #[inline]
    pub fn set_msg_code(&mut self, c: u8) {
        set_u8(self.buffer.as_mut(), field::CODE, c)
    }

    #[inline]
    pub fn set_checksum(&mut self, csum: u16) {
        set_u16(self.buffer.as_mut(), field::CHECKSUM, csum)
    }

    #[inline]
    pub fn set_echo_ident(&mut self, ident: u16) {
        set_u16(self.buffer.as_mut(), field::IDENT, ident)
    }

    #[inline]
    pub fn set_echo_seq(&mut self, seq: u16) {
        set_u16(self.buffer.as_mut(), field::SEQ, seq)
    }

    #[inline]
    pub fn set_rest_of_header(&mut self, v: u32) {
        set_u32(self.buffer.as_mut(), field::REST, v)
    }

    #[inline]
    pub fn set_next_hop_mtu(&mut self, mtu: u16) {
        set_u16(self.buffer.as_mut(), field::MTU, mtu)
    }

    /// Zero the checksum field, then compute it over the whole buffer.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::checksum(self.buffer.as_ref());
        self.set_checksum(c);
    }

    /// Replace the echo identifier (NAT of ping "ports"), updating the
    /// checksum incrementally. Returns the old identifier.
    #[inline]
    pub fn rewrite_echo_ident(&mut self, new: u16) -> u16 {
        let d = self.buffer.as_mut();
        let old = get_u16(d, field::IDENT);
        set_u16(d, field::IDENT, new);
        let c = get_u16(d, field::CHECKSUM);
        set_u16(d, field::CHECKSUM, checksum::update16(c, old, new));
        old
    }

    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        let d = self.buffer.as_mut();
        let len = d.len();
        sub_mut(d, HEADER_LEN, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ipv4::Ipv4Packet;
    use crate::wire::testutil::{Rng, ICMP_ECHO_FRAME, TCP_SYN_FRAME};
    use crate::wire::IPPROTO_TCP;
    use std::net::Ipv4Addr;

    fn recomputed(buf: &[u8]) -> u16 {
        let mut b = buf.to_vec();
        b[2] = 0;
        b[3] = 0;
        checksum::checksum(&b)
    }

    #[test]
    fn parse_echo_request() {
        let ip = Ipv4Packet::new_checked(&ICMP_ECHO_FRAME[14..]).unwrap();
        let icmp = IcmpPacket::new_checked(ip.payload()).unwrap();
        assert_eq!(icmp.msg_type(), ECHO_REQUEST);
        assert_eq!(icmp.msg_code(), 0);
        assert_eq!(icmp.checksum(), 0x5435);
        assert!(icmp.verify_checksum());
        assert_eq!(icmp.echo_ident(), 0x1234);
        assert_eq!(icmp.echo_seq(), 1);
        assert_eq!(icmp.rest_of_header(), 0x1234_0001);
        assert_eq!(icmp.data(), b"abcdefgh");
        assert!(!icmp.is_error());
        assert_eq!(IcmpPacket::HEADER_LEN, 8);
        assert_eq!(IcmpPacket::<&[u8]>::ECHO_REQUEST, 8);
    }

    #[test]
    fn truncated_and_bad_checksum() {
        let good = &ICMP_ECHO_FRAME[34..];
        for len in 0..HEADER_LEN {
            assert_eq!(
                IcmpPacket::new_checked(&good[..len]),
                Err(Malformed::IcmpTruncated)
            );
        }
        assert!(IcmpPacket::new_checked(&good[..8]).is_ok());
        let mut b = good.to_vec();
        b[15] ^= 1;
        assert!(!IcmpPacket::new_checked(&b[..]).unwrap().verify_checksum());
        // Truncated payload also fails the checksum.
        assert!(!IcmpPacket::new_checked(&good[..12])
            .unwrap()
            .verify_checksum());
    }

    #[test]
    fn echo_reply_in_place() {
        let mut b = ICMP_ECHO_FRAME[34..].to_vec();
        let mut icmp = IcmpPacket::new_checked(&mut b[..]).unwrap();
        icmp.set_msg_type(ECHO_REPLY);
        icmp.fill_checksum();
        assert!(icmp.verify_checksum());
        assert_eq!(icmp.msg_type(), ECHO_REPLY);
        let old = icmp.rewrite_echo_ident(0xFFFF);
        assert_eq!(old, 0x1234);
        assert_eq!(icmp.echo_ident(), 0xFFFF);
        assert_eq!(icmp.checksum(), recomputed(&b));
        let mut icmp = IcmpPacket::new_checked(&mut b[..]).unwrap();
        icmp.rewrite_echo_ident(0);
        assert!(icmp.verify_checksum());
        assert_eq!(icmp.checksum(), recomputed(&b));
    }

    #[test]
    fn build_frag_needed_error() {
        // Quote the offending header + 8 bytes, as a router would.
        let quote = &TCP_SYN_FRAME[14..14 + 28];
        let mut b = [0u8; HEADER_LEN + 28];
        let mut icmp = IcmpPacket::new_checked(&mut b[..]).unwrap();
        icmp.set_msg_type(DEST_UNREACHABLE);
        icmp.set_msg_code(CODE_FRAG_NEEDED);
        icmp.set_rest_of_header(0xDEAD_BEEF);
        icmp.set_rest_of_header(0);
        icmp.set_next_hop_mtu(1400);
        icmp.data_mut().copy_from_slice(quote);
        icmp.fill_checksum();
        let icmp = IcmpPacket::new_checked(&b[..]).unwrap();
        assert!(icmp.is_error());
        assert!(icmp.verify_checksum());
        assert_eq!(icmp.msg_code(), CODE_FRAG_NEEDED);
        assert_eq!(icmp.next_hop_mtu(), 1400);
        assert_eq!(icmp.rest_of_header(), 1400);
        let inner = Ipv4Packet::new_quoted(icmp.data()).unwrap();
        assert_eq!(inner.protocol(), IPPROTO_TCP);
        assert_eq!(inner.src_addr(), Ipv4Addr::new(192, 168, 1, 10));
        assert_eq!(inner.payload().len(), 8);
    }

    #[test]
    fn setters_round_trip_and_is_error() {
        let mut b = [0u8; 8];
        let mut icmp = IcmpPacket::new_unchecked(&mut b[..]);
        icmp.set_echo_ident(0xA1B2);
        icmp.set_echo_seq(0xC3D4);
        icmp.set_checksum(0x1111);
        assert_eq!(icmp.echo_ident(), 0xA1B2);
        assert_eq!(icmp.echo_seq(), 0xC3D4);
        assert_eq!(icmp.checksum(), 0x1111);
        assert!(icmp.data().is_empty());
        for t in 0..=255u8 {
            icmp.set_msg_type(t);
            assert_eq!(
                icmp.is_error(),
                matches!(t, 3 | 4 | 5 | 11 | 12),
                "type {t}"
            );
        }
    }

    #[test]
    fn fuzz_no_panic() {
        let mut rng = Rng::new(792);
        for len in 0..80 {
            for _ in 0..200 {
                let mut buf = vec![0u8; len];
                rng.fill(&mut buf);
                assert_eq!(IcmpPacket::new_checked(&buf[..]).is_ok(), len >= 8);
                let mut p = IcmpPacket::new_unchecked(&mut buf[..]);
                let _ = (p.msg_type(), p.msg_code(), p.checksum(), p.echo_ident());
                let _ = (p.echo_seq(), p.next_hop_mtu(), p.rest_of_header());
                let _ = (p.data().len(), p.verify_checksum(), p.is_error());
                p.set_msg_type(rng.u8());
                p.set_msg_code(rng.u8());
                p.set_echo_ident(1);
                p.set_echo_seq(2);
                p.set_next_hop_mtu(3);
                p.set_rest_of_header(4);
                p.fill_checksum();
                if len >= 4 {
                    assert!(p.verify_checksum());
                }
                p.rewrite_echo_ident(rng.u16());
                if len >= 8 {
                    assert!(p.verify_checksum());
                }
                let _ = p.data_mut().len();
                let _ = Ipv4Packet::new_quoted(p.data());
            }
        }
    }
}

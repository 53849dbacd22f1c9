//! UDP datagrams (RFC 768).
//!
//! The datagram extent is given by the length field, which `new_checked`
//! guarantees is within the buffer; the buffer may be longer.

use std::net::Ipv4Addr;

use super::checksum;
use super::IPPROTO_UDP;
use super::{get_u16, set_u16, sub, sub_mut, Malformed};

/// Length of the UDP header.
pub const HEADER_LEN: usize = 8;

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const LENGTH: usize = 4;
    pub const CHECKSUM: usize = 6;
}

/// A read/write view of a UDP datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl UdpPacket<&[u8]> {
    pub const HEADER_LEN: usize = HEADER_LEN;
}

/// Map a computed checksum of 0 to 0xFFFF (0 means "no checksum").
#[inline(always)]
fn nonzero(c: u16) -> u16 {
    if c == 0 {
        0xFFFF
    } else {
        c
    }
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// Wrap without validation (accessors still never panic).
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        UdpPacket { buffer }
    }

    /// Wrap, requiring the header and `8 <= length <= buffer len`.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, Malformed> {
        let d = buffer.as_ref();
        if d.len() < HEADER_LEN {
            return Err(Malformed::UdpTruncated);
        }
        let len = usize::from(get_u16(d, field::LENGTH));
        if len < HEADER_LEN || len > d.len() {
            return Err(Malformed::UdpBadLength);
        }
        Ok(UdpPacket { buffer })
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn src_port(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::SRC_PORT)
    }

    #[inline]
    pub fn dst_port(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::DST_PORT)
    }

    /// The length field (header + payload).
    #[inline]
    pub fn len(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::LENGTH)
    }

    /// True if the length field says there is no payload.
    #[inline]
    pub fn is_empty(&self) -> bool {
        usize::from(self.len()) <= HEADER_LEN
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Bytes 8..length (clamped to the buffer).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        sub(self.buffer.as_ref(), HEADER_LEN, usize::from(self.len()))
    }

    /// The datagram: bytes 0..length (clamped to the buffer).
    #[inline]
    fn datagram(&self) -> &[u8] {
        sub(self.buffer.as_ref(), 0, usize::from(self.len()))
    }

    /// Checksum over pseudo header + datagram is correct; a checksum of 0
    /// means "none" and is accepted.
    #[inline]
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        if self.checksum() == 0 {
            return true;
        }
        let s = checksum::pseudo_header_sum(src, dst, IPPROTO_UDP, self.len())
            + checksum::sum(self.datagram());
        checksum::fold(s) == 0xFFFF
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    #[inline]
    pub fn set_src_port(&mut self, port: u16) {
        set_u16(self.buffer.as_mut(), field::SRC_PORT, port)
    }

    #[inline]
    pub fn set_dst_port(&mut self, port: u16) {
        set_u16(self.buffer.as_mut(), field::DST_PORT, port)
    }

    #[inline]
    pub fn set_len(&mut self, len: u16) {
        set_u16(self.buffer.as_mut(), field::LENGTH, len)
    }

    #[inline]
    pub fn set_checksum(&mut self, csum: u16) {
        set_u16(self.buffer.as_mut(), field::CHECKSUM, csum)
    }

    /// Bytes 8..length (clamped to the buffer).
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = usize::from(self.len());
        sub_mut(self.buffer.as_mut(), HEADER_LEN, end)
    }

    /// Compute the checksum over pseudo header + datagram (extent given by
    /// the length field). A result of 0 is sent as 0xFFFF.
    #[inline]
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let s = checksum::pseudo_header_sum(src, dst, IPPROTO_UDP, self.len())
            + checksum::sum(self.datagram());
        self.set_checksum(nonzero(!checksum::fold(s)));
    }

    /// Replace the source port, updating the checksum incrementally (a zero
    /// checksum stays zero). Returns the old port.
    #[inline]
    pub fn rewrite_src_port(&mut self, new: u16) -> u16 {
        let old = self.src_port();
        self.set_src_port(new);
        self.update_checksum(|c| checksum::update16(c, old, new));
        old
    }

    /// Replace the destination port; see [`rewrite_src_port`](Self::rewrite_src_port).
    #[inline]
    pub fn rewrite_dst_port(&mut self, new: u16) -> u16 {
        let old = self.dst_port();
        self.set_dst_port(new);
        self.update_checksum(|c| checksum::update16(c, old, new));
        old
    }

    /// Account in the checksum for an IPv4 address change in the pseudo
    /// header (a zero checksum stays zero).
    #[inline]
    pub fn adjust_checksum_for_addr(&mut self, old: Ipv4Addr, new: Ipv4Addr) {
        self.update_checksum(|c| checksum::update_addr(c, old, new));
    }

    #[inline(always)]
    fn update_checksum(&mut self, f: impl FnOnce(u16) -> u16) {
        let c = self.checksum();
        if c != 0 {
            self.set_checksum(nonzero(f(c)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ipv4::Ipv4Packet;
    use crate::wire::testutil::{Rng, UDP_DNS_FRAME};

    const SRC: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 10);
    const DST: Ipv4Addr = Ipv4Addr::new(8, 8, 8, 8);

    fn recomputed(dgram: &[u8], src: Ipv4Addr, dst: Ipv4Addr) -> u16 {
        let mut b = dgram.to_vec();
        let mut u = UdpPacket::new_unchecked(&mut b[..]);
        u.fill_checksum(src, dst);
        u.checksum()
    }

    fn dns() -> Vec<u8> {
        UDP_DNS_FRAME[34..].to_vec()
    }

    #[test]
    fn parse_dns_query() {
        let ip = Ipv4Packet::new_checked(&UDP_DNS_FRAME[14..]).unwrap();
        let u = UdpPacket::new_checked(ip.payload()).unwrap();
        assert_eq!(u.src_port(), 53000);
        assert_eq!(u.dst_port(), 53);
        assert_eq!(u.len(), 37);
        assert!(!u.is_empty());
        assert_eq!(u.checksum(), 0x7d02);
        assert!(u.verify_checksum(ip.src_addr(), ip.dst_addr()));
        assert!(!u.verify_checksum(ip.dst_addr(), ip.dst_addr()));
        assert_eq!(u.payload().len(), 29);
        assert_eq!(&u.payload()[13..20], b"example");
        assert_eq!(UdpPacket::HEADER_LEN, 8);
    }

    #[test]
    fn malformed_cases() {
        let d = dns();
        for len in 0..HEADER_LEN {
            assert_eq!(
                UdpPacket::new_checked(&d[..len]),
                Err(Malformed::UdpTruncated)
            );
        }
        // Length field 37 > buffer.
        for len in HEADER_LEN..37 {
            assert_eq!(
                UdpPacket::new_checked(&d[..len]),
                Err(Malformed::UdpBadLength)
            );
        }
        for bad in [0u16, 7, 38, 0xFFFF] {
            let mut b = d.clone();
            b[4..6].copy_from_slice(&bad.to_be_bytes());
            assert_eq!(
                UdpPacket::new_checked(&b[..]),
                Err(Malformed::UdpBadLength),
                "{bad}"
            );
        }
        // Shorter length field than the buffer is fine (trailing bytes ignored).
        let mut b = d.clone();
        b.extend_from_slice(&[0xAB; 5]);
        let u = UdpPacket::new_checked(&b[..]).unwrap();
        assert_eq!(u.payload().len(), 29);
        assert!(u.verify_checksum(SRC, DST));
        let mut b = d.clone();
        b[4..6].copy_from_slice(&8u16.to_be_bytes());
        let u = UdpPacket::new_checked(&b[..]).unwrap();
        assert!(u.payload().is_empty() && u.is_empty());
    }

    #[test]
    fn zero_checksum_means_none() {
        let mut b = dns();
        let mut u = UdpPacket::new_checked(&mut b[..]).unwrap();
        u.set_checksum(0);
        assert!(u.verify_checksum(SRC, DST));
        assert!(u.verify_checksum(DST, SRC));
        // Rewrites keep "no checksum".
        u.rewrite_src_port(1);
        u.rewrite_dst_port(2);
        u.adjust_checksum_for_addr(SRC, DST);
        assert_eq!(u.checksum(), 0);
        assert_eq!((u.src_port(), u.dst_port()), (1, 2));
    }

    #[test]
    fn computed_zero_is_sent_as_ffff() {
        // Choose the last payload word so the checksum computes to 0.
        let mut b = [0u8; 12];
        let mut u = UdpPacket::new_unchecked(&mut b[..]);
        u.set_src_port(1234);
        u.set_dst_port(5678);
        u.set_len(12);
        u.fill_checksum(SRC, DST);
        let c = u.checksum();
        // The sum is now !c; adding a word equal to c makes it 0xFFFF, i.e.
        // a computed checksum of 0.
        u.payload_mut()[2..4].copy_from_slice(&c.to_be_bytes());
        u.fill_checksum(SRC, DST);
        assert_eq!(u.checksum(), 0xFFFF);
        assert!(u.verify_checksum(SRC, DST));

        // Incremental updates landing on 0 also produce 0xFFFF: change a port
        // so that the true checksum becomes 0.
        let mut b = [0u8; 12];
        let mut u = UdpPacket::new_unchecked(&mut b[..]);
        u.set_src_port(0);
        u.set_dst_port(5678);
        u.set_len(12);
        u.fill_checksum(SRC, DST);
        let c = u.checksum();
        // With src port 0 the sum is !c; src port = c makes it 0xFFFF.
        u.rewrite_src_port(c);
        assert_eq!(u.checksum(), 0xFFFF);
        assert_eq!(recomputed(&b, SRC, DST), 0xFFFF);
    }

    #[test]
    fn setters_round_trip() {
        let mut b = [0u8; 20];
        let mut u = UdpPacket::new_unchecked(&mut b[..]);
        u.set_src_port(0xFFFF);
        u.set_dst_port(0);
        u.set_len(16);
        u.set_checksum(0x1234);
        u.payload_mut().fill(9);
        let u = UdpPacket::new_checked(&b[..]).unwrap();
        assert_eq!(u.src_port(), 0xFFFF);
        assert_eq!(u.dst_port(), 0);
        assert_eq!(u.len(), 16);
        assert_eq!(u.checksum(), 0x1234);
        assert_eq!(u.payload(), &[9; 8]);
        assert_eq!(&b[16..], &[0; 4]);
    }

    #[test]
    fn nat_rewrites_keep_checksum_valid() {
        let mut b = dns();
        let mut u = UdpPacket::new_checked(&mut b[..]).unwrap();
        assert_eq!(u.rewrite_src_port(40001), 53000);
        assert!(u.verify_checksum(SRC, DST));
        assert_eq!(u.rewrite_dst_port(5353), 53);
        assert!(u.verify_checksum(SRC, DST));
        let n = Ipv4Addr::new(100, 64, 0, 1);
        u.adjust_checksum_for_addr(SRC, n);
        assert!(u.verify_checksum(n, DST));
        assert_eq!(u.checksum(), recomputed(&b, n, DST));
    }

    #[test]
    fn rewrites_match_full_recompute_random() {
        let mut rng = Rng::new(768);
        let mut saw_ffff = 0;
        for i in 0..20_000 {
            let n = 8 + rng.below(30);
            let mut b = vec![0u8; n + rng.below(4)];
            rng.fill(&mut b);
            let mut u = UdpPacket::new_unchecked(&mut b[..]);
            u.set_len(n as u16);
            let (mut s, d) = (Ipv4Addr::from(rng.u32()), Ipv4Addr::from(rng.u32()));
            u.fill_checksum(s, d);
            let c = u.checksum();
            match rng.below(3) {
                0 => {
                    // Half the time pick the new port so that the true
                    // checksum becomes 0 (sent as 0xFFFF): the sum is !c, so
                    // new = old + c (ones complement) makes it 0xFFFF.
                    let old = u.src_port();
                    let new = if i % 2 == 0 {
                        checksum::fold(u32::from(old) + u32::from(c))
                    } else {
                        rng.edgy_u16()
                    };
                    u.rewrite_src_port(new);
                }
                1 => {
                    u.rewrite_dst_port(rng.edgy_u16());
                }
                _ => {
                    let nn = Ipv4Addr::from(rng.u32());
                    u.adjust_checksum_for_addr(s, nn);
                    s = nn;
                }
            }
            if u.checksum() == 0xFFFF {
                saw_ffff += 1;
            }
            assert_ne!(u.checksum(), 0);
            assert!(u.verify_checksum(s, d));
            assert_eq!(u.checksum(), recomputed(&b, s, d));
        }
        assert!(saw_ffff > 100, "{saw_ffff}");
    }

    #[test]
    fn fuzz_no_panic() {
        let mut rng = Rng::new(17);
        for len in 0..80 {
            for _ in 0..300 {
                let mut buf = vec![0u8; len];
                rng.fill(&mut buf);
                if len >= 6 && rng.bool() {
                    let l = rng.below(len + 4) as u16;
                    buf[4..6].copy_from_slice(&l.to_be_bytes());
                }
                if let Ok(u) = UdpPacket::new_checked(&buf[..]) {
                    assert_eq!(u.payload().len() + 8, u.len() as usize);
                }
                let mut u = UdpPacket::new_unchecked(&mut buf[..]);
                let _ = (u.src_port(), u.dst_port(), u.len(), u.is_empty());
                let _ = (u.checksum(), u.payload().len());
                let _ = u.verify_checksum(Ipv4Addr::LOCALHOST, Ipv4Addr::BROADCAST);
                u.rewrite_src_port(rng.u16());
                u.rewrite_dst_port(rng.u16());
                u.adjust_checksum_for_addr(Ipv4Addr::LOCALHOST, Ipv4Addr::BROADCAST);
                u.fill_checksum(Ipv4Addr::LOCALHOST, Ipv4Addr::BROADCAST);
                let _ = u.payload_mut().len();
                u.set_len(rng.u16());
                u.set_src_port(1);
                u.set_dst_port(2);
                u.set_checksum(3);
                let _ = (u.payload().len(), u.payload_mut().len());
                let _ = u.verify_checksum(Ipv4Addr::LOCALHOST, Ipv4Addr::BROADCAST);
            }
        }
    }
}

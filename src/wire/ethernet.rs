//! Ethernet II frames.

use std::fmt;

use super::{get_array, get_u16, set_bytes, set_u16, sub, sub_mut, Malformed};

/// Length of the Ethernet II header (no VLAN tag).
pub const HEADER_LEN: usize = 14;

mod field {
    pub const DST: usize = 0;
    pub const SRC: usize = 6;
    pub const ETHERTYPE: usize = 12;
}

/// A 48-bit MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    pub const BROADCAST: MacAddr = MacAddr([0xFF; 6]);
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    #[inline]
    pub const fn new(a: u8, b: u8, c: u8, d: u8, e: u8, f: u8) -> MacAddr {
        MacAddr([a, b, c, d, e, f])
    }

    #[inline]
    pub const fn octets(&self) -> [u8; 6] {
        self.0
    }

    #[inline]
    pub const fn as_bytes(&self) -> &[u8; 6] {
        &self.0
    }

    #[inline]
    pub fn is_broadcast(&self) -> bool {
        self.0 == [0xFF; 6]
    }

    /// Group bit set (includes broadcast).
    #[inline]
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    #[inline]
    pub fn is_unicast(&self) -> bool {
        !self.is_multicast()
    }
}

impl From<[u8; 6]> for MacAddr {
    #[inline]
    fn from(b: [u8; 6]) -> MacAddr {
        MacAddr(b)
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// EtherType values (host byte order).
pub struct EtherType;

impl EtherType {
    pub const IPV4: u16 = 0x0800;
    pub const ARP: u16 = 0x0806;
    pub const IPV6: u16 = 0x86DD;
    pub const VLAN: u16 = 0x8100;
}

/// A read/write view of an Ethernet II frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl EthernetFrame<&[u8]> {
    pub const HEADER_LEN: usize = HEADER_LEN;
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Wrap without validation (accessors still never panic).
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        EthernetFrame { buffer }
    }

    /// Wrap, requiring at least a full header.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, Malformed> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(Malformed::EthTruncated);
        }
        Ok(EthernetFrame { buffer })
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn dst_addr(&self) -> MacAddr {
        MacAddr(get_array(self.buffer.as_ref(), field::DST))
    }

    #[inline]
    pub fn src_addr(&self) -> MacAddr {
        MacAddr(get_array(self.buffer.as_ref(), field::SRC))
    }

    #[inline]
    pub fn ethertype(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::ETHERTYPE)
    }

    /// Everything after the 14-byte header.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let d = self.buffer.as_ref();
        sub(d, HEADER_LEN, d.len())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    #[inline]
    pub fn set_dst_addr(&mut self, addr: MacAddr) {
        set_bytes(self.buffer.as_mut(), field::DST, &addr.0)
    }

    #[inline]
    pub fn set_src_addr(&mut self, addr: MacAddr) {
        set_bytes(self.buffer.as_mut(), field::SRC, &addr.0)
    }

    #[inline]
    pub fn set_ethertype(&mut self, ethertype: u16) {
        set_u16(self.buffer.as_mut(), field::ETHERTYPE, ethertype)
    }

    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let d = self.buffer.as_mut();
        let len = d.len();
        sub_mut(d, HEADER_LEN, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testutil::Rng;

    use crate::wire::testutil::ICMP_ECHO_FRAME as FRAME;

    #[test]
    fn parse() {
        let f = EthernetFrame::new_checked(&FRAME[..]).unwrap();
        assert_eq!(
            f.dst_addr(),
            MacAddr::new(0x52, 0x54, 0x00, 0x12, 0x34, 0x56)
        );
        assert_eq!(f.src_addr(), MacAddr([0x02, 0, 0, 0xaa, 0xbb, 0xcc]));
        assert_eq!(f.ethertype(), EtherType::IPV4);
        assert_eq!(f.payload(), &FRAME[14..]);
        assert_eq!(f.payload()[0], 0x45);
        assert_eq!(f.into_inner().len(), 50);
    }

    #[test]
    fn header_len_consts() {
        assert_eq!(EthernetFrame::HEADER_LEN, 14);
        assert_eq!(EthernetFrame::<&[u8]>::HEADER_LEN, HEADER_LEN);
    }

    #[test]
    fn truncated() {
        for len in 0..HEADER_LEN {
            assert_eq!(
                EthernetFrame::new_checked(&FRAME[..len]),
                Err(Malformed::EthTruncated)
            );
        }
        let f = EthernetFrame::new_checked(&FRAME[..14]).unwrap();
        assert!(f.payload().is_empty());
    }

    #[test]
    fn setters_round_trip() {
        let mut buf = [0u8; 60];
        let mut f = EthernetFrame::new_checked(&mut buf[..]).unwrap();
        let a = MacAddr([1, 2, 3, 4, 5, 6]);
        f.set_dst_addr(MacAddr::BROADCAST);
        f.set_src_addr(a);
        f.set_ethertype(EtherType::ARP);
        f.payload_mut()[0] = 0xEE;
        assert_eq!(f.dst_addr(), MacAddr::BROADCAST);
        assert_eq!(f.src_addr(), a);
        assert_eq!(f.ethertype(), EtherType::ARP);
        assert_eq!(f.payload().len(), 46);
        assert_eq!(
            &buf[..15],
            &[255, 255, 255, 255, 255, 255, 1, 2, 3, 4, 5, 6, 8, 6, 0xEE]
        );
    }

    #[test]
    fn mac_addr() {
        assert!(MacAddr::BROADCAST.is_broadcast());
        assert!(MacAddr::BROADCAST.is_multicast());
        assert!(MacAddr([0x01, 0x00, 0x5e, 0, 0, 1]).is_multicast());
        assert!(!MacAddr([0x01, 0x00, 0x5e, 0, 0, 1]).is_broadcast());
        assert!(MacAddr([0x02, 0, 0, 0, 0, 1]).is_unicast());
        assert_eq!(
            MacAddr([0xaa, 0xbb, 0x0c, 0, 1, 0xff]).to_string(),
            "aa:bb:0c:00:01:ff"
        );
        assert_eq!(format!("{:?}", MacAddr::ZERO), "00:00:00:00:00:00");
    }

    #[test]
    fn fuzz_no_panic() {
        let mut rng = Rng::new(14);
        for len in 0..80 {
            for _ in 0..200 {
                let mut buf = vec![0u8; len];
                rng.fill(&mut buf);
                let _ = EthernetFrame::new_checked(&buf[..]);
                // Accessors never panic, even unchecked.
                let mut f = EthernetFrame::new_unchecked(&mut buf[..]);
                let _ = (f.dst_addr(), f.src_addr(), f.ethertype(), f.payload().len());
                f.set_dst_addr(MacAddr::BROADCAST);
                f.set_src_addr(MacAddr::ZERO);
                f.set_ethertype(rng.u16());
                let _ = f.payload_mut().len();
            }
        }
    }
}

//! IPv4 packets (RFC 791).

use std::net::Ipv4Addr;

use super::checksum;
use super::{get_ipv4, get_u16, get_u8, set_u16, set_u32, set_u8, sub, sub_mut, Malformed};

/// Length of an IPv4 header without options.
pub const MIN_HEADER_LEN: usize = 20;

mod field {
    pub const VER_IHL: usize = 0;
    pub const TOS: usize = 1;
    pub const TOTAL_LEN: usize = 2;
    pub const IDENT: usize = 4;
    pub const FLAGS_FRAG: usize = 6;
    pub const TTL: usize = 8;
    pub const TTL_PROTO: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: usize = 12;
    pub const DST: usize = 16;
}

const DF: u16 = 0x4000;
const MF: u16 = 0x2000;
const OFFSET_MASK: u16 = 0x1FFF;

/// A read/write view of an IPv4 packet.
///
/// The buffer may be longer than `total_len` (Ethernet padding); `payload()`
/// stops at `total_len`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl Ipv4Packet<&[u8]> {
    pub const MIN_HEADER_LEN: usize = MIN_HEADER_LEN;
}

/// Shared header checks: full fixed header, version 4, sane IHL.
#[inline]
fn check_header(d: &[u8]) -> Result<usize, Malformed> {
    if d.len() < MIN_HEADER_LEN {
        return Err(Malformed::Ipv4Truncated);
    }
    let vi = get_u8(d, field::VER_IHL);
    if vi >> 4 != 4 {
        return Err(Malformed::Ipv4BadVersion);
    }
    let hl = usize::from(vi & 0x0F) * 4;
    if hl < MIN_HEADER_LEN || hl > d.len() {
        return Err(Malformed::Ipv4BadIhl);
    }
    Ok(hl)
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Wrap without validation (accessors still never panic).
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Ipv4Packet { buffer }
    }

    /// Wrap, validating version, IHL and total length against the buffer.
    ///
    /// Does NOT verify the checksum ([`verify_checksum`](Self::verify_checksum))
    /// and does NOT reject options ([`has_options`](Self::has_options)).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, Malformed> {
        let d = buffer.as_ref();
        let hl = check_header(d)?;
        let tl = usize::from(get_u16(d, field::TOTAL_LEN));
        if tl < hl || tl > d.len() {
            return Err(Malformed::Ipv4BadTotalLength);
        }
        Ok(Ipv4Packet { buffer })
    }

    /// Wrap the IP header quoted inside an ICMP error: requires a complete
    /// header (length, version 4, IHL) and `total_len >= header_len`, but
    /// `total_len` may exceed the buffer (the quote is truncated). `payload()`
    /// then returns whatever of the original payload was quoted.
    #[inline]
    pub fn new_quoted(buffer: T) -> Result<Self, Malformed> {
        let d = buffer.as_ref();
        let hl = check_header(d)?;
        if usize::from(get_u16(d, field::TOTAL_LEN)) < hl {
            return Err(Malformed::Ipv4BadTotalLength);
        }
        Ok(Ipv4Packet { buffer })
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn version(&self) -> u8 {
        get_u8(self.buffer.as_ref(), field::VER_IHL) >> 4
    }

    /// Header length in bytes (IHL * 4).
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(get_u8(self.buffer.as_ref(), field::VER_IHL) & 0x0F) * 4
    }

    #[inline]
    pub fn tos(&self) -> u8 {
        get_u8(self.buffer.as_ref(), field::TOS)
    }

    #[inline]
    pub fn total_len(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::TOTAL_LEN)
    }

    #[inline]
    pub fn ident(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::IDENT)
    }

    #[inline]
    pub fn dont_frag(&self) -> bool {
        get_u16(self.buffer.as_ref(), field::FLAGS_FRAG) & DF != 0
    }

    #[inline]
    pub fn more_frags(&self) -> bool {
        get_u16(self.buffer.as_ref(), field::FLAGS_FRAG) & MF != 0
    }

    /// Fragment offset in BYTES (field * 8).
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        (get_u16(self.buffer.as_ref(), field::FLAGS_FRAG) & OFFSET_MASK) << 3
    }

    /// MF set or non-zero fragment offset.
    #[inline]
    pub fn is_fragment(&self) -> bool {
        get_u16(self.buffer.as_ref(), field::FLAGS_FRAG) & (MF | OFFSET_MASK) != 0
    }

    #[inline]
    pub fn ttl(&self) -> u8 {
        get_u8(self.buffer.as_ref(), field::TTL)
    }

    #[inline]
    pub fn protocol(&self) -> u8 {
        get_u8(self.buffer.as_ref(), field::PROTOCOL)
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    #[inline]
    pub fn src_addr(&self) -> Ipv4Addr {
        get_ipv4(self.buffer.as_ref(), field::SRC)
    }

    #[inline]
    pub fn dst_addr(&self) -> Ipv4Addr {
        get_ipv4(self.buffer.as_ref(), field::DST)
    }

    /// True if the header carries options (IHL > 5).
    #[inline]
    pub fn has_options(&self) -> bool {
        self.header_len() > MIN_HEADER_LEN
    }

    /// The header bytes, including options (clamped to the buffer).
    #[inline]
    pub fn header(&self) -> &[u8] {
        sub(self.buffer.as_ref(), 0, self.header_len())
    }

    /// True if the header checksum is correct.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        let d = self.buffer.as_ref();
        match d.first_chunk::<MIN_HEADER_LEN>() {
            // The usual header, without options: a fixed five-word sum.
            Some(h) if self.header_len() == MIN_HEADER_LEN => checksum::ipv4_header20_ok(h),
            _ => checksum::checksum(self.header()) == 0,
        }
    }

    /// Bytes from `header_len` to `min(total_len, buffer len)`.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let end = usize::from(self.total_len());
        sub(self.buffer.as_ref(), self.header_len(), end)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Write version 4 and the IHL (in 32-bit words).
    #[inline]
    pub fn set_version_ihl(&mut self, ihl_words: u8) {
        set_u8(
            self.buffer.as_mut(),
            field::VER_IHL,
            0x40 | (ihl_words & 0x0F),
        )
    }

    #[inline]
    pub fn set_tos(&mut self, tos: u8) {
        set_u8(self.buffer.as_mut(), field::TOS, tos)
    }

    #[inline]
    pub fn set_total_len(&mut self, len: u16) {
        set_u16(self.buffer.as_mut(), field::TOTAL_LEN, len)
    }

    #[inline]
    pub fn set_ident(&mut self, ident: u16) {
        set_u16(self.buffer.as_mut(), field::IDENT, ident)
    }

    /// Write DF, MF and the fragment offset (given in bytes; must be a
    /// multiple of 8, lower bits are dropped).
    #[inline]
    pub fn set_flags_frag(&mut self, dont_frag: bool, more_frags: bool, offset_bytes: u16) {
        let v = (u16::from(dont_frag) << 14)
            | (u16::from(more_frags) << 13)
            | ((offset_bytes >> 3) & OFFSET_MASK);
        set_u16(self.buffer.as_mut(), field::FLAGS_FRAG, v)
    }

    #[inline]
    pub fn set_ttl(&mut self, ttl: u8) {
        set_u8(self.buffer.as_mut(), field::TTL, ttl)
    }

    #[inline]
    pub fn set_protocol(&mut self, proto: u8) {
        set_u8(self.buffer.as_mut(), field::PROTOCOL, proto)
    }

    #[inline]
    pub fn set_checksum(&mut self, csum: u16) {
        set_u16(self.buffer.as_mut(), field::CHECKSUM, csum)
    }

    #[inline]
    pub fn set_src_addr(&mut self, addr: Ipv4Addr) {
        set_u32(self.buffer.as_mut(), field::SRC, u32::from(addr))
    }

    #[inline]
    pub fn set_dst_addr(&mut self, addr: Ipv4Addr) {
        set_u32(self.buffer.as_mut(), field::DST, u32::from(addr))
    }

    /// Zero the checksum field, then compute it over the header.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::checksum(self.header());
        self.set_checksum(c);
    }

    /// Mutable bytes from `header_len` to `min(total_len, buffer len)`.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        let end = usize::from(self.total_len());
        sub_mut(self.buffer.as_mut(), hl, end)
    }

    /// Decrement the TTL by one, updating the header checksum incrementally.
    /// A TTL of 0 is left alone (callers check `ttl() <= 1` first anyway).
    #[inline]
    pub fn decrement_ttl(&mut self) {
        let d = self.buffer.as_mut();
        let old = get_u16(d, field::TTL_PROTO);
        if old < 0x0100 {
            return;
        }
        let new = old - 0x0100;
        set_u16(d, field::TTL_PROTO, new);
        let c = get_u16(d, field::CHECKSUM);
        set_u16(d, field::CHECKSUM, checksum::update16(c, old, new));
    }

    /// Replace the source address, updating the header checksum
    /// incrementally. Returns the old address. (The transport checksum's
    /// pseudo header is NOT touched; see `adjust_checksum_for_addr`.)
    #[inline]
    pub fn rewrite_src(&mut self, new: Ipv4Addr) -> Ipv4Addr {
        self.rewrite_addr(field::SRC, new)
    }

    /// Replace the destination address; see [`rewrite_src`](Self::rewrite_src).
    #[inline]
    pub fn rewrite_dst(&mut self, new: Ipv4Addr) -> Ipv4Addr {
        self.rewrite_addr(field::DST, new)
    }

    #[inline]
    fn rewrite_addr(&mut self, off: usize, new: Ipv4Addr) -> Ipv4Addr {
        let d = self.buffer.as_mut();
        let old = get_ipv4(d, off);
        set_u32(d, off, u32::from(new));
        let c = get_u16(d, field::CHECKSUM);
        set_u16(d, field::CHECKSUM, checksum::update_addr(c, old, new));
        old
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testutil::{Rng, ICMP_ECHO_FRAME, TCP_SYN_FRAME, UDP_DNS_FRAME};
    use crate::wire::{IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP};

    fn full_ok<T: AsRef<[u8]>>(p: &Ipv4Packet<T>) -> bool {
        let mut h = p.header().to_vec();
        let c = u16::from_be_bytes([h[10], h[11]]);
        h[10] = 0;
        h[11] = 0;
        checksum::checksum(&h) == c && p.verify_checksum()
    }

    #[test]
    fn parse_captured() {
        let p = Ipv4Packet::new_checked(&ICMP_ECHO_FRAME[14..]).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.tos(), 0);
        assert_eq!(p.total_len(), 36);
        assert_eq!(p.ident(), 0x1c46);
        assert!(p.dont_frag());
        assert!(!p.more_frags());
        assert_eq!(p.frag_offset(), 0);
        assert!(!p.is_fragment());
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.protocol(), IPPROTO_ICMP);
        assert_eq!(p.checksum(), 0x0a91);
        assert!(p.verify_checksum());
        assert!(!p.has_options());
        assert_eq!(p.src_addr(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(p.header(), &ICMP_ECHO_FRAME[14..34]);
        assert_eq!(p.payload(), &ICMP_ECHO_FRAME[34..]);

        let t = Ipv4Packet::new_checked(&TCP_SYN_FRAME[14..]).unwrap();
        assert_eq!(t.protocol(), IPPROTO_TCP);
        assert!(t.verify_checksum());
        assert_eq!(t.payload().len(), 40);
        let u = Ipv4Packet::new_checked(&UDP_DNS_FRAME[14..]).unwrap();
        assert_eq!(u.protocol(), IPPROTO_UDP);
        assert!(u.verify_checksum());
        assert_eq!(u.dst_addr(), Ipv4Addr::new(8, 8, 8, 8));
        assert_eq!(Ipv4Packet::MIN_HEADER_LEN, 20);
    }

    #[test]
    fn ethernet_padding_is_allowed() {
        let mut buf = ICMP_ECHO_FRAME[14..].to_vec();
        buf.extend_from_slice(&[0xEE; 10]);
        let p = Ipv4Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(p.payload(), &ICMP_ECHO_FRAME[34..]);
        assert_eq!(p.payload().len(), 16);
    }

    #[test]
    fn malformed_cases() {
        let good = &ICMP_ECHO_FRAME[14..];
        for len in 0..20 {
            assert_eq!(
                Ipv4Packet::new_checked(&good[..len]),
                Err(Malformed::Ipv4Truncated)
            );
            assert_eq!(
                Ipv4Packet::new_quoted(&good[..len]),
                Err(Malformed::Ipv4Truncated)
            );
        }
        let m = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut b = good.to_vec();
            f(&mut b);
            (
                Ipv4Packet::new_checked(&b[..]).map(|p| p.verify_checksum()),
                Ipv4Packet::new_quoted(&b[..]).map(|p| p.verify_checksum()),
            )
        };
        for v in [0x65, 0x05, 0xF5, 0x00] {
            let r = m(&|b| b[0] = v);
            assert_eq!(r.0, Err(Malformed::Ipv4BadVersion));
            assert_eq!(r.1, Err(Malformed::Ipv4BadVersion));
        }
        for v in [0x40, 0x44, 0x4F] {
            let r = m(&|b| b[0] = v);
            assert_eq!(r.0, Err(Malformed::Ipv4BadIhl), "{v:#x}");
            assert_eq!(r.1, Err(Malformed::Ipv4BadIhl), "{v:#x}");
        }
        // IHL 8 (32 bytes) fits in the 36-byte buffer, but not in 30 bytes.
        let mut b = good.to_vec();
        b[0] = 0x48;
        b.truncate(30);
        assert_eq!(Ipv4Packet::new_checked(&b[..]), Err(Malformed::Ipv4BadIhl));
        // Total length below header length.
        let r = m(&|b| b[2..4].copy_from_slice(&19u16.to_be_bytes()));
        assert_eq!(r.0, Err(Malformed::Ipv4BadTotalLength));
        assert_eq!(r.1, Err(Malformed::Ipv4BadTotalLength));
        // Total length beyond the buffer: rejected, but fine when quoted.
        let r = m(&|b| b[2..4].copy_from_slice(&37u16.to_be_bytes()));
        assert_eq!(r.0, Err(Malformed::Ipv4BadTotalLength));
        assert!(r.1.is_ok());
        // Bad checksum and options are NOT rejected by new_checked.
        let r = m(&|b| b[10] ^= 0xFF);
        assert_eq!(r, (Ok(false), Ok(false)));
        assert_eq!(m(&|_| ()), (Ok(true), Ok(true)));
        let mut b = good.to_vec();
        b[0] = 0x46; // 4 bytes of options (the ICMP header bytes, whatever)
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert!(p.has_options());
        assert_eq!(p.header_len(), 24);
        assert_eq!(p.payload().len(), 12);
    }

    #[test]
    fn quoted_header_in_icmp_error() {
        // An ICMP error quotes the IP header + first 8 payload bytes.
        let quote = &TCP_SYN_FRAME[14..14 + 28];
        assert_eq!(
            Ipv4Packet::new_checked(quote),
            Err(Malformed::Ipv4BadTotalLength)
        );
        let q = Ipv4Packet::new_quoted(quote).unwrap();
        assert_eq!(q.total_len(), 60);
        assert_eq!(q.payload(), &TCP_SYN_FRAME[34..42]);
        assert_eq!(q.src_addr(), Ipv4Addr::new(192, 168, 1, 10));
        assert!(q.verify_checksum());
    }

    #[test]
    fn setters_round_trip() {
        let mut buf = [0u8; 48];
        let mut p = Ipv4Packet::new_unchecked(&mut buf[..]);
        p.set_version_ihl(6);
        p.set_tos(0xB8);
        p.set_total_len(40);
        p.set_ident(0xABCD);
        p.set_flags_frag(false, true, 1480);
        p.set_ttl(17);
        p.set_protocol(IPPROTO_UDP);
        p.set_src_addr(Ipv4Addr::new(1, 2, 3, 4));
        p.set_dst_addr(Ipv4Addr::new(5, 6, 7, 8));
        p.fill_checksum();
        p.payload_mut().fill(0x5A);
        let p = Ipv4Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 24);
        assert_eq!(p.tos(), 0xB8);
        assert_eq!(p.total_len(), 40);
        assert_eq!(p.ident(), 0xABCD);
        assert!(!p.dont_frag());
        assert!(p.more_frags());
        assert_eq!(p.frag_offset(), 1480);
        assert!(p.is_fragment());
        assert_eq!(p.ttl(), 17);
        assert_eq!(p.protocol(), IPPROTO_UDP);
        assert_eq!(p.src_addr(), Ipv4Addr::new(1, 2, 3, 4));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(5, 6, 7, 8));
        assert!(p.verify_checksum());
        assert!(full_ok(&p));
        assert_eq!(p.payload(), &[0x5A; 16]);
        assert_eq!(buf[40..], [0; 8]);

        let mut p = Ipv4Packet::new_unchecked(&mut buf[..]);
        p.set_flags_frag(true, false, 0);
        assert!(p.dont_frag() && !p.more_frags() && !p.is_fragment());
        p.set_flags_frag(false, false, 8);
        assert!(p.is_fragment());
        assert_eq!(p.frag_offset(), 8);
        p.set_flags_frag(false, false, 0xFFFF);
        assert_eq!(p.frag_offset(), 0xFFF8);
        p.set_checksum(0x1234);
        assert_eq!(p.checksum(), 0x1234);
    }

    #[test]
    fn rewrite_helpers_keep_checksum_valid() {
        let mut buf = TCP_SYN_FRAME[14..].to_vec();
        let mut p = Ipv4Packet::new_checked(&mut buf[..]).unwrap();
        let old = p.rewrite_src(Ipv4Addr::new(203, 0, 113, 5));
        assert_eq!(old, Ipv4Addr::new(192, 168, 1, 10));
        assert_eq!(p.src_addr(), Ipv4Addr::new(203, 0, 113, 5));
        assert!(full_ok(&p));
        let old = p.rewrite_dst(Ipv4Addr::new(0, 0, 0, 0));
        assert_eq!(old, Ipv4Addr::new(93, 184, 216, 34));
        assert!(full_ok(&p));
        p.rewrite_dst(Ipv4Addr::BROADCAST);
        assert!(full_ok(&p));
        for ttl in (0..64).rev() {
            p.decrement_ttl();
            assert_eq!(p.ttl(), ttl);
            assert_eq!(p.protocol(), IPPROTO_TCP);
            assert!(full_ok(&p));
        }
        p.decrement_ttl();
        assert_eq!(p.ttl(), 0);
        assert!(full_ok(&p));
    }

    #[test]
    fn rewrite_helpers_random() {
        let mut rng = Rng::new(791);
        for _ in 0..5000 {
            let mut buf = [0u8; 24];
            rng.fill(&mut buf);
            let mut p = Ipv4Packet::new_unchecked(&mut buf[..]);
            p.set_version_ihl(if rng.bool() { 5 } else { 6 });
            p.set_total_len(24);
            p.set_ttl(rng.u8());
            p.fill_checksum();
            let addr = |r: &mut Rng| match r.below(4) {
                0 => Ipv4Addr::UNSPECIFIED,
                1 => Ipv4Addr::BROADCAST,
                _ => Ipv4Addr::from(r.u32()),
            };
            match rng.below(3) {
                0 => {
                    p.rewrite_src(addr(&mut rng));
                }
                1 => {
                    p.rewrite_dst(addr(&mut rng));
                }
                _ => p.decrement_ttl(),
            }
            let got = p.checksum();
            p.fill_checksum();
            assert_eq!(got, p.checksum());
        }
    }

    #[test]
    fn fuzz_no_panic() {
        let mut rng = Rng::new(4);
        for len in 0..80 {
            for _ in 0..300 {
                let mut buf = vec![0u8; len];
                rng.fill(&mut buf);
                // Bias towards plausible headers so new_checked often succeeds.
                if len > 3 && rng.below(4) != 0 {
                    buf[0] = 0x40 | (5 + rng.below(11)) as u8;
                    let tl = (rng.below(len + 8)) as u16;
                    buf[2..4].copy_from_slice(&tl.to_be_bytes());
                }
                for quoted in [false, true] {
                    let r = if quoted {
                        Ipv4Packet::new_quoted(&buf[..])
                    } else {
                        Ipv4Packet::new_checked(&buf[..])
                    };
                    if let Ok(p) = r {
                        assert!(p.header_len() >= 20 && p.header_len() <= len);
                        assert!(p.header().len() == p.header_len());
                        if !quoted {
                            assert_eq!(p.header_len() + p.payload().len(), p.total_len() as usize);
                        }
                    }
                }
                let mut p = Ipv4Packet::new_unchecked(&mut buf[..]);
                exercise(&mut p, &mut rng);
            }
        }
    }

    fn exercise(p: &mut Ipv4Packet<&mut [u8]>, rng: &mut Rng) {
        let _ = (
            p.version(),
            p.header_len(),
            p.tos(),
            p.total_len(),
            p.ident(),
        );
        let _ = (
            p.dont_frag(),
            p.more_frags(),
            p.frag_offset(),
            p.is_fragment(),
        );
        let _ = (
            p.ttl(),
            p.protocol(),
            p.checksum(),
            p.src_addr(),
            p.dst_addr(),
        );
        let _ = (p.has_options(), p.header().len(), p.verify_checksum());
        let _ = p.payload().len();
        p.decrement_ttl();
        p.rewrite_src(Ipv4Addr::from(rng.u32()));
        p.rewrite_dst(Ipv4Addr::from(rng.u32()));
        // Setters may create any field combination; getters must still hold.
        p.set_version_ihl(rng.u8());
        p.set_total_len(rng.u16());
        p.set_flags_frag(rng.bool(), rng.bool(), rng.u16());
        p.set_tos(1);
        p.set_ident(2);
        p.set_ttl(3);
        p.set_protocol(4);
        p.set_src_addr(Ipv4Addr::LOCALHOST);
        p.set_dst_addr(Ipv4Addr::LOCALHOST);
        p.fill_checksum();
        let _ = (p.header().len(), p.payload().len(), p.verify_checksum());
        let _ = p.payload_mut().len();
    }
}

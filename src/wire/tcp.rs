//! TCP segments (RFC 9293).
//!
//! The view covers the whole segment: the buffer should be exactly the IPv4
//! payload, since the checksum (and its pseudo-header length) covers every
//! byte of it.

use std::net::Ipv4Addr;

use super::checksum;
use super::IPPROTO_TCP;
use super::{get_u16, get_u32, get_u8, set_u16, set_u32, set_u8, sub, sub_mut, Malformed};

/// Length of a TCP header without options.
pub const MIN_HEADER_LEN: usize = 20;

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;
pub const URG: u8 = 0x20;

/// Option kinds.
pub const OPT_END: u8 = 0;
pub const OPT_NOP: u8 = 1;
pub const OPT_MSS: u8 = 2;
pub const OPT_WSCALE: u8 = 3;

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const SEQ: usize = 4;
    pub const ACK: usize = 8;
    pub const DATA_OFF: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: usize = 14;
    pub const CHECKSUM: usize = 16;
    pub const URGENT: usize = 18;
    pub const OPTIONS: usize = 20;
}

/// Legality of each combination of the six classic flag bits: bit `f` is set
/// if `flags & 0x3F == f` is legal. Illegal: no flags, SYN+FIN, SYN+RST, FIN
/// without ACK, FIN+PSH+URG ("xmas").
const LEGAL_FLAGS: u64 = {
    let mut mask = 0u64;
    let mut f: u8 = 0;
    while f < 64 {
        let illegal = f == 0
            || f & (SYN | FIN) == SYN | FIN
            || f & (SYN | RST) == SYN | RST
            || f & (FIN | ACK) == FIN
            || f & (FIN | PSH | URG) == FIN | PSH | URG;
        if !illegal {
            mask |= 1 << f;
        }
        f += 1;
    }
    mask
};

/// A read/write view of a TCP segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl TcpPacket<&[u8]> {
    pub const MIN_HEADER_LEN: usize = MIN_HEADER_LEN;
    pub const FIN: u8 = FIN;
    pub const SYN: u8 = SYN;
    pub const RST: u8 = RST;
    pub const PSH: u8 = PSH;
    pub const ACK: u8 = ACK;
    pub const URG: u8 = URG;
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// Wrap without validation (accessors still never panic).
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        TcpPacket { buffer }
    }

    /// Wrap, requiring a full header including options. Does not check the
    /// flags ([`flags_legal`](Self::flags_legal)) nor the checksum.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, Malformed> {
        let d = buffer.as_ref();
        if d.len() < MIN_HEADER_LEN {
            return Err(Malformed::TcpTruncated);
        }
        let hl = usize::from(get_u8(d, field::DATA_OFF) >> 4) * 4;
        if hl < MIN_HEADER_LEN || hl > d.len() {
            return Err(Malformed::TcpBadOffset);
        }
        Ok(TcpPacket { buffer })
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

    #[inline]
    pub fn seq_number(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::SEQ)
    }

    #[inline]
    pub fn ack_number(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::ACK)
    }

    /// Header length in bytes (data offset * 4).
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(get_u8(self.buffer.as_ref(), field::DATA_OFF) >> 4) * 4
    }

    /// The flags byte (FIN..URG, plus ECE 0x40 / CWR 0x80).
    #[inline]
    pub fn flags(&self) -> u8 {
        get_u8(self.buffer.as_ref(), field::FLAGS)
    }

    #[inline]
    pub fn window(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::WINDOW)
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    #[inline]
    pub fn urgent_ptr(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::URGENT)
    }

    /// Options bytes (between the fixed header and `header_len`).
    #[inline]
    pub fn options(&self) -> &[u8] {
        sub(self.buffer.as_ref(), field::OPTIONS, self.header_len())
    }

    /// Segment data after the header.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let d = self.buffer.as_ref();
        sub(d, self.header_len(), d.len())
    }

    /// False for: no flags at all, SYN+FIN, SYN+RST, FIN without ACK,
    /// FIN+PSH+URG ("xmas"). ECE/CWR are ignored. Branch-free bitmask lookup.
    #[inline]
    pub fn flags_legal(&self) -> bool {
        (LEGAL_FLAGS >> (self.flags() & 0x3F)) & 1 != 0
    }

    /// The window-scale option's shift count (RFC 7323 §2.3: capped at 14), if present.
    pub fn window_scale_option(&self) -> Option<u8> {
        let d = self.buffer.as_ref();
        let end = self.header_len().min(d.len());
        let mut i = field::OPTIONS;
        while i < end {
            match get_u8(d, i) {
                OPT_END => return None,
                OPT_NOP => i += 1,
                kind => {
                    let len = usize::from(get_u8(d, i + 1));
                    if i + 1 >= end || len < 2 || i + len > end {
                        return None;
                    }
                    if kind == OPT_WSCALE {
                        return (len == 3).then(|| get_u8(d, i + 2).min(14));
                    }
                    i += len;
                }
            }
        }
        None
    }

    /// Find the MSS option: `(offset of its kind byte inside the header,
    /// value)`. Walks the options safely; a malformed option list yields
    /// `None`.
    pub fn mss_option(&self) -> Option<(usize, u16)> {
        let d = self.buffer.as_ref();
        let end = self.header_len().min(d.len());
        let mut i = field::OPTIONS;
        while i < end {
            match get_u8(d, i) {
                OPT_END => return None,
                OPT_NOP => i += 1,
                kind => {
                    if i + 1 >= end {
                        return None;
                    }
                    let len = usize::from(get_u8(d, i + 1));
                    if len < 2 || i + len > end {
                        return None;
                    }
                    if kind == OPT_MSS {
                        return if len == 4 {
                            Some((i, get_u16(d, i + 2)))
                        } else {
                            None
                        };
                    }
                    i += len;
                }
            }
        }
        None
    }

    /// Checksum over pseudo header + segment is correct. The segment length
    /// is the buffer length.
    #[inline]
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        let d = self.buffer.as_ref();
        let s =
            checksum::pseudo_header_sum(src, dst, IPPROTO_TCP, d.len() as u16) + checksum::sum(d);
        checksum::fold(s) == 0xFFFF
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    #[inline]
    pub fn set_src_port(&mut self, port: u16) {
        set_u16(self.buffer.as_mut(), field::SRC_PORT, port)
    }

    #[inline]
    pub fn set_dst_port(&mut self, port: u16) {
        set_u16(self.buffer.as_mut(), field::DST_PORT, port)
    }

    #[inline]
    pub fn set_seq_number(&mut self, seq: u32) {
        set_u32(self.buffer.as_mut(), field::SEQ, seq)
    }

    #[inline]
    pub fn set_ack_number(&mut self, ack: u32) {
        set_u32(self.buffer.as_mut(), field::ACK, ack)
    }

    /// Set the data offset from a header length in bytes (multiple of 4,
    /// 20..=60). Keeps the low (reserved) bits of the byte.
    #[inline]
    pub fn set_header_len(&mut self, len: usize) {
        let d = self.buffer.as_mut();
        let words = ((len / 4) & 0x0F) as u8;
        let old = get_u8(d, field::DATA_OFF);
        set_u8(d, field::DATA_OFF, (old & 0x0F) | (words << 4))
    }

    #[inline]
    pub fn set_flags(&mut self, flags: u8) {
        set_u8(self.buffer.as_mut(), field::FLAGS, flags)
    }

    #[inline]
    pub fn set_window(&mut self, window: u16) {
        set_u16(self.buffer.as_mut(), field::WINDOW, window)
    }

    #[inline]
    pub fn set_checksum(&mut self, csum: u16) {
        set_u16(self.buffer.as_mut(), field::CHECKSUM, csum)
    }

    #[inline]
    pub fn set_urgent_ptr(&mut self, ptr: u16) {
        set_u16(self.buffer.as_mut(), field::URGENT, ptr)
    }

    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        let d = self.buffer.as_mut();
        let len = d.len();
        sub_mut(d, hl, len)
    }

    /// Compute the checksum over pseudo header + segment (segment length =
    /// buffer length).
    #[inline]
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let d = self.buffer.as_ref();
        let s =
            checksum::pseudo_header_sum(src, dst, IPPROTO_TCP, d.len() as u16) + checksum::sum(d);
        self.set_checksum(!checksum::fold(s));
    }

    /// Rewrite the MSS option value (if present), updating the checksum
    /// incrementally. Handles options at odd offsets. No-op without MSS.
    #[inline]
    pub fn set_mss_option(&mut self, new: u16) {
        if let Some((off, old)) = self.mss_option() {
            let d = self.buffer.as_mut();
            set_u16(d, off + 2, new);
            let c = get_u16(d, field::CHECKSUM);
            set_u16(
                d,
                field::CHECKSUM,
                checksum::update16_at(c, off + 2, old, new),
            );
        }
    }

    /// Replace the source port, updating the checksum incrementally.
    /// Returns the old port.
    #[inline]
    pub fn rewrite_src_port(&mut self, new: u16) -> u16 {
        self.rewrite_u16(field::SRC_PORT, new)
    }

    /// Replace the destination port, updating the checksum incrementally.
    /// Returns the old port.
    #[inline]
    pub fn rewrite_dst_port(&mut self, new: u16) -> u16 {
        self.rewrite_u16(field::DST_PORT, new)
    }

    /// Account in the checksum for an IPv4 address change in the pseudo
    /// header (call alongside `Ipv4Packet::rewrite_src/rewrite_dst`).
    #[inline]
    pub fn adjust_checksum_for_addr(&mut self, old: Ipv4Addr, new: Ipv4Addr) {
        let d = self.buffer.as_mut();
        let c = get_u16(d, field::CHECKSUM);
        set_u16(d, field::CHECKSUM, checksum::update_addr(c, old, new));
    }

    #[inline]
    fn rewrite_u16(&mut self, off: usize, new: u16) -> u16 {
        let d = self.buffer.as_mut();
        let old = get_u16(d, off);
        set_u16(d, off, new);
        let c = get_u16(d, field::CHECKSUM);
        set_u16(d, field::CHECKSUM, checksum::update16(c, old, new));
        old
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ipv4::Ipv4Packet;
    use crate::wire::testutil::{Rng, TCP_SYN_FRAME};

    const SRC: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 10);
    const DST: Ipv4Addr = Ipv4Addr::new(93, 184, 216, 34);

    /// Full recompute of the checksum the segment should carry.
    fn recomputed(seg: &[u8], src: Ipv4Addr, dst: Ipv4Addr) -> u16 {
        let mut b = seg.to_vec();
        let mut t = TcpPacket::new_unchecked(&mut b[..]);
        t.fill_checksum(src, dst);
        t.checksum()
    }

    fn syn() -> Vec<u8> {
        TCP_SYN_FRAME[34..].to_vec()
    }

    #[test]
    fn parse_syn_with_mss() {
        let ip = Ipv4Packet::new_checked(&TCP_SYN_FRAME[14..]).unwrap();
        let t = TcpPacket::new_checked(ip.payload()).unwrap();
        assert_eq!(t.src_port(), 40000);
        assert_eq!(t.dst_port(), 80);
        assert_eq!(t.seq_number(), 0x1234_5678);
        assert_eq!(t.ack_number(), 0);
        assert_eq!(t.header_len(), 40);
        assert_eq!(t.flags(), SYN);
        assert!(t.flags_legal());
        assert_eq!(t.window(), 64240);
        assert_eq!(t.checksum(), 0x7999);
        assert_eq!(t.urgent_ptr(), 0);
        assert!(t.verify_checksum(ip.src_addr(), ip.dst_addr()));
        assert!(!t.verify_checksum(ip.src_addr(), Ipv4Addr::new(93, 184, 216, 35)));
        assert_eq!(t.options().len(), 20);
        assert!(t.payload().is_empty());
        assert_eq!(t.mss_option(), Some((20, 1460)));
        assert_eq!(TcpPacket::MIN_HEADER_LEN, 20);
        assert_eq!(TcpPacket::<&[u8]>::SYN | TcpPacket::ACK, 0x12);
    }

    #[test]
    fn malformed_cases() {
        let seg = syn();
        for len in 0..MIN_HEADER_LEN {
            assert_eq!(
                TcpPacket::new_checked(&seg[..len]),
                Err(Malformed::TcpTruncated)
            );
        }
        // Offset 10 words = 40 bytes does not fit in 39.
        assert_eq!(
            TcpPacket::new_checked(&seg[..39]),
            Err(Malformed::TcpBadOffset)
        );
        for off in 0..5u8 {
            let mut b = seg.clone();
            b[12] = off << 4;
            assert_eq!(TcpPacket::new_checked(&b[..]), Err(Malformed::TcpBadOffset));
        }
        let mut b = seg.clone();
        b[12] = 0xF0;
        assert_eq!(TcpPacket::new_checked(&b[..]), Err(Malformed::TcpBadOffset));
        b.resize(60, 0);
        assert!(TcpPacket::new_checked(&b[..]).is_ok());
    }

    #[test]
    fn flag_legality() {
        let cases: &[(u8, bool)] = &[
            (0, false),
            (SYN, true),
            (SYN | ACK, true),
            (ACK, true),
            (ACK | PSH, true),
            (RST, true),
            (RST | ACK, true),
            (FIN | ACK, true),
            (FIN | ACK | PSH, true),
            (SYN | FIN, false),
            (SYN | FIN | ACK, false),
            (SYN | RST, false),
            (SYN | RST | ACK, false),
            (FIN, false),
            (FIN | PSH, false),
            (FIN | PSH | URG, false),
            (FIN | PSH | URG | ACK, false),
            (0xC0, false),      // only ECE|CWR
            (0xC0 | SYN, true), // ECN-setup SYN
            (0xFF, false),
        ];
        let mut b = syn();
        for &(f, legal) in cases {
            let mut t = TcpPacket::new_checked(&mut b[..]).unwrap();
            t.set_flags(f);
            assert_eq!(t.flags(), f);
            assert_eq!(t.flags_legal(), legal, "flags {f:#04x}");
        }
    }

    #[test]
    fn setters_round_trip() {
        let mut b = [0u8; 32];
        let mut t = TcpPacket::new_unchecked(&mut b[..]);
        t.set_src_port(1);
        t.set_dst_port(65535);
        t.set_seq_number(0xDEAD_BEEF);
        t.set_ack_number(0xCAFE_F00D);
        t.set_header_len(24);
        t.set_flags(SYN | ACK);
        t.set_window(1024);
        t.set_urgent_ptr(7);
        t.payload_mut().copy_from_slice(b"payload!");
        t.fill_checksum(SRC, DST);
        let t = TcpPacket::new_checked(&b[..]).unwrap();
        assert_eq!(t.src_port(), 1);
        assert_eq!(t.dst_port(), 65535);
        assert_eq!(t.seq_number(), 0xDEAD_BEEF);
        assert_eq!(t.ack_number(), 0xCAFE_F00D);
        assert_eq!(t.header_len(), 24);
        assert_eq!(t.flags(), SYN | ACK);
        assert_eq!(t.window(), 1024);
        assert_eq!(t.urgent_ptr(), 7);
        assert_eq!(t.payload(), b"payload!");
        assert!(t.verify_checksum(SRC, DST));
        let mut t = TcpPacket::new_unchecked(&mut b[..]);
        t.set_checksum(0xBEEF);
        assert_eq!(t.checksum(), 0xBEEF);
        t.set_header_len(60);
        assert_eq!(t.header_len(), 60);
        // header_len beyond the buffer: slices clamp instead of panicking.
        assert!(t.payload().is_empty());
        assert_eq!(t.options().len(), 12);
        assert_eq!(t.payload_mut().len(), 0);
    }

    #[test]
    fn nat_rewrites_keep_checksum_valid() {
        let mut b = syn();
        let mut t = TcpPacket::new_checked(&mut b[..]).unwrap();
        assert_eq!(t.rewrite_src_port(1024), 40000);
        assert_eq!(t.src_port(), 1024);
        assert!(t.verify_checksum(SRC, DST));
        assert_eq!(t.rewrite_dst_port(0xFFFF), 80);
        assert!(t.verify_checksum(SRC, DST));
        let new_src = Ipv4Addr::new(203, 0, 113, 1);
        t.adjust_checksum_for_addr(SRC, new_src);
        assert!(t.verify_checksum(new_src, DST));
        assert!(!t.verify_checksum(SRC, DST));
        assert_eq!(t.checksum(), recomputed(&b, new_src, DST));
    }

    #[test]
    fn full_nat_path_with_ipv4() {
        let mut frame = TCP_SYN_FRAME.to_vec();
        let new_src = Ipv4Addr::new(198, 51, 100, 7);
        let mut ip = Ipv4Packet::new_checked(&mut frame[14..]).unwrap();
        let old = ip.rewrite_src(new_src);
        ip.decrement_ttl();
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        let mut t = TcpPacket::new_checked(ip.payload_mut()).unwrap();
        t.adjust_checksum_for_addr(old, new_src);
        t.rewrite_src_port(61000);
        t.set_mss_option(1400);
        assert_eq!(t.mss_option(), Some((20, 1400)));
        assert!(t.verify_checksum(src, dst));
        let ip = Ipv4Packet::new_checked(&frame[14..]).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!(ip.ttl(), 63);
    }

    #[test]
    fn mss_option_walk() {
        let build = |opts: &[u8]| -> Vec<u8> {
            let mut b = vec![0u8; 20 + opts.len()];
            b[12] = ((b.len() / 4) as u8) << 4;
            b[13] = SYN;
            b[20..].copy_from_slice(opts);
            b
        };
        let mss = |opts: &[u8]| {
            let b = build(opts);
            TcpPacket::new_checked(&b[..]).unwrap().mss_option()
        };
        assert_eq!(mss(&[2, 4, 0x05, 0xb4]), Some((20, 1460)));
        assert_eq!(mss(&[1, 1, 1, 1, 2, 4, 0x05, 0xb4]), Some((24, 1460)));
        // After SACK-permitted and a timestamp.
        assert_eq!(
            mss(&[4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2, 2, 4, 0x21, 0x00, 1, 1, 1, 0]),
            Some((32, 0x2100))
        );
        // Odd offset (one NOP first).
        assert_eq!(mss(&[1, 2, 4, 0x05, 0xb4, 0, 0, 0]), Some((21, 1460)));
        // End of list before MSS.
        assert_eq!(mss(&[0, 0, 0, 0, 2, 4, 5, 0xb4]), None);
        // Bad lengths.
        assert_eq!(mss(&[2, 3, 5, 0xb4]), None);
        assert_eq!(mss(&[2, 0, 5, 0xb4]), None);
        assert_eq!(mss(&[8, 1, 2, 4]), None);
        assert_eq!(mss(&[8, 9, 0, 0]), None);
        assert_eq!(mss(&[1, 1, 1, 2]), None);
        assert_eq!(mss(&[1, 1, 2, 4, 5, 0xb4, 1, 1]), Some((22, 1460)));
        assert_eq!(mss(&[1, 1, 1, 1]), None);
        assert_eq!(mss(&[]), None);
        // MSS running past the header end.
        assert_eq!(mss(&[1, 1, 2, 4]), None);
    }

    #[test]
    fn set_mss_option_even_and_odd_offsets() {
        let mut rng = Rng::new(1460);
        for lead in 0..4usize {
            // `lead` NOPs, then MSS, then padding to a multiple of 4.
            let mut opts = vec![1u8; lead];
            opts.extend_from_slice(&[2, 4, 0x05, 0xb4]);
            while opts.len() % 4 != 0 {
                opts.push(0);
            }
            for _ in 0..500 {
                let mut b = vec![0u8; 20 + opts.len() + rng.below(9)];
                rng.fill(&mut b);
                b[12] = (((20 + opts.len()) / 4) as u8) << 4;
                b[20..20 + opts.len()].copy_from_slice(&opts);
                let (src, dst) = (Ipv4Addr::from(rng.u32()), Ipv4Addr::from(rng.u32()));
                let mut t = TcpPacket::new_checked(&mut b[..]).unwrap();
                t.fill_checksum(src, dst);
                let new = rng.edgy_u16();
                t.set_mss_option(new);
                assert_eq!(t.mss_option(), Some((20 + lead, new)));
                assert!(t.verify_checksum(src, dst), "lead {lead}");
                assert_eq!(t.checksum(), recomputed(&b, src, dst));
            }
        }
        // No MSS option: nothing changes.
        let mut b = syn();
        b[20] = 1;
        b[21] = 1;
        b[22] = 1;
        b[23] = 1;
        let before = b.clone();
        TcpPacket::new_checked(&mut b[..])
            .unwrap()
            .set_mss_option(536);
        assert_eq!(b, before);
    }

    #[test]
    fn rewrites_match_full_recompute_random() {
        let mut rng = Rng::new(9293);
        for _ in 0..5000 {
            let mut b = vec![0u8; 20 + rng.below(40)];
            rng.fill(&mut b);
            b[12] = 5 << 4;
            let (src, dst) = (Ipv4Addr::from(rng.u32()), Ipv4Addr::from(rng.u32()));
            let mut t = TcpPacket::new_checked(&mut b[..]).unwrap();
            t.fill_checksum(src, dst);
            let (mut s, mut d) = (src, dst);
            for _ in 0..3 {
                match rng.below(4) {
                    0 => {
                        t.rewrite_src_port(rng.edgy_u16());
                    }
                    1 => {
                        t.rewrite_dst_port(rng.edgy_u16());
                    }
                    2 => {
                        let n = Ipv4Addr::from(rng.u32());
                        t.adjust_checksum_for_addr(s, n);
                        s = n;
                    }
                    _ => {
                        let n = if rng.bool() {
                            Ipv4Addr::BROADCAST
                        } else {
                            Ipv4Addr::UNSPECIFIED
                        };
                        t.adjust_checksum_for_addr(d, n);
                        d = n;
                    }
                }
            }
            assert!(t.verify_checksum(s, d));
            let got = t.checksum();
            assert_eq!(got, recomputed(&b, s, d));
        }
    }

    #[test]
    fn fuzz_no_panic() {
        let mut rng = Rng::new(6);
        for len in 0..80 {
            for _ in 0..300 {
                let mut buf = vec![0u8; len];
                rng.fill(&mut buf);
                if len > 12 && rng.bool() {
                    buf[12] = ((5 + rng.below(11)) as u8) << 4;
                }
                // Sprinkle option-like bytes.
                for b in buf.iter_mut().skip(20) {
                    if rng.below(3) == 0 {
                        *b = rng.below(4) as u8;
                    }
                }
                if let Ok(t) = TcpPacket::new_checked(&buf[..]) {
                    assert!(t.header_len() >= 20 && t.header_len() <= len);
                    assert_eq!(t.header_len() + t.payload().len(), len);
                    if let Some((off, _)) = t.mss_option() {
                        assert!(off + 4 <= t.header_len());
                    }
                }
                let mut t = TcpPacket::new_unchecked(&mut buf[..]);
                let _ = (t.src_port(), t.dst_port(), t.seq_number(), t.ack_number());
                let _ = (t.header_len(), t.flags(), t.window(), t.checksum());
                let _ = (t.urgent_ptr(), t.options().len(), t.payload().len());
                let _ = (t.flags_legal(), t.mss_option());
                let _ = t.verify_checksum(Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST);
                t.set_mss_option(rng.u16());
                t.rewrite_src_port(rng.u16());
                t.rewrite_dst_port(rng.u16());
                t.adjust_checksum_for_addr(Ipv4Addr::LOCALHOST, Ipv4Addr::BROADCAST);
                t.set_header_len(rng.below(100));
                t.set_flags(rng.u8());
                let _ = (t.options().len(), t.payload().len(), t.mss_option());
                t.set_src_port(1);
                t.set_dst_port(2);
                t.set_seq_number(3);
                t.set_ack_number(4);
                t.set_window(5);
                t.set_urgent_ptr(6);
                t.fill_checksum(Ipv4Addr::LOCALHOST, Ipv4Addr::BROADCAST);
                if len >= 18 {
                    assert!(t.verify_checksum(Ipv4Addr::LOCALHOST, Ipv4Addr::BROADCAST));
                }
                let _ = t.payload_mut().len();
            }
        }
    }
}

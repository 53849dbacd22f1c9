//! Zero-copy typed views over packet bytes.
//!
//! In the style of smoltcp's `wire` module: every protocol has a view type
//! `X<T: AsRef<[u8]>> { buffer: T }` with `new_unchecked`, `new_checked`,
//! `into_inner`, getters for `T: AsRef<[u8]>` and setters for
//! `T: AsRef<[u8]> + AsMut<[u8]>`.
//!
//! Panic freedom: `new_checked` validates the lengths the header fields
//! depend on, but the accessors do not rely on it. Every fixed-offset getter
//! reads through a bounds-checked helper (returning zero when the buffer is
//! too short) and every setter silently does nothing when the field does not
//! fit, and every variable-length slice (payload, options, ...) is clamped to
//! the buffer. So no byte content, no buffer length and no sequence of setter
//! calls can make these views panic, even when built with `new_unchecked`.
//! The bounds check costs the same as the one slice indexing would do anyway.
//!
//! Header-length constants exist both at module level (`ethernet::HEADER_LEN`)
//! and as associated constants (`EthernetFrame::HEADER_LEN`, also reachable as
//! `EthernetFrame::<&[u8]>::HEADER_LEN`).

use std::fmt;
use std::net::Ipv4Addr;

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod icmp;
pub mod ipv4;
pub mod tcp;
pub mod udp;

pub use arp::ArpPacket;
pub use ethernet::{EtherType, EthernetFrame, MacAddr};
pub use icmp::IcmpPacket;
pub use ipv4::Ipv4Packet;
pub use tcp::TcpPacket;
pub use udp::UdpPacket;

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// Why a buffer was rejected by a `new_checked` constructor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Malformed {
    EthTruncated,
    ArpMalformed,
    Ipv4Truncated,
    Ipv4BadVersion,
    Ipv4BadIhl,
    Ipv4BadTotalLength,
    Ipv4BadChecksum,
    Ipv4Options,
    TcpTruncated,
    TcpBadOffset,
    TcpIllegalFlags,
    UdpTruncated,
    UdpBadLength,
    IcmpTruncated,
    IcmpBadChecksum,
}

impl Malformed {
    /// Short stable name, suitable for a metrics label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Malformed::EthTruncated => "eth_truncated",
            Malformed::ArpMalformed => "arp_malformed",
            Malformed::Ipv4Truncated => "ipv4_truncated",
            Malformed::Ipv4BadVersion => "ipv4_bad_version",
            Malformed::Ipv4BadIhl => "ipv4_bad_ihl",
            Malformed::Ipv4BadTotalLength => "ipv4_bad_total_length",
            Malformed::Ipv4BadChecksum => "ipv4_bad_checksum",
            Malformed::Ipv4Options => "ipv4_options",
            Malformed::TcpTruncated => "tcp_truncated",
            Malformed::TcpBadOffset => "tcp_bad_offset",
            Malformed::TcpIllegalFlags => "tcp_illegal_flags",
            Malformed::UdpTruncated => "udp_truncated",
            Malformed::UdpBadLength => "udp_bad_length",
            Malformed::IcmpTruncated => "icmp_truncated",
            Malformed::IcmpBadChecksum => "icmp_bad_checksum",
        }
    }
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for Malformed {}

// ---------------------------------------------------------------------------
// Bounds-checked field access shared by the protocol views. Short buffers read
// as zero and ignore writes; they never panic.
// ---------------------------------------------------------------------------

#[inline(always)]
fn get_u8(d: &[u8], off: usize) -> u8 {
    match d.get(off) {
        Some(&b) => b,
        None => 0,
    }
}

#[inline(always)]
fn get_u16(d: &[u8], off: usize) -> u16 {
    match d.get(off..off + 2) {
        Some(&[a, b]) => u16::from_be_bytes([a, b]),
        _ => 0,
    }
}

#[inline(always)]
fn get_u32(d: &[u8], off: usize) -> u32 {
    match d.get(off..off + 4) {
        Some(&[a, b, c, e]) => u32::from_be_bytes([a, b, c, e]),
        _ => 0,
    }
}

#[inline(always)]
fn get_array<const N: usize>(d: &[u8], off: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(s) = d.get(off..off + N) {
        out.copy_from_slice(s);
    }
    out
}

#[inline(always)]
fn get_ipv4(d: &[u8], off: usize) -> Ipv4Addr {
    Ipv4Addr::from(get_u32(d, off))
}

#[inline(always)]
fn set_u8(d: &mut [u8], off: usize, v: u8) {
    if let Some(b) = d.get_mut(off) {
        *b = v;
    }
}

#[inline(always)]
fn set_u16(d: &mut [u8], off: usize, v: u16) {
    if let Some(s) = d.get_mut(off..off + 2) {
        s.copy_from_slice(&v.to_be_bytes());
    }
}

#[inline(always)]
fn set_u32(d: &mut [u8], off: usize, v: u32) {
    if let Some(s) = d.get_mut(off..off + 4) {
        s.copy_from_slice(&v.to_be_bytes());
    }
}

#[inline(always)]
fn set_bytes(d: &mut [u8], off: usize, v: &[u8]) {
    if let Some(s) = d.get_mut(off..off + v.len()) {
        s.copy_from_slice(v);
    }
}

/// `&d[start..end]`, clamped so that it can never panic.
#[inline(always)]
fn sub(d: &[u8], start: usize, end: usize) -> &[u8] {
    let end = end.min(d.len());
    let start = start.min(end);
    match d.get(start..end) {
        Some(s) => s,
        None => &[],
    }
}

/// `&mut d[start..end]`, clamped so that it can never panic.
#[inline(always)]
fn sub_mut(d: &mut [u8], start: usize, end: usize) -> &mut [u8] {
    let end = end.min(d.len());
    let start = start.min(end);
    match d.get_mut(start..end) {
        Some(s) => s,
        None => &mut [],
    }
}

/// Deterministic pseudo-random numbers for the tests (xorshift64*).
#[cfg(test)]
pub(crate) mod testutil {

    // Captured-style frames (checksums valid), generated offline.
    // ICMP echo request 10.0.0.1 -> 10.0.0.2, ident 0x1234 seq 1, "abcdefgh".
    // TCP SYN 192.168.1.10:40000 -> 93.184.216.34:80, MSS 1460 + SACK-perm,
    //   timestamps, NOP, wscale 7.
    // UDP DNS query 192.168.1.10:53000 -> 8.8.8.8:53 for example.com.
    // ARP who-has 192.168.1.1 tell 192.168.1.10, padded to 60 bytes.
    pub const ICMP_ECHO_FRAME: [u8; 50] = [
        0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x02, 0x00, 0x00, 0xaa, 0xbb, 0xcc, 0x08, 0x00, 0x45,
        0x00, 0x00, 0x24, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x01, 0x0a, 0x91, 0x0a, 0x00, 0x00, 0x01,
        0x0a, 0x00, 0x00, 0x02, 0x08, 0x00, 0x54, 0x35, 0x12, 0x34, 0x00, 0x01, 0x61, 0x62, 0x63,
        0x64, 0x65, 0x66, 0x67, 0x68,
    ];
    pub const TCP_SYN_FRAME: [u8; 74] = [
        0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x02, 0x00, 0x00, 0xaa, 0xbb, 0xcc, 0x08, 0x00, 0x45,
        0x00, 0x00, 0x3c, 0xbe, 0xef, 0x40, 0x00, 0x40, 0x06, 0x84, 0x3f, 0xc0, 0xa8, 0x01, 0x0a,
        0x5d, 0xb8, 0xd8, 0x22, 0x9c, 0x40, 0x00, 0x50, 0x12, 0x34, 0x56, 0x78, 0x00, 0x00, 0x00,
        0x00, 0xa0, 0x02, 0xfa, 0xf0, 0x79, 0x99, 0x00, 0x00, 0x02, 0x04, 0x05, 0xb4, 0x04, 0x02,
        0x08, 0x0a, 0x0b, 0xad, 0xca, 0xfe, 0x00, 0x00, 0x00, 0x00, 0x01, 0x03, 0x03, 0x07,
    ];
    pub const UDP_DNS_FRAME: [u8; 71] = [
        0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x02, 0x00, 0x00, 0xaa, 0xbb, 0xcc, 0x08, 0x00, 0x45,
        0x00, 0x00, 0x39, 0x00, 0x01, 0x40, 0x00, 0x40, 0x11, 0x68, 0xf1, 0xc0, 0xa8, 0x01, 0x0a,
        0x08, 0x08, 0x08, 0x08, 0xcf, 0x08, 0x00, 0x35, 0x00, 0x25, 0x7d, 0x02, 0x12, 0x34, 0x01,
        0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x07, 0x65, 0x78, 0x61, 0x6d, 0x70,
        0x6c, 0x65, 0x03, 0x63, 0x6f, 0x6d, 0x00, 0x00, 0x01, 0x00, 0x01,
    ];
    pub const ARP_REQUEST_FRAME: [u8; 60] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x00, 0x00, 0xaa, 0xbb, 0xcc, 0x08, 0x06, 0x00,
        0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x02, 0x00, 0x00, 0xaa, 0xbb, 0xcc, 0xc0, 0xa8,
        0x01, 0x0a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc0, 0xa8, 0x01, 0x01, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    ];

    /// The crate's one generator (`crate::rng`).
    pub use crate::rng::Rng;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_helpers_never_panic() {
        let mut buf = [1u8, 2, 3];
        assert_eq!(get_u8(&buf, 2), 3);
        assert_eq!(get_u8(&buf, 3), 0);
        assert_eq!(get_u16(&buf, 1), 0x0203);
        assert_eq!(get_u16(&buf, 2), 0);
        assert_eq!(get_u16(&buf, usize::MAX - 4), 0);
        assert_eq!(get_u32(&buf, 0), 0);
        assert_eq!(get_array::<2>(&buf, 1), [2, 3]);
        assert_eq!(get_array::<4>(&buf, 0), [0; 4]);
        set_u16(&mut buf, 2, 0xFFFF);
        set_u32(&mut buf, 0, 0xFFFF_FFFF);
        set_u8(&mut buf, 9, 1);
        set_bytes(&mut buf, 2, &[7, 7]);
        assert_eq!(buf, [1, 2, 3]);
        set_u16(&mut buf, 1, 0xAABB);
        assert_eq!(buf, [1, 0xAA, 0xBB]);
        assert_eq!(sub(&buf, 2, 1), &[] as &[u8]);
        assert_eq!(sub(&buf, 1, 100), &[0xAA, 0xBB]);
        assert_eq!(sub(&buf, 100, 200), &[] as &[u8]);
        assert_eq!(sub_mut(&mut buf, 5, 2).len(), 0);
    }

    #[test]
    fn malformed_display() {
        assert_eq!(Malformed::Ipv4BadIhl.to_string(), "ipv4_bad_ihl");
        assert_eq!(Malformed::IcmpBadChecksum.as_str(), "icmp_bad_checksum");
    }
}

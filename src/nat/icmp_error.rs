//! RFC 5508 translation of ICMP error messages: the quoted (embedded) IP header and the
//! first bytes of its transport header are rewritten back to the other side's view, and
//! every checksum that covers a changed word is updated incrementally.
//!
//! Offsets are relative to the ICMP message. The quoted IP header starts at 8 and its
//! length is a multiple of 4, so every rewritten field sits at an even offset and
//! `checksum::update16/32` apply to the ICMP checksum directly.

use crate::pipeline::counters::DropReason;
use crate::wire::checksum;
use crate::wire::icmp::{DEST_UNREACHABLE, ECHO_REQUEST, PARAMETER_PROBLEM, TIME_EXCEEDED};
use crate::wire::{IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP};
use std::net::Ipv4Addr;

/// What the quoted packet says about its flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quote {
    pub proto: u8,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// TCP/UDP ports; for a quoted echo request the identifier and 0.
    pub sport: u16,
    pub dport: u16,
    /// Offset of the quoted transport header in the ICMP message.
    l4: usize,
    /// Bytes of the quoted transport header present.
    l4_len: usize,
}

/// Which endpoint of the quoted packet is rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Src,
    Dst,
}

#[inline]
fn get16(d: &[u8], off: usize) -> u16 {
    match d.get(off..off + 2) {
        Some(&[a, b]) => u16::from_be_bytes([a, b]),
        _ => 0,
    }
}

#[inline]
fn get32(d: &[u8], off: usize) -> u32 {
    (u32::from(get16(d, off)) << 16) | u32::from(get16(d, off + 2))
}

/// Writes a word and folds the change into `csum` (the ICMP checksum).
#[inline]
fn put16(d: &mut [u8], off: usize, new: u16, csum: &mut u16) {
    let old = get16(d, off);
    if let Some(s) = d.get_mut(off..off + 2) {
        s.copy_from_slice(&new.to_be_bytes());
        *csum = checksum::update16(*csum, old, new);
    }
}

/// Whether this ICMP type is an error the NAT translates.
pub fn is_translated_error(msg_type: u8) -> bool {
    matches!(
        msg_type,
        DEST_UNREACHABLE | TIME_EXCEEDED | PARAMETER_PROBLEM
    )
}

/// Validates an ICMP error message (`msg` = the whole ICMP message) and extracts the
/// quoted flow. Requires a correct ICMP checksum, a complete quoted IPv4 header with a
/// correct checksum, and at least 8 quoted transport bytes (RFC 792 guarantees them).
pub fn parse(msg: &[u8]) -> Result<Quote, DropReason> {
    if msg.len() < 8 + 20 + 8 || checksum::checksum(msg) != 0 {
        return Err(DropReason::NatIcmpErrorMalformed);
    }
    let q = msg.get(8..).unwrap_or(&[]);
    let ver_ihl = q.first().copied().unwrap_or(0);
    let hl = usize::from(ver_ihl & 0x0f) * 4;
    if ver_ihl >> 4 != 4 || hl < 20 || q.len() < hl + 8 {
        return Err(DropReason::NatIcmpErrorMalformed);
    }
    let hdr = q.get(..hl).unwrap_or(&[]);
    if checksum::checksum(hdr) != 0 {
        return Err(DropReason::NatIcmpErrorMalformed);
    }
    let proto = q.get(9).copied().unwrap_or(0);
    // A quoted non-first fragment has no transport header to match on.
    if get16(q, 6) & 0x1fff != 0 {
        return Err(DropReason::NatIcmpErrorNoMapping);
    }
    let l4 = 8 + hl;
    let (sport, dport) = match proto {
        IPPROTO_TCP | IPPROTO_UDP => (get16(msg, l4), get16(msg, l4 + 2)),
        IPPROTO_ICMP if msg.get(l4).copied() == Some(ECHO_REQUEST) => (get16(msg, l4 + 4), 0),
        _ => return Err(DropReason::NatIcmpErrorNoMapping),
    };
    Ok(Quote {
        proto,
        src: Ipv4Addr::from(get32(q, 12)),
        dst: Ipv4Addr::from(get32(q, 16)),
        sport,
        dport,
        l4,
        l4_len: msg.len() - l4,
    })
}

/// Rewrites the quoted packet's `side` endpoint to `ip:port` (port = identifier for a
/// quoted echo request), fixing the quoted IP header checksum, the quoted transport
/// checksum when it was quoted (UDP: bytes 6-7, left alone when 0; TCP: bytes 16-17, only
/// present in long quotes; ICMP echo: bytes 2-3) and the ICMP checksum.
pub fn rewrite(msg: &mut [u8], q: &Quote, side: Side, ip: Ipv4Addr, port: u16) {
    let mut icmp_csum = get16(msg, 2);
    let (addr_off, old_ip, port_off, old_port) = match side {
        Side::Src => (8 + 12, q.src, 0, q.sport),
        Side::Dst => (8 + 16, q.dst, 2, q.dport),
    };
    let port_off = if q.proto == IPPROTO_ICMP { 4 } else { port_off };

    // Quoted IP header: address and its checksum.
    let ip_csum_off = 8 + 10;
    let new_ip_csum = checksum::update_addr(get16(msg, ip_csum_off), old_ip, ip);
    put16(msg, addr_off, (u32::from(ip) >> 16) as u16, &mut icmp_csum);
    put16(msg, addr_off + 2, u32::from(ip) as u16, &mut icmp_csum);
    put16(msg, ip_csum_off, new_ip_csum, &mut icmp_csum);

    // Quoted transport header: port (or identifier) and its checksum when present.
    put16(msg, q.l4 + port_off, port, &mut icmp_csum);
    let l4_csum_off = match q.proto {
        IPPROTO_UDP => Some(6),
        IPPROTO_TCP if q.l4_len >= 18 => Some(16),
        IPPROTO_ICMP => Some(2),
        _ => None,
    };
    if let Some(off) = l4_csum_off {
        let old = get16(msg, q.l4 + off);
        if !(q.proto == IPPROTO_UDP && old == 0) {
            let mut c = checksum::update16(old, old_port, port);
            if q.proto != IPPROTO_ICMP {
                c = checksum::update_addr(c, old_ip, ip);
            }
            if q.proto == IPPROTO_UDP && c == 0 {
                c = 0xffff;
            }
            put16(msg, q.l4 + off, c, &mut icmp_csum);
        }
    }
    if let Some(s) = msg.get_mut(2..4) {
        s.copy_from_slice(&icmp_csum.to_be_bytes());
    }
}

//! TCP RST generation in place (RFC 793 "Reset Generation"): the offending segment becomes
//! the reset its sender would get from a peer without the connection. Shared by the NAT
//! (unknown/idle connection) and the load balancer (idle or deregistered target).

use crate::packet::PacketBuf;
use crate::wire::tcp::{ACK, FIN, RST, SYN};
use crate::wire::{EthernetFrame, Ipv4Packet, TcpPacket, IPPROTO_TCP};
use std::net::Ipv4Addr;

/// Rewrites the frame (IPv4 header of `hl` bytes at 14, `len` bytes in all, from `src`
/// to `dst`) into the RST from `dst` to `src`. False if the frame cannot hold it.
pub fn make_rst<B: PacketBuf>(
    pkt: &mut B,
    hl: usize,
    len: usize,
    src: Ipv4Addr,
    dst: Ipv4Addr,
) -> bool {
    const IP_LEN: usize = 20;
    const TCP_LEN: usize = 20;
    let (sport, dport, seq, ack, flags, seg_len) = {
        let l4 = pkt.data().get(14 + hl..14 + len).unwrap_or(&[]);
        if l4.len() < TCP_LEN {
            return false;
        }
        let tcp = TcpPacket::new_unchecked(l4);
        let payload = l4.len().saturating_sub(tcp.header_len()) as u32;
        (
            tcp.src_port(),
            tcp.dst_port(),
            tcp.seq_number(),
            tcp.ack_number(),
            tcp.flags(),
            payload,
        )
    };
    if pkt.len() < 14 + IP_LEN + TCP_LEN || !pkt.set_len(14 + IP_LEN + TCP_LEN) {
        return false;
    }
    let frame = pkt.data_mut();
    {
        let mut eth = EthernetFrame::new_unchecked(&mut *frame);
        let (s, d) = (eth.src_addr(), eth.dst_addr());
        eth.set_src_addr(d);
        eth.set_dst_addr(s);
    }
    let Some(rest) = frame.get_mut(14..) else {
        return false;
    };
    let (hdr, seg) = rest.split_at_mut(IP_LEN.min(rest.len()));
    {
        let mut h = Ipv4Packet::new_unchecked(&mut *hdr);
        h.set_version_ihl(5);
        h.set_tos(0);
        h.set_total_len((IP_LEN + TCP_LEN) as u16);
        h.set_ident(0);
        h.set_flags_frag(true, false, 0);
        h.set_ttl(64);
        h.set_protocol(IPPROTO_TCP);
        h.set_src_addr(dst);
        h.set_dst_addr(src);
        h.fill_checksum();
    }
    if let Some(b) = seg.get_mut(12) {
        // Data offset 5 words, reserved bits clear.
        *b = 0x50;
    }
    let mut tcp = TcpPacket::new_unchecked(seg);
    tcp.set_src_port(dport);
    tcp.set_dst_port(sport);
    if flags & ACK != 0 {
        tcp.set_seq_number(ack);
        tcp.set_ack_number(0);
        tcp.set_flags(RST);
    } else {
        let len = seg_len + u32::from(flags & SYN != 0) + u32::from(flags & FIN != 0);
        tcp.set_seq_number(0);
        tcp.set_ack_number(seq.wrapping_add(len));
        tcp.set_flags(RST | ACK);
    }
    tcp.set_window(0);
    tcp.set_urgent_ptr(0);
    tcp.fill_checksum(dst, src);
    true
}

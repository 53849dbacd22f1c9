//! Packets the appliance itself sends: echo replies and ICMP errors built in place in
//! the buffer of the packet that caused them (no allocation), ARP requests and replies.

use crate::packet::PacketBuf;
use crate::wire::{
    arp, checksum, EtherType, EthernetFrame, IcmpPacket, Ipv4Packet, MacAddr, IPPROTO_ICMP,
};
use std::net::Ipv4Addr;

const ETH: usize = 14;
/// TTL of packets the appliance originates.
pub const OWN_TTL: u8 = 64;

/// Swap the Ethernet addresses so the frame goes back to where it came from.
#[inline]
pub fn reflect_ethernet(frame: &mut [u8], our_mac: MacAddr) {
    let mut eth = EthernetFrame::new_unchecked(frame);
    let src = eth.src_addr();
    eth.set_dst_addr(src);
    eth.set_src_addr(our_mac);
}

/// Turn an ICMP echo request (already validated) into the echo reply, in place.
pub fn echo_reply_in_place(frame: &mut [u8], our_mac: MacAddr) {
    reflect_ethernet(frame, our_mac);
    let mut ip = Ipv4Packet::new_unchecked(&mut frame[ETH..]);
    let src = ip.src_addr();
    let dst = ip.dst_addr();
    // Swapping the addresses leaves the header sum unchanged; the TTL is ours now.
    ip.set_src_addr(dst);
    ip.set_dst_addr(src);
    ip.set_ttl(OWN_TTL);
    ip.fill_checksum();
    let mut icmp = IcmpPacket::new_unchecked(ip.payload_mut());
    let old = icmp.checksum();
    icmp.set_msg_type(IcmpPacket::<&[u8]>::ECHO_REPLY);
    // type/code word goes from 0x0800 to 0x0000. Eqn. 3 of RFC 1624 can yield 0x0000 where
    // only 0xFFFF verifies (an all-zero message); 0xFFFF is valid whenever 0x0000 is.
    let c = checksum::update16(old, 0x0800, 0x0000);
    icmp.set_checksum(if c == 0 { 0xFFFF } else { c });
}

/// Rewrite `pkt` (an Ethernet+IPv4 frame as received) into an ICMP error from `src`
/// to the original sender, quoting the original IP header and its first 8 payload
/// bytes (RFC 792). Uses the buffer's headroom; returns false if that is impossible.
pub fn icmp_error_in_place<B: PacketBuf>(
    pkt: &mut B,
    our_mac: MacAddr,
    icmp_type: u8,
    code: u8,
    rest_of_header: u32,
    src: Ipv4Addr,
) -> bool {
    let (peer_mac, orig_src, quote_len) = {
        let d = pkt.data();
        if d.len() < ETH + 20 {
            return false;
        }
        let eth = EthernetFrame::new_unchecked(d);
        let ip = Ipv4Packet::new_unchecked(&d[ETH..]);
        let hl = ip.header_len();
        let total = (ip.total_len() as usize).min(d.len() - ETH);
        (eth.src_addr(), ip.src_addr(), (hl + 8).min(total))
    };
    const NEW: usize = 20 + IcmpPacket::<&[u8]>::HEADER_LEN;
    if !pkt.prepend(NEW) {
        return false;
    }
    if !pkt.set_len(ETH + NEW + quote_len) {
        return false;
    }
    let d = pkt.data_mut();
    {
        let mut eth = EthernetFrame::new_unchecked(&mut d[..ETH]);
        eth.set_dst_addr(peer_mac);
        eth.set_src_addr(our_mac);
        eth.set_ethertype(EtherType::IPV4);
    }
    let mut ip = Ipv4Packet::new_unchecked(&mut d[ETH..]);
    ip.set_version_ihl(5);
    ip.set_tos(0xc0); // internetwork control
    ip.set_total_len((NEW + quote_len) as u16);
    ip.set_ident(0);
    ip.set_flags_frag(false, false, 0);
    ip.set_ttl(OWN_TTL);
    ip.set_protocol(IPPROTO_ICMP);
    ip.set_src_addr(src);
    ip.set_dst_addr(orig_src);
    ip.fill_checksum();
    let mut icmp = IcmpPacket::new_unchecked(ip.payload_mut());
    icmp.set_msg_type(icmp_type);
    icmp.set_msg_code(code);
    icmp.set_rest_of_header(rest_of_header);
    icmp.fill_checksum();
    true
}

/// Answer an ARP request for `our_ip` in place.
pub fn arp_reply_in_place(frame: &mut [u8], our_mac: MacAddr, our_ip: Ipv4Addr) {
    let (req_mac, req_ip) = {
        let a = arp::ArpPacket::new_unchecked(&frame[ETH..]);
        (a.sender_hw_addr(), a.sender_ip())
    };
    {
        let mut eth = EthernetFrame::new_unchecked(&mut frame[..]);
        eth.set_dst_addr(req_mac);
        eth.set_src_addr(our_mac);
    }
    let mut a = arp::ArpPacket::new_unchecked(&mut frame[ETH..]);
    a.set_operation(arp::ARP_REPLY);
    a.set_sender_hw_addr(our_mac);
    a.set_sender_ip(our_ip);
    a.set_target_hw_addr(req_mac);
    a.set_target_ip(req_ip);
}

/// Fill an empty buffer with an ARP request for `target` (who-has target tell our_ip).
pub fn build_arp_request<B: PacketBuf>(
    pkt: &mut B,
    our_mac: MacAddr,
    our_ip: Ipv4Addr,
    target: Ipv4Addr,
) -> bool {
    // 60 bytes: the Ethernet minimum without FCS.
    if !pkt.set_len(60) {
        return false;
    }
    let d = pkt.data_mut();
    d.fill(0);
    {
        let mut eth = EthernetFrame::new_unchecked(&mut d[..]);
        eth.set_dst_addr(MacAddr::BROADCAST);
        eth.set_src_addr(our_mac);
        eth.set_ethertype(EtherType::ARP);
    }
    let mut a = arp::ArpPacket::new_unchecked(&mut d[ETH..]);
    a.fill_header();
    a.set_operation(arp::ARP_REQUEST);
    a.set_sender_hw_addr(our_mac);
    a.set_sender_ip(our_ip);
    a.set_target_hw_addr(MacAddr::ZERO);
    a.set_target_ip(target);
    true
}

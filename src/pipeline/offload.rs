//! Kernel-backed ports and checksum offload (issue 8 item 5).
//!
//! A Linux peer with tx checksum offload on (the veth default) hands packets to
//! `net_af_packet` in the CHECKSUM_PARTIAL state: the TCP/UDP checksum field holds only
//! the pseudo-header sum, the NIC being expected to finish it. af_packet reports nothing
//! about it (DPDK 22.11 sets no `RTE_MBUF_F_RX_L4_CKSUM_*` flag and reads no vnet
//! header), so the state cannot be told from a corrupt checksum without summing the
//! payload anyway. An incremental update (RFC 1624) of such a field stays wrong. So every
//! TCP/UDP packet (whole, not a fragment) received on an af_packet port and forwarded
//! gets its L4 checksum recomputed in full before it leaves. A UDP checksum of 0 (none)
//! stays 0. net_tap does not need this (without `TUNSETOFFLOAD` the kernel completes
//! checksums before handing frames to the tap); real NICs verify in hardware.
//!
//! GSO/GRO super-frames (a peer with TSO/GSO on forwards one skb of many segments)
//! are larger than the port's MTU, or truncated to the af_packet ring frame: both are
//! dropped at ingress and counted (`oversize_frame`, `ipv4_bad_total_length`), never
//! forwarded. Peers feeding an af_packet port need TSO/GSO off (as a real NIC never
//! delivers such frames); checksum offload may stay on.

use crate::wire::{Ipv4Packet, TcpPacket, UdpPacket, IPPROTO_TCP, IPPROTO_UDP};

const ETH: usize = 14;

/// Is `device` (a port's config device string) a kernel-backed port whose received L4
/// checksums may be partial?
pub fn untrusted_l4_checksum(device: &str) -> bool {
    let name = device.split(',').next().unwrap_or("");
    name.starts_with("net_af_packet") || name.starts_with("eth_af_packet")
}

/// Recompute the TCP or UDP checksum of the IPv4 packet in `frame` (Ethernet at 0) in
/// full. Fragments and other protocols are left alone.
#[inline]
pub fn refresh_l4_checksum(frame: &mut [u8]) {
    let Some(d) = frame.get_mut(ETH..) else {
        return;
    };
    let Ok(mut ip) = Ipv4Packet::new_checked(d) else {
        return;
    };
    if ip.is_fragment() {
        return;
    }
    let (src, dst, proto) = (ip.src_addr(), ip.dst_addr(), ip.protocol());
    let l4 = ip.payload_mut();
    match proto {
        IPPROTO_TCP if l4.len() >= 20 => TcpPacket::new_unchecked(l4).fill_checksum(src, dst),
        IPPROTO_UDP => {
            if let Ok(mut u) = UdpPacket::new_checked(l4) {
                if u.checksum() != 0 {
                    u.fill_checksum(src, dst);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::checksum;
    use std::net::Ipv4Addr;

    /// An Ethernet + IPv4 + UDP frame whose checksum field holds what a Linux sender with
    /// tx checksum offload leaves there: the folded pseudo-header sum only.
    fn partial_udp(frag: bool) -> Vec<u8> {
        let (src, dst) = (Ipv4Addr::new(10, 0, 1, 2), Ipv4Addr::new(203, 0, 113, 10));
        let mut v = vec![0u8; 14 + 20 + 8 + 33];
        v[12..14].copy_from_slice(&[8, 0]);
        for (i, b) in v[42..].iter_mut().enumerate() {
            *b = (i * 7) as u8;
        }
        let mut ip = Ipv4Packet::new_unchecked(&mut v[14..]);
        ip.set_version_ihl(5);
        ip.set_total_len(61);
        ip.set_flags_frag(false, frag, 0);
        ip.set_ttl(64);
        ip.set_protocol(IPPROTO_UDP);
        ip.set_src_addr(src);
        ip.set_dst_addr(dst);
        ip.fill_checksum();
        let mut u = UdpPacket::new_unchecked(ip.payload_mut());
        u.set_src_port(5000);
        u.set_dst_port(3478);
        u.set_len(41);
        u.set_checksum(checksum::fold(checksum::pseudo_header_sum(
            src,
            dst,
            IPPROTO_UDP,
            41,
        )));
        v
    }

    fn udp_ok(f: &[u8]) -> bool {
        let ip = Ipv4Packet::new_unchecked(&f[14..]);
        UdpPacket::new_unchecked(ip.payload()).verify_checksum(ip.src_addr(), ip.dst_addr())
    }

    #[test]
    fn partial_checksums_are_completed_and_zero_stays_zero() {
        let mut f = partial_udp(false);
        assert!(!udp_ok(&f));
        refresh_l4_checksum(&mut f);
        assert!(udp_ok(&f));
        let mut z = partial_udp(false);
        z[14 + 20 + 6..14 + 20 + 8].copy_from_slice(&[0, 0]);
        refresh_l4_checksum(&mut z);
        assert_eq!(&z[40..42], &[0, 0]);
        let mut fr = partial_udp(true);
        let before = fr.clone();
        refresh_l4_checksum(&mut fr);
        assert_eq!(fr, before, "fragments are left alone");
    }

    #[test]
    fn only_af_packet_ports_are_untrusted() {
        assert!(untrusted_l4_checksum(
            "net_af_packet0,iface=veth1,framesz=10240"
        ));
        assert!(!untrusted_l4_checksum("net_tap0,iface=fg0"));
        assert!(!untrusted_l4_checksum("0000:00:06.0"));
    }
}

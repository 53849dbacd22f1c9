//! Outside -> inside: return traffic to a public IP, matched by the outside 5-tuple.

use super::flow::{st, Key};
use super::icmp_error::{self, Side};
use super::{split_l3_l4, tcp_state, udp_ports, Ip, NatVerdict, NatWorker};
use crate::packet::PacketBuf;
use crate::pipeline::counters::DropReason;
use crate::wire::icmp::{ECHO_REPLY, HEADER_LEN as ICMP_HDR};
use crate::wire::{
    IcmpPacket, Ipv4Packet, TcpPacket, UdpPacket, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP,
};

impl NatWorker {
    pub(super) fn out2in<B: PacketBuf>(
        &mut self,
        gi: usize,
        pkt: &mut B,
        ip: &Ip,
        t: u32,
    ) -> NatVerdict {
        // Ownership first: the packet is handed over untouched and counted by its owner.
        if let Some(owner) = self.return_owner(gi, pkt.data(), ip) {
            if owner != self.worker {
                if ip.more && ip.proto == IPPROTO_UDP {
                    // A first fragment: its later fragments (no ports) follow it.
                    self.remember_forward(gi, ip, Side::Dst, owner, t);
                }
                return NatVerdict::Handoff(owner);
            }
        }
        if ip.is_later_fragment() && ip.proto == IPPROTO_UDP {
            if let Some(owner) = self.later_fragment_owner(gi, ip, Side::Dst, t) {
                return NatVerdict::Handoff(owner);
            }
        }
        if let Some(c) = self.counters.get_mut(gi) {
            c.packets_in_from_destination += 1;
            c.bytes_in_from_destination += ip.len as u64;
        }
        if let Err(r) = self.limit_packet(gi) {
            return self.drop(gi, r);
        }
        let v = if ip.is_fragment() && ip.proto != IPPROTO_UDP {
            Err(DropReason::NatFragmentNotAllowed)
        } else if ip.is_later_fragment() {
            self.later_fragment(gi, pkt, ip, t, Side::Dst)
        } else {
            match ip.proto {
                IPPROTO_TCP => self.out2in_tcp(gi, pkt, ip, t),
                IPPROTO_UDP => self.out2in_udp(gi, pkt, ip, t),
                IPPROTO_ICMP => self.out2in_icmp(gi, pkt, ip, t),
                _ => Err(DropReason::NatUnsupportedProtocol),
            }
        };
        match v {
            Ok(NatVerdict::Translated) => {
                if let Some(c) = self.counters.get_mut(gi) {
                    c.packets_out_to_source += 1;
                    c.bytes_out_to_source += ip.len as u64;
                }
                NatVerdict::Translated
            }
            Ok(v) => v,
            Err(r) => self.drop(gi, r),
        }
    }

    /// The worker owning this return packet, when it is known and there are several
    /// workers. Handoff mode: the public port's (ICMP identifier's) slice owner.
    /// Steered mode (TCP/UDP): the NIC already delivered direct traffic to the owner; an
    /// ICMP error quoting a TCP/UDP flow is hashed by the NIC on its outer 2-tuple, so its
    /// owner is found by hashing the quoted flow's return 5-tuple as the NIC would.
    fn return_owner(&self, gi: usize, frame: &[u8], ip: &Ip) -> Option<usize> {
        if self.n_workers < 2 || ip.is_later_fragment() {
            return None;
        }
        let ports = &self.gws.get(gi)?.ports;
        let l4 = frame.get(14 + ip.hl..14 + ip.len)?;
        match ip.proto {
            IPPROTO_TCP | IPPROTO_UDP if ports.steered() => None,
            // TCP and UDP headers both start with the two ports.
            IPPROTO_TCP | IPPROTO_UDP if l4.len() >= 4 => {
                ports.owner_of(UdpPacket::new_unchecked(l4).dst_port())
            }
            IPPROTO_ICMP => {
                let icmp = IcmpPacket::new_checked(l4).ok()?;
                let ty = icmp.msg_type();
                if ty == ECHO_REPLY {
                    ports.owner_of(icmp.echo_ident())
                } else if icmp_error::is_translated_error(ty) {
                    let q = icmp_error::parse(l4).ok()?;
                    match (&self.steering, q.proto) {
                        (Some(s), IPPROTO_TCP | IPPROTO_UDP) if ports.steered() => {
                            s.owner(q.dst, q.dport, q.src, q.sport)
                        }
                        _ => ports.owner_of(q.sport),
                    }
                } else {
                    None
                }
            }
            _ => None,
        }
    }

    fn out2in_tcp<B: PacketBuf>(
        &mut self,
        gi: usize,
        pkt: &mut B,
        ip: &Ip,
        t: u32,
    ) -> Result<NatVerdict, DropReason> {
        let (sport, dport, seg) = {
            let l4 = pkt.data().get(14 + ip.hl..14 + ip.len).unwrap_or(&[]);
            let tcp = TcpPacket::new_unchecked(l4);
            (tcp.src_port(), tcp.dst_port(), tcp_state::Seg::parse(l4))
        };
        let key = Key::new(IPPROTO_TCP, ip.dst, dport, ip.src, sport);
        let idx = match self.lookup_out(gi, &key, t) {
            Some(idx) => idx,
            // rfc4787 mode: a SYN from a permitted remote opens a flow on the mapping.
            None => self.inbound_new(
                gi,
                &key,
                seg.flags & (tcp::SYN | tcp::ACK | tcp::RST | tcp::FIN) == tcp::SYN,
                tcp_state::SYN_SENT_IN,
                t,
            )?,
        };
        self.track_tcp(gi, idx, &seg, false)?;
        self.touch(gi, idx, t);
        self.translate(gi, idx, pkt, ip, Side::Dst)
    }

    fn out2in_udp<B: PacketBuf>(
        &mut self,
        gi: usize,
        pkt: &mut B,
        ip: &Ip,
        t: u32,
    ) -> Result<NatVerdict, DropReason> {
        let (sport, dport) = udp_ports(pkt.data(), ip);
        let key = Key::new(IPPROTO_UDP, ip.dst, dport, ip.src, sport);
        let idx = match self.lookup_out(gi, &key, t) {
            Some(idx) => idx,
            None => self.inbound_new(gi, &key, true, 0, t)?,
        };
        self.first_reply(gi, idx);
        self.touch(gi, idx, t);
        if ip.more {
            let f = self.flow(gi, idx).ok_or(DropReason::NatNoMapping)?;
            self.remember_first_fragment(gi, ip, Side::Dst, f.inside_ip, t);
        }
        self.translate(gi, idx, pkt, ip, Side::Dst)
    }

    fn out2in_icmp<B: PacketBuf>(
        &mut self,
        gi: usize,
        pkt: &mut B,
        ip: &Ip,
        t: u32,
    ) -> Result<NatVerdict, DropReason> {
        let msg = pkt.data().get(14 + ip.hl..14 + ip.len).unwrap_or(&[]);
        if msg.len() < ICMP_HDR {
            return Err(DropReason::NatUnsupportedProtocol);
        }
        let icmp = IcmpPacket::new_unchecked(msg);
        let ty = icmp.msg_type();
        if icmp_error::is_translated_error(ty) {
            return self.out2in_icmp_error(gi, pkt, ip, t);
        }
        if ty != ECHO_REPLY {
            // Echo requests to a public IP and anything else: unsolicited.
            return Err(DropReason::NatNoMapping);
        }
        let key = Key::new(IPPROTO_ICMP, ip.dst, icmp.echo_ident(), ip.src, 0);
        let idx = match self.lookup_out(gi, &key, t) {
            Some(idx) => idx,
            // rfc4787 mode: only tells a filtered reply from an unmapped one.
            None => self.inbound_new(gi, &key, false, 0, t)?,
        };
        self.first_reply(gi, idx);
        self.touch(gi, idx, t);
        self.translate(gi, idx, pkt, ip, Side::Dst)
    }

    /// An error about a packet that left through the NAT: the quoted source is the public
    /// endpoint; it becomes the inside endpoint again, and so does the outer destination.
    fn out2in_icmp_error<B: PacketBuf>(
        &mut self,
        gi: usize,
        pkt: &mut B,
        ip: &Ip,
        t: u32,
    ) -> Result<NatVerdict, DropReason> {
        let msg = pkt.data().get(14 + ip.hl..14 + ip.len).unwrap_or(&[]);
        let q = icmp_error::parse(msg)?;
        if q.src != ip.dst {
            return Err(DropReason::NatIcmpErrorNoMapping);
        }
        let key = Key::new(q.proto, q.src, q.sport, q.dst, q.dport);
        let idx = self
            .lookup_out(gi, &key, t)
            .ok_or(DropReason::NatIcmpErrorNoMapping)?;
        let f = self
            .flow(gi, idx)
            .ok_or(DropReason::NatIcmpErrorNoMapping)?;
        let (hdr, msg) =
            split_l3_l4(pkt.data_mut(), ip).ok_or(DropReason::NatIcmpErrorMalformed)?;
        icmp_error::rewrite(msg, &q, Side::Src, f.inside(), f.inside_port);
        Ipv4Packet::new_unchecked(hdr).rewrite_dst(f.inside());
        Ok(NatVerdict::Translated)
    }

    /// UDP/ICMP: the first packet back counts the connection as established.
    fn first_reply(&mut self, gi: usize, idx: u32) {
        let mut first = false;
        if let Some(f) = self.flow_mut(gi, idx) {
            first = f.state & st::SEEN_REPLY == 0;
            f.state |= st::SEEN_REPLY;
        }
        if first {
            if let Some(c) = self.counters.get_mut(gi) {
                c.connections_established += 1;
            }
        }
    }
}

use crate::wire::tcp;

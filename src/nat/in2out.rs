//! Inside -> outside: source NAT, flow creation, and the TCP RST for unknown connections.

use super::flow::{st, Key};
use super::icmp_error::{self, Side};
use super::{split_l3_l4, tcp_state, udp_ports, Ip, NatVerdict, NatWorker};
use crate::packet::PacketBuf;
use crate::pipeline::counters::DropReason;
use crate::pipeline::rst::make_rst;
use crate::wire::icmp::{ECHO_REQUEST, HEADER_LEN as ICMP_HDR};
use crate::wire::tcp::{ACK, RST, SYN};
use crate::wire::{IcmpPacket, Ipv4Packet, TcpPacket, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP};

impl NatWorker {
    pub(super) fn in2out<B: PacketBuf>(
        &mut self,
        gi: usize,
        pkt: &mut B,
        ip: &Ip,
        t: u32,
    ) -> NatVerdict {
        // rfc4787 mode: the inside IP's owner holds its mappings; handed over untouched.
        if let Some(owner) = self.inside_handoff(gi, ip.src) {
            return NatVerdict::Handoff(owner);
        }
        // aws mode, several workers: one worker per inside UDP 5-tuple (fragments too).
        if ip.proto == IPPROTO_UDP {
            if let Some(owner) = self.udp_outbound_owner(gi, pkt.data(), ip, t) {
                return NatVerdict::Handoff(owner);
            }
        }
        if let Some(c) = self.counters.get_mut(gi) {
            c.packets_in_from_source += 1;
            c.bytes_in_from_source += ip.len as u64;
        }
        if let Err(r) = self.limit_packet(gi) {
            return self.drop(gi, r);
        }
        if ip.is_fragment() && ip.proto != IPPROTO_UDP {
            // Only UDP fragments are tracked (AWS drops TCP and ICMP fragments).
            return self.drop(gi, DropReason::NatFragmentNotAllowed);
        }
        let v = if ip.is_later_fragment() {
            self.later_fragment(gi, pkt, ip, t, Side::Src)
        } else {
            match ip.proto {
                IPPROTO_TCP => self.in2out_tcp(gi, pkt, ip, t),
                IPPROTO_UDP => self.in2out_udp(gi, pkt, ip, t),
                IPPROTO_ICMP => self.in2out_icmp(gi, pkt, ip, t),
                _ => Err(DropReason::NatUnsupportedProtocol),
            }
        };
        match v {
            Ok(NatVerdict::Translated) => {
                if let Some(c) = self.counters.get_mut(gi) {
                    c.packets_out_to_destination += 1;
                    c.bytes_out_to_destination += ip.len as u64;
                }
                NatVerdict::Translated
            }
            Ok(v) => v,
            Err(r) => self.drop(gi, r),
        }
    }

    fn in2out_tcp<B: PacketBuf>(
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
        let flags = seg.flags;
        let key = Key::new(IPPROTO_TCP, ip.src, sport, ip.dst, dport);
        let idx = match self.lookup_in(gi, &key, t) {
            Some(idx) => idx,
            None => {
                if flags & RST != 0 {
                    return Err(DropReason::NatNoMapping);
                }
                if flags & (SYN | ACK) != SYN {
                    // No mapping (idle timeout, or never had one): tell the host the
                    // connection is gone, as AWS does.
                    if make_rst(pkt, ip.hl, ip.len, ip.src, ip.dst) {
                        if let Some(c) = self.counters.get_mut(gi) {
                            c.drop(DropReason::NatIdleTimeoutRst);
                        }
                        return Ok(NatVerdict::Respond);
                    }
                    return Err(DropReason::NatNoMapping);
                }
                let idx = self.create(
                    gi,
                    IPPROTO_TCP,
                    (ip.src, sport),
                    (ip.dst, dport),
                    tcp_state::SYN_SENT,
                    t,
                )?;
                self.track_tcp(gi, idx, &seg, true)?;
                self.replicate(gi, idx, crate::repl::EV_ADD);
                return self.translate(gi, idx, pkt, ip, Side::Src);
            }
        };
        let f = self.flow(gi, idx).ok_or(DropReason::NatNoMapping)?;
        if flags & (SYN | ACK) == SYN && tcp_state::reopenable(f.state & st::TCP_MASK) {
            // The host reuses the 5-tuple (after TIME_WAIT): a new connection on the mapping.
            self.reopen_tcp(gi, idx);
        }
        self.track_tcp(gi, idx, &seg, true)?;
        self.outbound_seen(gi, idx);
        self.touch(gi, idx, t);
        self.translate(gi, idx, pkt, ip, Side::Src)
    }

    fn in2out_udp<B: PacketBuf>(
        &mut self,
        gi: usize,
        pkt: &mut B,
        ip: &Ip,
        t: u32,
    ) -> Result<NatVerdict, DropReason> {
        let (sport, dport) = udp_ports(pkt.data(), ip);
        let key = Key::new(IPPROTO_UDP, ip.src, sport, ip.dst, dport);
        let idx = match self.lookup_in(gi, &key, t) {
            Some(idx) => {
                self.touch(gi, idx, t);
                self.outbound_seen(gi, idx);
                idx
            }
            None => {
                let idx = self.create(gi, IPPROTO_UDP, (ip.src, sport), (ip.dst, dport), 0, t)?;
                self.replicate(gi, idx, crate::repl::EV_ADD);
                idx
            }
        };
        if ip.more {
            // First fragment of a datagram: later fragments follow this mapping.
            let f = self.flow(gi, idx).ok_or(DropReason::NatNoMapping)?;
            self.remember_first_fragment(gi, ip, Side::Src, f.public_ip, t);
        }
        self.translate(gi, idx, pkt, ip, Side::Src)
    }

    fn in2out_icmp<B: PacketBuf>(
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
            return self.in2out_icmp_error(gi, pkt, ip, t);
        }
        if ty != ECHO_REQUEST {
            return Err(DropReason::NatUnsupportedProtocol);
        }
        let id = icmp.echo_ident();
        let key = Key::new(IPPROTO_ICMP, ip.src, id, ip.dst, 0);
        let idx = match self.lookup_in(gi, &key, t) {
            Some(idx) => {
                self.touch(gi, idx, t);
                idx
            }
            None => {
                let idx = self.create(gi, IPPROTO_ICMP, (ip.src, id), (ip.dst, 0), 0, t)?;
                self.replicate(gi, idx, crate::repl::EV_ADD);
                idx
            }
        };
        self.translate(gi, idx, pkt, ip, Side::Src)
    }

    /// An error from an inside host about a packet that came in through the NAT (e.g. port
    /// unreachable for a UDP reply): the quoted destination is the inside endpoint and
    /// becomes the public one again.
    fn in2out_icmp_error<B: PacketBuf>(
        &mut self,
        gi: usize,
        pkt: &mut B,
        ip: &Ip,
        t: u32,
    ) -> Result<NatVerdict, DropReason> {
        let msg = pkt.data().get(14 + ip.hl..14 + ip.len).unwrap_or(&[]);
        let q = icmp_error::parse(msg)?;
        if q.dst != ip.src || q.proto == IPPROTO_ICMP {
            return Err(DropReason::NatIcmpErrorNoMapping);
        }
        let key = Key::new(q.proto, q.dst, q.dport, q.src, q.sport);
        let idx = self
            .lookup_in(gi, &key, t)
            .ok_or(DropReason::NatIcmpErrorNoMapping)?;
        let f = self
            .flow(gi, idx)
            .ok_or(DropReason::NatIcmpErrorNoMapping)?;
        let (hdr, msg) =
            split_l3_l4(pkt.data_mut(), ip).ok_or(DropReason::NatIcmpErrorMalformed)?;
        icmp_error::rewrite(msg, &q, Side::Dst, f.public(), f.public_port);
        Ipv4Packet::new_unchecked(hdr).rewrite_src(f.public());
        Ok(NatVerdict::Translated)
    }
}

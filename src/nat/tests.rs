//! NatWorker unit tests over `VecBuf` frames built with the wire views.

use super::*;
use crate::config::{NatPortRange, NatTimeouts};
use crate::packet::VecBuf;
use crate::wire::tcp::{ACK, FIN, RST, SYN};
use crate::wire::{checksum, EthernetFrame, IcmpPacket, Ipv4Packet, TcpPacket, UdpPacket};

pub(super) const HZ: u64 = 1_000_000;
pub(super) const IN1: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 5);
pub(super) const IN2: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 6);
pub(super) const REMOTE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
pub(super) const REMOTE2: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 8);
pub(super) const ROUTER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
pub(super) const PUB0: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
pub(super) const PUB1: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 11);

pub(super) fn s(secs: u64) -> u64 {
    secs * HZ
}

pub(super) fn gw(
    first: u32,
    last: u32,
    limit: Option<u32>,
    flows: u32,
    ips: &[Ipv4Addr],
) -> NatGatewayConfig {
    NatGatewayConfig {
        id: "t".into(),
        inside_prefixes: vec!["10.0.1.0/24".parse().unwrap()],
        public_ips: ips.to_vec(),
        port_range: NatPortRange { first, last },
        max_connections_per_destination: limit,
        timeouts: NatTimeouts {
            tcp_established_s: 30,
            tcp_transitory_s: 5,
            udp_s: 10,
            icmp_s: 5,
        },
        flows_per_core: flows,
        tcp_flows_per_core: None,
        mode: NatMode::Aws,
        tcp_time_wait_guard_s: 120,
        inside_ports: None,
        drop_foreign_inside_sources: true,
        no_translate: Vec::new(),
        limits: Default::default(),
        drain_timeout_s: 300,
    }
}

pub(super) fn worker(g: NatGatewayConfig) -> NatWorker {
    NatWorker::new(&[g], 0, 1, HZ)
}

pub(super) fn default_worker() -> NatWorker {
    worker(gw(1024, 65535, None, 100_000, &[PUB0]))
}

/// Ethernet + IPv4 (20 bytes) around `l4`, IP checksum filled.
pub(super) fn ip_frame(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    l4: &[u8],
    ident: u16,
    more: bool,
    off: u16,
) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20 + l4.len()];
    {
        let mut e = EthernetFrame::new_unchecked(&mut f[..]);
        e.set_dst_addr(crate::wire::MacAddr::new(2, 0, 0, 0, 0, 1));
        e.set_src_addr(crate::wire::MacAddr::new(2, 0, 0, 0, 0, 2));
        e.set_ethertype(0x0800);
    }
    {
        let mut ip = Ipv4Packet::new_unchecked(&mut f[14..]);
        ip.set_version_ihl(5);
        ip.set_total_len((20 + l4.len()) as u16);
        ip.set_ident(ident);
        ip.set_flags_frag(false, more, off);
        ip.set_ttl(64);
        ip.set_protocol(proto);
        ip.set_src_addr(src);
        ip.set_dst_addr(dst);
        ip.fill_checksum();
    }
    f[34..].copy_from_slice(l4);
    f
}

#[allow(clippy::too_many_arguments)]
pub(super) fn tcp_seg(
    src: Ipv4Addr,
    sp: u16,
    dst: Ipv4Addr,
    dp: u16,
    flags: u8,
    seq: u32,
    ack: u32,
    payload: &[u8],
) -> Vec<u8> {
    let mut l4 = vec![0u8; 20 + payload.len()];
    l4[20..].copy_from_slice(payload);
    let mut t = TcpPacket::new_unchecked(&mut l4[..]);
    t.set_src_port(sp);
    t.set_dst_port(dp);
    t.set_seq_number(seq);
    t.set_ack_number(ack);
    t.set_header_len(20);
    t.set_flags(flags);
    t.set_window(65535);
    t.fill_checksum(src, dst);
    l4
}

pub(super) fn tcp(
    src: Ipv4Addr,
    sp: u16,
    dst: Ipv4Addr,
    dp: u16,
    flags: u8,
    seq: u32,
    ack: u32,
) -> VecBuf {
    VecBuf::from_frame(&ip_frame(
        src,
        dst,
        6,
        &tcp_seg(src, sp, dst, dp, flags, seq, ack, b"hello"),
        1,
        false,
        0,
    ))
}

pub(super) fn udp_dgram(
    src: Ipv4Addr,
    sp: u16,
    dst: Ipv4Addr,
    dp: u16,
    payload: &[u8],
    csum: bool,
) -> Vec<u8> {
    let mut l4 = vec![0u8; 8 + payload.len()];
    l4[8..].copy_from_slice(payload);
    let mut u = UdpPacket::new_unchecked(&mut l4[..]);
    u.set_src_port(sp);
    u.set_dst_port(dp);
    u.set_len((8 + payload.len()) as u16);
    if csum {
        u.fill_checksum(src, dst);
    }
    l4
}

pub(super) fn udp(src: Ipv4Addr, sp: u16, dst: Ipv4Addr, dp: u16) -> VecBuf {
    VecBuf::from_frame(&ip_frame(
        src,
        dst,
        17,
        &udp_dgram(src, sp, dst, dp, b"ping!", true),
        1,
        false,
        0,
    ))
}

pub(super) fn icmp_msg(ty: u8, code: u8, rest: u32, data: &[u8]) -> Vec<u8> {
    let mut m = vec![0u8; 8 + data.len()];
    m[8..].copy_from_slice(data);
    let mut i = IcmpPacket::new_unchecked(&mut m[..]);
    i.set_msg_type(ty);
    i.set_msg_code(code);
    i.set_rest_of_header(rest);
    i.fill_checksum();
    m
}

pub(super) fn echo(src: Ipv4Addr, dst: Ipv4Addr, ty: u8, id: u16) -> VecBuf {
    VecBuf::from_frame(&ip_frame(
        src,
        dst,
        1,
        &icmp_msg(ty, 0, u32::from(id) << 16 | 1, b"abcdefgh"),
        1,
        false,
        0,
    ))
}

/// Addresses, ports (or echo id) of a frame, asserting every checksum is valid.
pub(super) fn check(b: &VecBuf) -> (Ipv4Addr, u16, Ipv4Addr, u16) {
    let ip = Ipv4Packet::new_checked(&b.data()[14..]).unwrap();
    assert!(ip.verify_checksum(), "ip checksum");
    let (s, d) = (ip.src_addr(), ip.dst_addr());
    let l4 = ip.payload();
    match ip.protocol() {
        6 => {
            let t = TcpPacket::new_checked(l4).unwrap();
            assert!(t.verify_checksum(s, d), "tcp checksum");
            (s, t.src_port(), d, t.dst_port())
        }
        17 => {
            let u = UdpPacket::new_checked(l4).unwrap();
            assert!(u.verify_checksum(s, d), "udp checksum");
            (s, u.src_port(), d, u.dst_port())
        }
        _ => {
            let i = IcmpPacket::new_checked(l4).unwrap();
            assert!(i.verify_checksum(), "icmp checksum");
            (s, i.echo_ident(), d, 0)
        }
    }
}

pub(super) fn out_port(w: &mut NatWorker, mut b: VecBuf, now: u64) -> (Ipv4Addr, u16) {
    assert_eq!(w.process(&mut b, now), NatVerdict::Translated);
    let (s, p, _, _) = check(&b);
    (s, p)
}

#[test]
fn in2out_and_out2in_tcp_udp_with_valid_checksums() {
    let mut w = default_worker();
    let mut b = tcp(IN1, 40000, REMOTE, 80, SYN, 1000, 0);
    assert_eq!(w.process(&mut b, 0), NatVerdict::Translated);
    let (s, sp, d, dp) = check(&b);
    assert_eq!((s, d, dp), (PUB0, REMOTE, 80));
    assert!((1024..=65535).contains(&sp));
    // Reply.
    let mut r = tcp(REMOTE, 80, PUB0, sp, SYN | ACK, 5000, 1001);
    assert_eq!(w.process(&mut r, 1), NatVerdict::Translated);
    assert_eq!(check(&r), (REMOTE, 80, IN1, 40000));
    // UDP.
    let (s, up) = out_port(&mut w, udp(IN1, 5353, REMOTE, 53), 2);
    assert_eq!(s, PUB0);
    let mut r = udp(REMOTE, 53, PUB0, up);
    assert_eq!(w.process(&mut r, 3), NatVerdict::Translated);
    assert_eq!(check(&r), (REMOTE, 53, IN1, 5353));
    assert_eq!(w.flows(), 2);
    let c = &w.counters()[0];
    assert_eq!(c.active_connections, 2);
    assert_eq!(c.connection_attempts, 2);
    assert_eq!(c.packets_out_to_destination, 2);
    assert_eq!(c.packets_out_to_source, 2);
    assert_eq!(c.connections_established, 1, "UDP reply; TCP not yet ACKed");
    // Not NAT traffic.
    let mut other = udp(Ipv4Addr::new(192, 168, 9, 9), 1, REMOTE, 2);
    assert_eq!(w.process(&mut other, 4), NatVerdict::Pass);
}

#[test]
fn udp_zero_checksum_stays_zero() {
    let mut w = default_worker();
    let mut b = VecBuf::from_frame(&ip_frame(
        IN1,
        REMOTE,
        17,
        &udp_dgram(IN1, 7, REMOTE, 9, b"x", false),
        1,
        false,
        0,
    ));
    assert_eq!(w.process(&mut b, 0), NatVerdict::Translated);
    let (_, p, _, _) = check(&b);
    assert_eq!(UdpPacket::new_unchecked(&b.data()[34..]).checksum(), 0);
    let mut r = VecBuf::from_frame(&ip_frame(
        REMOTE,
        PUB0,
        17,
        &udp_dgram(REMOTE, 9, PUB0, p, b"y", false),
        1,
        false,
        0,
    ));
    assert_eq!(w.process(&mut r, 0), NatVerdict::Translated);
    assert_eq!(UdpPacket::new_unchecked(&r.data()[34..]).checksum(), 0);
}

#[test]
fn unsolicited_inbound_dropped() {
    let mut w = default_worker();
    let mut b = tcp(REMOTE, 80, PUB0, 5555, SYN, 1, 0);
    assert_eq!(
        w.process(&mut b, 0),
        NatVerdict::Drop(DropReason::NatNoMapping)
    );
    assert_eq!(w.counters()[0].dropped(DropReason::NatNoMapping), 1);
    let mut p = echo(REMOTE, PUB0, 8, 1);
    assert_eq!(
        w.process(&mut p, 0),
        NatVerdict::Drop(DropReason::NatNoMapping)
    );
    let mut gre = VecBuf::from_frame(&ip_frame(IN1, REMOTE, 47, &[0; 8], 1, false, 0));
    assert_eq!(
        w.process(&mut gre, 0),
        NatVerdict::Drop(DropReason::NatUnsupportedProtocol)
    );
}

#[test]
fn ten_thousand_flows_to_one_remote_get_distinct_random_ports() {
    let mut w = default_worker();
    let mut ports = Vec::new();
    for i in 0..10_000u32 {
        let sp = 10_000 + (i % 50_000) as u16;
        let src = Ipv4Addr::from(u32::from(IN1) + i / 50_000);
        let (_, p) = out_port(&mut w, tcp(src, sp, REMOTE, 443, SYN, i, 0), 0);
        ports.push(p);
    }
    let set: std::collections::HashSet<u16> = ports.iter().copied().collect();
    assert_eq!(set.len(), 10_000, "all distinct");
    let sequential = ports
        .windows(2)
        .filter(|p| p[1] == p[0].wrapping_add(1))
        .count();
    assert!(sequential < 100, "{sequential} sequential pairs");
    // The same public port toward another remote is fine (port overloading): fill a
    // second destination and check some ports coincide.
    let mut other = std::collections::HashSet::new();
    for i in 0..10_000u32 {
        let (_, p) = out_port(
            &mut w,
            tcp(IN2, 10_000 + i as u16, REMOTE2, 443, SYN, i, 0),
            0,
        );
        other.insert(p);
    }
    assert!(
        set.intersection(&other).count() > 100,
        "ports reused toward another remote"
    );
}

#[test]
fn exhaustion_with_a_tiny_range() {
    let mut w = worker(gw(2000, 2003, None, 1000, &[PUB0]));
    let mut got = Vec::new();
    for i in 0..4 {
        got.push(out_port(&mut w, tcp(IN1, 40000 + i, REMOTE, 80, SYN, 1, 0), 0).1);
    }
    got.sort();
    assert_eq!(got, vec![2000, 2001, 2002, 2003]);
    let mut b = tcp(IN1, 40010, REMOTE, 80, SYN, 1, 0);
    assert_eq!(
        w.process(&mut b, 0),
        NatVerdict::Drop(DropReason::NatPortExhausted)
    );
    assert_eq!(w.counters()[0].port_allocation_errors, 1);
    // Earlier flows still translate; another remote port still works.
    out_port(&mut w, tcp(IN1, 40000, REMOTE, 80, SYN, 1, 0), 1);
    out_port(&mut w, tcp(IN1, 40010, REMOTE, 81, SYN, 1, 0), 1);
    assert_eq!(w.flows(), 5);
}

#[test]
fn per_destination_limit_then_second_public_ip() {
    let mut w = worker(gw(2000, 2099, Some(3), 1000, &[PUB0, PUB1]));
    let mut per_ip = [0; 2];
    for i in 0..6 {
        let (ip, _) = out_port(&mut w, udp(IN1, 100 + i, REMOTE, 53), 0);
        per_ip[usize::from(ip == PUB1)] += 1;
    }
    assert_eq!(per_ip, [3, 3]);
    let mut b = udp(IN1, 200, REMOTE, 53);
    assert_eq!(
        w.process(&mut b, 0),
        NatVerdict::Drop(DropReason::NatPortExhausted)
    );
    out_port(&mut w, udp(IN1, 200, REMOTE, 54), 0);
}

#[test]
fn two_workers_disjoint_slices_and_handoff() {
    let g = gw(1024, 65535, None, 10_000, &[PUB0]);
    let mut w0 = NatWorker::new(std::slice::from_ref(&g), 0, 2, HZ);
    let mut w1 = NatWorker::new(std::slice::from_ref(&g), 1, 2, HZ);
    let mut p0 = std::collections::HashSet::new();
    for i in 0..500 {
        // TCP: outbound UDP has a designated worker per 5-tuple (see tests_hardening).
        let (_, p) = out_port(&mut w0, tcp(IN1, 1000 + i, REMOTE, 80, SYN, 1, 0), 0);
        assert_eq!(w0.owner_of(0, PUB0, p), 0);
        assert_eq!(w1.owner_of(0, PUB0, p), 0);
        p0.insert(p);
        let (_, q) = out_port(&mut w1, tcp(IN2, 1000 + i, REMOTE, 80, SYN, 1, 0), 0);
        assert_eq!(w0.owner_of(0, PUB0, q), 1);
        assert!(!p0.contains(&q));
    }
    let p = *p0.iter().next().unwrap();
    let mut r = tcp(REMOTE, 80, PUB0, p, SYN | ACK, 7000, 2);
    let before = r.clone();
    assert_eq!(w1.process(&mut r, 0), NatVerdict::Handoff(0));
    assert_eq!(r, before, "handed over unchanged");
    assert_eq!(w0.process(&mut r, 0), NatVerdict::Translated);
}

#[test]
fn tcp_states_and_idle_timeout_rst() {
    let mut w = default_worker();
    let (_, p) = out_port(&mut w, tcp(IN1, 40000, REMOTE, 80, SYN, 1000, 0), 0);
    let mut r = tcp(REMOTE, 80, PUB0, p, SYN | ACK, 7000, 1001);
    assert_eq!(w.process(&mut r, 0), NatVerdict::Translated);
    out_port(&mut w, tcp(IN1, 40000, REMOTE, 80, ACK, 1001, 7001), 0);
    assert_eq!(w.counters()[0].connections_established, 1);
    // Established: 30 s timeout, so still alive after 20 s (transitory would be 5 s).
    out_port(&mut w, tcp(IN1, 40000, REMOTE, 80, ACK, 1006, 7001), s(20));
    // Obviously wrong sequence number from outside: dropped.
    let mut bad = tcp(REMOTE, 80, PUB0, p, ACK, 7001 + (1 << 31), 1006);
    assert_eq!(
        w.process(&mut bad, s(21)),
        NatVerdict::Drop(DropReason::NatTcpOutOfWindow)
    );
    // Idle past 30 s: expire() removes it silently.
    for i in 0..2000 {
        w.expire(s(51) + i);
    }
    assert_eq!(w.flows(), 0);
    assert_eq!(w.counters()[0].idle_timeouts, 1);
    assert_eq!(w.counters()[0].active_connections, 0);
    // The next inside packet gets a RST from the remote.
    let mut b = tcp(IN1, 40000, REMOTE, 80, ACK | 0x08, 1011, 7001);
    assert_eq!(w.process(&mut b, s(52)), NatVerdict::Respond);
    let (s_, sp, d, dp) = check(&b);
    assert_eq!((s_, sp, d, dp), (REMOTE, 80, IN1, 40000));
    assert_eq!(b.len(), 54);
    let t = TcpPacket::new_unchecked(&b.data()[34..]);
    assert_eq!(t.flags(), RST);
    assert_eq!(t.seq_number(), 7001, "seq = the segment's ACK");
    assert_eq!(w.counters()[0].dropped(DropReason::NatIdleTimeoutRst), 1);
    // Without ACK: RST|ACK acknowledging seq + len.
    let mut b = tcp(IN1, 40001, REMOTE, 80, FIN, 500, 0);
    assert_eq!(w.process(&mut b, s(52)), NatVerdict::Respond);
    check(&b);
    let t = TcpPacket::new_unchecked(&b.data()[34..]);
    assert_eq!(
        (t.flags(), t.seq_number(), t.ack_number()),
        (RST | ACK, 0, 500 + 5 + 1)
    );
    // Never answer a RST with a RST.
    let mut b = tcp(IN1, 40002, REMOTE, 80, RST, 1, 0);
    assert_eq!(
        w.process(&mut b, s(52)),
        NatVerdict::Drop(DropReason::NatNoMapping)
    );
}

#[test]
fn fin_moves_to_transitory_timeout() {
    let mut w = default_worker();
    let (_, p) = out_port(&mut w, tcp(IN1, 40000, REMOTE, 80, SYN, 1000, 0), 0);
    let mut r = tcp(REMOTE, 80, PUB0, p, SYN | ACK, 7000, 1001);
    w.process(&mut r, 0);
    out_port(&mut w, tcp(IN1, 40000, REMOTE, 80, ACK, 1001, 7001), 0);
    out_port(
        &mut w,
        tcp(IN1, 40000, REMOTE, 80, FIN | ACK, 1001, 7001),
        s(1),
    );
    // 5 s transitory: a reply after 7 s finds nothing.
    let mut r = tcp(REMOTE, 80, PUB0, p, ACK, 7001, 1002);
    assert_eq!(
        w.process(&mut r, s(7)),
        NatVerdict::Drop(DropReason::NatNoMapping)
    );
}

#[test]
fn udp_expires_via_expire_only_with_bounded_work() {
    let mut w = default_worker();
    for i in 0..1000 {
        out_port(&mut w, udp(IN1, 1000 + i, REMOTE, 53), 0);
    }
    w.expire(s(5));
    assert_eq!(w.flows(), 1000, "not due yet");
    w.expire(s(11));
    let after_one = w.flows();
    assert!(
        after_one >= 1000 - EXPIRE_FLOW_BUDGET as usize,
        "bounded: {after_one}"
    );
    for i in 0..100 {
        w.expire(s(11) + i);
    }
    assert_eq!(w.flows(), 0);
    assert_eq!(w.counters()[0].idle_timeouts, 1000);
    // Slots are free again.
    out_port(&mut w, udp(IN1, 1000, REMOTE, 53), s(12));
}

#[test]
fn icmp_echo_identifier_translated() {
    let mut w = default_worker();
    let mut b = echo(IN1, REMOTE, 8, 0x1234);
    assert_eq!(w.process(&mut b, 0), NatVerdict::Translated);
    let (s_, id, _, _) = check(&b);
    assert_eq!(s_, PUB0);
    let mut r = echo(REMOTE, PUB0, 0, id);
    assert_eq!(w.process(&mut r, 0), NatVerdict::Translated);
    assert_eq!(check(&r), (REMOTE, 0x1234, IN1, 0));
}

/// The packet as it left the NAT, quoted in an error from `from` (full header + 8 bytes,
/// or `extra` more bytes).
pub(super) fn error_for(
    sent: &VecBuf,
    from: Ipv4Addr,
    to: Ipv4Addr,
    ty: u8,
    code: u8,
    extra: usize,
) -> VecBuf {
    let ip = &sent.data()[14..];
    let n = (20 + 8 + extra).min(ip.len());
    let m = icmp_msg(ty, code, if code == 4 { 1400 } else { 0 }, &ip[..n]);
    VecBuf::from_frame(&ip_frame(from, to, 1, &m, 9, false, 0))
}

pub(super) fn check_error(b: &VecBuf, inside: Ipv4Addr, iport: u16) {
    let ip = Ipv4Packet::new_checked(&b.data()[14..]).unwrap();
    assert!(ip.verify_checksum());
    assert_eq!(ip.dst_addr(), inside);
    let icmp = IcmpPacket::new_checked(ip.payload()).unwrap();
    assert!(icmp.verify_checksum(), "icmp checksum");
    let q = Ipv4Packet::new_quoted(icmp.data()).unwrap();
    assert!(q.verify_checksum(), "quoted ip checksum");
    assert_eq!(q.src_addr(), inside);
    let l4 = q.payload();
    assert_eq!(u16::from_be_bytes([l4[0], l4[1]]), iport);
}

#[test]
fn inbound_icmp_errors_translated_back() {
    let mut w = default_worker();
    // UDP, frag-needed, full quote: quoted UDP checksum must verify for the original.
    let mut u = udp(IN1, 5000, REMOTE, 53);
    w.process(&mut u, 0);
    let mut e = error_for(&u, ROUTER, PUB0, 3, 4, 100);
    assert_eq!(w.process(&mut e, 0), NatVerdict::Translated);
    check_error(&e, IN1, 5000);
    let icmp = &e.data()[34..];
    let quoted = &icmp[8..];
    let q = Ipv4Packet::new_quoted(quoted).unwrap();
    assert!(UdpPacket::new_checked(q.payload())
        .unwrap()
        .verify_checksum(IN1, REMOTE));
    // TCP, time exceeded, 8-byte quote.
    let mut t = tcp(IN1, 40000, REMOTE, 80, SYN, 1, 0);
    w.process(&mut t, 0);
    let mut e = error_for(&t, ROUTER, PUB0, 11, 0, 0);
    assert_eq!(w.process(&mut e, 0), NatVerdict::Translated);
    check_error(&e, IN1, 40000);
    // TCP with a long quote: the quoted TCP checksum is fixed too.
    let mut e = error_for(&t, ROUTER, PUB0, 3, 4, 100);
    assert_eq!(w.process(&mut e, 0), NatVerdict::Translated);
    let q = Ipv4Packet::new_quoted(&e.data()[34 + 8..]).unwrap();
    assert!(TcpPacket::new_checked(q.payload())
        .unwrap()
        .verify_checksum(IN1, REMOTE));
    // Quoted echo request.
    let mut p = echo(IN1, REMOTE, 8, 77);
    w.process(&mut p, 0);
    let mut e = error_for(&p, ROUTER, PUB0, 11, 0, 0);
    assert_eq!(w.process(&mut e, 0), NatVerdict::Translated);
    let icmp = IcmpPacket::new_checked(&e.data()[34..]).unwrap();
    assert!(icmp.verify_checksum());
    let q = Ipv4Packet::new_quoted(icmp.data()).unwrap();
    assert_eq!(IcmpPacket::new_unchecked(q.payload()).echo_ident(), 77);
}

#[test]
fn icmp_errors_unknown_or_malformed_dropped() {
    let mut w = default_worker();
    let mut u = udp(PUB0, 6000, REMOTE, 53); // never went through the NAT
    let mut e = error_for(&u, ROUTER, PUB0, 3, 3, 0);
    assert_eq!(
        w.process(&mut e, 0),
        NatVerdict::Drop(DropReason::NatIcmpErrorNoMapping)
    );
    w.process(&mut u, 0);
    // Bad outer checksum.
    let mut real = udp(IN1, 5000, REMOTE, 53);
    w.process(&mut real, 0);
    let mut e = error_for(&real, ROUTER, PUB0, 3, 3, 0);
    let n = e.len();
    e.data_mut()[n - 1] ^= 0xff;
    assert_eq!(
        w.process(&mut e, 0),
        NatVerdict::Drop(DropReason::NatIcmpErrorMalformed)
    );
    // Truncated quote (IP header only).
    let ipb = real.data()[14..34].to_vec();
    let m = icmp_msg(3, 3, 0, &ipb);
    let mut e = VecBuf::from_frame(&ip_frame(ROUTER, PUB0, 1, &m, 1, false, 0));
    assert_eq!(
        w.process(&mut e, 0),
        NatVerdict::Drop(DropReason::NatIcmpErrorMalformed)
    );
}

#[test]
fn inside_icmp_error_about_inbound_flow() {
    let mut w = default_worker();
    let mut u = udp(IN1, 5000, REMOTE, 53);
    w.process(&mut u, 0);
    let (_, p, _, _) = check(&u);
    let mut r = udp(REMOTE, 53, PUB0, p);
    w.process(&mut r, 0);
    // The inside host says port unreachable about the reply it got.
    let mut e = error_for(&r, IN1, REMOTE, 3, 3, 0);
    assert_eq!(w.process(&mut e, 0), NatVerdict::Translated);
    let ip = Ipv4Packet::new_checked(&e.data()[14..]).unwrap();
    assert!(ip.verify_checksum());
    assert_eq!(ip.src_addr(), PUB0);
    let icmp = IcmpPacket::new_checked(ip.payload()).unwrap();
    assert!(icmp.verify_checksum());
    let q = Ipv4Packet::new_quoted(icmp.data()).unwrap();
    assert!(q.verify_checksum());
    assert_eq!(q.dst_addr(), PUB0);
    assert_eq!(u16::from_be_bytes([q.payload()[2], q.payload()[3]]), p);
}

#[test]
fn udp_fragment_chains_both_ways_and_tcp_fragments_dropped() {
    let mut w = default_worker();
    let dgram = udp_dgram(IN1, 5000, REMOTE, 9999, &[7u8; 40], true);
    let mut f1 = VecBuf::from_frame(&ip_frame(IN1, REMOTE, 17, &dgram[..24], 0x77, true, 0));
    let mut f2 = VecBuf::from_frame(&ip_frame(IN1, REMOTE, 17, &dgram[24..], 0x77, false, 24));
    assert_eq!(w.process(&mut f1, 0), NatVerdict::Translated);
    assert_eq!(w.process(&mut f2, 0), NatVerdict::Translated);
    let h2 = Ipv4Packet::new_checked(&f2.data()[14..]).unwrap();
    assert!(h2.verify_checksum());
    assert_eq!(h2.src_addr(), PUB0);
    // Reassembled, the datagram's checksum verifies.
    let mut whole = f1.data()[34..].to_vec();
    whole.extend_from_slice(&f2.data()[34..]);
    assert!(UdpPacket::new_checked(&whole[..])
        .unwrap()
        .verify_checksum(PUB0, REMOTE));
    let p = u16::from_be_bytes([whole[0], whole[1]]);
    // Inbound chain.
    let back = udp_dgram(REMOTE, 9999, PUB0, p, &[8u8; 40], true);
    let mut g1 = VecBuf::from_frame(&ip_frame(REMOTE, PUB0, 17, &back[..24], 0x99, true, 0));
    let mut g2 = VecBuf::from_frame(&ip_frame(REMOTE, PUB0, 17, &back[24..], 0x99, false, 24));
    assert_eq!(w.process(&mut g1, 0), NatVerdict::Translated);
    assert_eq!(w.process(&mut g2, 0), NatVerdict::Translated);
    assert_eq!(
        Ipv4Packet::new_checked(&g2.data()[14..])
            .unwrap()
            .dst_addr(),
        IN1
    );
    // Orphan later fragment.
    let mut o = VecBuf::from_frame(&ip_frame(IN1, REMOTE, 17, &[0; 16], 0x55, false, 24));
    assert_eq!(
        w.process(&mut o, 0),
        NatVerdict::Drop(DropReason::NatFragmentNoFlow)
    );
    // TCP fragment.
    let seg = tcp_seg(IN1, 1, REMOTE, 2, SYN, 1, 0, &[0; 20]);
    let mut t = VecBuf::from_frame(&ip_frame(IN1, REMOTE, 6, &seg[..24], 0x66, true, 0));
    assert_eq!(
        w.process(&mut t, 0),
        NatVerdict::Drop(DropReason::NatFragmentNotAllowed)
    );
}

#[test]
fn table_full_drops_new_flows_only() {
    let mut w = worker(gw(1024, 65535, None, 16, &[PUB0]));
    for i in 0..16 {
        out_port(&mut w, udp(IN1, 1000 + i, REMOTE, 53), 0);
    }
    let mut b = udp(IN1, 2000, REMOTE, 53);
    assert_eq!(
        w.process(&mut b, 0),
        NatVerdict::Drop(DropReason::NatTableFull)
    );
    out_port(&mut w, udp(IN1, 1000, REMOTE, 53), 0);
    assert_eq!(w.flows(), 16);
    assert_eq!(w.capacity(), 16);
}

#[test]
fn tcp_share_of_the_table_bounds_tcp_only() {
    // 8 slots, 3 with TCP window state: three connections tracked, the fourth SYN refused
    // as a full table, UDP still fills the other five; established TCP keeps working.
    let mut w = worker(NatGatewayConfig {
        tcp_flows_per_core: Some(3),
        ..gw(1024, 65535, None, 8, &[PUB0])
    });
    let mut outs = Vec::new();
    for i in 0..3 {
        outs.push(out_port(
            &mut w,
            tcp(IN1, 1000 + i, REMOTE, 443, SYN, 1, 0),
            0,
        ));
    }
    let mut b = tcp(IN1, 1003, REMOTE, 443, SYN, 1, 0);
    assert_eq!(
        w.process(&mut b, 0),
        NatVerdict::Drop(DropReason::NatTableFull)
    );
    for i in 0..5 {
        out_port(&mut w, udp(IN1, 2000 + i, REMOTE, 53), 0);
    }
    assert_eq!(w.flows(), 8);
    // The SYN-ACK of the first connection is tracked and translated back.
    let (ip, p) = outs[0];
    let mut back = tcp(REMOTE, 443, ip, p, SYN | ACK, 7000, 2);
    assert_eq!(w.process(&mut back, 0), NatVerdict::Translated);
}

#[test]
fn rss_steering_picks_ports_that_return_to_this_worker() {
    let g = gw(1024, 65535, None, 1000, &[PUB0]);
    let steer = RssSteering {
        key: toeplitz::MS_KEY,
        reta: (0..128).map(|i| (i % 2) as u16).collect(),
        queue_of_worker: vec![0, 1],
    };
    for wi in 0..2 {
        let mut w = NatWorker::new(std::slice::from_ref(&g), wi, 2, HZ);
        w.set_rss_steering(Some(steer.clone()));
        for i in 0..200 {
            let (ip, p) = out_port(&mut w, tcp(IN1, 1000 + i, REMOTE, 443, SYN, 1, 0), 0);
            let h = toeplitz::hash_v4_l4(&steer.key, REMOTE, ip, 443, p);
            assert_eq!(steer.queue(h), Some(steer.queue_of_worker[wi]));
        }
    }
}

#[test]
fn hostile_inputs_never_panic() {
    for mode in [NatMode::Aws, NatMode::Rfc4787] {
        hostile_inputs(mode);
    }
}

fn hostile_inputs(mode: NatMode) {
    let mut rng = ports::Rng::new(1234);
    let mut w = worker(NatGatewayConfig {
        mode,
        ..gw(1024, 1100, None, 64, &[PUB0])
    });
    let templates: Vec<VecBuf> = vec![
        tcp(IN1, 1, REMOTE, 2, SYN, 1, 0),
        udp(REMOTE, 53, PUB0, 1030),
        echo(REMOTE, PUB0, 0, 1030),
        error_for(&udp(PUB0, 1030, REMOTE, 53), ROUTER, PUB0, 3, 4, 10),
        error_for(&udp(REMOTE, 53, IN1, 1030), IN1, REMOTE, 3, 3, 10),
        udp(IN1, 1030, PUB0, 1031),
        error_for(&udp(PUB0, 1030, IN1, 53), IN1, PUB0, 3, 3, 10),
    ];
    for i in 0..20_000u64 {
        let mut b = templates[(i % templates.len() as u64) as usize].clone();
        let n = b.len();
        // Corrupt bytes past the (pipeline-validated) IPv4 header, and sometimes truncate
        // (fixing total length so the IPv4 header stays valid).
        for _ in 0..(rng.below(6)) {
            let at = 34 + rng.below((n - 34) as u32) as usize;
            b.data_mut()[at] = rng.next_u64() as u8;
        }
        if rng.below(3) == 0 {
            let cut = 34 + rng.below((n - 34) as u32) as usize;
            b.set_len(cut);
            let mut ip = Ipv4Packet::new_unchecked(&mut b.data_mut()[14..]);
            ip.set_total_len((cut - 14) as u16);
            ip.fill_checksum();
        }
        let _ = w.process(&mut b, i * 1000);
        w.expire(i * 1000);
    }
    // Random frames of any content.
    for _ in 0..5000 {
        let n = rng.below(100) as usize;
        let mut f = vec![0u8; n];
        f.iter_mut().for_each(|x| *x = rng.next_u64() as u8);
        let _ = w.process(&mut VecBuf::from_frame(&f), 0);
    }
    for i in 0..4000 {
        w.expire(s(200) + i);
    }
    assert_eq!((w.flows(), w.mappings()), (0, 0), "{mode:?}");
    assert_eq!(w.counters()[0].active_connections, 0);
    let _ = checksum::checksum(&[]);
}

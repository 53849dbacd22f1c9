//! LbWorker unit tests over `VecBuf` frames: golden rewrites with checksums verified in
//! both directions, full NAT, pinning across snapshots, draining, RSTs, fail open.

use super::control::LbControl;
use super::*;
use crate::config::{parse_str, Config};
use crate::packet::VecBuf;
use crate::wire::tcp::{ACK, RST, SYN};
use crate::wire::{EthernetFrame, IcmpPacket, MacAddr};

pub(super) const HZ: u64 = 1_000_000;
pub(super) const VIP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
pub(super) const LBA: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 11);
pub(super) const CLIENT: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);
const ROUTER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);

pub(super) fn s(secs: u64) -> u64 {
    secs * HZ
}

/// The ports and routes every LB unit-test config starts with, up to `load_balancers:`.
pub(super) const CONF_BASE: &str = "\
lcores:
  workers: [1]
ports:
  - name: front
    device: net_tap0,iface=a
    addresses: [198.51.100.1/24]
  - name: back
    device: net_tap1,iface=b
    addresses: [10.1.0.1/24]
routes:
  - {prefix: 0.0.0.0/0, port: front, via: 198.51.100.254}
load_balancers:
";

fn conf(groups: &str) -> String {
    format!(
        "{CONF_BASE}  - id: web
    vips: [198.51.100.10]
    lb_addresses: [198.51.100.11]
    maglev_table_size: 65537
    flows_per_core: 4096
    listeners:
      - {{protocol: tcp, port: 80, target_group: web}}
      - {{protocol: udp, port: 53, target_group: dns}}
    target_groups:
{groups}"
    )
}

pub(super) const GROUPS: &str = "
      - name: web
        tcp_idle_timeout_s: 60
        deregistration_delay_s: 10
        targets:
          - {ip: 10.1.0.2, port: 8080}
          - {ip: 10.1.0.3, port: 8080}
          - {ip: 10.1.0.4, port: 8080}
      - name: dns
        preserve_client_ip: false
        udp_idle_timeout_s: 30
        targets:
          - {ip: 10.1.0.5, port: 5353}
";

fn cfg(groups: &str) -> Config {
    parse_str(&conf(groups), "t.yaml").unwrap_or_else(|e| panic!("{e}"))
}

pub(super) fn setup(groups: &str) -> (LbControl, LbWorker) {
    let c = cfg(groups);
    let ctl = LbControl::new(&c.load_balancers, HZ, 0);
    let w = LbWorker::new(&c.load_balancers, ctl.cell(), 0, 1, HZ);
    (ctl, w)
}

fn frame(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, l4: &[u8]) -> VecBuf {
    let mut f = vec![0u8; 14 + 20 + l4.len()];
    {
        let mut e = EthernetFrame::new_unchecked(&mut f[..]);
        e.set_dst_addr(MacAddr::new(2, 0, 0, 0, 0, 1));
        e.set_src_addr(MacAddr::new(2, 0, 0, 0, 0, 2));
        e.set_ethertype(0x0800);
    }
    {
        let mut ip = Ipv4Packet::new_unchecked(&mut f[14..]);
        ip.set_version_ihl(5);
        ip.set_total_len((20 + l4.len()) as u16);
        ip.set_ident(7);
        ip.set_flags_frag(true, false, 0);
        ip.set_ttl(64);
        ip.set_protocol(proto);
        ip.set_src_addr(src);
        ip.set_dst_addr(dst);
        ip.fill_checksum();
    }
    f[34..].copy_from_slice(l4);
    VecBuf::from_frame(&f)
}

pub(super) fn tcp(src: Ipv4Addr, sp: u16, dst: Ipv4Addr, dp: u16, flags: u8) -> VecBuf {
    let mut l4 = vec![0u8; 20 + 5];
    l4[20..].copy_from_slice(b"hello");
    let mut t = TcpPacket::new_unchecked(&mut l4[..]);
    t.set_src_port(sp);
    t.set_dst_port(dp);
    t.set_seq_number(1000);
    t.set_ack_number(if flags & ACK != 0 { 5000 } else { 0 });
    t.set_header_len(20);
    t.set_flags(flags);
    t.set_window(65535);
    t.fill_checksum(src, dst);
    frame(src, dst, IPPROTO_TCP, &l4)
}

pub(super) fn udp(src: Ipv4Addr, sp: u16, dst: Ipv4Addr, dp: u16) -> VecBuf {
    let mut l4 = vec![0u8; 8 + 4];
    l4[8..].copy_from_slice(b"ping");
    let mut u = UdpPacket::new_unchecked(&mut l4[..]);
    u.set_src_port(sp);
    u.set_dst_port(dp);
    u.set_len(12);
    u.fill_checksum(src, dst);
    frame(src, dst, IPPROTO_UDP, &l4)
}

/// (src, sport, dst, dport) of a frame, after checking every checksum.
pub(super) fn tuple(b: &VecBuf) -> (Ipv4Addr, u16, Ipv4Addr, u16) {
    let ip = Ipv4Packet::new_checked(&b.data()[14..]).unwrap();
    assert!(ip.verify_checksum(), "IP checksum");
    let (s, d) = (ip.src_addr(), ip.dst_addr());
    match ip.protocol() {
        IPPROTO_TCP => {
            let t = TcpPacket::new_checked(ip.payload()).unwrap();
            assert!(t.verify_checksum(s, d), "TCP checksum");
            (s, t.src_port(), d, t.dst_port())
        }
        IPPROTO_UDP => {
            let u = UdpPacket::new_checked(ip.payload()).unwrap();
            assert!(u.verify_checksum(s, d), "UDP checksum");
            (s, u.src_port(), d, u.dst_port())
        }
        p => panic!("proto {p}"),
    }
}

fn tflags(b: &VecBuf) -> u8 {
    let ip = Ipv4Packet::new_checked(&b.data()[14..]).unwrap();
    TcpPacket::new_checked(ip.payload()).unwrap().flags()
}

/// The wheel steps a bounded number of slots per call (as between bursts): call it enough.
fn expire_all(w: &mut LbWorker, now: u64) {
    for _ in 0..100 {
        w.expire(now);
    }
}

pub(super) fn t(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 1, 0, n)
}

/// Opens a TCP flow from CLIENT:sport and returns its target.
fn open(w: &mut LbWorker, sport: u16, now: u64) -> Ipv4Addr {
    let mut b = tcp(CLIENT, sport, VIP, 80, SYN);
    assert_eq!(w.process(&mut b, now), StageVerdict::Translated);
    let (s, sp, d, dp) = tuple(&b);
    assert_eq!((s, sp, dp), (CLIENT, sport, 8080), "DNAT keeps the client");
    d
}

#[test]
fn dnat_both_directions_with_checksums() {
    let (_c, mut w) = setup(GROUPS);
    let target = open(&mut w, 40000, s(1));
    assert!([t(2), t(3), t(4)].contains(&target));
    let mut r = tcp(target, 8080, CLIENT, 40000, SYN | ACK);
    assert_eq!(w.process(&mut r, s(1)), StageVerdict::Translated);
    assert_eq!(tuple(&r), (VIP, 80, CLIENT, 40000));
    let mut a = tcp(CLIENT, 40000, VIP, 80, ACK);
    assert_eq!(w.process(&mut a, s(2)), StageVerdict::Translated);
    assert_eq!(tuple(&a), (CLIENT, 40000, target, 8080));
    let c = w.counters()[0];
    assert_eq!((c.new_flows, c.active_flows), (1, 1));
    assert_eq!((c.packets_from_client, c.packets_from_target), (2, 1));
    assert_eq!(c.bytes_from_client, 2 * 45);
}

#[test]
fn full_nat_udp_both_directions() {
    let (_c, mut w) = setup(GROUPS);
    let mut b = udp(CLIENT, 5000, VIP, 53);
    assert_eq!(w.process(&mut b, s(1)), StageVerdict::Translated);
    let (src, lport, dst, dport) = tuple(&b);
    assert_eq!((src, dst, dport), (LBA, t(5), 5353));
    assert!(lport >= 1024);
    let mut r = udp(t(5), 5353, LBA, lport);
    assert_eq!(w.process(&mut r, s(1)), StageVerdict::Translated);
    assert_eq!(tuple(&r), (VIP, 53, CLIENT, 5000));
    // Same client again: same port (pinned), another client: another port.
    let mut b2 = udp(CLIENT, 5000, VIP, 53);
    w.process(&mut b2, s(2));
    assert_eq!(tuple(&b2).1, lport);
    let mut b3 = udp(CLIENT, 5001, VIP, 53);
    w.process(&mut b3, s(2));
    assert_ne!(tuple(&b3).1, lport);
    // A reply to a port with no flow is dropped and counted.
    let mut stray = udp(t(5), 5353, LBA, 1);
    assert_eq!(
        w.process(&mut stray, s(2)),
        StageVerdict::Drop(DropReason::LbNoFlow)
    );
    assert_eq!(w.counters()[0].drops[DropReason::LbNoFlow as usize], 1);
    // UDP flows expire after their idle timeout (30 s here).
    expire_all(&mut w, s(40));
    assert_eq!(w.counters()[0].active_flows, 0);
    assert_eq!(w.counters()[0].idle_timeouts, 2);
}

#[test]
fn flows_stay_pinned_when_targets_change() {
    let (mut c, mut w) = setup(GROUPS);
    let before: Vec<Ipv4Addr> = (0..300).map(|i| open(&mut w, 10000 + i, s(1))).collect();
    for want in [t(2), t(3), t(4)] {
        assert!(before.contains(&want), "all targets used");
    }
    // Add two targets, remove one: existing flows keep theirs (the removed one drains).
    let changed = GROUPS.replace(
        "          - {ip: 10.1.0.4, port: 8080}\n",
        "          - {ip: 10.1.0.6, port: 8080}\n          - {ip: 10.1.0.7, port: 8080}\n",
    );
    c.reload(&cfg(&changed).load_balancers, s(2)).unwrap();
    assert!(w.refresh());
    for (i, want) in before.iter().enumerate() {
        let mut a = tcp(CLIENT, 10000 + i as u16, VIP, 80, ACK);
        assert_eq!(w.process(&mut a, s(3)), StageVerdict::Translated);
        assert_eq!(tuple(&a).2, *want, "flow {i} moved");
    }
    let after: Vec<Ipv4Addr> = (0..300).map(|i| open(&mut w, 20000 + i, s(3))).collect();
    assert!(!after.contains(&t(4)), "no new flow to a removed target");
    assert!(after.contains(&t(6)) && after.contains(&t(7)));
}

#[test]
fn non_syn_without_entry_goes_where_maglev_says() {
    let (c, mut w) = setup(GROUPS);
    let mut a = tcp(CLIENT, 33333, VIP, 80, ACK);
    assert_eq!(w.process(&mut a, s(1)), StageVerdict::Translated);
    let got = tuple(&a).2;
    assert_eq!(w.counters()[0].non_syn_new_flows, 1);
    // Another worker (another node) with no state sends it to the same target.
    let c2 = cfg(GROUPS);
    let mut w2 = LbWorker::new(&c2.load_balancers, c.cell(), 0, 1, HZ);
    let mut a2 = tcp(CLIENT, 33333, VIP, 80, ACK);
    w2.process(&mut a2, s(1));
    assert_eq!(tuple(&a2).2, got);
    // A SYN of that tuple on a fresh worker agrees too.
    let (_c3, mut w3) = setup(GROUPS);
    assert_eq!(open(&mut w3, 33333, s(1)), got);
}

/// The group with one target, given weight and connection termination.
fn one_target(weight: u32, term: bool) -> String {
    format!(
        "
      - name: web
        deregistration_delay_s: 10
        connection_termination: {term}
        targets:
          - {{ip: 10.1.0.2, port: 8080, weight: {weight}}}
          - {{ip: 10.1.0.3, port: 8080}}
      - name: dns
        preserve_client_ip: false
        targets:
          - {{ip: 10.1.0.5, port: 5353}}
"
    )
}

fn drain_case(term: bool) {
    let (mut c, mut w) = setup(&one_target(1, term));
    let mut on2 = Vec::new();
    for p in 1000..1100 {
        if open(&mut w, p, s(1)) == t(2) {
            on2.push(p);
        }
    }
    assert!(on2.len() > 10);
    c.reload(&cfg(&one_target(0, term)).load_balancers, s(5))
        .unwrap();
    w.refresh();
    for p in 2000..2100 {
        assert_eq!(open(&mut w, p, s(6)), t(3), "weight 0 gets no new flows");
    }
    // Before the delay ends (5 + 10 s) existing flows continue.
    let mut a = tcp(CLIENT, on2[0], VIP, 80, ACK);
    assert_eq!(w.process(&mut a, s(14)), StageVerdict::Translated);
    assert_eq!(tuple(&a).2, t(2));
    // After: dropped, or reset when connection termination is on (both ways).
    let mut a = tcp(CLIENT, on2[1], VIP, 80, ACK);
    let mut r = tcp(t(2), 8080, CLIENT, on2[2], ACK);
    let (va, vr) = (w.process(&mut a, s(16)), w.process(&mut r, s(16)));
    if term {
        assert_eq!(va, StageVerdict::Respond(DropReason::LbDeregisteredRst));
        assert_eq!(vr, StageVerdict::Respond(DropReason::LbDeregisteredRst));
        assert_eq!(tuple(&a), (VIP, 80, CLIENT, on2[1]));
        assert_eq!(tflags(&a) & RST, RST);
        assert_eq!(tuple(&r), (CLIENT, on2[2], t(2), 8080));
        assert_eq!(w.counters()[0].tcp_elb_resets, 2);
    } else {
        assert_eq!(va, StageVerdict::Drop(DropReason::LbDeregistered));
        assert_eq!(vr, StageVerdict::Drop(DropReason::LbDeregistered));
    }
}

#[test]
fn draining_without_connection_termination() {
    drain_case(false);
}

#[test]
fn draining_with_connection_termination() {
    drain_case(true);
}

#[test]
fn idle_timeout_rst_toward_client_and_target() {
    let (_c, mut w) = setup(GROUPS);
    let t1 = open(&mut w, 40001, s(1));
    let t2 = open(&mut w, 40002, s(1));
    // The timer wheel turns both into tombstones after 60 s idle.
    expire_all(&mut w, s(62));
    assert_eq!(w.counters()[0].active_flows, 0);
    assert_eq!(w.counters()[0].idle_timeouts, 2);
    let mut a = tcp(CLIENT, 40001, VIP, 80, ACK);
    assert_eq!(
        w.process(&mut a, s(63)),
        StageVerdict::Respond(DropReason::LbIdleTimeoutRst)
    );
    assert_eq!(tuple(&a), (VIP, 80, CLIENT, 40001));
    assert_eq!(tflags(&a), RST);
    let mut r = tcp(t2, 8080, CLIENT, 40002, ACK);
    assert_eq!(
        w.process(&mut r, s(63)),
        StageVerdict::Respond(DropReason::LbIdleTimeoutRst)
    );
    assert_eq!(tuple(&r), (CLIENT, 40002, t2, 8080));
    // Without the expiry pass: found stale by the lookup itself.
    let t3 = open(&mut w, 40003, s(100));
    let mut r = tcp(t3, 8080, CLIENT, 40003, ACK);
    assert_eq!(
        w.process(&mut r, s(200)),
        StageVerdict::Respond(DropReason::LbIdleTimeoutRst)
    );
    // A new SYN on the tuple of a tombstone opens a new flow.
    let _ = t1;
    open(&mut w, 40001, s(64));
    assert_eq!(w.counters()[0].tcp_elb_resets, 3);
}

#[test]
fn unhealthy_target_rst_and_fail_open() {
    let (mut c, mut w) = setup(GROUPS);
    let mut by: Vec<(u16, Ipv4Addr)> = Vec::new();
    for p in 3000..3100 {
        by.push((p, open(&mut w, p, s(1))));
    }
    assert!(c.set_target_health("web", "web", t(2), 8080, false));
    assert!(!c.set_target_health("web", "web", t(9), 8080, false));
    assert!(
        !c.set_target_health_keyed("web", t(2), 8080, false),
        "no group in the key"
    );
    let key = LbControl::group_key("web", "web");
    assert!(c.set_target_health_keyed(&key, t(2), 8080, false));
    assert_eq!(c.probe_targets().len(), 4);
    w.refresh();
    let (p2, _) = *by.iter().find(|(_, x)| *x == t(2)).unwrap();
    let (p3, _) = *by.iter().find(|(_, x)| *x == t(3)).unwrap();
    let mut a = tcp(CLIENT, p2, VIP, 80, ACK);
    assert_eq!(
        w.process(&mut a, s(2)),
        StageVerdict::Respond(DropReason::LbUnhealthyTargetRst)
    );
    assert_eq!(tuple(&a), (VIP, 80, CLIENT, p2));
    let mut a = tcp(CLIENT, p3, VIP, 80, ACK);
    assert_eq!(w.process(&mut a, s(2)), StageVerdict::Translated);
    for p in 4000..4100 {
        assert_ne!(open(&mut w, p, s(2)), t(2), "no new flows to unhealthy");
    }
    // All unhealthy: fail open, existing flows continue and new ones use all targets.
    c.set_target_health("web", "web", t(3), 8080, false);
    c.set_target_health("web", "web", t(4), 8080, false);
    w.refresh();
    let mut a = tcp(CLIENT, p3, VIP, 80, ACK);
    assert_eq!(w.process(&mut a, s(3)), StageVerdict::Translated);
    let open_all: Vec<Ipv4Addr> = (5000..5200).map(|p| open(&mut w, p, s(3))).collect();
    for x in [t(2), t(3), t(4)] {
        assert!(open_all.contains(&x));
    }
    let h = c.group_health();
    assert_eq!((h[0].healthy, h[0].unhealthy), (0, 3));
}

/// Health checks running (AWS "initial"): targets start `initial` and get no new flows
/// until they pass, except while none of the group has (fail open, as for all unhealthy);
/// their existing flows continue. A target added by reload starts `initial` while the
/// others keep their state; where checks stop, every target serves.
#[test]
fn initial_targets_get_no_new_flows_until_healthy() {
    use super::health::HealthState;
    let c0 = cfg(GROUPS);
    let mut c = LbControl::new_checked(&c0.load_balancers, &[true], HZ, 0);
    let mut w = LbWorker::new(&c0.load_balancers, c.cell(), 0, 1, HZ);
    let h = c.group_health();
    assert_eq!((h[0].healthy, h[0].initial, h[0].unhealthy), (0, 3, 0));
    // None has passed yet: fail open over all three.
    let first: Vec<(u16, Ipv4Addr)> = (1000..1100).map(|p| (p, open(&mut w, p, s(1)))).collect();
    for x in [t(2), t(3), t(4)] {
        assert!(
            first.iter().any(|(_, y)| *y == x),
            "{x} unused in fail open"
        );
    }
    assert!(c.set_target_state("web", "web", t(3), 8080, HealthState::Healthy));
    w.refresh();
    for p in 2000..2100 {
        assert_eq!(open(&mut w, p, s(2)), t(3), "only the healthy target");
    }
    // A flow opened on a still-initial target keeps going.
    let (p2, _) = *first.iter().find(|(_, x)| *x == t(2)).unwrap();
    let mut a = tcp(CLIENT, p2, VIP, 80, ACK);
    assert_eq!(w.process(&mut a, s(2)), StageVerdict::Translated);
    // t(2), t(4) pass; then a reload adds t(6): initial, no new flows.
    for x in [t(2), t(4)] {
        assert!(c.set_target_state("web", "web", x, 8080, HealthState::Healthy));
    }
    let more = GROUPS.replace(
        "          - {ip: 10.1.0.4, port: 8080}\n",
        "          - {ip: 10.1.0.4, port: 8080}\n          - {ip: 10.1.0.6, port: 8080}\n",
    );
    let c1 = cfg(&more);
    c.reload_checked(&c1.load_balancers, &|_| true, s(3))
        .unwrap();
    let h = c.group_health();
    assert_eq!((h[0].healthy, h[0].initial, h[0].unhealthy), (3, 1, 0));
    w.refresh();
    let got: Vec<Ipv4Addr> = (3000..3300).map(|p| open(&mut w, p, s(3))).collect();
    assert!(!got.contains(&t(6)), "initial target got a new flow");
    for x in [t(2), t(3), t(4)] {
        assert!(got.contains(&x));
    }
    assert!(c.set_target_state("web", "web", t(6), 8080, HealthState::Healthy));
    w.refresh();
    let got: Vec<Ipv4Addr> = (4000..4300).map(|p| open(&mut w, p, s(4))).collect();
    assert!(got.contains(&t(6)), "healthy target gets flows");
    // Checks stop (e.g. the health_check_device removed): every target serves.
    assert!(c.set_target_state("web", "web", t(6), 8080, HealthState::Unhealthy));
    c.reload_checked(&c1.load_balancers, &|_| false, s(5))
        .unwrap();
    let h = c.group_health();
    assert_eq!((h[0].healthy, h[0].initial, h[0].unhealthy), (4, 0, 0));
    // Without checks (`LbControl::new`) targets serve from the start.
    let c2 = LbControl::new(&c0.load_balancers, HZ, 0);
    let h = c2.group_health();
    assert_eq!((h[0].healthy, h[0].initial), (3, 0));
}

#[test]
fn no_listener_malformed_and_other_traffic() {
    let (_c, mut w) = setup(GROUPS);
    let mut b = tcp(CLIENT, 1, VIP, 81, SYN);
    assert_eq!(
        w.process(&mut b, s(1)),
        StageVerdict::Drop(DropReason::LbNoListener)
    );
    let mut b = udp(CLIENT, 1, VIP, 80);
    assert_eq!(
        w.process(&mut b, s(1)),
        StageVerdict::Drop(DropReason::LbNoListener)
    );
    // Truncated TCP header to a VIP.
    let mut b = frame(CLIENT, VIP, IPPROTO_TCP, &[0u8; 8]);
    assert_eq!(
        w.process(&mut b, s(1)),
        StageVerdict::Drop(DropReason::LbUnsupportedProtocol)
    );
    // Echo request to a VIP.
    let mut m = vec![8u8, 0, 0, 0, 0, 1, 0, 1];
    let mut i = IcmpPacket::new_unchecked(&mut m[..]);
    i.fill_checksum();
    let mut b = frame(CLIENT, VIP, IPPROTO_ICMP, &m);
    assert_eq!(
        w.process(&mut b, s(1)),
        StageVerdict::Drop(DropReason::LbUnsupportedProtocol)
    );
    // Fragment to a VIP.
    let mut b = tcp(CLIENT, 1, VIP, 80, SYN);
    Ipv4Packet::new_unchecked(&mut b.data_mut()[14..]).set_flags_frag(false, true, 0);
    assert_eq!(
        w.process(&mut b, s(1)),
        StageVerdict::Drop(DropReason::LbFragment)
    );
    let d = w.counters()[0].drops;
    assert_eq!(d[DropReason::LbNoListener as usize], 2);
    assert_eq!(d[DropReason::LbUnsupportedProtocol as usize], 2);
    // Not LB traffic: untouched.
    let mut b = tcp(CLIENT, 1, Ipv4Addr::new(192, 0, 2, 1), 80, SYN);
    let before = b.clone();
    assert_eq!(w.process(&mut b, s(1)), StageVerdict::Pass);
    assert_eq!(b, before);
    // A target's traffic from another port is not the LB's; from its listener port with
    // no flow it is dropped rather than leaked untranslated.
    let mut b = tcp(t(2), 9999, CLIENT, 9, ACK);
    assert_eq!(w.process(&mut b, s(1)), StageVerdict::Pass);
    let mut b = tcp(t(2), 8080, CLIENT, 9, ACK);
    assert_eq!(
        w.process(&mut b, s(1)),
        StageVerdict::Drop(DropReason::LbNoFlow)
    );
}

#[test]
fn icmp_errors_translated_both_ways() {
    let (_c, mut w) = setup(GROUPS);
    let target = open(&mut w, 40000, s(1));
    // A router on the client side says frag-needed about VIP:80 -> CLIENT:40000.
    let reply = tcp(VIP, 80, CLIENT, 40000, ACK);
    let quote = reply.data()[14..14 + 28].to_vec();
    let mut m = vec![3u8, 4, 0, 0, 0, 0, 5, 0xdc];
    m.extend_from_slice(&quote);
    IcmpPacket::new_unchecked(&mut m[..]).fill_checksum();
    let mut e = frame(ROUTER, VIP, IPPROTO_ICMP, &m);
    assert_eq!(w.process(&mut e, s(1)), StageVerdict::Translated);
    let ip = Ipv4Packet::new_checked(&e.data()[14..]).unwrap();
    assert!(ip.verify_checksum());
    assert_eq!(ip.dst_addr(), target);
    let icmp = IcmpPacket::new_checked(ip.payload()).unwrap();
    assert!(icmp.verify_checksum());
    let q = Ipv4Packet::new_quoted(&ip.payload()[8..]).unwrap();
    assert_eq!((q.src_addr(), q.dst_addr()), (target, CLIENT));
    assert_eq!(&ip.payload()[28..30], &8080u16.to_be_bytes());
    // A router on the target side says unreachable about CLIENT:40000 -> target:8080.
    let fwd = tcp(CLIENT, 40000, target, 8080, ACK);
    let quote = fwd.data()[14..14 + 28].to_vec();
    let mut m = vec![3u8, 1, 0, 0, 0, 0, 0, 0];
    m.extend_from_slice(&quote);
    IcmpPacket::new_unchecked(&mut m[..]).fill_checksum();
    let mut e = frame(target, CLIENT, IPPROTO_ICMP, &m);
    assert_eq!(w.process(&mut e, s(1)), StageVerdict::Translated);
    let ip = Ipv4Packet::new_checked(&e.data()[14..]).unwrap();
    assert!(ip.verify_checksum());
    assert_eq!((ip.src_addr(), ip.dst_addr()), (VIP, CLIENT));
    let q = Ipv4Packet::new_quoted(&ip.payload()[8..]).unwrap();
    assert_eq!((q.src_addr(), q.dst_addr()), (CLIENT, VIP));
    assert!(IcmpPacket::new_checked(ip.payload())
        .unwrap()
        .verify_checksum());
}

#[test]
fn table_full_and_tuple_conflict_counted() {
    let groups = GROUPS.replace("flows_per_core: 4096", "flows_per_core: 16");
    let text = conf(&groups).replace("flows_per_core: 4096", "flows_per_core: 16");
    let c = parse_str(&text, "t.yaml").unwrap();
    let ctl = LbControl::new(&c.load_balancers, HZ, 0);
    let mut w = LbWorker::new(&c.load_balancers, ctl.cell(), 0, 1, HZ);
    for p in 0..16 {
        open(&mut w, 100 + p, s(1));
    }
    let mut b = tcp(CLIENT, 999, VIP, 80, SYN);
    assert_eq!(
        w.process(&mut b, s(1)),
        StageVerdict::Drop(DropReason::LbTableFull)
    );
}

#[test]
fn fib_answers_arp_for_vips_and_lb_addresses() {
    let c = cfg(GROUPS);
    let fib = crate::pipeline::route::Fib::build(&c, &[0, 1], &[MacAddr::ZERO, MacAddr::ZERO], 1);
    assert!(fib.is_proxy_arp(VIP) && fib.is_proxy_arp(LBA));
    assert!(!fib.is_proxy_arp(CLIENT));
}

#[test]
fn reload_drains_a_removed_vip_and_refuses_lb_address_changes() {
    let (mut c, mut w) = setup(GROUPS);
    let vip2 = Ipv4Addr::new(198, 51, 100, 12);
    let mut b = tcp(CLIENT, 1000, VIP, 80, SYN);
    assert_eq!(w.process(&mut b, s(1)), StageVerdict::Translated);
    let other = conf(GROUPS).replace("vips: [198.51.100.10]", "vips: [198.51.100.12]");
    let other = parse_str(&other, "t.yaml").unwrap();
    let log = c.reload(&other.load_balancers, s(2)).unwrap();
    assert!(
        log.iter().any(|l| l.contains("VIP 198.51.100.10 removed")),
        "{log:?}"
    );
    assert!(c.draining());
    w.refresh();
    // The open flow continues, a new one to the old VIP is refused, the new VIP serves.
    let mut b = tcp(CLIENT, 1000, VIP, 80, ACK);
    assert_eq!(w.process(&mut b, s(3)), StageVerdict::Translated);
    let mut b = tcp(CLIENT, 1001, VIP, 80, SYN);
    assert_eq!(
        w.process(&mut b, s(3)),
        StageVerdict::Drop(DropReason::LbDraining)
    );
    let mut b = tcp(CLIENT, 1002, vip2, 80, SYN);
    assert_eq!(w.process(&mut b, s(3)), StageVerdict::Translated);
    // Drain over: the old VIP is no load balancer traffic any more.
    let log = c.tick(
        std::time::Instant::now() + std::time::Duration::from_secs(301),
        s(4),
    );
    assert!(log.iter().any(|l| l.contains("drained")), "{log:?}");
    w.refresh();
    let mut b = tcp(CLIENT, 1000, VIP, 80, ACK);
    assert_eq!(w.process(&mut b, s(5)), StageVerdict::Pass);
    // Full-NAT source addresses of a kept load balancer cannot change live.
    let other = conf(GROUPS).replace(
        "lb_addresses: [198.51.100.11]",
        "lb_addresses: [198.51.100.13]",
    );
    let other = parse_str(&other, "t.yaml").unwrap();
    let e = c.reload(&other.load_balancers, s(6)).unwrap_err();
    assert!(e.contains("lb_addresses"), "{e}");
}

#[test]
fn reload_adds_and_removes_load_balancers() {
    let (mut c, mut w) = setup(GROUPS);
    let base = cfg(GROUPS);
    let mut second = base.load_balancers[0].clone();
    second.id = "two".into();
    second.vips = vec![Ipv4Addr::new(198, 51, 100, 20)];
    second.lb_addresses = vec![Ipv4Addr::new(198, 51, 100, 21)];
    second.drain_timeout_s = 5;
    let both = vec![base.load_balancers[0].clone(), second.clone()];
    c.reload(&both, s(1)).unwrap();
    // The snapshot naming the new load balancer waits for its tables.
    assert!(!w.refresh());
    let mut rng = crate::nat::ports::Rng::new(1);
    let mut u = c
        .update_for(0, 1, &mut rng)
        .expect("tables for the new slot");
    c.sent();
    w.reconcile(&mut u);
    let mut b = tcp(CLIENT, 2000, second.vips[0], 80, SYN);
    assert_eq!(w.process(&mut b, s(2)), StageVerdict::Translated);
    // Removed: drains (open flow continues, new ones refused), then its slot empties.
    c.reload(&base.load_balancers, s(3)).unwrap();
    w.refresh();
    let mut b = tcp(CLIENT, 2000, second.vips[0], 80, ACK);
    assert_eq!(w.process(&mut b, s(3)), StageVerdict::Translated);
    let mut b = tcp(CLIENT, 2001, second.vips[0], 80, SYN);
    assert_eq!(
        w.process(&mut b, s(3)),
        StageVerdict::Drop(DropReason::LbDraining)
    );
    let log = c.tick(
        std::time::Instant::now() + std::time::Duration::from_secs(6),
        s(4),
    );
    assert!(log.iter().any(|l| l.contains("drain ended")), "{log:?}");
    let mut u = c
        .update_for(0, 1, &mut rng)
        .expect("an empty table for the slot");
    c.sent();
    w.reconcile(&mut u);
    assert_eq!(c.config()[1].id, "");
    let mut b = tcp(CLIENT, 2000, second.vips[0], 80, ACK);
    assert_eq!(w.process(&mut b, s(5)), StageVerdict::Pass);
}

#[test]
fn full_nat_replies_handed_to_the_port_owner() {
    let c = cfg(GROUPS);
    let ctl = LbControl::new(&c.load_balancers, HZ, 0);
    let mut ws: Vec<LbWorker> = (0..2)
        .map(|i| LbWorker::new(&c.load_balancers, ctl.cell(), i, 2, HZ))
        .collect();
    let mut b = udp(CLIENT, 7000, VIP, 53);
    let o = match ws[0].process(&mut b, s(1)) {
        StageVerdict::Handoff(o) => o,
        v => {
            assert_eq!(v, StageVerdict::Translated);
            0
        }
    };
    let mut b = udp(CLIENT, 7000, VIP, 53);
    assert_eq!(ws[o].process(&mut b, s(1)), StageVerdict::Translated);
    let lport = tuple(&b).1;
    // The owner allocated from its own slice: the other worker hands the reply over.
    let mut r = udp(t(5), 5353, LBA, lport);
    assert_eq!(ws[1 - o].process(&mut r, s(1)), StageVerdict::Handoff(o));
    assert_eq!(ws[o].process(&mut r, s(1)), StageVerdict::Translated);
    assert_eq!(tuple(&r), (VIP, 53, CLIENT, 7000));
}

#[test]
fn several_workers_agree_on_the_owner_of_a_dnat_flow() {
    let c = cfg(GROUPS);
    let ctl = LbControl::new(&c.load_balancers, HZ, 0);
    let mut ws: Vec<LbWorker> = (0..3)
        .map(|i| LbWorker::new(&c.load_balancers, ctl.cell(), i, 3, HZ))
        .collect();
    for sport in 50000..50020u16 {
        // The client's SYN: every non-owner hands it to the same owner.
        let mut owner = None;
        for (i, w) in ws.iter_mut().enumerate() {
            let mut b = tcp(CLIENT, sport, VIP, 80, SYN);
            match w.process(&mut b, s(1)) {
                StageVerdict::Handoff(o) => assert!(owner.is_none_or(|x| x == o) && o != i),
                StageVerdict::Translated => owner = owner.or(Some(i)),
                v => panic!("{v:?}"),
            }
        }
        let o = owner.expect("one worker owns it");
        let target = {
            let mut b = tcp(CLIENT, sport, VIP, 80, ACK);
            assert_eq!(ws[o].process(&mut b, s(1)), StageVerdict::Translated);
            tuple(&b).2
        };
        // The target's reply, wherever it arrives, goes to that owner.
        for (i, w) in ws.iter_mut().enumerate() {
            let mut r = tcp(target, 8080, CLIENT, sport, SYN | ACK);
            let v = w.process(&mut r, s(1));
            if i == o {
                assert_eq!(v, StageVerdict::Translated);
                assert_eq!(tuple(&r), (VIP, 80, CLIENT, sport));
            } else {
                assert_eq!(v, StageVerdict::Handoff(o));
            }
        }
    }
}

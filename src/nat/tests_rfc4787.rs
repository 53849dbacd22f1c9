//! `rfc4787` mode: endpoint-independent mapping, address-dependent filtering, hairpinning,
//! mapping lifetime, multi-worker ownership. Frame helpers come from `tests`.

use super::tests::{
    check, echo, error_for, gw, out_port, s, tcp, udp, HZ, IN1, IN2, PUB0, PUB1, REMOTE, REMOTE2,
};
use super::*;
use crate::packet::VecBuf;
use crate::wire::tcp::{ACK, SYN};
use std::collections::HashSet;

const REMOTE3: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 9);

fn rfc(first: u32, last: u32, flows: u32, ips: &[Ipv4Addr]) -> NatGatewayConfig {
    NatGatewayConfig {
        mode: NatMode::Rfc4787,
        inside_ports: None,
        drop_foreign_inside_sources: true,
        no_translate: Vec::new(),
        ..gw(first, last, None, flows, ips)
    }
}

fn rfc_worker(first: u32, last: u32, flows: u32, ips: &[Ipv4Addr]) -> NatWorker {
    NatWorker::new(&[rfc(first, last, flows, ips)], 0, 1, HZ)
}

fn verdict(w: &mut NatWorker, mut b: VecBuf, now: u64) -> NatVerdict {
    w.process(&mut b, now)
}

/// Processes an inbound (or hairpinned) packet that must be translated; its 4-tuple.
fn deliver(w: &mut NatWorker, mut b: VecBuf, now: u64) -> (Ipv4Addr, u16, Ipv4Addr, u16) {
    assert_eq!(w.process(&mut b, now), NatVerdict::Translated);
    check(&b)
}

fn expire_all(w: &mut NatWorker, at: u64) {
    for i in 0..4000 {
        w.expire(at + i);
    }
}

fn permissions(w: &NatWorker) -> usize {
    w.gws
        .iter()
        .filter_map(|g| g.eim.as_ref())
        .map(|e| e.permissions())
        .sum()
}

#[test]
fn one_inside_socket_keeps_one_public_port_for_every_destination() {
    let mut w = rfc_worker(1024, 65535, 10_000, &[PUB0, PUB1]);
    let a = out_port(&mut w, udp(IN1, 5000, REMOTE, 53), 0);
    assert_eq!(out_port(&mut w, udp(IN1, 5000, REMOTE2, 123), 0), a);
    assert_eq!(out_port(&mut w, udp(IN1, 5000, REMOTE, 54), 0), a);
    assert_eq!(out_port(&mut w, udp(IN1, 5000, REMOTE3, 9), 1), a);
    // TCP (RFC 5382 REQ-1) and ICMP echo identifiers likewise.
    let t = out_port(&mut w, tcp(IN1, 40000, REMOTE, 80, SYN, 1, 0), 0);
    assert_eq!(
        out_port(&mut w, tcp(IN1, 40000, REMOTE2, 443, SYN, 1, 0), 0),
        t
    );
    let e = out_port(&mut w, echo(IN1, REMOTE, 8, 0x1234), 0);
    assert_eq!(out_port(&mut w, echo(IN1, REMOTE2, 8, 0x1234), 0), e);
    assert_eq!(w.flows(), 8);
    assert_eq!(w.mappings(), 3);
    // Replies from each destination reach the one inside socket.
    assert_eq!(
        deliver(&mut w, udp(REMOTE2, 123, a.0, a.1), 1),
        (REMOTE2, 123, IN1, 5000)
    );
    assert_eq!(
        deliver(&mut w, echo(REMOTE2, e.0, 0, e.1), 1),
        (REMOTE2, 0x1234, IN1, 0)
    );
    // Paired pooling: every mapping of one inside host on one public IP.
    assert!(a.0 == t.0 && t.0 == e.0);
    // Another socket of the same host: another mapping, another port.
    let b = out_port(&mut w, udp(IN1, 5001, REMOTE, 53), 2);
    assert_ne!(b, a);
}

#[test]
fn a_mapped_public_port_is_never_given_to_another_endpoint() {
    // 4 ports: the first endpoint holds one for every destination.
    let mut w = rfc_worker(2000, 2003, 1000, &[PUB0]);
    let (_, held) = out_port(&mut w, udp(IN1, 5000, REMOTE, 53), 0);
    let mut others = HashSet::new();
    for (i, dst) in [REMOTE, REMOTE2, REMOTE3].into_iter().enumerate() {
        let (_, p) = out_port(&mut w, udp(IN2, 6000 + i as u16, dst, 53), 0);
        assert_ne!(p, held);
        assert!(others.insert(p));
    }
    // All 4 ports mapped: a new endpoint gets none, even toward a new destination (no
    // per-destination overloading under endpoint-independent mapping)...
    let mut b = udp(IN2, 7000, Ipv4Addr::new(192, 0, 2, 1), 1);
    assert_eq!(
        w.process(&mut b, 0),
        NatVerdict::Drop(DropReason::NatPortExhausted)
    );
    assert_eq!(w.counters()[0].port_allocation_errors, 1);
    // ...while existing endpoints still open flows to new destinations on their mapping.
    assert_eq!(
        out_port(&mut w, udp(IN1, 5000, Ipv4Addr::new(192, 0, 2, 1), 1), 0),
        (PUB0, held)
    );
    // TCP has its own port space.
    out_port(&mut w, tcp(IN2, 7000, REMOTE, 80, SYN, 1, 0), 0);

    // Larger range, many endpoints toward many destinations: none gets the held port.
    let mut w = rfc_worker(1024, 65535, 100_000, &[PUB0]);
    let (_, held) = out_port(&mut w, udp(IN1, 5000, REMOTE, 53), 0);
    let mut seen = HashSet::new();
    for i in 0..20_000u32 {
        let dst = Ipv4Addr::from(u32::from(REMOTE) + i % 7);
        let (_, p) = out_port(&mut w, udp(IN2, 10_000 + i as u16, dst, 53), 0);
        assert_ne!(p, held);
        assert!(seen.insert(p), "port {p} given to two endpoints");
    }
    assert_eq!(w.mappings(), 20_001);
}

#[test]
fn address_dependent_filtering() {
    let mut w = rfc_worker(1024, 65535, 1000, &[PUB0]);
    let (_, p) = out_port(&mut w, udp(IN1, 5000, REMOTE, 53), 0);
    // The contacted remote, from its port and from a new port: delivered, the new port
    // as a new flow on the same mapping.
    assert_eq!(
        deliver(&mut w, udp(REMOTE, 53, PUB0, p), 0),
        (REMOTE, 53, IN1, 5000)
    );
    assert_eq!(
        deliver(&mut w, udp(REMOTE, 9999, PUB0, p), 0),
        (REMOTE, 9999, IN1, 5000)
    );
    assert_eq!(w.flows(), 2);
    assert_eq!(w.mappings(), 1);
    // The inside answers on the new flow with the same public endpoint.
    assert_eq!(out_port(&mut w, udp(IN1, 5000, REMOTE, 9999), 0), (PUB0, p));
    // An IP the inside endpoint never sent to: filtered, and counted.
    assert_eq!(
        verdict(&mut w, udp(REMOTE2, 53, PUB0, p), 0),
        NatVerdict::Drop(DropReason::NatFiltered)
    );
    assert_eq!(w.counters()[0].dropped(DropReason::NatFiltered), 1);
    assert_eq!(w.flows(), 2);
    // No mapping at all: unsolicited, as in aws mode.
    let free = if p == 65535 { 1024 } else { p + 1 };
    assert_eq!(
        verdict(&mut w, udp(REMOTE, 53, PUB0, free), 0),
        NatVerdict::Drop(DropReason::NatNoMapping)
    );

    // TCP: a SYN from a new port of the contacted remote opens a flow; the handshake
    // completes in the reverse direction.
    let (_, t) = out_port(&mut w, tcp(IN1, 40000, REMOTE, 80, SYN, 1, 0), 0);
    assert_eq!(
        deliver(&mut w, tcp(REMOTE, 81, PUB0, t, SYN, 500, 0), 0),
        (REMOTE, 81, IN1, 40000)
    );
    assert_eq!(
        out_port(&mut w, tcp(IN1, 40000, REMOTE, 81, SYN | ACK, 9000, 501), 0),
        (PUB0, t)
    );
    let est = w.counters()[0].connections_established;
    deliver(&mut w, tcp(REMOTE, 81, PUB0, t, ACK, 501, 9001), 0);
    assert_eq!(w.counters()[0].connections_established, est + 1);
    // No SYN, no new connection; other IPs filtered.
    assert_eq!(
        verdict(&mut w, tcp(REMOTE, 82, PUB0, t, ACK, 1, 1), 0),
        NatVerdict::Drop(DropReason::NatNoMapping)
    );
    assert_eq!(
        verdict(&mut w, tcp(REMOTE2, 80, PUB0, t, SYN, 1, 0), 0),
        NatVerdict::Drop(DropReason::NatFiltered)
    );
    // ICMP echo: a reply from an IP never pinged with that identifier.
    let (_, id) = out_port(&mut w, echo(IN1, REMOTE, 8, 77), 0);
    assert_eq!(
        verdict(&mut w, echo(REMOTE2, PUB0, 0, id), 0),
        NatVerdict::Drop(DropReason::NatFiltered)
    );
    assert_eq!(w.counters()[0].dropped(DropReason::NatFiltered), 3);
}

#[test]
fn only_flows_the_inside_sent_on_keep_an_address_permitted() {
    let mut w = rfc_worker(1024, 65535, 1000, &[PUB0]);
    let (_, p) = out_port(&mut w, udp(IN1, 5000, REMOTE, 53), 0);
    // At 8 s the remote opens a second flow from another port (UDP timeout: 10 s).
    deliver(&mut w, udp(REMOTE, 7000, PUB0, p), s(8));
    expire_all(&mut w, s(11));
    assert_eq!(w.flows(), 1, "the flow the inside sent on expired");
    assert_eq!(w.mappings(), 1, "the inbound flow still holds the mapping");
    assert_eq!(permissions(&w), 0);
    // The remaining flow still works, but no new port of that IP gets in any more.
    deliver(&mut w, udp(REMOTE, 7000, PUB0, p), s(12));
    assert_eq!(
        verdict(&mut w, udp(REMOTE, 7001, PUB0, p), s(12)),
        NatVerdict::Drop(DropReason::NatFiltered)
    );
    // Once the inside sends on it, the flow permits the IP again.
    out_port(&mut w, udp(IN1, 5000, REMOTE, 7000), s(12));
    deliver(&mut w, udp(REMOTE, 7001, PUB0, p), s(12));
}

#[test]
fn hairpinning_between_two_inside_hosts() {
    let mut w = rfc_worker(1024, 65535, 1000, &[PUB0]);
    // Both register with a rendezvous server and learn their public endpoints.
    let a = out_port(&mut w, udp(IN1, 5000, REMOTE, 3478), 0);
    let b = out_port(&mut w, udp(IN2, 6000, REMOTE, 3478), 0);
    assert_ne!(a, b);
    // B punches first: A has not sent to the public address, so A's side filters it
    // (B now permits it).
    assert_eq!(
        verdict(&mut w, udp(IN2, 6000, a.0, a.1), 0),
        NatVerdict::Drop(DropReason::NatFiltered)
    );
    // A to B's public endpoint: arrives at B, from A's public endpoint.
    assert_eq!(
        deliver(&mut w, udp(IN1, 5000, b.0, b.1), 0),
        (a.0, a.1, IN2, 6000)
    );
    // B's reply arrives at A, from B's public endpoint.
    assert_eq!(
        deliver(&mut w, udp(IN2, 6000, a.0, a.1), 1),
        (b.0, b.1, IN1, 5000)
    );
    assert_eq!(
        deliver(&mut w, udp(IN1, 5000, b.0, b.1), 2),
        (a.0, a.1, IN2, 6000)
    );
    // Still one mapping per endpoint: the server keeps seeing the same public endpoints.
    assert_eq!(w.mappings(), 2);
    assert_eq!(out_port(&mut w, udp(IN1, 5000, REMOTE, 3478), 3), a);
    let c = &w.counters()[0];
    assert_eq!(
        c.packets_out_to_source, 3,
        "three hairpinned packets delivered"
    );

    // TCP simultaneous open through the hairpin.
    let ta = out_port(&mut w, tcp(IN1, 40000, REMOTE, 80, SYN, 100, 0), 0);
    let tb = out_port(&mut w, tcp(IN2, 41000, REMOTE, 80, SYN, 900, 0), 0);
    assert_eq!(
        verdict(&mut w, tcp(IN2, 41000, ta.0, ta.1, SYN, 900, 0), 0),
        NatVerdict::Drop(DropReason::NatFiltered)
    );
    assert_eq!(
        deliver(&mut w, tcp(IN1, 40000, tb.0, tb.1, SYN, 100, 0), 0),
        (ta.0, ta.1, IN2, 41000)
    );
    assert_eq!(
        deliver(&mut w, tcp(IN2, 41000, ta.0, ta.1, SYN | ACK, 900, 101), 0),
        (tb.0, tb.1, IN1, 40000)
    );
    // An ICMP error from B about A's packet goes back to A (RFC 5508 through the hairpin).
    let mut sent = udp(IN1, 5000, b.0, b.1);
    assert_eq!(w.process(&mut sent, 3), NatVerdict::Translated);
    let mut e = error_for(&sent, IN2, a.0, 3, 3, 0);
    assert_eq!(w.process(&mut e, 3), NatVerdict::Translated);
    let ip = Ipv4Packet::new_checked(&e.data()[14..]).unwrap();
    assert!(ip.verify_checksum());
    assert_eq!((ip.src_addr(), ip.dst_addr()), (b.0, IN1));
    let icmp = crate::wire::IcmpPacket::new_checked(ip.payload()).unwrap();
    assert!(icmp.verify_checksum());
    let q = Ipv4Packet::new_quoted(icmp.data()).unwrap();
    assert!(q.verify_checksum());
    assert_eq!((q.src_addr(), q.dst_addr()), (IN1, b.0));
    // Echo requests to a public IP are not hairpinned (unsolicited), and make no flow.
    let flows = w.flows();
    assert_eq!(
        verdict(&mut w, echo(IN1, PUB0, 8, 5), 3),
        NatVerdict::Drop(DropReason::NatNoMapping)
    );
    assert_eq!(w.flows(), flows);
    // Nothing to hairpin to: no mapping behind that port.
    let free = (1024..=65535u16)
        .find(|&p| p != a.1 && p != b.1 && p != ta.1 && p != tb.1)
        .unwrap();
    assert_eq!(
        verdict(&mut w, udp(IN1, 5000, PUB0, free), 3),
        NatVerdict::Drop(DropReason::NatNoMapping)
    );
}

#[test]
fn mapping_released_by_expiry_after_its_last_flow() {
    // One port: the mapping decides who has it.
    let mut w = rfc_worker(3000, 3000, 1000, &[PUB0]);
    assert_eq!(
        out_port(&mut w, udp(IN1, 5000, REMOTE, 53), 0),
        (PUB0, 3000)
    );
    out_port(&mut w, udp(IN1, 5000, REMOTE2, 53), s(8));
    assert_eq!(
        verdict(&mut w, udp(IN2, 6000, REMOTE3, 53), s(8)),
        NatVerdict::Drop(DropReason::NatPortExhausted)
    );
    // The first flow expires (10 s UDP timeout); the second still holds the mapping.
    expire_all(&mut w, s(11));
    assert_eq!((w.flows(), w.mappings()), (1, 1));
    assert_eq!(
        verdict(&mut w, udp(IN2, 6000, REMOTE3, 53), s(12)),
        NatVerdict::Drop(DropReason::NatPortExhausted)
    );
    // The permission went with the flow that held it.
    assert_eq!(
        verdict(&mut w, udp(REMOTE, 53, PUB0, 3000), s(12)),
        NatVerdict::Drop(DropReason::NatFiltered)
    );
    // All flows expire (no packet in between): mapping and permissions released.
    expire_all(&mut w, s(19));
    assert_eq!((w.flows(), w.mappings(), permissions(&w)), (0, 0, 0));
    assert_eq!(w.counters()[0].idle_timeouts, 2);
    assert_eq!(w.counters()[0].active_connections, 0);
    assert_eq!(
        verdict(&mut w, udp(REMOTE2, 53, PUB0, 3000), s(19)),
        NatVerdict::Drop(DropReason::NatNoMapping)
    );
    // The port is free for another endpoint now.
    assert_eq!(
        out_port(&mut w, udp(IN2, 6000, REMOTE3, 53), s(20)),
        (PUB0, 3000)
    );
    assert_eq!(w.mappings(), 1);
}

#[test]
fn table_full_in_rfc4787_mode() {
    let mut w = rfc_worker(1024, 65535, 4, &[PUB0]);
    let a = out_port(&mut w, udp(IN1, 5000, REMOTE, 1), 0);
    for dp in 2..=4 {
        assert_eq!(out_port(&mut w, udp(IN1, 5000, REMOTE, dp), 0), a);
    }
    assert_eq!(
        verdict(&mut w, udp(IN1, 5000, REMOTE, 5), 0),
        NatVerdict::Drop(DropReason::NatTableFull)
    );
    assert_eq!(
        verdict(&mut w, udp(IN2, 5000, REMOTE, 5), 0),
        NatVerdict::Drop(DropReason::NatTableFull)
    );
    assert_eq!(
        verdict(&mut w, udp(REMOTE, 99, a.0, a.1), 0),
        NatVerdict::Drop(DropReason::NatTableFull)
    );
    assert_eq!((w.flows(), w.mappings()), (4, 1));
    deliver(&mut w, udp(REMOTE, 3, a.0, a.1), 0);
}

#[test]
fn two_workers_inside_owner_and_hairpin_across_workers() {
    let g = rfc(1024, 65535, 1000, &[PUB0]);
    let mut ws = [
        NatWorker::new(std::slice::from_ref(&g), 0, 2, HZ),
        NatWorker::new(std::slice::from_ref(&g), 1, 2, HZ),
    ];
    // Two inside hosts owned by different workers.
    let host = |o: usize| {
        (2..250u8)
            .map(|i| Ipv4Addr::new(10, 0, 1, i))
            .find(|&ip| ws[0].inside_owner(0, ip) == o)
            .unwrap()
    };
    let (ha, hb) = (host(0), host(1));
    assert_eq!(ws[1].inside_owner(0, ha), 0, "same answer on every worker");
    // Runs a packet from worker `at`, following handoffs: (worker that finished, verdict).
    fn run(ws: &mut [NatWorker; 2], mut at: usize, mut b: VecBuf) -> (usize, NatVerdict, VecBuf) {
        for _ in 0..3 {
            match ws[at].process(&mut b, 0) {
                NatVerdict::Handoff(o) => at = o,
                v => return (at, v, b),
            }
        }
        panic!("handoff loop");
    }
    // Outbound arriving at the wrong worker is handed over unchanged.
    let before = udp(ha, 5000, REMOTE, 53);
    let mut b = before.clone();
    assert_eq!(ws[1].process(&mut b, 0), NatVerdict::Handoff(0));
    assert_eq!(b, before);
    let (at, v, b) = run(&mut ws, 1, udp(ha, 5000, REMOTE, 53));
    assert_eq!((at, v), (0, NatVerdict::Translated));
    let a = (check(&b).0, check(&b).1);
    // The same endpoint toward another destination, entering on the other worker.
    let (_, v, b) = run(&mut ws, 1, udp(ha, 5000, REMOTE2, 53));
    assert_eq!(v, NatVerdict::Translated);
    assert_eq!((check(&b).0, check(&b).1), a, "one mapping across workers");
    assert_eq!(
        ws[0].owner_of(0, a.0, a.1),
        0,
        "port from the owner's slice"
    );
    let (at, v, b) = run(&mut ws, 0, udp(hb, 6000, REMOTE, 53));
    assert_eq!((at, v), (1, NatVerdict::Translated));
    let bb = (check(&b).0, check(&b).1);
    assert_eq!(ws[0].owner_of(0, bb.0, bb.1), 1);
    // Return traffic to the port's owner, filtering there.
    let (at, v, _) = run(&mut ws, 1, udp(REMOTE, 54, a.0, a.1));
    assert_eq!((at, v), (0, NatVerdict::Translated));
    let (at, v, _) = run(&mut ws, 1, udp(REMOTE3, 54, a.0, a.1));
    assert_eq!((at, v), (0, NatVerdict::Drop(DropReason::NatFiltered)));
    // Hairpin across workers: B punches (filtered at A's owner), A sends, B replies.
    let (at, v, _) = run(&mut ws, 1, udp(hb, 6000, a.0, a.1));
    assert_eq!((at, v), (0, NatVerdict::Drop(DropReason::NatFiltered)));
    let (at, v, b) = run(&mut ws, 0, udp(ha, 5000, bb.0, bb.1));
    assert_eq!((at, v), (1, NatVerdict::Translated));
    assert_eq!(check(&b), (a.0, a.1, hb, 6000));
    let (at, v, b) = run(&mut ws, 1, udp(hb, 6000, a.0, a.1));
    assert_eq!((at, v), (0, NatVerdict::Translated));
    assert_eq!(check(&b), (bb.0, bb.1, ha, 5000));
    assert_eq!(ws[0].mappings() + ws[1].mappings(), 2);
}

#[test]
fn aws_mode_unchanged_no_eim_no_filtering_no_hairpin() {
    let mut w = NatWorker::new(&[gw(1024, 65535, None, 1000, &[PUB0])], 0, 1, HZ);
    let a = out_port(&mut w, udp(IN1, 5000, REMOTE, 53), 0);
    let mut ports = HashSet::new();
    for i in 0..50u32 {
        let dst = Ipv4Addr::from(u32::from(REMOTE) + i);
        ports.insert(out_port(&mut w, udp(IN1, 5000, dst, 53), 0).1);
    }
    assert!(ports.len() > 40, "per-destination mapping: {}", ports.len());
    assert_eq!(w.mappings(), 0);
    assert_eq!(
        verdict(&mut w, udp(REMOTE, 54, a.0, a.1), 0),
        NatVerdict::Drop(DropReason::NatNoMapping)
    );
    let b = out_port(&mut w, udp(IN2, 6000, REMOTE, 53), 0);
    assert_eq!(
        verdict(&mut w, udp(IN1, 5000, b.0, b.1), 0),
        NatVerdict::Drop(DropReason::NatNoMapping)
    );
    assert_eq!(w.counters()[0].dropped(DropReason::NatFiltered), 0);
}

#[test]
fn random_traffic_leaves_no_mapping_or_permission_behind() {
    let mut rng = ports::Rng::new(99);
    let mut w = rfc_worker(2000, 2063, 256, &[PUB0, PUB1]);
    let hosts = [IN1, IN2, Ipv4Addr::new(10, 0, 1, 7)];
    let remotes = [REMOTE, REMOTE2, REMOTE3, PUB0, PUB1];
    for i in 0..20_000u64 {
        let now = i * (HZ / 1000);
        let h = hosts[rng.below(3) as usize];
        let r = remotes[rng.below(5) as usize];
        let (lp, rp) = (5000 + rng.below(8) as u16, 2000 + rng.below(64) as u16);
        let b = match rng.below(6) {
            0 => udp(h, lp, r, rp),
            1 => udp(
                r,
                rp,
                [PUB0, PUB1][rng.below(2) as usize],
                2000 + rng.below(64) as u16,
            ),
            2 => tcp(h, lp, r, rp, SYN, i as u32, 0),
            3 => tcp(r, rp, PUB0, 2000 + rng.below(64) as u16, SYN, 1, 0),
            4 => echo(h, r, 8, lp),
            _ => echo(r, PUB0, 0, 2000 + rng.below(64) as u16),
        };
        let _ = verdict(&mut w, b, now);
        w.expire(now);
    }
    assert!(w.counters()[0].dropped(DropReason::NatFiltered) > 0);
    expire_all(&mut w, s(100));
    assert_eq!((w.flows(), w.mappings(), permissions(&w)), (0, 0, 0));
    let c = &w.counters()[0];
    assert_eq!(c.active_connections, 0);
}

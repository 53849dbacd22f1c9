//! LB pin replication between two workers standing for two nodes, whose configs list the
//! load balancers in different orders (the stable tenant key maps them).

use super::super::control::LbControl;
use super::super::tests::CONF_BASE;
use super::*;
use crate::packet::{PacketBuf, VecBuf};
use crate::pipeline::counters::DropReason;
use crate::pipeline::StageVerdict;
use crate::repl::{worker_rings, ControlEnd, Reject};
use crate::wire::{Ipv4Packet, UdpPacket};
use std::sync::atomic::Ordering;

const HZ: u64 = 1_000_000;
const VIP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
const LBA: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 11);
const CLIENT: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);
const TARGET: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 5);

const WEB: &str = "  - id: web
    vips: [198.51.100.10]
    lb_addresses: [198.51.100.11]
    maglev_table_size: 251
    flows_per_core: 4096
    listeners:
      - {protocol: udp, port: 53, target_group: dns}
    target_groups:
      - name: dns
        preserve_client_ip: false
        udp_idle_timeout_s: 30
        targets:
          - {ip: 10.1.0.5, port: 5353}
          - {ip: 10.1.0.6, port: 5353}
";
const OTHER: &str = "  - id: other
    vips: [198.51.100.20]
    maglev_table_size: 251
    flows_per_core: 64
    listeners:
      - {protocol: udp, port: 53, target_group: g}
    target_groups:
      - name: g
        targets:
          - {ip: 10.1.0.9, port: 53}
";

fn node(lbs: &[&str]) -> (LbControl, LbWorker, ControlEnd) {
    let y = format!("{CONF_BASE}{}", lbs.concat());
    let c = crate::config::parse_str(&y, "t.yaml").unwrap_or_else(|e| panic!("{e}"));
    let ctl = LbControl::new(&c.load_balancers, HZ, 0);
    let mut w = LbWorker::new(&c.load_balancers, ctl.cell(), 0, 1, HZ);
    let (wr, ce) = worker_rings();
    w.set_replication(wr, 10);
    (ctl, w, ce)
}

fn udp(src: Ipv4Addr, sp: u16, dst: Ipv4Addr, dp: u16) -> VecBuf {
    let mut f = vec![0u8; 14 + 20 + 8 + 4];
    f[12] = 8;
    {
        let mut ip = Ipv4Packet::new_unchecked(&mut f[14..]);
        ip.set_version_ihl(5);
        ip.set_total_len(32);
        ip.set_ttl(64);
        ip.set_protocol(IPPROTO_UDP);
        ip.set_src_addr(src);
        ip.set_dst_addr(dst);
        ip.fill_checksum();
    }
    {
        let mut u = UdpPacket::new_unchecked(&mut f[34..]);
        u.set_src_port(sp);
        u.set_dst_port(dp);
        u.set_len(12);
        u.fill_checksum(src, dst);
    }
    VecBuf::from_frame(&f)
}

fn tuple(b: &VecBuf) -> (Ipv4Addr, u16, Ipv4Addr, u16) {
    let ip = Ipv4Packet::new_checked(&b.data()[14..]).unwrap();
    let u = UdpPacket::new_checked(ip.payload()).unwrap();
    assert!(u.verify_checksum(ip.src_addr(), ip.dst_addr()));
    (ip.src_addr(), u.src_port(), ip.dst_addr(), u.dst_port())
}

fn events(ce: &mut ControlEnd) -> Vec<FlowEvent> {
    let mut v = Vec::new();
    while let Ok(e) = ce.events.pop() {
        v.push(e);
    }
    v
}

fn rejects(ce: &ControlEnd, r: Reject) -> u64 {
    let i = Reject::ALL.iter().position(|&x| x == r).unwrap();
    ce.counts.rejects[i].load(Ordering::Relaxed)
}

#[test]
fn full_nat_pin_replicates_to_a_peer_with_another_lb_order() {
    let (_ca, mut a, mut ea) = node(&[WEB, OTHER]);
    let (_cb, mut b, mut eb) = node(&[OTHER, WEB]);
    // A flow on A: its ADD names the LB by key, carries target, LB address and port.
    let mut p = udp(CLIENT, 5000, VIP, 53);
    assert_eq!(a.process(&mut p, HZ), StageVerdict::Translated);
    let (src, lport, target, tport) = tuple(&p);
    assert_eq!(src, LBA);
    let ev = events(&mut ea);
    assert_eq!(ev.len(), 1, "{ev:?}");
    let add = ev[0];
    assert_eq!(add.kind, EV_LB_ADD);
    assert_eq!(add.tenant, crate::repl::tenant_key("web"));
    assert_eq!((add.lb_ip, add.lb_port), (u32::from(LBA), lport));
    assert_eq!((add.public_ip, add.public_port), (u32::from(target), tport));
    assert_eq!(add.flags, mf::FULLNAT);
    // Installed on B (where "web" is slot 1), emitting nothing back.
    eb.installs.push(add).unwrap();
    b.replication_poll(HZ);
    assert_eq!(eb.counts.installed.load(Ordering::Relaxed), 1);
    assert!(events(&mut eb).is_empty(), "a replica does not echo");
    // The port stays reserved on B: its full-NAT key is indexed and counted.
    let key = Key::new(IPPROTO_UDP, LBA, lport, target, tport);
    let idx = b.lbs[1].fnat_lookup(&key).expect("reserved on B");
    let m = b.lbs[1].meta[idx as usize];
    assert_eq!(
        b.lbs[1]
            .dests
            .get(&fnat_dest(&b.lbs[1].flows.get(idx).copied().unwrap(), &m)),
        1
    );
    // After failover B forwards both directions exactly as A did.
    let mut r = udp(target, tport, LBA, lport);
    assert_eq!(b.process(&mut r, 2 * HZ), StageVerdict::Translated);
    assert_eq!(tuple(&r), (VIP, 53, CLIENT, 5000));
    let mut c = udp(CLIENT, 5000, VIP, 53);
    assert_eq!(b.process(&mut c, 2 * HZ), StageVerdict::Translated);
    assert_eq!(tuple(&c), (LBA, lport, target, tport));
    assert_eq!(b.counters()[1].new_flows, 0, "no new flow: the pin");
    // Touched, it is B's flow now: B's periodic refresh covers it.
    assert_eq!(b.lbs[1].meta[idx as usize].flags & mf::REPLICA, 0);
}

#[test]
fn unknown_tenants_conflicts_deletes_and_dumps() {
    let (_ca, mut a, mut ea) = node(&[WEB]);
    let (_cb, mut b, mut eb) = node(&[WEB, OTHER]);
    let mut p = udp(CLIENT, 6000, VIP, 53);
    a.process(&mut p, HZ);
    let add = events(&mut ea)[0];
    let mut unknown = add;
    unknown.tenant = crate::repl::tenant_key("nobody");
    let mut clash = add;
    clash.kind = EV_LB_REFRESH;
    clash.public_port ^= 1;
    let mut junk = add;
    junk.proto = 0;
    for e in [add, unknown, clash, junk] {
        eb.installs.push(e).unwrap();
    }
    b.replication_poll(HZ);
    assert_eq!(eb.counts.installed.load(Ordering::Relaxed), 1);
    assert_eq!(rejects(&eb, Reject::UnknownTenant), 1);
    assert_eq!(rejects(&eb, Reject::Conflict), 1);
    assert_eq!(rejects(&eb, Reject::Malformed), 1);
    assert_eq!(b.flows(), 1);
    // The owner idles the flow out: its DEL removes the replica.
    for _ in 0..100 {
        a.expire(40 * HZ);
    }
    let del: Vec<FlowEvent> = events(&mut ea);
    assert!(del.iter().any(|e| e.kind == EV_LB_DEL), "{del:?}");
    for e in del {
        eb.installs.push(e).unwrap();
    }
    b.replication_poll(2 * HZ);
    assert_eq!(eb.counts.deleted.load(Ordering::Relaxed), 1);
    assert_eq!(b.counters()[0].active_flows, 0);
    // A dump lists B's live flows, then the end marker.
    let mut q = udp(CLIENT, 7000, VIP, 53);
    assert_eq!(b.process(&mut q, 3 * HZ), StageVerdict::Translated);
    events(&mut eb);
    eb.installs
        .push(FlowEvent {
            kind: crate::repl::EV_DUMP_REQ,
            ..FlowEvent::default()
        })
        .unwrap();
    let mut got = Vec::new();
    for _ in 0..100 {
        b.replication_poll(3 * HZ);
        got.extend(events(&mut eb));
        if got.last().is_some_and(|e| e.kind == EV_DUMP_END) {
            break;
        }
    }
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!((got[0].kind, got[0].remote_port), (EV_LB_ADD, 7000));
    // Unknown flows still get no packet through: a reply with no pin is dropped.
    let mut stray = udp(TARGET, 5353, LBA, 1);
    assert_eq!(
        b.process(&mut stray, 3 * HZ),
        StageVerdict::Drop(DropReason::LbNoFlow)
    );
}

/// What replication adds on the packet path per LB event: building the event from the
/// flow and its meta, and one ring push (drained by "the sync thread" here). Printed for
/// the docs (`cargo test --release --lib lb_event_cost -- --nocapture`).
#[test]
fn lb_event_cost() {
    let (_c, mut w, mut ce) = node(&[WEB]);
    let mut p = udp(CLIENT, 5000, VIP, 53);
    assert_eq!(w.process(&mut p, HZ), StageVerdict::Translated);
    let idx = w.lbs[0]
        .flows
        .lookup_in(&Key::new(IPPROTO_UDP, VIP, 53, CLIENT, 5000));
    let idx = idx.expect("flow");
    let n = 2_000_000u32;
    let t0 = std::time::Instant::now();
    for i in 0..n {
        w.repl_alive(0, idx, 16);
        if i % 256 == 0 {
            while ce.events.pop().is_ok() {}
        }
    }
    let ns = t0.elapsed().as_nanos() as f64 / f64::from(n);
    println!(
        "LB event (build + push + drain): {ns:.1} ns; on the wire {} bytes + 1/{} of a \
         {}-byte header",
        crate::repl::wire::EVENT_LEN,
        crate::repl::wire::MAX_EVENTS,
        crate::repl::wire::HEADER_LEN
    );
    assert_eq!(
        w.repl
            .as_ref()
            .map(|r| r.ring.dropped.load(Ordering::Relaxed)),
        Some(0)
    );
}

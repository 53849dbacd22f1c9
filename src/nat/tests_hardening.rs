//! Tests of the issue-8 hardening: clock offsets, the exact per-destination limit, the
//! TIME_WAIT guard, TCP window tracking, RSS steering, fragments across workers.

use super::tests::*;
use super::*;
use crate::packet::VecBuf;

/// A 3 GHz TSC, as on the machines the appliance runs on.
const GHZ3: u64 = 3_000_000_000;
const YEAR_S: u64 = 365 * 24 * 3600;

/// A UDP flow created after `years` of TSC uptime expires on time: the wheel starts at the
/// current tick (not 0, which would take it hours to catch up) and its tick arithmetic
/// survives the u32 wrap of the compact deadlines.
fn expiry_on_time_after(years: u64) {
    let mut w = NatWorker::new(&[gw(1024, 65535, None, 1000, &[PUB0])], 0, 1, GHZ3);
    let start = years * YEAR_S * GHZ3 + 12_345;
    let poll = GHZ3 / 10_000; // 100 us between polls
    let mut now = start;
    for _ in 0..10 {
        w.expire(now);
        now += poll;
    }
    assert!(w.wheel_lag(now) <= 1, "wheel cursor far behind the clock");
    let mut b = udp(IN1, 1000, REMOTE, 53);
    assert_eq!(w.process(&mut b, now), NatVerdict::Translated);
    // udp_s = 10: alive at 9.9 s, gone within ~0.1 s of the deadline.
    let created = now;
    while now < created + 99 * GHZ3 / 10 {
        w.expire(now);
        now += GHZ3 / 100;
    }
    assert_eq!(w.flows(), 1, "expired early ({years} years)");
    assert!(w.wheel_lag(now) <= 1, "wheel cursor behind the clock");
    let deadline = created + 10 * GHZ3 + GHZ3 / 8;
    while now < deadline {
        w.expire(now);
        now += poll;
    }
    assert_eq!(w.flows(), 0, "not expired on time ({years} years)");
    assert_eq!(w.counters()[0].idle_timeouts, 1);
}

#[test]
fn expiry_on_time_with_clock_started_at_1_year() {
    expiry_on_time_after(1);
}

#[test]
fn expiry_on_time_with_clock_started_at_5_years() {
    expiry_on_time_after(5);
}

#[test]
fn expiry_on_time_with_clock_started_at_10_years() {
    // Past the u32 wrap of 1/16 s ticks (~8.5 years).
    expiry_on_time_after(10);
}

/// Issue 8 item 1: 55,000 new flows from one inside host to one destination (default
/// limit, one public IP, one worker) all succeed; the 55,001st is refused and counted.
#[test]
fn exact_per_destination_limit_55000_then_refused() {
    let mut w = worker(gw(1024, 65535, None, 60_000, &[PUB0]));
    let mut ports = std::collections::HashSet::new();
    for i in 0..55_000u32 {
        let sp = 1 + i as u16;
        let (ip, p) = out_port(&mut w, udp(IN1, sp, REMOTE, 53), 0);
        assert_eq!(ip, PUB0);
        assert!(ports.insert(p), "port {p} handed out twice");
    }
    assert_eq!(w.flows(), 55_000);
    assert_eq!(w.counters()[0].port_allocation_errors, 0);
    let mut b = udp(IN1, 60_000, REMOTE, 53);
    assert_eq!(
        w.process(&mut b, 0),
        NatVerdict::Drop(DropReason::NatPortExhausted)
    );
    assert_eq!(w.counters()[0].port_allocation_errors, 1);
    assert_eq!(w.flows(), 55_000, "existing flows untouched");
    // Another destination (other remote port) is not affected.
    out_port(&mut w, udp(IN1, 60_001, REMOTE, 54), 0);
    // One mapping expires: exactly one new flow fits again.
    for i in 0..2000 {
        w.expire(s(11) + i);
    }
    assert_eq!(w.flows(), 0);
    for i in 0..55_000u32 {
        out_port(&mut w, udp(IN1, 1 + i as u16, REMOTE, 53), s(12));
    }
    let mut b = udp(IN1, 60_000, REMOTE, 53);
    assert_eq!(
        w.process(&mut b, s(12)),
        NatVerdict::Drop(DropReason::NatPortExhausted)
    );
}

/// A refused allocation toward a full destination is O(1): a flood of 100,000 new flows
/// toward it takes about as long as 100,000 lookups, not 100,000 sweeps of the range.
#[test]
fn refusal_toward_a_full_destination_is_cheap() {
    let mut w = worker(gw(1024, 65535, None, 60_000, &[PUB0]));
    for i in 0..55_000u32 {
        out_port(&mut w, udp(IN1, 1 + i as u16, REMOTE, 53), 0);
    }
    let t0 = std::time::Instant::now();
    for i in 0..100_000u32 {
        let mut b = udp(IN2, (i % 60_000) as u16 + 1, REMOTE, 53);
        assert_eq!(
            w.process(&mut b, 0),
            NatVerdict::Drop(DropReason::NatPortExhausted)
        );
    }
    let el = t0.elapsed();
    // A sweep of the 55,000 candidates costs ~100 us or more per packet (10 s in all);
    // a lookup well under 1 us.
    assert!(el.as_millis() < 1000, "{el:?} for 100,000 refusals");
    assert_eq!(w.counters()[0].port_allocation_errors, 100_000);
}

/// A TCP segment without options (window `win`, unscaled).
#[allow(clippy::too_many_arguments)]
pub(super) fn seg(
    src: Ipv4Addr,
    sp: u16,
    dst: Ipv4Addr,
    dp: u16,
    flags: u8,
    seq: u32,
    ack: u32,
    payload: &[u8],
) -> VecBuf {
    VecBuf::from_frame(&ip_frame(
        src,
        dst,
        6,
        &tcp_seg(src, sp, dst, dp, flags, seq, ack, payload),
        1,
        false,
        0,
    ))
}

fn translated(w: &mut NatWorker, mut b: VecBuf, now: u64) -> (Ipv4Addr, u16, Ipv4Addr, u16) {
    assert_eq!(w.process(&mut b, now), NatVerdict::Translated);
    check(&b)
}

/// A whole TCP connection from IN1:`sp` to REMOTE:80 closed by a FIN handshake at `now`;
/// its public port.
fn tcp_connection_closed(w: &mut NatWorker, sp: u16, now: u64) -> u16 {
    use crate::wire::tcp::{ACK, FIN, SYN};
    let (c, srv) = (1000u32, 5000u32);
    let (_, p, _, _) = translated(w, seg(IN1, sp, REMOTE, 80, SYN, c, 0, b""), now);
    translated(w, seg(REMOTE, 80, PUB0, p, SYN | ACK, srv, c + 1, b""), now);
    translated(
        w,
        seg(IN1, sp, REMOTE, 80, ACK, c + 1, srv + 1, b"GET"),
        now,
    );
    translated(
        w,
        seg(REMOTE, 80, PUB0, p, ACK | FIN, srv + 1, c + 4, b"ok"),
        now,
    );
    translated(
        w,
        seg(IN1, sp, REMOTE, 80, ACK | FIN, c + 4, srv + 4, b""),
        now,
    );
    translated(w, seg(REMOTE, 80, PUB0, p, ACK, srv + 4, c + 5, b""), now);
    p
}

fn expire_until(w: &mut NatWorker, from: u64, to: u64) {
    let mut t = from;
    while t < to {
        w.expire(t);
        t += HZ / 100;
    }
}

fn guard_gw(first: u32, last: u32) -> NatGatewayConfig {
    gw(first, last, None, 1000, &[PUB0]) // transitory 5 s, guard 120 s
}

/// Issue 8 item 12: a port whose connection closed is not handed out again toward the
/// same server while the server may hold it in TIME_WAIT, although the mapping expired
/// (5 s transitory timeout) and the port is free in the table.
#[test]
fn time_wait_guard_keeps_a_closed_port_from_the_same_destination() {
    for trial in 0..20 {
        let mut w = worker(guard_gw(1024, 1025));
        let pa = tcp_connection_closed(&mut w, 1000, 0);
        expire_until(&mut w, 0, s(6));
        assert_eq!(w.flows(), 0, "mapping expired");
        let (_, pb, _, _) = translated(
            &mut w,
            seg(IN1, 1001, REMOTE, 80, crate::wire::tcp::SYN, 77, 0, b""),
            s(7),
        );
        assert_ne!(
            pa, pb,
            "trial {trial}: port reused into the server's TIME_WAIT"
        );
        // Toward another destination the port is free.
        let (_, _, _, _) = translated(
            &mut w,
            seg(IN1, 1002, REMOTE2, 80, crate::wire::tcp::SYN, 77, 0, b""),
            s(7),
        );
        assert_eq!(w.counters()[0].dropped(DropReason::NatTimeWaitReuse), 0);
    }
}

/// When only guarded ports are left below the limit, the one closed longest ago is
/// taken, and that is counted; after the guard time nothing is counted.
#[test]
fn time_wait_guard_falls_back_to_the_oldest_and_counts_it() {
    let mut w = worker(guard_gw(1024, 1025));
    let pa = tcp_connection_closed(&mut w, 1000, 0);
    let pb = tcp_connection_closed(&mut w, 1001, s(1));
    assert_ne!(pa, pb);
    expire_until(&mut w, 0, s(7));
    assert_eq!(w.flows(), 0);
    let (_, pc, _, _) = translated(
        &mut w,
        seg(IN1, 1003, REMOTE, 80, crate::wire::tcp::SYN, 77, 0, b""),
        s(8),
    );
    assert_eq!(pc, pa, "closed longest ago");
    assert_eq!(w.counters()[0].dropped(DropReason::NatTimeWaitReuse), 1);
    assert_eq!(w.counters()[0].port_allocation_errors, 0);
    // Guard over (120 s): reuse is ordinary again.
    expire_until(&mut w, s(8), s(130));
    let _ = tcp_connection_closed(&mut w, 1004, s(130));
    assert_eq!(w.counters()[0].dropped(DropReason::NatTimeWaitReuse), 1);
    // A reset connection leaves no guard (the server holds no TIME_WAIT).
    let mut w = worker(guard_gw(1024, 1024));
    let (_, p, _, _) = translated(
        &mut w,
        seg(IN1, 1000, REMOTE, 80, crate::wire::tcp::SYN, 1, 0, b""),
        0,
    );
    translated(
        &mut w,
        seg(
            REMOTE,
            80,
            PUB0,
            p,
            crate::wire::tcp::RST | crate::wire::tcp::ACK,
            0,
            2,
            b"",
        ),
        0,
    );
    expire_until(&mut w, 0, s(6));
    translated(
        &mut w,
        seg(IN1, 1001, REMOTE, 80, crate::wire::tcp::SYN, 1, 0, b""),
        s(7),
    );
    assert_eq!(w.counters()[0].dropped(DropReason::NatTimeWaitReuse), 0);
}

#[test]
fn check_config_warns_below_rfc5382_transitory_minimum() {
    let text = include_str!("../../conf/test-nat.yaml");
    let mut cfg = crate::config::parse_unvalidated(text, "test-nat.yaml").unwrap();
    cfg.nat_gateways.truncate(1);
    cfg.nat_gateways[0].timeouts.tcp_transitory_s = 5;
    let w = crate::config::nat_warnings(&cfg);
    assert_eq!(w.len(), 1);
    assert!(
        w[0].contains("nat_gateways[0].timeouts.tcp_transitory_s") && w[0].contains("RFC 5382"),
        "{}",
        w[0]
    );
    cfg.nat_gateways[0].timeouts.tcp_transitory_s = 240;
    assert!(crate::config::nat_warnings(&cfg).is_empty());
}

/// Issue 8 item 4 through the worker: spoofed RST, SYN, SYN-ACK and out-of-window data
/// from the outside toward an open connection are dropped and counted; the real peers'
/// segments keep passing and the connection stays established.
#[test]
fn spoofed_segments_from_outside_are_dropped_and_the_connection_survives() {
    use crate::wire::tcp::{ACK, RST, SYN};
    let mut w = default_worker();
    let (c, srv) = (1000u32, 5000u32);
    let (_, p, _, _) = translated(&mut w, seg(IN1, 40000, REMOTE, 80, SYN, c, 0, b""), 0);
    translated(
        &mut w,
        seg(REMOTE, 80, PUB0, p, SYN | ACK, srv, c + 1, b""),
        0,
    );
    translated(
        &mut w,
        seg(IN1, 40000, REMOTE, 80, ACK, c + 1, srv + 1, b"GET"),
        0,
    );
    let spoofs = [
        seg(REMOTE, 80, PUB0, p, RST, srv + 3_000_000, 0, b""),
        seg(REMOTE, 80, PUB0, p, RST | ACK, srv + 200_000, c + 4, b""),
        seg(REMOTE, 80, PUB0, p, SYN, 777, 0, b""),
        seg(REMOTE, 80, PUB0, p, SYN | ACK, 777, c + 4, b""),
        seg(
            REMOTE,
            80,
            PUB0,
            p,
            ACK,
            srv + 1 + 1_000_000,
            c + 4,
            b"junk",
        ),
        seg(REMOTE, 80, PUB0, p, ACK, srv + 1, c + 1_000_000, b"junk"),
    ];
    for mut b in spoofs {
        assert_eq!(
            w.process(&mut b, s(1)),
            NatVerdict::Drop(DropReason::NatTcpOutOfWindow)
        );
    }
    assert_eq!(w.counters()[0].dropped(DropReason::NatTcpOutOfWindow), 6);
    translated(
        &mut w,
        seg(REMOTE, 80, PUB0, p, ACK, srv + 1, c + 4, b"200 OK"),
        s(1),
    );
    translated(
        &mut w,
        seg(IN1, 40000, REMOTE, 80, ACK, c + 4, srv + 7, b""),
        s(1),
    );
    // Still on the established (350 s... here 30 s) timeout, not the transitory one.
    expire_until(&mut w, s(1), s(20));
    assert_eq!(w.flows(), 1);
}

/// Issue 8 item 2: with a programmed RSS key, n workers together still reach the exact
/// per-destination limit (55,000), every port they pick steers return traffic back to the
/// picking worker, and no two workers pick the same port toward the destination.
fn steered_limit_with(n: usize) {
    let g = gw(1024, 65535, None, 60_000, &[PUB0]);
    let steer = RssSteering {
        key: toeplitz::MS_KEY,
        reta: (0..128).map(|i| (i % n) as u16).collect(),
        queue_of_worker: (0..n as u16).collect(),
    };
    let mut all = std::collections::HashSet::new();
    let mut total = 0;
    for wi in 0..n {
        let mut w = NatWorker::new(std::slice::from_ref(&g), wi, n, HZ);
        w.set_rss_steering(Some(steer.clone()));
        // Inside 5-tuples the NIC would steer elsewhere are handed over (outbound UDP has
        // one designated worker per 5-tuple): only this worker's own ones count here.
        let mut next = (1u32..=65535).flat_map(|sp| [(IN1, sp as u16), (IN2, sp as u16)]);
        loop {
            let (src, sp) = next.next().expect("inside tuples left");
            let mut b = udp(src, sp, REMOTE, 53);
            match w.process(&mut b, 0) {
                NatVerdict::Translated => {}
                NatVerdict::Handoff(o) => {
                    assert_ne!(o, wi);
                    continue;
                }
                NatVerdict::Drop(DropReason::NatPortExhausted) => break,
                v => panic!("{v:?}"),
            }
            let (ip, p, _, _) = check(&b);
            let h = toeplitz::hash_v4_l4(&steer.key, REMOTE, ip, 53, p);
            assert_eq!(steer.queue(h), Some(wi as u16), "{n} workers: port {p}");
            assert!(all.insert(p), "{n} workers: port {p} picked twice");
            // The return packet is handled right here (no handoff).
            let mut r = udp(REMOTE, 53, ip, p);
            assert_eq!(w.process(&mut r, 0), NatVerdict::Translated);
            total += 1;
        }
        assert_eq!(w.counters()[0].port_allocation_errors, 1);
    }
    assert_eq!(total, 55_000, "{n} workers");
}

#[test]
fn rss_steered_limit_holds_with_2_workers() {
    steered_limit_with(2);
}

#[test]
fn rss_steered_limit_holds_with_4_workers() {
    steered_limit_with(4);
}

#[test]
fn rss_steered_limit_holds_with_8_workers() {
    steered_limit_with(8);
}

/// ICMP echo cannot be steered (the NIC hashes ICMP on addresses only): identifiers stay
/// in handoff mode, replies reaching another worker are handed to the owner; an ICMP error
/// quoting a steered UDP flow is handed to the worker the NIC steers that flow to.
#[test]
fn rss_steered_mode_icmp_falls_back_to_handoff() {
    let n = 4;
    let g = gw(1024, 65535, None, 1000, &[PUB0]);
    let steer = RssSteering {
        key: toeplitz::MS_KEY,
        reta: (0..128).map(|i| (i % n) as u16).collect(),
        queue_of_worker: (0..n as u16).collect(),
    };
    let mut ws: Vec<NatWorker> = (0..n)
        .map(|wi| {
            let mut w = NatWorker::new(std::slice::from_ref(&g), wi, n, HZ);
            w.set_rss_steering(Some(steer.clone()));
            w
        })
        .collect();
    for wi in 0..n {
        for id in 0..50u16 {
            let mut b = echo(IN1, REMOTE, 8, 100 + id);
            assert_eq!(ws[wi].process(&mut b, 0), NatVerdict::Translated);
            let (ip, pid, _, _) = check(&b);
            for (other, w) in ws.iter_mut().enumerate() {
                let mut r = echo(REMOTE, ip, 0, pid);
                let v = w.process(&mut r, 0);
                if other == wi {
                    assert_eq!(v, NatVerdict::Translated);
                    assert_eq!(check(&r).1, 100 + id);
                } else {
                    assert_eq!(v, NatVerdict::Handoff(wi));
                }
            }
        }
        // ICMP error (port unreachable from a router) about a steered UDP flow.
        let mut sp = 7000;
        let b = loop {
            let mut b = udp(IN1, sp, REMOTE, 53);
            sp += 1;
            if ws[wi].process(&mut b, 0) == NatVerdict::Translated {
                break b;
            }
        };
        let other = (wi + 1) % n;
        let mut e = error_for(&b, ROUTER, PUB0, 3, 3, 0);
        assert_eq!(ws[other].process(&mut e, 0), NatVerdict::Handoff(wi));
        let mut e = error_for(&b, ROUTER, PUB0, 3, 3, 0);
        assert_eq!(ws[wi].process(&mut e, 0), NatVerdict::Translated);
    }
}

/// The two fragments of a 48-byte UDP datagram src:sp -> dst:dp (IP ID `id`).
fn udp_fragments(src: Ipv4Addr, sp: u16, dst: Ipv4Addr, dp: u16, id: u16) -> (VecBuf, VecBuf) {
    let whole = udp_dgram(src, sp, dst, dp, &[7u8; 40], true);
    let first = VecBuf::from_frame(&ip_frame(src, dst, 17, &whole[..24], id, true, 0));
    let later = VecBuf::from_frame(&ip_frame(src, dst, 17, &whole[24..], id, false, 24));
    (first, later)
}

/// Issue 8 item 6, with 2 workers: an inside 5-tuple whose whole datagrams and fragments
/// reach different workers gets one mapping (all its outbound UDP is handled by one
/// designated worker), and later fragments reaching a worker that does not own the flow
/// are handed to the owner in both directions instead of being dropped.
#[test]
fn udp_fragments_with_two_workers_one_mapping_and_handoff_both_ways() {
    let g = gw(1024, 65535, None, 1000, &[PUB0]);
    let mut ws: Vec<NatWorker> = (0..2)
        .map(|wi| NatWorker::new(std::slice::from_ref(&g), wi, 2, HZ))
        .collect();
    for sp in 3000..3020u16 {
        // A whole datagram on both workers: exactly one translates it (the designated one).
        let mut owner = None;
        let mut public = None;
        for (wi, w) in ws.iter_mut().enumerate() {
            let mut b = udp(IN1, sp, REMOTE, 53);
            match w.process(&mut b, 0) {
                NatVerdict::Translated => {
                    owner = Some(wi);
                    public = Some(check(&b).1);
                }
                NatVerdict::Handoff(o) => assert_eq!(o, 1 - wi),
                v => panic!("{v:?}"),
            }
        }
        let (o, p) = (owner.unwrap(), public.unwrap());
        let other = 1 - o;
        // Outbound fragments arriving at the other worker follow the first one there.
        let id = sp;
        let (mut f1, mut f2) = udp_fragments(IN1, sp, REMOTE, 53, id);
        assert_eq!(ws[other].process(&mut f1, 0), NatVerdict::Handoff(o));
        assert_eq!(ws[other].process(&mut f2, 0), NatVerdict::Handoff(o));
        assert_eq!(ws[o].process(&mut f1, 0), NatVerdict::Translated);
        assert_eq!(ws[o].process(&mut f2, 0), NatVerdict::Translated);
        let port_at =
            |b: &VecBuf, off: usize| u16::from_be_bytes([b.data()[off], b.data()[off + 1]]);
        assert_eq!(port_at(&f1, 34), p, "same mapping as the whole datagrams");
        let ip2 = Ipv4Packet::new_checked(&f2.data()[14..]).unwrap();
        assert_eq!(ip2.src_addr(), PUB0);
        // Inbound fragments to the public port, arriving at the worker not owning it.
        let port_owner = ws[0].owner_of(0, PUB0, p);
        assert_eq!(port_owner, o, "the mapping lives where its port is owned");
        let (mut r1, mut r2) = udp_fragments(REMOTE, 53, PUB0, p, id);
        assert_eq!(ws[other].process(&mut r1, 0), NatVerdict::Handoff(o));
        assert_eq!(
            ws[other].process(&mut r2, 0),
            NatVerdict::Handoff(o),
            "later fragment handed over, not dropped"
        );
        assert_eq!(ws[o].process(&mut r1, 0), NatVerdict::Translated);
        assert_eq!(ws[o].process(&mut r2, 0), NatVerdict::Translated);
        assert_eq!(port_at(&r1, 36), sp);
        let ip2 = Ipv4Packet::new_checked(&r2.data()[14..]).unwrap();
        assert_eq!(ip2.dst_addr(), IN1);
    }
    assert_eq!(ws[0].flows() + ws[1].flows(), 20, "one mapping per 5-tuple");
}

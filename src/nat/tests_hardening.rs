//! Tests of the issue-8 hardening: clock offsets, the exact per-destination limit, the
//! TIME_WAIT guard, TCP window tracking, RSS steering, fragments across workers.

use super::tests::*;
use super::*;

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

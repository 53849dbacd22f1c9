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

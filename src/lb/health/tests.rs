//! Pure tests: the threshold state machine and the timetable on a fake clock.
use super::probe::parse_status;
use super::schedule::Job;
use super::*;
use std::time::Instant;

fn spec(interval_ms: u64, healthy: u32, unhealthy: u32) -> HealthSpec {
    HealthSpec {
        interval: Duration::from_millis(interval_ms),
        timeout: Duration::from_millis(interval_ms / 2),
        healthy_threshold: healthy,
        unhealthy_threshold: unhealthy,
        ..HealthSpec::default()
    }
}

fn key(last: u8) -> TargetKey {
    TargetKey {
        group: "web".into(),
        ip: Ipv4Addr::new(10, 0, 0, last),
        port: 80,
    }
}

fn targets(keys: &[u8], s: &HealthSpec) -> Vec<ProbeTarget> {
    keys.iter()
        .map(|&k| ProbeTarget {
            key: key(k),
            spec: s.clone(),
        })
        .collect()
}

fn outcome(ok: bool) -> ProbeOutcome {
    if ok {
        ProbeOutcome::Ok
    } else {
        ProbeOutcome::Refused
    }
}

/// Feeds `results` to a tracker, returning the state after each.
fn states(results: &str, healthy: u32, unhealthy: u32) -> String {
    let mut t = Tracker::default();
    results
        .chars()
        .map(|c| {
            t.record(c == '+', healthy, unhealthy);
            match t.state {
                HealthState::Initial => 'i',
                HealthState::Healthy => 'H',
                HealthState::Unhealthy => 'U',
            }
        })
        .collect()
}

#[test]
fn thresholds_count_consecutive_results() {
    // healthy 3, unhealthy 2: '+' success, '-' failure.
    assert_eq!(states("+++", 3, 2), "iiH");
    assert_eq!(states("++-+++", 3, 2), "iiiiiH");
    assert_eq!(states("--", 3, 2), "iU");
    assert_eq!(states("+++-+--", 3, 2), "iiHHHHU");
    assert_eq!(states("+++--++-+++", 3, 2), "iiHHUUUUUUH");
    // A failure run in a healthy target that stays short of the threshold changes nothing.
    assert_eq!(states("+++-+-+-", 3, 2), "iiHHHHHH");
    // Thresholds of 0 behave as 1.
    assert_eq!(states("+-", 0, 0), "HU");
}

#[test]
fn transitions_are_reported_once() {
    let mut t = Tracker::default();
    let seq: Vec<_> = "++--+++-"
        .chars()
        .map(|c| t.record(c == '+', 2, 2))
        .collect();
    use HealthState::*;
    assert_eq!(
        seq,
        [
            None,
            Some(Healthy),
            None,
            Some(Unhealthy),
            None,
            Some(Healthy),
            None,
            None
        ]
    );
}

#[test]
fn only_healthy_serves_initial_is_held_back() {
    assert!(!HealthState::Initial.serves());
    assert!(HealthState::Healthy.serves());
    assert!(!HealthState::Unhealthy.serves());
}

/// Runs the schedule on a fake clock for `ms` milliseconds in 1 ms steps, answering every
/// due probe of target k at once with `result(k, t)`; returns (time, transition) pairs.
fn simulate(
    s: &mut Schedule,
    t0: Instant,
    ms: u64,
    result: impl Fn(u8, u64) -> bool,
) -> Vec<(u64, Transition)> {
    let mut out = Vec::new();
    for t in 0..ms {
        let now = t0 + Duration::from_millis(t);
        while let Some(job) = s.take_due(now) {
            let k = job.key.ip.octets()[3];
            if let Some(tr) = s.complete(&job, &outcome(result(k, t)), now) {
                out.push((t, tr));
            }
        }
    }
    out
}

#[test]
fn fake_clock_transitions_within_interval_times_threshold() {
    let t0 = Instant::now();
    let mut s = Schedule::default();
    s.set_targets(targets(&[1, 2], &spec(100, 3, 2)), t0);
    // Target 1 always answers; target 2 never does, until t=1000 ms.
    let tr = simulate(&mut s, t0, 1500, |k, t| k == 1 || t >= 1000);
    let at: Vec<_> = tr
        .iter()
        .map(|(t, x)| (*t, x.key.ip.octets()[3], x.to))
        .collect();
    use HealthState::*;
    // Probes at 0, 100, 200, ...: 3 successes by 200 ms, 2 failures by 100 ms, and after
    // the fix at 1000 ms, 3 successes by 1200 ms.
    assert_eq!(
        at,
        [(100, 2, Unhealthy), (200, 1, Healthy), (1200, 2, Healthy)]
    );
    assert_eq!(
        tr[0].1.reason,
        "2 consecutive failures, last: connection refused"
    );
    assert_eq!(tr[1].1.reason, "3 consecutive successes");
    assert_eq!(tr[0].1.from, Initial);
}

#[test]
fn next_probe_is_one_interval_after_the_start_of_the_last() {
    let t0 = Instant::now();
    let mut s = Schedule::default();
    s.set_targets(targets(&[1], &spec(100, 2, 2)), t0);
    assert_eq!(s.next_due(), Some(t0));
    let job = s.take_due(t0).unwrap();
    // In flight: not due again, and nothing else to wait for.
    assert!(s.take_due(t0 + Duration::from_secs(5)).is_none());
    assert_eq!(s.next_due(), None);
    // The probe took 30 ms; the next starts 100 ms after the first started.
    let started = t0 + Duration::from_millis(30);
    s.complete(&job, &ProbeOutcome::Ok, started);
    assert_eq!(s.next_due(), Some(started + Duration::from_millis(100)));
    assert!(s.take_due(started + Duration::from_millis(99)).is_none());
    assert!(s.take_due(started + Duration::from_millis(100)).is_some());
}

#[test]
fn update_keeps_state_of_targets_that_stay() {
    let t0 = Instant::now();
    let mut s = Schedule::default();
    let sp = spec(100, 2, 2);
    s.set_targets(targets(&[1, 2], &sp), t0);
    simulate(&mut s, t0, 150, |k, _| k == 1); // 1 healthy, 2 unhealthy
    assert_eq!(s.state(&key(1)), Some(HealthState::Healthy));
    assert_eq!(s.state(&key(2)), Some(HealthState::Unhealthy));
    // New set: 2 stays, 1 goes, 3 comes; thresholds change (same probe method).
    let t1 = t0 + Duration::from_millis(150);
    s.set_targets(targets(&[2, 3], &spec(100, 5, 5)), t1);
    assert_eq!(
        s.states(),
        [
            (key(2), HealthState::Unhealthy),
            (key(3), HealthState::Initial)
        ]
    );
    // 3 is probed at once, 2 keeps its timetable (next at 200 ms).
    let job = s.take_due(t1).unwrap();
    assert_eq!(job.key, key(3));
    assert!(s.take_due(t1).is_none());
}

#[test]
fn result_for_a_removed_or_readded_target_is_ignored() {
    let t0 = Instant::now();
    let mut s = Schedule::default();
    let sp = spec(100, 1, 1);
    s.set_targets(targets(&[1], &sp), t0);
    let job: Job = s.take_due(t0).unwrap();
    s.set_targets(vec![], t0);
    s.set_targets(targets(&[1], &sp), t0);
    assert!(s.complete(&job, &ProbeOutcome::Refused, t0).is_none());
    assert_eq!(s.state(&key(1)), Some(HealthState::Initial));
    // The re-added target is due at once.
    assert!(s.take_due(t0).is_some());
}

#[test]
fn changed_probe_method_resets_counts_not_state() {
    let t0 = Instant::now();
    let mut s = Schedule::default();
    s.set_targets(targets(&[1], &spec(100, 3, 3)), t0);
    simulate(&mut s, t0, 250, |_, _| true); // 3 successes: healthy
    let mut http = spec(100, 3, 3);
    http.protocol = ProbeProtocol::Http;
    let t1 = t0 + Duration::from_millis(250);
    s.set_targets(targets(&[1], &http), t1);
    assert_eq!(s.state(&key(1)), Some(HealthState::Healthy));
    // Two failures under the new method are not yet three.
    let tr = simulate(&mut s, t1, 250, |_, _| false); // probes at 300 and 400 ms
    assert!(tr.is_empty());
}

#[test]
fn http_status_line_parsing() {
    assert_eq!(parse_status(b"HTTP/1.1 200 OK\r\n"), Some(200));
    assert_eq!(
        parse_status(b"HTTP/1.0 503 Service Unavailable\r\n"),
        Some(503)
    );
    assert_eq!(parse_status(b"HTTP/1.1 204\r\n"), Some(204));
    assert_eq!(parse_status(b"HTTP/2 200\r\n"), None);
    assert_eq!(parse_status(b"SSH-2.0-OpenSSH\r\n"), None);
    assert_eq!(parse_status(b"HTTP/1.1 2x0 OK\r\n"), None);
    assert_eq!(parse_status(b""), None);
}

//! The pure part of health checking: the threshold state machine and the probe timetable.
//! No clock, no sockets: callers pass `now`, so tests drive it with a fake clock.

use super::{HealthSpec, HealthState, ProbeOutcome, ProbeTarget, TargetKey, Transition};
use std::collections::BTreeMap;
use std::time::Instant;

/// Consecutive-result counter of one target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tracker {
    pub state: HealthState,
    successes: u32,
    failures: u32,
}

impl Default for Tracker {
    fn default() -> Self {
        Tracker {
            state: HealthState::Initial,
            successes: 0,
            failures: 0,
        }
    }
}

impl Tracker {
    /// Records one probe result; returns the new state when it changed. Healthy after
    /// `healthy` consecutive successes, Unhealthy after `unhealthy` consecutive failures
    /// (a threshold of 0 counts as 1).
    pub fn record(&mut self, ok: bool, healthy: u32, unhealthy: u32) -> Option<HealthState> {
        let (run, limit, target) = if ok {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            (self.successes, healthy, HealthState::Healthy)
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            (self.failures, unhealthy, HealthState::Unhealthy)
        };
        if self.state != target && run >= limit.max(1) {
            self.state = target;
            return Some(target);
        }
        None
    }

    /// The length of the current run of equal results.
    pub fn run(&self) -> u32 {
        self.successes.max(self.failures)
    }

    /// Forgets the counts (the probe method changed), keeping the state.
    fn reset_counts(&mut self) {
        self.successes = 0;
        self.failures = 0;
    }
}

struct Entry {
    /// Distinguishes a re-added target from the one an in-flight probe was started for.
    id: u64,
    spec: HealthSpec,
    tracker: Tracker,
    due: Instant,
    in_flight: bool,
}

/// A probe to run now.
#[derive(Clone, Debug)]
pub struct Job {
    pub id: u64,
    pub key: TargetKey,
    pub spec: HealthSpec,
}

/// All targets, their states and when each is next probed.
#[derive(Default)]
pub struct Schedule {
    entries: BTreeMap<TargetKey, Entry>,
    next_id: u64,
}

impl Schedule {
    /// Replaces the target set. Targets that stay keep their state and timetable (a changed
    /// probe method, port, path or matcher resets their consecutive counts, not their
    /// state); new targets start `Initial` and are probed at once; the rest are forgotten.
    pub fn set_targets(&mut self, targets: Vec<ProbeTarget>, now: Instant) {
        let mut old = std::mem::take(&mut self.entries);
        for t in targets {
            let entry = match old.remove(&t.key) {
                Some(mut e) => {
                    if !e.spec.same_probe(&t.spec) {
                        e.tracker.reset_counts();
                    }
                    e.spec = t.spec;
                    e
                }
                None => {
                    self.next_id += 1;
                    Entry {
                        id: self.next_id,
                        spec: t.spec,
                        tracker: Tracker::default(),
                        due: now,
                        in_flight: false,
                    }
                }
            };
            self.entries.insert(t.key, entry);
        }
    }

    /// The most overdue target not being probed, marked in flight.
    pub fn take_due(&mut self, now: Instant) -> Option<Job> {
        let (key, e) = self
            .entries
            .iter_mut()
            .filter(|(_, e)| !e.in_flight && e.due <= now)
            .min_by_key(|(_, e)| e.due)?;
        e.in_flight = true;
        Some(Job {
            id: e.id,
            key: key.clone(),
            spec: e.spec.clone(),
        })
    }

    /// When the next probe is due (None: nothing to probe until a probe completes or the
    /// target set changes).
    pub fn next_due(&self) -> Option<Instant> {
        self.entries
            .values()
            .filter(|e| !e.in_flight)
            .map(|e| e.due)
            .min()
    }

    /// Records the result of the probe `job` started at `started`; the next one is due one
    /// interval after that start. Results for a target removed (or removed and re-added)
    /// meanwhile are ignored.
    pub fn complete(
        &mut self,
        job: &Job,
        outcome: &ProbeOutcome,
        started: Instant,
    ) -> Option<Transition> {
        let e = self.entries.get_mut(&job.key).filter(|e| e.id == job.id)?;
        e.in_flight = false;
        e.due = started + e.spec.interval;
        let from = e.tracker.state;
        let to = e.tracker.record(
            outcome.is_ok(),
            e.spec.healthy_threshold,
            e.spec.unhealthy_threshold,
        )?;
        let n = e.tracker.run();
        let reason = if outcome.is_ok() {
            format!("{n} consecutive successes")
        } else {
            format!("{n} consecutive failures, last: {outcome}")
        };
        Some(Transition {
            key: job.key.clone(),
            from,
            to,
            reason,
        })
    }

    pub fn state(&self, key: &TargetKey) -> Option<HealthState> {
        self.entries.get(key).map(|e| e.tracker.state)
    }

    /// Every target's state, ordered by key.
    pub fn states(&self) -> Vec<(TargetKey, HealthState)> {
        self.entries
            .iter()
            .map(|(k, e)| (k.clone(), e.tracker.state))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

//! `HealthChecker`: a fixed pool of std threads that run the probes `Schedule` says are due.
//!
//! Each thread takes the most overdue target under the lock, probes it without the lock
//! (blocking socket calls, bounded by the probe timeout), then records the result. So at most
//! `concurrency` probes run at once and a slow target delays only one thread. Plain threads
//! rather than an async runtime: probes are few (targets / interval) and the control side
//! has no runtime to share.

use super::probe::{probe, ProbeOptions};
use super::schedule::Schedule;
use super::{HealthState, ProbeTarget, TargetKey, Transition};
use crossbeam_channel::Sender;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How the checker runs.
#[derive(Clone, Debug)]
pub struct CheckerOptions {
    pub probe: ProbeOptions,
    /// Probe threads, i.e. most probes in flight at once. A failing target holds a thread
    /// for the whole timeout, so keeping every interval with all T targets failing needs
    /// T x timeout / interval threads (e.g. 100 targets, 10 s, 30 s: 34); with fewer,
    /// probes run late, not lost.
    pub concurrency: usize,
}

impl Default for CheckerOptions {
    fn default() -> Self {
        CheckerOptions {
            probe: ProbeOptions::default(),
            concurrency: 8,
        }
    }
}

struct Shared {
    schedule: Mutex<Schedule>,
    wake: Condvar,
    stop: std::sync::atomic::AtomicBool,
    probe: ProbeOptions,
    transitions: Sender<Transition>,
}

/// Runs health checks until dropped. Transitions go to the channel given to `start` (a
/// closed receiver is ignored) and to the log.
pub struct HealthChecker {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl HealthChecker {
    pub fn start(opts: CheckerOptions, transitions: Sender<Transition>) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            schedule: Mutex::new(Schedule::default()),
            wake: Condvar::new(),
            stop: false.into(),
            probe: opts.probe,
            transitions,
        });
        // Built first so that a failed spawn stops the threads already started (Drop).
        let mut checker = HealthChecker {
            shared,
            threads: Vec::new(),
        };
        for i in 0..opts.concurrency.max(1) {
            let s = checker.shared.clone();
            checker.threads.push(
                std::thread::Builder::new()
                    .name(format!("health-{i}"))
                    .spawn(move || run(&s))?,
            );
        }
        Ok(checker)
    }

    /// Replaces the target set live: targets that stay keep their state (see
    /// `Schedule::set_targets`), new ones are probed at once.
    pub fn update(&self, targets: Vec<ProbeTarget>) {
        lock(&self.shared).set_targets(targets, Instant::now());
        self.shared.wake.notify_all();
    }

    pub fn state(&self, key: &TargetKey) -> Option<HealthState> {
        lock(&self.shared).state(key)
    }

    /// Every target's state, ordered by key (for metrics and for building Maglev tables of
    /// the serving targets).
    pub fn states(&self) -> Vec<(TargetKey, HealthState)> {
        lock(&self.shared).states()
    }
}

impl Drop for HealthChecker {
    /// Stops the threads; one in a probe finishes it first (at most the probe timeout).
    fn drop(&mut self) {
        self.shared
            .stop
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.shared.wake.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn lock(s: &Shared) -> MutexGuard<'_, Schedule> {
    // A panic in another probe thread must not stop health checking: the schedule is
    // consistent between calls, so a poisoned lock is taken over.
    s.schedule.lock().unwrap_or_else(|p| p.into_inner())
}

fn stopping(s: &Shared) -> bool {
    s.stop.load(std::sync::atomic::Ordering::Relaxed)
}

fn run(s: &Shared) {
    let mut sched = lock(s);
    loop {
        if stopping(s) {
            return;
        }
        let now = Instant::now();
        let Some(job) = sched.take_due(now) else {
            // Sleep until the next probe is due, or a change (update, completion, stop).
            let wait = sched
                .next_due()
                .map_or(Duration::from_secs(1), |d| d.saturating_duration_since(now));
            sched = s
                .wake
                .wait_timeout(sched, wait)
                .unwrap_or_else(|p| p.into_inner())
                .0;
            continue;
        };
        drop(sched);
        let started = Instant::now();
        let outcome = probe(&s.probe, job.key.ip, job.key.port, &job.spec);
        sched = lock(s);
        if let Some(t) = sched.complete(&job, &outcome, started) {
            report(&t);
            let _ = s.transitions.send(t);
        }
        // The completed target's next due time may be earlier than what sleepers wait for.
        s.wake.notify_all();
    }
}

fn report(t: &Transition) {
    let msg = format!(
        "health: target {} {} -> {} ({})",
        t.key, t.from, t.to, t.reason
    );
    if t.to == HealthState::Unhealthy {
        crate::warn!("{msg}");
    } else {
        crate::info!("{msg}");
    }
}

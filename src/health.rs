//! Readiness for `/healthz`: ready means every data port's link is up and every worker loop
//! is running — its heartbeat (advanced by each publish between bursts, also when idle) was
//! seen moving within the last second. A load balancer or systemd watchdog in front of the
//! appliance can then take a node out when a port drops or a worker wedges.
//!
//! A watcher thread samples the heartbeats every 100 ms (workers never see it).

use crate::metrics::Telemetry;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a heartbeat may stand still before the worker counts as stalled.
pub const STALE: Duration = Duration::from_secs(1);
const SAMPLE: Duration = Duration::from_millis(100);

/// What the watcher last saw of one worker.
#[derive(Clone, Copy, Default)]
struct Beat {
    value: u64,
    moved_at: Option<Instant>,
}

pub struct Health {
    telemetry: Arc<Telemetry>,
    /// Indices into `telemetry.ports` whose link must be up (data ports; not the
    /// exception port, whose kernel side may legitimately be down).
    required_ports: Vec<usize>,
    beats: Mutex<Vec<Beat>>,
}

impl Health {
    /// Starts the watcher thread; it ends when the process is asked to stop.
    pub fn start(telemetry: Arc<Telemetry>, required_ports: Vec<usize>) -> Arc<Health> {
        let h = Arc::new(Health {
            beats: Mutex::new(vec![Beat::default(); telemetry.workers.len()]),
            telemetry,
            required_ports,
        });
        let w = h.clone();
        let spawned = std::thread::Builder::new()
            .name("fg-health".into())
            .spawn(move || {
                while !crate::pmd::signal::stop_requested() {
                    w.sample(Instant::now());
                    std::thread::sleep(SAMPLE);
                }
            });
        if let Err(e) = spawned {
            crate::error!("health watcher thread: {e}");
        }
        h
    }

    fn sample(&self, now: Instant) {
        let mut beats = self.beats.lock().unwrap_or_else(|e| e.into_inner());
        for (b, w) in beats.iter_mut().zip(&self.telemetry.workers) {
            let v = w.heartbeat.load(std::sync::atomic::Ordering::Relaxed);
            if v != b.value {
                b.value = v;
                b.moved_at = Some(now);
            }
        }
    }

    /// `Ok(summary)` when ready, `Err(reasons)` when not.
    pub fn check(&self) -> Result<String, String> {
        crate::repl::readiness()?;
        let now = Instant::now();
        let ports: Vec<(String, bool)> = self
            .required_ports
            .iter()
            .filter_map(|&i| self.telemetry.ports.get(i))
            .map(|p| (p.name.clone(), p.link_up_now()))
            .collect();
        let since: Vec<Option<Duration>> = self
            .beats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|b| b.moved_at.map(|t| now.saturating_duration_since(t)))
            .collect();
        verdict(crate::pmd::signal::stop_requested(), &ports, &since, STALE)
    }
}

/// The readiness rule, on plain facts: `ports` (name, link up), `since[i]` how long ago
/// worker i's heartbeat last moved (None: never seen moving).
pub fn verdict(
    stopping: bool,
    ports: &[(String, bool)],
    since: &[Option<Duration>],
    stale: Duration,
) -> Result<String, String> {
    let mut why = Vec::new();
    if stopping {
        why.push("stopping".to_string());
    }
    for (name, up) in ports {
        if !up {
            why.push(format!("port {name}: link down"));
        }
    }
    for (i, s) in since.iter().enumerate() {
        match s {
            None => why.push(format!("worker {i}: not running (no heartbeat yet)")),
            Some(d) if *d > stale => why.push(format!(
                "worker {i}: stalled (no heartbeat for {} ms)",
                d.as_millis()
            )),
            Some(_) => {}
        }
    }
    if since.is_empty() {
        why.push("no workers".into());
    }
    if why.is_empty() {
        Ok(format!(
            "ok: {} port(s) up, {} worker(s) running",
            ports.len(),
            since.len()
        ))
    } else {
        Err(why.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Option<Duration> = |m| Some(Duration::from_millis(m));

    fn ports(up: &[bool]) -> Vec<(String, bool)> {
        up.iter()
            .enumerate()
            .map(|(i, &u)| (format!("p{i}"), u))
            .collect()
    }

    #[test]
    fn ready_when_links_up_and_heartbeats_fresh() {
        let v = verdict(false, &ports(&[true, true]), &[MS(10), MS(300)], STALE);
        assert_eq!(v, Ok("ok: 2 port(s) up, 2 worker(s) running".into()));
    }

    #[test]
    fn not_ready_names_every_reason() {
        let v = verdict(true, &ports(&[true, false]), &[None, MS(1500)], STALE).unwrap_err();
        assert!(v.contains("stopping"), "{v}");
        assert!(v.contains("port p1: link down"), "{v}");
        assert!(v.contains("worker 0: not running"), "{v}");
        assert!(
            v.contains("worker 1: stalled (no heartbeat for 1500 ms)"),
            "{v}"
        );
        assert!(!v.contains("p0"), "{v}");
    }

    #[test]
    fn no_workers_is_not_ready() {
        assert!(verdict(false, &[], &[], STALE).is_err());
    }
}

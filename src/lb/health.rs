//! Target health checks (SPEC.md §3, issue 7 §5), run on the control side, never on a worker.
//!
//! - `probe`: one TCP connect or HTTP GET through the kernel's TCP stack (a `socket2` socket,
//!   optionally bound to a source address of the appliance and to a device such as the
//!   exception tap), so probes are real connections from the appliance.
//! - `schedule`: the pure part — per target the threshold state machine (`Tracker`) and when
//!   its next probe is due; driven by explicit `Instant`s so tests use a fake clock.
//! - `checker`: `HealthChecker`, a small pool of std threads (bounded concurrency) that runs
//!   due probes, accepts a new target set live (keeping the state of targets that stay), and
//!   reports every transition on a crossbeam channel and in the log.
//!
//! States: a target starts `Initial`, becomes `Healthy` after `healthy_threshold` consecutive
//! successes and `Unhealthy` after `unhealthy_threshold` consecutive failures (from either
//! state). As on AWS NLB, an `Initial` target gets no new flows until it has passed
//! (`HealthState::serves` is the one place that decides it); the snapshot builder
//! (`control::LbControl`) fails open when no target of a group is healthy, so a freshly
//! started appliance, whose targets are all `Initial`, still forwards to all of them until
//! the first one passes. Without a probe path (no exception port, no
//! `health_check_device`) no checker runs and every target is healthy from the start.

mod checker;
pub mod probe;
pub mod schedule;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_kernel;

pub use checker::{CheckerOptions, HealthChecker};
pub use probe::{ProbeOptions, ProbeOutcome};
pub use schedule::{Schedule, Tracker};

use std::fmt;
use std::net::Ipv4Addr;
use std::time::Duration;

/// How a target is probed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProbeProtocol {
    /// Success = the TCP handshake completes within the timeout.
    Tcp,
    /// Success = `GET path` answers with a status inside `matcher` within the timeout.
    Http,
}

/// The health-check settings of a target group, in the units the checker uses. The config
/// (`load_balancers:`) enforces the AWS ranges (interval 5–300 s, ...); this type accepts
/// any values so that tests can probe every few milliseconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthSpec {
    pub protocol: ProbeProtocol,
    /// Port probed; `None` = the target's traffic port.
    pub port: Option<u16>,
    /// HTTP request path (HTTP only).
    pub path: String,
    /// Inclusive range of HTTP status codes that count as success (HTTP only).
    pub matcher: (u16, u16),
    /// Time from the start of one probe of a target to the start of the next.
    pub interval: Duration,
    /// Whole-probe deadline (connect, and for HTTP the request and the status line).
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
}

impl Default for HealthSpec {
    /// AWS NLB defaults: TCP on the traffic port, 30 s interval, 10 s timeout, 5 / 2.
    fn default() -> Self {
        HealthSpec {
            protocol: ProbeProtocol::Tcp,
            port: None,
            path: "/".into(),
            matcher: (200, 399),
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(10),
            healthy_threshold: 5,
            unhealthy_threshold: 2,
        }
    }
}

impl HealthSpec {
    /// Whether `other` probes the same way (so consecutive counts carry over).
    fn same_probe(&self, other: &HealthSpec) -> bool {
        self.protocol == other.protocol
            && self.port == other.port
            && self.path == other.path
            && self.matcher == other.matcher
    }
}

/// A target as the checker knows it: per target group, since two groups may hold the same
/// IP:port with different health settings.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TargetKey {
    pub group: String,
    pub ip: Ipv4Addr,
    /// The traffic port (the probe port is `spec.port`, default this).
    pub port: u16,
}

impl fmt::Display for TargetKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}:{}", self.group, self.ip, self.port)
    }
}

/// One target to probe, with its group's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeTarget {
    pub key: TargetKey,
    pub spec: HealthSpec,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HealthState {
    /// Registered, not yet `healthy_threshold` successes nor `unhealthy_threshold` failures.
    Initial,
    Healthy,
    Unhealthy,
}

impl HealthState {
    /// Whether new flows may go to a target in this state (see the module doc for Initial).
    pub fn serves(self) -> bool {
        self == HealthState::Healthy
    }

    pub fn as_str(self) -> &'static str {
        match self {
            HealthState::Initial => "initial",
            HealthState::Healthy => "healthy",
            HealthState::Unhealthy => "unhealthy",
        }
    }
}

impl fmt::Display for HealthState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state change, as sent on the checker's channel and logged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub key: TargetKey,
    pub from: HealthState,
    pub to: HealthState,
    /// e.g. "2 consecutive failures, last: connection refused".
    pub reason: String,
}

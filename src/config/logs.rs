//! Config of the flow logs, the translation log and the graceful stop (see
//! docs/operations.md). All off / zero by default.

use super::validate::Validator;
use super::Config;
use serde::Deserialize;
use std::path::PathBuf;

/// `flow_logs:` VPC Flow Logs (version 2 default format) per flow per interval.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FlowLogsConfig {
    /// File written (rotated by size); absent: stdout only (then `stdout` must be true).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Aggregation interval in seconds, 1..=600; default 60 (AWS: 60 or 600).
    #[serde(default = "default_interval")]
    pub interval_s: u32,
    /// The `account-id` field; default `-`.
    #[serde(default = "default_account")]
    pub account_id: String,
    /// Also print every record on stdout.
    #[serde(default)]
    pub stdout: bool,
    /// Rotate the file when it reaches this many bytes; default 100 MiB.
    #[serde(default = "default_rotate_bytes")]
    pub rotate_bytes: u64,
    /// Rotated files kept (`path.1` .. `path.N`); default 5.
    #[serde(default = "default_keep")]
    pub keep: u32,
}

/// `translation_log:` NAT mapping created / deleted events (RFC 6888 §4), JSON lines.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TranslationLogConfig {
    pub path: PathBuf,
    /// Rotate the file when it reaches this many bytes; default 1 GiB.
    #[serde(default = "default_tlog_rotate_bytes")]
    pub rotate_bytes: u64,
    /// Rotated files kept; default 10 (`flowgate ctl who` reads them all).
    #[serde(default = "default_tlog_keep")]
    pub keep: u32,
}

/// Records each worker's ring holds (flow logs and translation events share it).
pub const RING_RECORDS: usize = 65_536;
/// Longest `stop_drain_s` (the systemd unit's TimeoutStopSec=30 must cover it plus the
/// flush).
pub const STOP_DRAIN_MAX_S: u32 = 20;

fn default_interval() -> u32 {
    60
}
fn default_account() -> String {
    "-".into()
}
fn default_rotate_bytes() -> u64 {
    100 << 20
}
fn default_keep() -> u32 {
    5
}
fn default_tlog_rotate_bytes() -> u64 {
    1 << 30
}
fn default_tlog_keep() -> u32 {
    10
}
pub(super) fn default_stop_drain_s() -> u32 {
    0
}

/// Section check (appended to `SECTIONS`).
pub fn check_logs(cfg: &Config, v: &mut Validator<'_>) {
    if let Some(f) = &cfg.flow_logs {
        v.in_range("flow_logs.interval_s", f.interval_s, 1, 600, "");
        if f.path.is_none() && !f.stdout {
            v.fail("flow_logs", "give a path or stdout: true");
        }
        if f.account_id.is_empty() || f.account_id.contains(char::is_whitespace) {
            v.fail("flow_logs.account_id", "must be one word");
        }
        v.in_range("flow_logs.rotate_bytes", f.rotate_bytes, 4096, u64::MAX, "");
        v.in_range("flow_logs.keep", f.keep, 1, 1000, "");
    }
    if let Some(t) = &cfg.translation_log {
        v.in_range(
            "translation_log.rotate_bytes",
            t.rotate_bytes,
            4096,
            u64::MAX,
            "",
        );
        v.in_range("translation_log.keep", t.keep, 1, 1000, "");
    }
    v.in_range(
        "stop_drain_s",
        cfg.stop_drain_s,
        0,
        STOP_DRAIN_MAX_S,
        " (systemd TimeoutStopSec=30 must cover it)",
    );
}

#[cfg(test)]
mod tests {
    use crate::config::parse_str;

    const BASE: &str = "lcores: {workers: [1]}
ports:
  - {name: a, device: net_null0, addresses: [10.0.1.1/24]}
";

    #[test]
    fn logs_are_off_by_default_and_parse_when_given() {
        let c = parse_str(BASE, "t.yaml").unwrap();
        assert!(c.flow_logs.is_none() && c.translation_log.is_none());
        assert_eq!(c.stop_drain_s, 0);
        let c = parse_str(
            &format!(
                "{BASE}flow_logs: {{path: /tmp/f.log, interval_s: 5, account_id: \"123\"}}\n\
                 translation_log: {{path: /tmp/t.log}}\nstop_drain_s: 3\n"
            ),
            "t.yaml",
        )
        .unwrap();
        let f = c.flow_logs.unwrap();
        assert_eq!((f.interval_s, f.account_id.as_str(), f.keep), (5, "123", 5));
        assert_eq!(c.stop_drain_s, 3);
    }

    #[test]
    fn bad_log_settings_name_their_field() {
        for (extra, field) in [
            (
                "flow_logs: {path: /tmp/f, interval_s: 0}\n",
                "flow_logs.interval_s",
            ),
            ("flow_logs: {interval_s: 5}\n", "flow_logs"),
            (
                "flow_logs: {path: /tmp/f, account_id: \"a b\"}\n",
                "flow_logs.account_id",
            ),
            ("stop_drain_s: 99\n", "stop_drain_s"),
            (
                "translation_log: {path: /tmp/t, keep: 0}\n",
                "translation_log.keep",
            ),
        ] {
            let e = parse_str(&format!("{BASE}{extra}"), "t.yaml").unwrap_err();
            let s = e.to_string();
            assert!(
                s.starts_with("t.yaml:") && s.contains(field),
                "{extra}: {s}"
            );
        }
    }
}

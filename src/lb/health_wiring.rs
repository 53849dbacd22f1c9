//! Wires the health checker (`lb::health`) into the running appliance: one `HealthChecker`
//! per load balancer (each has its own probe source address and bind device), built from
//! the target groups' `health_check` settings, and fed back into `LbControl` so that new
//! Maglev snapshots leave unhealthy targets out (fail open when none is healthy is the
//! snapshot builder's rule). The control thread calls `poll` between loop iterations and
//! `reload` on SIGHUP; transitions are counted for `/metrics` here.

use super::control::LbControl;
use super::health::{
    CheckerOptions, HealthChecker, HealthSpec, HealthState, ProbeOptions, ProbeProtocol,
    ProbeTarget, TargetKey, Transition,
};
use crate::config::{Config, HealthCheckConfig, HealthCheckProtocol, LoadBalancerConfig};
use crossbeam_channel::{unbounded, Receiver};
use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The checker's settings for one target group. `interval_ms` is the testing-only override
/// (`health_check_interval_ms`); the probe timeout never exceeds the interval then.
pub fn spec(h: &HealthCheckConfig, interval_ms: Option<u32>) -> HealthSpec {
    let mut interval = Duration::from_secs(u64::from(h.interval_s));
    let mut timeout = Duration::from_secs(u64::from(h.timeout_s));
    if let Some(ms) = interval_ms {
        interval = Duration::from_millis(u64::from(ms));
        timeout = timeout.min(interval);
    }
    HealthSpec {
        protocol: match h.protocol {
            HealthCheckProtocol::Tcp => ProbeProtocol::Tcp,
            HealthCheckProtocol::Http => ProbeProtocol::Http,
        },
        port: h.port,
        path: h.path.clone(),
        matcher: h.matcher,
        interval,
        timeout,
        healthy_threshold: h.healthy_threshold,
        unhealthy_threshold: h.unhealthy_threshold,
    }
}

/// Every registered target of the load balancer (weight 0 included: a draining target
/// that comes back has a current state).
pub fn probe_targets(lb: &LoadBalancerConfig) -> Vec<ProbeTarget> {
    let mut v = Vec::new();
    for g in &lb.target_groups {
        let spec = spec(&g.health_check, lb.health_check_interval_ms);
        for t in &g.targets {
            v.push(ProbeTarget {
                key: TargetKey {
                    group: g.name.clone(),
                    ip: t.ip,
                    port: t.port as u16,
                },
                spec: spec.clone(),
            });
        }
    }
    v
}

/// The kernel interface name of a port's device string (`net_tap0,iface=fg0` -> `fg0`).
fn iface_of(device: &str) -> Option<String> {
    device
        .split(',')
        .find_map(|kv| kv.strip_prefix("iface="))
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// Where the load balancer's probes leave from: its `health_check_source`, and its
/// `health_check_device` or else the exception port's kernel interface.
pub fn probe_options(cfg: &Config, lb: &LoadBalancerConfig) -> ProbeOptions {
    let exception_iface = cfg.exception.as_ref().and_then(|e| {
        cfg.ports
            .iter()
            .find(|p| p.name == e.port)
            .and_then(|p| iface_of(&p.device))
    });
    ProbeOptions {
        source_ip: lb.health_check_source,
        bind_device: lb.health_check_device.clone().or(exception_iface),
    }
}

/// Per load balancer of `cfg`: whether its health checks run (it has a probe path, see
/// `start_one`). `LbControl::new_checked` / `reload_checked` take this, so that targets of a
/// checked load balancer start `initial` (no new flows until they pass) and those of an
/// unchecked one serve at once.
pub fn checks_run(cfg: &Config) -> Vec<bool> {
    cfg.load_balancers
        .iter()
        .map(|lb| probe_options(cfg, lb).bind_device.is_some())
        .collect()
}

/// What `/metrics` shows about the checks: transitions per target and destination state,
/// and each target's checker state (including `initial`).
#[derive(Default)]
pub struct HealthStats {
    /// (lb, group, "ip:port", to) -> transitions.
    transitions: BTreeMap<(String, String, String, &'static str), u64>,
    /// (lb, group, "ip:port") -> current checker state (targets currently probed).
    states: BTreeMap<(String, String, String), HealthState>,
}

fn label(lb: &str, k: &TargetKey) -> (String, String, String) {
    (
        lb.to_string(),
        k.group.clone(),
        format!("{}:{}", k.ip, k.port),
    )
}

impl HealthStats {
    fn record(&mut self, lb: &str, t: &Transition) {
        let (l, g, ep) = label(lb, &t.key);
        *self
            .transitions
            .entry((l.clone(), g.clone(), ep.clone(), t.to.as_str()))
            .or_insert(0) += 1;
        self.states.insert((l, g, ep), t.to);
    }

    /// Replaces the probed set of `lb`: targets that stay keep their state, new ones are
    /// `initial` (or `current`, the checker's own answer, when it has one).
    fn set_targets(&mut self, lb: &str, targets: &[ProbeTarget], checker: &HealthChecker) {
        self.states.retain(|(l, _, _), _| l != lb);
        for t in targets {
            let s = checker.state(&t.key).unwrap_or(HealthState::Initial);
            self.states.insert(label(lb, &t.key), s);
        }
    }
}

/// Adds the health-check families to a scrape.
pub fn families(r: &Registry, stats: &Mutex<HealthStats>) {
    let Ok(s) = stats.lock() else { return };
    let Ok(tr) = IntCounterVec::new(
        Opts::new(
            "flowgate_lb_target_health_transitions_total",
            "Health-check state changes of the target, by the state entered",
        ),
        &["lb", "target_group", "target", "to"],
    ) else {
        return;
    };
    let Ok(st) = IntGaugeVec::new(
        Opts::new(
            "flowgate_lb_target_health_check_state",
            "Health-check state of the target: 1 for the state it is in (initial, healthy, \
             unhealthy)",
        ),
        &["lb", "target_group", "target", "state"],
    ) else {
        return;
    };
    if r.register(Box::new(tr.clone())).is_err() || r.register(Box::new(st.clone())).is_err() {
        return;
    }
    for ((l, g, ep, to), n) in &s.transitions {
        tr.with_label_values(&[l, g, ep, to]).inc_by(*n);
    }
    for ((l, g, ep), cur) in &s.states {
        for x in [
            HealthState::Initial,
            HealthState::Healthy,
            HealthState::Unhealthy,
        ] {
            st.with_label_values(&[l, g, ep, x.as_str()])
                .set(i64::from(*cur == x));
        }
    }
}

struct LbChecks {
    id: String,
    opts: ProbeOptions,
    checker: Option<HealthChecker>,
    rx: Receiver<Transition>,
}

/// The health checkers of all load balancers, owned by the control thread.
pub struct HealthWiring {
    lbs: Vec<LbChecks>,
    pub stats: Arc<Mutex<HealthStats>>,
}

fn start_one(cfg: &Config, lb: &LoadBalancerConfig) -> std::io::Result<LbChecks> {
    let opts = probe_options(cfg, lb);
    let (tx, rx) = unbounded();
    let Some(dev) = opts.bind_device.clone() else {
        // Without the exception tap the kernel holds none of the appliance's addresses
        // and replies to them never reach it: probes would leave by the host's own routes
        // (e.g. a management network) from a host address. Not run; targets serve.
        crate::warn!(
            "load balancer {}: health checks NOT run (no exception port and no \
             health_check_device): every target is treated as healthy from the start",
            lb.id
        );
        return Ok(LbChecks {
            id: lb.id.clone(),
            opts,
            checker: None,
            rx,
        });
    };
    let checker = HealthChecker::start(
        CheckerOptions {
            probe: opts.clone(),
            ..CheckerOptions::default()
        },
        tx,
    )?;
    crate::info!(
        "load balancer {}: health checks from {} bound to device {dev}{}",
        lb.id,
        opts.source_ip
            .map_or("the kernel's source address".to_string(), |a| a.to_string()),
        lb.health_check_interval_ms
            .map_or(String::new(), |ms| format!(
                " (TESTING: every {ms} ms, health_check_interval_ms)"
            )),
    );
    Ok(LbChecks {
        id: lb.id.clone(),
        opts,
        checker: Some(checker),
        rx,
    })
}

impl HealthWiring {
    /// Starts a checker per load balancer, probing every target at once.
    pub fn start(cfg: &Config) -> std::io::Result<HealthWiring> {
        let mut w = HealthWiring {
            lbs: Vec::new(),
            stats: Arc::new(Mutex::new(HealthStats::default())),
        };
        for lb in &cfg.load_balancers {
            w.lbs.push(start_one(cfg, lb)?);
        }
        w.set_targets(cfg);
        Ok(w)
    }

    fn set_targets(&mut self, cfg: &Config) {
        let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        for (c, lb) in self.lbs.iter().zip(&cfg.load_balancers) {
            let targets = probe_targets(lb);
            match &c.checker {
                Some(ch) => {
                    ch.update(targets.clone());
                    stats.set_targets(&c.id, &targets, ch);
                }
                None => stats.states.retain(|(l, _, _), _| *l != c.id),
            }
        }
    }

    /// Applies the transitions reported since the last call: each one updates the target's
    /// health in `LbControl`, which publishes a snapshot (new Maglev tables) when a target
    /// starts or stops serving. Returns how many transitions were applied.
    pub fn poll(&self, ctl: &Mutex<LbControl>) -> usize {
        let mut n = 0;
        for c in &self.lbs {
            while let Ok(t) = c.rx.try_recv() {
                n += 1;
                if let Ok(mut s) = self.stats.lock() {
                    s.record(&c.id, &t);
                }
                let mut ctl = ctl.lock().unwrap_or_else(|p| p.into_inner());
                // false = a target removed by a reload while its probe was in flight.
                let _ = ctl.set_target_state(&c.id, &t.key.group, t.key.ip, t.key.port, t.to);
            }
        }
        n
    }

    /// Shutdown: stops the checkers without waiting for probes in flight (a probe of a
    /// silent target holds its thread for up to its timeout, 10 s at the defaults).
    pub fn stop_in_background(self) {
        let _ = std::thread::Builder::new()
            .name("health-stop".into())
            .spawn(move || drop(self));
    }

    /// SIGHUP: the target set and health settings change live (targets that stay keep
    /// their state). A changed probe source or device restarts that load balancer's
    /// checker: its targets start `initial` again, while `LbControl` keeps their last
    /// health until the new checker reports. The old checker is stopped on a thread of
    /// its own (a probe in flight may take up to its timeout).
    pub fn reload(&mut self, cfg: &Config) {
        for (i, lb) in cfg.load_balancers.iter().enumerate() {
            let Some(c) = self.lbs.get_mut(i) else {
                // Added by a live reload.
                match start_one(cfg, lb) {
                    Ok(new) => self.lbs.push(new),
                    Err(e) => {
                        crate::error!("load balancer {}: cannot start health checks ({e})", lb.id)
                    }
                }
                continue;
            };
            let opts = probe_options(cfg, lb);
            if c.id == lb.id && c.opts == opts {
                continue;
            }
            match start_one(cfg, lb) {
                Ok(new) => {
                    let old = std::mem::replace(c, new).checker;
                    let _ = std::thread::Builder::new()
                        .name("health-stop".into())
                        .spawn(move || drop(old));
                }
                Err(e) => crate::error!(
                    "load balancer {}: cannot restart health checks ({e}); keeping the old ones",
                    lb.id
                ),
            }
        }
        self.set_targets(cfg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_str;

    const CFG: &str = "\
lcores:
  workers: [1]
ports:
  - name: back
    device: net_tap1,iface=b
    addresses: [10.1.0.1/24]
  - name: kernel
    device: net_tap2,iface=fgk0
    role: exception
exception:
  port: kernel
load_balancers:
  - id: web
    vips: [198.51.100.10]
    health_check_source: 10.1.0.1
    listeners:
      - {protocol: tcp, port: 80, target_group: g}
    target_groups:
      - name: g
        health_check: {protocol: http, path: /h, interval_s: 10, timeout_s: 6}
        targets:
          - {ip: 10.1.0.2, port: 8080}
          - {ip: 10.1.0.3, port: 8080, weight: 0}
";

    #[test]
    fn config_maps_to_specs_and_probe_options() {
        let cfg = parse_str(CFG, "t.yaml").unwrap();
        let lb = &cfg.load_balancers[0];
        let o = probe_options(&cfg, lb);
        assert_eq!(o.source_ip, Some("10.1.0.1".parse().unwrap()));
        assert_eq!(o.bind_device.as_deref(), Some("fgk0"), "exception iface");
        let t = probe_targets(lb);
        assert_eq!(t.len(), 2, "weight-0 targets are probed too");
        let s = &t[0].spec;
        assert_eq!(s.protocol, ProbeProtocol::Http);
        assert_eq!(s.path, "/h");
        assert_eq!(s.interval, Duration::from_secs(10));
        assert_eq!(s.timeout, Duration::from_secs(6));
        assert_eq!((s.healthy_threshold, s.unhealthy_threshold), (5, 2));
        let fast = spec(&lb.target_groups[0].health_check, Some(500));
        assert_eq!(fast.interval, Duration::from_millis(500));
        assert_eq!(fast.timeout, Duration::from_millis(500), "timeout capped");
    }

    /// No exception port and no device: no checker, so no probe leaves by the host's routes.
    #[test]
    fn no_probe_path_no_checks() {
        let mut cfg = parse_str(CFG, "t.yaml").unwrap();
        cfg.exception = None;
        let w = HealthWiring::start(&cfg).unwrap();
        assert!(w.lbs[0].checker.is_none());
        assert!(w.stats.lock().unwrap().states.is_empty());
    }

    #[test]
    fn explicit_device_wins_and_none_without_exception_port() {
        let text = CFG.replace(
            "    health_check_source: 10.1.0.1\n",
            "    health_check_device: eth9\n",
        );
        let cfg = parse_str(&text, "t.yaml").unwrap();
        let o = probe_options(&cfg, &cfg.load_balancers[0]);
        assert_eq!(o.bind_device.as_deref(), Some("eth9"));
        assert_eq!(o.source_ip, None);
        let mut cfg = parse_str(CFG, "t.yaml").unwrap();
        cfg.exception = None;
        assert_eq!(
            probe_options(&cfg, &cfg.load_balancers[0]).bind_device,
            None
        );
    }

    #[test]
    fn source_must_be_a_data_port_address() {
        let text = CFG.replace(
            "health_check_source: 10.1.0.1",
            "health_check_source: 10.1.0.9",
        );
        let e = parse_str(&text, "t.yaml").unwrap_err();
        assert_eq!(e.field, "load_balancers[0].health_check_source", "{e}");
        assert_eq!(e.line, 15, "{e}");
        let text = CFG.replace(
            "    health_check_source: 10.1.0.1\n",
            "    health_check_source: 10.1.0.1\n    health_check_interval_ms: 50\n",
        );
        let e = parse_str(&text, "t.yaml").unwrap_err();
        assert_eq!(e.field, "load_balancers[0].health_check_interval_ms", "{e}");
        assert!(e.message.contains("testing only"), "{e}");
    }

    /// Transitions from a real checker (kernel sockets on loopback) reach `LbControl`: the
    /// snapshot's Maglev table drops the unhealthy target, and the stats count them.
    #[test]
    fn transitions_update_control_and_stats() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let up = l.local_addr().unwrap().port();
        let down = {
            let x = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            x.local_addr().unwrap().port()
        };
        let mut cfg = parse_str(CFG, "t.yaml").unwrap();
        cfg.exception = None;
        let lb = &mut cfg.load_balancers[0];
        lb.health_check_source = None;
        lb.health_check_device = Some("lo".into());
        lb.health_check_interval_ms = Some(100);
        let g = &mut lb.target_groups[0];
        g.health_check = HealthCheckConfig::default();
        for (t, port) in g.targets.iter_mut().zip([up, down]) {
            t.ip = std::net::Ipv4Addr::LOCALHOST;
            t.port = u32::from(port);
            t.weight = 1;
        }
        let ctl = Mutex::new(LbControl::new(&cfg.load_balancers, 1, 0));
        let w = HealthWiring::start(&cfg).unwrap();
        let t0 = std::time::Instant::now();
        let mut seen = 0;
        while t0.elapsed() < Duration::from_secs(5) {
            seen += w.poll(&ctl);
            let g = ctl.lock().unwrap().group_health();
            if g[0].unhealthy == 1 && g[0].healthy == 1 && seen >= 2 {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let c = ctl.lock().unwrap();
        let g = c.group_health();
        assert_eq!((g[0].healthy, g[0].unhealthy), (1, 1), "after {seen}");
        let snap = c.cell().load();
        let eligible: Vec<u16> = snap.lbs[0].groups[0]
            .eligible
            .iter()
            .map(|t| t.port)
            .collect();
        assert_eq!(
            eligible,
            vec![up],
            "the Maglev table holds only the healthy target"
        );
        let reg = Registry::new();
        families(&reg, &w.stats);
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&reg.gather())
            .unwrap();
        assert!(
            text.contains(&format!(
                "flowgate_lb_target_health_transitions_total{{lb=\"web\",target=\"127.0.0.1:{down}\",target_group=\"g\",to=\"unhealthy\"}} 1"
            )),
            "{text}"
        );
        drop(l);
    }
}

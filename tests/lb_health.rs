//! Load balancer health checks end to end (issue 7 §5): the real binary, the health checker
//! probing real target servers through the kernel and the exception tap, and real client
//! traffic through the LB (tests/common/lb_topology.rs, plus `ProbeTap`).
//!
//! Probes: HTTP GET / on the traffic port, from the back port's address 10.1.0.1, bound to
//! the exception tap (its default device). Intervals: the config's AWS range is 5..=300 s;
//! these tests use the testing-only `health_check_interval_ms: 1000` (thresholds 2, the
//! probe timeout capped at the interval) so the file runs in well under 90 s.
//!
//! Each target runs `SERVER`, whose listener can be closed (SIGUSR1) and reopened (SIGUSR2)
//! while its established connections stay open: "stopping the server" then refuses probes
//! and new connections like a dead server, yet an open connection is not closed by the
//! target's kernel — so the RST the client gets can only come from the load balancer.

mod common;
#[path = "common/lb_topology.rs"]
mod lb_topology;

use common::*;
use lb_topology::*;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const INTERVAL_MS: u64 = 1000;
const UNHEALTHY_THRESHOLD: u64 = 2;
const HEALTHY_THRESHOLD: u64 = 2;
/// Detection bound: interval x threshold, plus slack for a probe that starts just before
/// the change, the control loop (20 ms), and the metrics poll.
const SLACK_MS: u64 = 1500;

/// HTTP/1.1 keep-alive server naming itself; logs `HTTP <ip> <port>` per connection.
const SERVER: &str = r#"
import socket, sys, threading, signal, time
name, ip, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
ls = None
def handle(c, a):
    print("HTTP %s %d" % a, flush=True)
    buf = b""
    try:
        while True:
            d = c.recv(4096)
            if not d:
                break
            buf += d
            while b"\r\n\r\n" in buf:
                _, buf = buf.split(b"\r\n\r\n", 1)
                body = ("name=%s client=%s\n" % (name, a[0])).encode()
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    except OSError as e:
        print("CONN %s %d %s" % (a[0], a[1], e), flush=True)
    c.close()
def accept_loop(s):
    while True:
        try:
            c, a = s.accept()
        except OSError:
            return
        threading.Thread(target=handle, args=(c, a), daemon=True).start()
def up(*_):
    global ls
    if ls is None:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((ip, port))
        s.listen(512)
        ls = s
        threading.Thread(target=accept_loop, args=(s,), daemon=True).start()
        print("up", flush=True)
def down(*_):
    global ls
    if ls is not None:
        ls.shutdown(socket.SHUT_RDWR)
        ls.close()
        ls = None
        print("down", flush=True)
signal.signal(signal.SIGUSR1, down)
signal.signal(signal.SIGUSR2, up)
up()
while True:
    time.sleep(1)
"#;

/// N short connections to VIP:80; prints `name=...` per answer, `refused` / `error ...`
/// per failure, then `fail=<count>`.
const CLIENT: &str = r#"
import socket, sys
vip, n = sys.argv[1], int(sys.argv[2])
def get(s):
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        d = s.recv(4096)
        if not d:
            raise EOFError
        data += d
    head, body = data.split(b"\r\n\r\n", 1)
    n = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    while len(body) < n:
        d = s.recv(4096)
        if not d:
            raise EOFError
        body += d
    return body.decode().strip()
fails = 0
for i in range(n):
    try:
        s = socket.create_connection((vip, 80), timeout=3)
        print(get(s), flush=True)
        s.close()
    except ConnectionRefusedError:
        fails += 1
        print("refused", flush=True)
    except Exception as e:
        fails += 1
        print("error %r" % e, flush=True)
print("fail=%d" % fails, flush=True)
"#;

/// One keep-alive connection: a request, then (once file `go` exists) another one on the
/// same connection; prints `first name=...` and `second name=...|reset|eof|error`.
const HOLDER: &str = r#"
import socket, sys, os, time
vip, go = sys.argv[1], sys.argv[2]
s = socket.create_connection((vip, 80), timeout=10)
def get():
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        d = s.recv(4096)
        if not d:
            raise EOFError
        data += d
    head, body = data.split(b"\r\n\r\n", 1)
    n = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    while len(body) < n:
        d = s.recv(4096)
        if not d:
            raise EOFError
        body += d
    return body.decode().strip()
print("first " + get(), flush=True)
while not os.path.exists(go):
    time.sleep(0.05)
try:
    print("second " + get(), flush=True)
except ConnectionResetError:
    print("second reset", flush=True)
except EOFError:
    print("second eof", flush=True)
except Exception as e:
    print("second error %r" % e, flush=True)
"#;

struct HealthRig {
    servers: Vec<BgProc>,
    _tap: ProbeTap,
    app: Appliance,
    topo: LbTopology,
    dir: TempDir,
}

/// The appliance config; `targets` = (target number, weight) of group `web`.
fn config(topo: &LbTopology, tap: &str, targets: &[(usize, u32)]) -> String {
    let p = &topo.prefix;
    let (port, exception) = ProbeTap::yaml(tap);
    let targets: String = targets
        .iter()
        .map(|(i, w)| {
            format!(
                "          - {{ip: {}, port: 8080, weight: {w}}}\n",
                target_ip(*i)
            )
        })
        .collect();
    format!(
        r#"lcores:
  main: 0
  workers: [1]
mempool:
  mbufs: 8191
  cache: 256
  data_room: 10240
ports:
  - name: front
    device: "net_af_packet0,iface={p}f0,framesz=10240,blocksz=20480"
    addresses: ["{FRONT_IP}/24"]
  - name: back
    device: "net_af_packet1,iface={p}b0,framesz=10240,blocksz=20480"
    addresses: ["{BACK_IP}/24"]
{port}{exception}worker:
  idle_sleep_us: 50
load_balancers:
  - id: {LB_ID}
    vips: [{VIP}]
    health_check_source: {BACK_IP}
    health_check_interval_ms: {INTERVAL_MS}
    listeners:
      - {{protocol: tcp, port: 80, target_group: web}}
    target_groups:
      - name: web
        health_check: {{protocol: http, path: /, healthy_threshold: {HEALTHY_THRESHOLD}, unhealthy_threshold: {UNHEALTHY_THRESHOLD}}}
        targets:
{targets}"#
    )
}

fn ep(i: usize) -> String {
    format!("{}:8080", target_ip(i))
}

impl HealthRig {
    fn start(prefix: &str) -> HealthRig {
        let all: Vec<(usize, u32)> = (1..=4).map(|i| (i, 1)).collect();
        Self::start_with(prefix, &all)
    }

    /// Every target's server runs; the appliance starts with group `web` = `targets`.
    fn start_with(prefix: &str, targets: &[(usize, u32)]) -> HealthRig {
        let topo = LbTopology::new(prefix);
        let dir = TempDir::new(&format!("lbh-{prefix}"));
        let servers: Vec<BgProc> = (1..=4)
            .map(|i| {
                topo.targets[i - 1].spawn(
                    &[
                        PYTHON,
                        "-u",
                        "-c",
                        SERVER,
                        &format!("t{i}"),
                        &target_ip(i),
                        "8080",
                    ],
                    &dir.join(&format!("t{i}.log")),
                )
            })
            .collect();
        for t in &topo.targets[..4] {
            t.wait_listen("tcp", 8080, Duration::from_secs(10));
        }
        let tap = format!("{prefix}k0");
        let app = Appliance::start(&config(&topo, &tap, targets));
        let tap = ProbeTap::attach(&tap);
        let rig = HealthRig {
            servers,
            _tap: tap,
            app,
            topo,
            dir,
        };
        // The first probes may run before the tap has its address (they fail); wait until
        // every target has passed its checks.
        let ok = rig.wait(Duration::from_secs(15), |m| {
            targets
                .iter()
                .all(|&(i, _)| rig.check_state(m, i) == "healthy")
        });
        assert!(ok.is_some(), "targets not all healthy:\n{}", rig.app.log());
        rig
    }

    /// Rewrites the config with these targets, sends SIGHUP, waits until it is applied.
    fn reload(&self, targets: &[(usize, u32)]) {
        self.reload_text(&config(&self.topo, &self._tap.name, targets));
    }

    /// SIGHUP with this config text (the metrics listener is kept).
    fn reload_text(&self, cfg: &str) {
        let ok = |m: &Metrics| m.value("flowgate_config_reloads_total", &[("result", "ok")]);
        let before = ok(&self.app.metrics());
        let text = format!("{cfg}metrics:\n  listen: \"{}\"\n", self.app.metrics_addr);
        std::fs::write(&self.app.config_path, text).expect("write config");
        self.app.signal(libc::SIGHUP);
        let done = self.wait(Duration::from_secs(10), |m| ok(m) > before);
        assert!(done.is_some(), "reload not applied:\n{}", self.app.log());
    }

    /// Polls /metrics every 50 ms until `f` holds; returns the time it took.
    fn wait(&self, timeout: Duration, f: impl Fn(&Metrics) -> bool) -> Option<Duration> {
        let t0 = Instant::now();
        loop {
            if f(&self.app.metrics()) {
                return Some(t0.elapsed());
            }
            if t0.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The checker's state of target i (initial / healthy / unhealthy).
    fn check_state(&self, m: &Metrics, i: usize) -> &'static str {
        let e = ep(i);
        for s in ["initial", "healthy", "unhealthy"] {
            let l = [
                ("lb", LB_ID),
                ("target_group", "web"),
                ("target", e.as_str()),
                ("state", s),
            ];
            if m.value("flowgate_lb_target_health_check_state", &l) == 1.0 {
                return s;
            }
        }
        "?"
    }

    /// The data path's view of target i (`flowgate_lb_target_state`).
    fn lb_state(&self, m: &Metrics, i: usize, state: &str) -> bool {
        let e = ep(i);
        let l = [
            ("lb", LB_ID),
            ("target_group", "web"),
            ("target", e.as_str()),
            ("state", state),
        ];
        m.value("flowgate_lb_target_state", &l) == 1.0
    }

    fn transitions(&self, m: &Metrics, i: usize, to: &str) -> f64 {
        let e = ep(i);
        let l = [
            ("lb", LB_ID),
            ("target_group", "web"),
            ("target", e.as_str()),
            ("to", to),
        ];
        m.value("flowgate_lb_target_health_transitions_total", &l)
    }

    fn new_flows(&self, m: &Metrics, i: usize) -> f64 {
        let e = ep(i);
        let l = [
            ("lb", LB_ID),
            ("target_group", "web"),
            ("target", e.as_str()),
        ];
        m.value("flowgate_lb_target_new_flows_total", &l)
    }

    fn hosts(&self, m: &Metrics) -> (f64, f64) {
        let l = [("lb", LB_ID), ("target_group", "web")];
        (
            m.value("flowgate_lb_healthy_hosts", &l),
            m.value("flowgate_lb_unhealthy_hosts", &l),
        )
    }

    /// `n` short connections: per-target answer counts and the client's output.
    fn burst(&self, n: usize) -> (BTreeMap<String, usize>, String) {
        let o = self
            .topo
            .client
            .exec(&[PYTHON, "-u", "-c", CLIENT, VIP, &n.to_string()], 120);
        assert!(o.ok(), "client failed\n{o}");
        let mut m = BTreeMap::new();
        for l in o.stdout.lines() {
            if let Some(rest) = l.strip_prefix("name=") {
                let n = rest.split_whitespace().next().unwrap_or("").to_string();
                *m.entry(n).or_insert(0) += 1;
            }
        }
        (m, o.stdout)
    }

    /// Closes (SIGUSR1) or reopens (SIGUSR2) target i's listener.
    fn set_server(&self, i: usize, up: bool) {
        let s = &self.servers[i - 1];
        s.signal(if up { libc::SIGUSR2 } else { libc::SIGUSR1 });
        let want = if up { 8080 } else { 0 };
        let ok = wait_for(Duration::from_secs(5), || {
            let o = self.topo.targets[i - 1].exec(&["ss", "-Hlnt", "sport = :8080"], 5);
            let listening = o.stdout.contains(":8080");
            (listening == (want == 8080)).then_some(())
        });
        assert!(
            ok.is_some(),
            "t{i} listener not {}",
            if up { "up" } else { "down" }
        );
    }

    /// Health transitions of the web group in the appliance log, per (target, to).
    fn logged_transitions(&self) -> BTreeMap<(String, String), f64> {
        let mut m = BTreeMap::new();
        for l in self.app.log().lines() {
            // "health: target web 10.1.0.11:8080 healthy -> unhealthy (...)"
            let Some(rest) = l.split("health: target web ").nth(1) else {
                continue;
            };
            let w: Vec<&str> = rest.split_whitespace().collect();
            if w.len() >= 4 && w[2] == "->" {
                *m.entry((w[0].to_string(), w[3].to_string())).or_insert(0.0) += 1.0;
            }
        }
        m
    }

    /// Every transition counter equals the log's count for it.
    fn assert_metrics_match_log(&self) {
        let m = self.app.metrics();
        let logged = self.logged_transitions();
        for i in 1..=4 {
            for to in ["initial", "healthy", "unhealthy"] {
                let want = logged.get(&(ep(i), to.to_string())).copied().unwrap_or(0.0);
                assert_eq!(
                    self.transitions(&m, i, to),
                    want,
                    "t{i} -> {to}: metrics vs log\n{}",
                    self.app.log()
                );
            }
        }
    }
}

/// One target's server stops: unhealthy within interval x threshold, no new connections,
/// its open connection is reset by the LB; restarted: healthy again and serving. Probes
/// come from the appliance's back address. Metrics equal the logged transitions.
#[test]
fn stopped_target_unhealthy_reset_then_healthy_again() {
    let Some(_g) = setup("stopped_target_unhealthy_reset_then_healthy_again") else {
        return;
    };
    let rig = HealthRig::start("lbh1");
    for i in 1..=4 {
        let log = std::fs::read_to_string(rig.dir.join(&format!("t{i}.log"))).unwrap();
        assert!(
            log.contains(&format!("HTTP {BACK_IP} ")),
            "t{i} saw no probe from {BACK_IP}:\n{log}"
        );
    }
    // A connection held open on some target k: that target is the one stopped.
    let go = rig.dir.join("go");
    let holder = rig.topo.client.spawn(
        &[PYTHON, "-u", "-c", HOLDER, VIP, go.to_str().unwrap()],
        &rig.dir.join("holder.log"),
    );
    let first = wait_for(Duration::from_secs(10), || {
        let t = holder.log_text();
        t.lines()
            .find_map(|l| l.strip_prefix("first name=t"))
            .and_then(|r| r.chars().next()?.to_digit(10))
    })
    .unwrap_or_else(|| panic!("holder got no answer: {}", holder.log_text()));
    let k = first as usize;
    let m0 = rig.app.metrics();
    let unhealthy0 = rig.transitions(&m0, k, "unhealthy");
    let healthy0 = rig.transitions(&m0, k, "healthy");
    let resets0 = m0.value(
        "flowgate_lb_packets_dropped_total",
        &[("lb", LB_ID), ("reason", "lb_unhealthy_target_rst")],
    );

    rig.set_server(k, false);
    let bound = Duration::from_millis(INTERVAL_MS * UNHEALTHY_THRESHOLD + SLACK_MS);
    let took = rig
        .wait(bound, |m| rig.lb_state(m, k, "unhealthy"))
        .unwrap_or_else(|| panic!("t{k} not unhealthy within {bound:?}\n{}", rig.app.log()));
    println!("t{k} stopped -> unhealthy in {took:?} (bound {bound:?})");
    let m = rig.app.metrics();
    assert_eq!(rig.hosts(&m), (3.0, 1.0));
    assert_eq!(rig.check_state(&m, k), "unhealthy");
    assert_eq!(rig.transitions(&m, k, "unhealthy"), unhealthy0 + 1.0);

    let (got, out) = rig.burst(30);
    println!("while t{k} is unhealthy: {got:?}");
    assert!(out.contains("fail=0"), "{out}");
    assert_eq!(got.values().sum::<usize>(), 30, "{out}");
    assert_eq!(
        got.get(&format!("t{k}")),
        None,
        "unhealthy t{k} got flows: {got:?}"
    );

    // The open connection's next packet gets the LB's RST (the target never closed it).
    std::fs::write(&go, b"").unwrap();
    let second = wait_for(Duration::from_secs(10), || {
        holder
            .log_text()
            .lines()
            .find_map(|l| l.strip_prefix("second ").map(str::to_string))
    });
    assert_eq!(second.as_deref(), Some("reset"), "{}", holder.log_text());
    let m = rig.app.metrics();
    let resets = m.value(
        "flowgate_lb_packets_dropped_total",
        &[("lb", LB_ID), ("reason", "lb_unhealthy_target_rst")],
    );
    assert!(resets > resets0, "no lb_unhealthy_target_rst counted");

    rig.set_server(k, true);
    let bound = Duration::from_millis(INTERVAL_MS * HEALTHY_THRESHOLD + SLACK_MS);
    let took = rig
        .wait(bound, |m| rig.lb_state(m, k, "healthy"))
        .unwrap_or_else(|| panic!("t{k} not healthy within {bound:?}\n{}", rig.app.log()));
    println!("t{k} restarted -> healthy in {took:?} (bound {bound:?})");
    let m = rig.app.metrics();
    assert_eq!(rig.hosts(&m), (4.0, 0.0));
    assert_eq!(rig.transitions(&m, k, "healthy"), healthy0 + 1.0);
    let (got, out) = rig.burst(40);
    println!("after t{k} is healthy again: {got:?}");
    assert!(out.contains("fail=0"), "{out}");
    assert!(
        got.get(&format!("t{k}")).copied().unwrap_or(0) > 0,
        "{got:?}"
    );
    rig.assert_metrics_match_log();
    // The health families are promtool-clean.
    require_tool("promtool");
    let text = rig.app.metrics_text();
    assert!(text.contains("flowgate_lb_target_health_transitions_total"));
    let f = rig.dir.join("metrics.txt");
    std::fs::write(&f, &text).unwrap();
    let o = sh(&format!("promtool check metrics < {}", f.display()), 20);
    assert!(
        o.ok(),
        "promtool check metrics:\n{o}\n--- scraped ---\n{text}"
    );
}

/// All servers stopped: every target unhealthy, the group fails open (new SYNs still reach
/// the targets, whose kernels refuse them); one server back: only it gets new flows; a
/// SIGHUP that removes a target and reweights another keeps the others' states.
#[test]
fn all_targets_unhealthy_fail_open() {
    let Some(_g) = setup("all_targets_unhealthy_fail_open") else {
        return;
    };
    let mut rig = HealthRig::start("lbh2");
    for i in 1..=4 {
        rig.set_server(i, false);
    }
    let bound = Duration::from_millis(INTERVAL_MS * UNHEALTHY_THRESHOLD + SLACK_MS);
    let took = rig
        .wait(bound, |m| rig.hosts(m) == (0.0, 4.0))
        .unwrap_or_else(|| panic!("not all unhealthy within {bound:?}\n{}", rig.app.log()));
    println!("all stopped -> all unhealthy in {took:?} (bound {bound:?})");
    let m0 = rig.app.metrics();
    let n = 20;
    let (_, out) = rig.burst(n);
    // Fail open: each SYN went to a target, whose kernel answered RST (no listener): the
    // client sees "refused" at once, not a timeout (which a drop would cause).
    assert_eq!(out.matches("refused").count(), n, "{out}");
    let m1 = rig.app.metrics();
    let per: Vec<f64> = (1..=4)
        .map(|i| rig.new_flows(&m1, i) - rig.new_flows(&m0, i))
        .collect();
    println!("fail open: new flows per target {per:?}");
    assert_eq!(per.iter().sum::<f64>(), n as f64, "{per:?}");
    assert!(per.iter().filter(|&&x| x > 0.0).count() >= 2, "{per:?}");

    rig.set_server(2, true);
    let bound = Duration::from_millis(INTERVAL_MS * HEALTHY_THRESHOLD + SLACK_MS);
    let took = rig
        .wait(bound, |m| rig.hosts(m) == (1.0, 3.0))
        .unwrap_or_else(|| panic!("t2 not healthy within {bound:?}\n{}", rig.app.log()));
    println!("t2 restarted -> healthy in {took:?}");
    let (got, out) = rig.burst(20);
    assert!(out.contains("fail=0"), "{out}");
    assert_eq!(
        got.get("t2"),
        Some(&20),
        "fail open should have ended: {got:?}"
    );
    rig.assert_metrics_match_log();

    // SIGHUP: t4 removed, t3's weight changed. The targets that stay keep their states
    // (no transition for 2.5 intervals), t4 is no longer probed or counted.
    let m0 = rig.app.metrics();
    rig.reload(&[(1, 1), (2, 1), (3, 2)]);
    std::thread::sleep(Duration::from_millis(INTERVAL_MS * 5 / 2));
    let m1 = rig.app.metrics();
    assert_eq!(rig.hosts(&m1), (1.0, 2.0));
    for (i, want) in [(1, "unhealthy"), (2, "healthy"), (3, "unhealthy")] {
        assert_eq!(rig.check_state(&m1, i), want, "t{i} after the reload");
        for to in ["initial", "healthy", "unhealthy"] {
            assert_eq!(
                rig.transitions(&m1, i, to),
                rig.transitions(&m0, i, to),
                "t{i} -> {to} after a reload that kept it"
            );
        }
    }
    assert_eq!(rig.check_state(&m1, 4), "?", "removed t4 still probed");
    let (got, _) = rig.burst(10);
    assert_eq!(got.get("t2"), Some(&10), "{got:?}");
    // A clean, prompt exit with the checkers running (they are not waited for).
    let t0 = Instant::now();
    assert!(rig.app.stop().success(), "{}", rig.app.log());
    println!("stopped in {:?}", t0.elapsed());
    assert!(t0.elapsed() < Duration::from_secs(5));
}

/// AWS "initial": a target added by SIGHUP gets no new connections until it has passed
/// `healthy_threshold` checks (5 here, about 4-5 s at 1 s intervals), while the others keep
/// serving; once healthy it takes its share. The data path's state, the checker's state,
/// the per-target new-flow counter and the target's own server log all agree.
#[test]
fn target_added_by_sighup_gets_no_flows_until_healthy() {
    let Some(_g) = setup("target_added_by_sighup_gets_no_flows_until_healthy") else {
        return;
    };
    let rig = HealthRig::start_with("lbh3", &[(1, 1), (2, 1), (3, 1)]);
    let cfg = config(&rig.topo, &rig._tap.name, &[(1, 1), (2, 1), (3, 1), (4, 1)]).replace(
        "path: /, healthy_threshold: 2,",
        "path: /, healthy_threshold: 5,",
    );
    assert!(cfg.contains("healthy_threshold: 5,"));
    let t0 = Instant::now();
    rig.reload_text(&cfg);
    let m = rig.app.metrics();
    assert!(
        rig.lb_state(&m, 4, "initial"),
        "t4 not initial after SIGHUP"
    );
    assert_eq!(rig.hosts(&m), (3.0, 0.0), "initial counts as neither");
    assert_eq!(
        m.value(
            "flowgate_lb_initial_hosts",
            &[("lb", LB_ID), ("target_group", "web")]
        ),
        1.0
    );
    // Connections while t4 is initial: none reaches it.
    let (got, out) = rig.burst(60);
    let during = t0.elapsed();
    let m = rig.app.metrics();
    assert!(
        rig.lb_state(&m, 4, "initial"),
        "t4 left initial before the burst ended ({during:?}): the test proves nothing"
    );
    println!("while t4 is initial ({during:?} after SIGHUP): {got:?}");
    assert!(out.contains("fail=0"), "{out}");
    assert_eq!(got.values().sum::<usize>(), 60, "{out}");
    assert_eq!(got.get("t4"), None, "initial t4 got flows: {got:?}");
    assert_eq!(rig.new_flows(&m, 4), 0.0);
    let log4 = std::fs::read_to_string(rig.dir.join("t4.log")).unwrap_or_default();
    assert!(
        !log4.contains(&format!("HTTP {}", lb_topology::CLIENT)),
        "t4 saw a client connection while initial:\n{log4}"
    );
    assert!(
        log4.contains(&format!("HTTP {BACK_IP} ")),
        "t4 not probed:\n{log4}"
    );
    // Healthy after 5 successes: within 5 intervals (plus slack) of the SIGHUP.
    let bound = Duration::from_millis(INTERVAL_MS * 5 + SLACK_MS);
    let took = rig
        .wait(bound.saturating_sub(t0.elapsed()), |m| {
            rig.lb_state(m, 4, "healthy")
        })
        .map(|_| t0.elapsed())
        .unwrap_or_else(|| panic!("t4 not healthy within {bound:?}\n{}", rig.app.log()));
    println!("t4 added -> healthy in {took:?} (bound {bound:?})");
    assert!(
        took >= Duration::from_millis(INTERVAL_MS * 3),
        "t4 healthy after {took:?}: sooner than 5 checks allow"
    );
    let m = rig.app.metrics();
    assert_eq!(rig.hosts(&m), (4.0, 0.0));
    assert_eq!(rig.transitions(&m, 4, "healthy"), 1.0);
    let (got, out) = rig.burst(60);
    println!("after t4 is healthy: {got:?}");
    assert!(out.contains("fail=0"), "{out}");
    assert!(got.get("t4").copied().unwrap_or(0) > 0, "{got:?}");
    rig.assert_metrics_match_log();
}

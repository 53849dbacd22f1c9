//! Issue 12 item 1: live reload of NAT gateways (SIGHUP) under traffic, through the real
//! binary on af_packet veths (the NAT topology of tests/nat.rs).
//!
//! Gateways are told apart by inside prefix: A = host a (10.0.1.2), B = host b (10.0.1.3),
//! C = a second address of host a (10.0.1.4). While a ping flood and a TCP stream of A run
//! (A never changes), one SIGHUP adds C, one changes B (public IP, port range, timeouts),
//! one removes C, one with a bad config is refused. A's ping loses nothing and its
//! stream never stalls; new tenants serve at once; removed addresses and tenants drain.
//! Replacements (a gateway's mode or flows_per_core, a load balancer's lb_addresses or
//! flows_per_core) under the changed tenant's own traffic, and a port-range change with
//! two workers in handoff mode, have their own tests at the end.

mod common;
#[path = "common/nat_topology.rs"]
mod nat_topology;

use common::*;
use nat_topology::*;
use std::fs;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const HOST_C: &str = "10.0.1.4";
const PUB_A: &str = "192.0.2.10";
const PUB_B: &str = "192.0.2.11";
const PUB_B2: &str = "192.0.2.12";
const PUB_C: &str = "192.0.2.13";
const ECHO_PORT: u16 = 7000;

/// TCP echo server; logs `ACCEPT <ip> <port>` per connection.
const ECHO_SERVER: &str = r#"
import socket, sys, threading
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(128)
def serve(c):
    try:
        while True:
            d = c.recv(65536)
            if not d:
                break
            c.sendall(d)
    except OSError:
        pass
    c.close()
print("listening", flush=True)
while True:
    c, a = s.accept()
    print("ACCEPT %s %d" % a, flush=True)
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// One TCP connection (from source address argv[3], "-" for any) echoing a message every
/// argv[5] s for argv[4] s. Prints `CONNECTED`, then `OK <time>` per echo, `FAIL <time>` on
/// the first failure (then stops), `DONE`.
const STREAM_CLIENT: &str = r#"
import socket, sys, time
srv, port, src, dur, iv = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4]), float(sys.argv[5])
s = socket.socket()
s.settimeout(1.5)
if src != "-":
    s.bind((src, 0))
try:
    s.connect((srv, port))
except OSError as e:
    print("NOCONNECT %.3f %s" % (time.time(), e), flush=True)
    sys.exit(0)
print("CONNECTED %.3f" % time.time(), flush=True)
end = time.time() + dur
i = 0
while time.time() < end:
    msg = b"m%d." % i
    i += 1
    try:
        s.sendall(msg)
        got = b""
        while len(got) < len(msg):
            d = s.recv(100)
            if not d:
                raise OSError("eof")
            got += d
        print("OK %.3f" % time.time(), flush=True)
    except OSError as e:
        print("FAIL %.3f %s" % (time.time(), e), flush=True)
        break
    time.sleep(iv)
print("DONE", flush=True)
"#;

/// One connection attempt from argv[3]: `CONNECTED` or `NOCONNECT`.
const CONNECT_ONCE: &str = r#"
import socket, sys
s = socket.socket()
s.settimeout(float(sys.argv[4]))
s.bind((sys.argv[3], 0))
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
    s.sendall(b"x")
    print("CONNECTED %r" % s.recv(10), flush=True)
except OSError as e:
    print("NOCONNECT %s" % e, flush=True)
"#;

fn gw_yaml(
    id: &str,
    inside: &str,
    public: &str,
    first: u32,
    last: u32,
    est: u32,
    drain: u32,
) -> String {
    format!(
        "  - id: {id}\n    inside_prefixes: [\"{inside}/32\"]\n    public_ips: [\"{public}\"]\n    \
         port_range: {{first: {first}, last: {last}}}\n    timeouts: {{tcp_established_s: {est}, \
         tcp_transitory_s: 10, udp_s: 10, icmp_s: 10}}\n    flows_per_core: 4096\n    \
         drain_timeout_s: {drain}\n"
    )
}

fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// The lines of a background client's log that start with `tag`, with their time.
fn events(log: &std::path::Path, tag: &str) -> Vec<f64> {
    fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with(tag))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
        .collect()
}

/// Source address and port the echo server saw for its `n`-th connection.
fn accepted(log: &std::path::Path) -> Vec<(String, u16)> {
    fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut w = l.strip_prefix("ACCEPT ")?.split_whitespace();
            Some((w.next()?.to_string(), w.next()?.parse().ok()?))
        })
        .collect()
}

/// The running config with `gws` as its gateways (the harness's `metrics:` section, after
/// the gateways, is kept).
fn with_gateways(rig: &NatRig, gws: &[String]) -> String {
    with_tenants(rig, gws, "")
}

/// The running config with `gws` as its gateways and `lbs` (a `load_balancers:` section
/// or nothing) as its load balancers.
fn with_tenants(rig: &NatRig, gws: &[String], lbs: &str) -> String {
    let text = fs::read_to_string(&rig.app.config_path).unwrap();
    let head = &text[..text.find("nat_gateways:").unwrap()];
    let tail = text.find("\nmetrics:").map_or("", |i| &text[i..]);
    format!("{head}nat_gateways:\n{}{lbs}{tail}", gws.concat())
}

/// Rewrites the config's gateways and sends SIGHUP; waits for `generation`.
fn reload(rig: &NatRig, _base: &str, gws: &[String], generation: u32) -> f64 {
    reload_to(rig, with_gateways(rig, gws), generation)
}

/// Where a stream client runs.
#[derive(Clone, Copy)]
enum Side {
    A,
    B,
    Server,
}

/// Starts `STREAM_CLIENT` (`[dst, port, bind, seconds, gap]`) on `side`, logging to `log`;
/// returns it and the time of its first echo (panics when none comes within 5 s).
fn start_stream(rig: &NatRig, log: &std::path::Path, side: Side, args: [&str; 5]) -> (BgProc, f64) {
    let ns = match side {
        Side::A => rig.a(),
        Side::B => rig.b(),
        Side::Server => rig.server(),
    };
    let mut argv = vec!["python3", "-c", STREAM_CLIENT];
    argv.extend(args);
    let p = ns.spawn(&argv, log);
    let up = wait_for(Duration::from_secs(5), || {
        events(log, "OK").first().copied()
    })
    .unwrap_or_else(|| {
        panic!(
            "stream {args:?} did not start: {}\n{}",
            fs::read_to_string(log).unwrap_or_default(),
            rig.app.log()
        )
    });
    (p, up)
}

/// After a tenant's removal at `t` (drain deadline 3 s): its open connection, logged in
/// `log`, kept working while draining and then failed within the window; its metric series
/// (`series`) disappeared and the appliance logged `drained`.
fn assert_drained(
    rig: &NatRig,
    log: &std::path::Path,
    t: f64,
    who: &str,
    series: (&str, (&str, &str)),
    drained: &str,
) {
    let fail = wait_for(Duration::from_secs(10), || {
        events(log, "FAIL").first().copied()
    })
    .unwrap_or_else(|| {
        panic!(
            "{who}: the connection outlived its drain: {}",
            fs::read_to_string(log).unwrap()
        )
    });
    let ok = events(log, "OK");
    assert!(
        ok.iter().any(|&x| x > t + 1.5),
        "{who}: the connection did not continue while draining: {ok:?} (reload at {t})"
    );
    assert!(
        fail > t + 2.5 && fail < t + 8.0,
        "{who}: the connection failed {:.2} s after the reload (drain 3 s)",
        fail - t
    );
    eprintln!(
        "{who}: open connection ended {:.3} s after its removal (drain 3 s)",
        fail - t
    );
    let (name, label) = series;
    let m = rig
        .app
        .wait_metrics(Duration::from_secs(5), |m| m.get(name, &[label]).is_none());
    assert!(
        m.get(name, &[label]).is_none(),
        "{who}: its series outlived its drain:\n{}",
        m.excerpt(name)
    );
    assert!(rig.app.log().contains(drained), "{}", rig.app.log());
}

/// Writes `text` as the config and sends SIGHUP; waits for `generation`.
fn reload_to(rig: &NatRig, text: String, generation: u32) -> f64 {
    fs::write(&rig.app.config_path, text).unwrap();
    let t = now_s();
    rig.app.signal(libc::SIGHUP);
    let want = format!("(generation {generation})");
    let ok = wait_for(Duration::from_secs(10), || {
        rig.app.log().contains(&want).then_some(())
    });
    assert!(ok.is_some(), "no reload to {want}:\n{}", rig.app.log());
    t
}

#[test]
fn reload_adds_changes_and_drains_nat_gateways_under_traffic() {
    let Some(_g) = setup("reload_adds_changes_and_drains_nat_gateways_under_traffic") else {
        return;
    };
    let topo = NatTopology::new("rlt");
    let full = topo.config(&NatOpts::default());
    let base = full[..full.find("nat_gateways:").unwrap()].to_string();
    let gw_a = gw_yaml("a", HOST_A, PUB_A, 20000, 29999, 30, 30);
    let gw_b = gw_yaml("b", HOST_B, PUB_B, 20000, 29999, 30, 30);
    let gw_c = gw_yaml("c", HOST_C, PUB_C, 20000, 29999, 30, 3);
    let app = Appliance::start(&format!("{base}nat_gateways:\n{gw_a}{gw_b}"));
    let rig = NatRig { app, topo };
    for (ns, dst) in [
        (rig.a(), INSIDE_GW),
        (rig.b(), INSIDE_GW),
        (rig.router(), OUTSIDE_IP),
    ] {
        assert!(ping_until_reply(ns, dst, 10), "no answer from {dst}");
    }
    let a_if = rig.topo.a_if();
    rig.a().must(
        &["ip", "addr", "add", &format!("{HOST_C}/24"), "dev", &a_if],
        5,
    );
    let dir = TempDir::new("reload_tenants");
    let srv_log = dir.join("server.log");
    let _srv = rig.server().spawn(
        &["python3", "-c", ECHO_SERVER, SERVER, &ECHO_PORT.to_string()],
        &srv_log,
    );
    rig.server()
        .wait_listen("tcp", ECHO_PORT, Duration::from_secs(10));
    let port = ECHO_PORT.to_string();
    assert!(ping_until_reply(rig.a(), SERVER, 10), "A does not work");

    // A's traffic for the whole test: a ping flood and a TCP stream.
    let ping_log = dir.join("ping_a.log");
    let ping_a = rig.a().spawn(
        &[
            "ping", "-n", "-q", "-i", "0.01", "-w", "30", "-I", HOST_A, SERVER,
        ],
        &ping_log,
    );
    let a_log = dir.join("stream_a.log");
    let (_stream_a, _) = start_stream(&rig, &a_log, Side::A, [SERVER, &port, HOST_A, "27", "0.05"]);
    // B's long connection, opened before B changes.
    let b_log = dir.join("stream_b.log");
    let (_stream_b, _) = start_stream(&rig, &b_log, Side::B, [SERVER, &port, "-", "9", "0.2"]);
    let before = rig.app.metrics();

    // (1) Add gateway C: it serves at once.
    let t1 = reload(&rig, &base, &[gw_a.clone(), gw_b.clone(), gw_c.clone()], 2);
    let c_log = dir.join("stream_c.log");
    let (_stream_c, c_up) =
        start_stream(&rig, &c_log, Side::A, [SERVER, &port, HOST_C, "20", "0.2"]);
    assert!(
        c_up - t1 < 3.0,
        "C served {:.2} s after the reload",
        c_up - t1
    );
    eprintln!("gateway c: first echo {:.3} s after SIGHUP", c_up - t1);
    assert!(
        accepted(&srv_log).iter().any(|(ip, _)| ip == PUB_C),
        "C's connection does not come from {PUB_C}: {:?}",
        accepted(&srv_log)
    );
    let m = rig.app.metrics();
    assert!(
        m.get("flowgate_nat_active_connections", &[("gateway", "c")]) >= Some(1.0),
        "{}",
        m.excerpt("flowgate_nat_active")
    );

    // (2) Change B: new public IP, port range, timeouts. New flows use the new IP and
    // range; B's open connection stays on its old IP (draining, 30 s).
    let gw_b2 = gw_yaml("b", HOST_B, PUB_B2, 30000, 30999, 60, 30);
    let t2 = reload(&rig, &base, &[gw_a.clone(), gw_b2.clone(), gw_c.clone()], 3);
    let o = python_in(rig.b(), CONNECT_ONCE, &[SERVER, &port, HOST_B, "3"], 10);
    assert!(o.stdout.contains("CONNECTED"), "B's new connection: {o}");
    let acc = accepted(&srv_log);
    let last = acc.last().unwrap();
    assert_eq!(last.0, PUB_B2, "B's new flow: {acc:?}");
    assert!(
        (30000..=30999).contains(&last.1),
        "B's new port range: {acc:?}"
    );
    assert!(
        wait_for(Duration::from_secs(12), || fs::read_to_string(&b_log)
            .unwrap_or_default()
            .contains("DONE")
            .then_some(()))
        .is_some(),
        "B's stream did not end"
    );
    let b_ok = events(&b_log, "OK");
    assert!(
        events(&b_log, "FAIL").is_empty(),
        "B's old connection broke: {}",
        fs::read_to_string(&b_log).unwrap()
    );
    assert!(
        b_ok.iter().filter(|&&t| t > t2 + 1.0).count() >= 3,
        "B's old connection did not continue after the change: {b_ok:?} (reload at {t2})"
    );

    // (3) Remove C: no new flows through it; its open connection continues until the
    // 3 s drain deadline, then is gone (and its series with it).
    let t3 = reload(&rig, &base, &[gw_a.clone(), gw_b2.clone()], 4);
    let o = python_in(rig.a(), CONNECT_ONCE, &[SERVER, &port, HOST_C, "1"], 10);
    assert!(
        o.stdout.contains("NOCONNECT"),
        "new flow through draining C: {o}"
    );
    assert_drained(
        &rig,
        &c_log,
        t3,
        "gateway c",
        ("flowgate_nat_active_connections", ("gateway", "c")),
        "nat gateway c: drain ended",
    );

    // (4) A bad config (A takes B's public IP) is refused: the running config stays.
    // (A change of mode or flows_per_core replaces a gateway live: see
    // `reload_replaces_a_nat_gateway_with_a_new_mode_under_its_own_traffic`.)
    let gw_a_bad = gw_a.replace(PUB_A, PUB_B2);
    let text = with_gateways(&rig, &[gw_a_bad, gw_b2.clone()]);
    fs::write(&rig.app.config_path, text).unwrap();
    rig.app.signal(libc::SIGHUP);
    let refused = wait_for(Duration::from_secs(10), || {
        rig.app
            .log()
            .lines()
            .any(|l| l.contains("reload refused"))
            .then_some(())
    });
    assert!(refused.is_some(), "{}", rig.app.log());

    // A never noticed: no lost ping, no stalled echo.
    let mut ping_a = ping_a;
    let _ = ping_a.wait_timeout(Duration::from_secs(35));
    let pl = fs::read_to_string(&ping_log).unwrap_or_default();
    let (sent, recv) = ping_counts(&pl).unwrap_or_else(|| panic!("ping output: {pl}"));
    assert!(sent > 1000, "ping flood too small: {pl}");
    assert_eq!(sent, recv, "A's ping lost packets across reloads: {pl}");
    eprintln!("gateway a: ping flood {recv}/{sent}");
    let a_ok = events(&a_log, "OK");
    assert!(
        events(&a_log, "FAIL").is_empty(),
        "A's stream: {}",
        fs::read_to_string(&a_log).unwrap()
    );
    let gap = a_ok.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
    assert!(gap < 0.5, "A's stream stalled {gap:.2} s");
    eprintln!("gateway a: {} echoes, longest gap {gap:.3} s", a_ok.len());
    assert!(a_ok.len() > 200, "A's stream: {} echoes", a_ok.len());

    let m = rig.app.metrics();
    let ok = |m: &Metrics| m.value("flowgate_config_reloads_total", &[("result", "ok")]);
    let refused = |m: &Metrics| m.value("flowgate_config_reloads_total", &[("result", "refused")]);
    assert_eq!(ok(&m) - ok(&before), 3.0);
    assert_eq!(refused(&m) - refused(&before), 1.0);
    assert!(m
        .get("flowgate_nat_active_connections", &[("gateway", "a")])
        .is_some());
    assert!(m
        .get("flowgate_nat_active_connections", &[("gateway", "b")])
        .is_some());
    assert!(
        m.value(
            "flowgate_nat_packets_dropped_total",
            &[("gateway", "a"), ("reason", "nat_draining")]
        ) == 0.0
    );
    // The exposition stays promtool-clean with series coming and going.
    if which("promtool").is_some() {
        let f = dir.join("metrics.txt");
        fs::write(&f, rig.app.metrics_text()).unwrap();
        let o = sh(&format!("promtool check metrics < {}", f.display()), 20);
        assert!(o.ok(), "promtool check metrics:\n{o}");
    }
}

/// The load balancer `web` (VIPs `vips`) in front of host b's echo server.
fn lb_yaml(vips: &[&str]) -> String {
    let v: Vec<String> = vips.iter().map(|v| format!("\"{v}\"")).collect();
    format!(
        "load_balancers:\n  - id: web\n    vips: [{}]\n    flows_per_core: 4096\n    \
         drain_timeout_s: 3\n    listeners:\n      - {{protocol: tcp, port: {LB_PORT}, \
         target_group: web}}\n    target_groups:\n      - name: web\n        targets:\n          \
         - {{ip: \"{HOST_B}\", port: {LB_PORT}}}\n",
        v.join(", ")
    )
}

const LB_PORT: u16 = 8080;
const VIP1: &str = "192.0.2.20";
const VIP2: &str = "192.0.2.21";

#[test]
fn reload_adds_and_drains_a_load_balancer_under_traffic() {
    let Some(_g) = setup("reload_adds_and_drains_a_load_balancer_under_traffic") else {
        return;
    };
    let topo = NatTopology::new("rlb");
    // Started without any load balancer; gateway a covers both private hosts.
    let gw_a =
        gw_yaml("a", "10.0.1.0", PUB_A, 20000, 29999, 30, 30).replace("10.0.1.0/32", "10.0.1.0/24");
    let full = topo.config(&NatOpts::default());
    let base = full[..full.find("nat_gateways:").unwrap()].to_string();
    let app = Appliance::start(&format!("{base}nat_gateways:\n{gw_a}"));
    let rig = NatRig { app, topo };
    for (ns, dst) in [
        (rig.a(), INSIDE_GW),
        (rig.b(), INSIDE_GW),
        (rig.router(), OUTSIDE_IP),
    ] {
        assert!(ping_until_reply(ns, dst, 10), "no answer from {dst}");
    }
    let dir = TempDir::new("reload_lb");
    let lport = LB_PORT.to_string();
    let _target = rig.b().spawn(
        &["python3", "-c", ECHO_SERVER, HOST_B, &lport],
        &dir.join("target.log"),
    );
    rig.b().wait_listen("tcp", LB_PORT, Duration::from_secs(10));
    assert!(ping_until_reply(rig.a(), SERVER, 10), "A does not work");
    let ping_log = dir.join("ping_a.log");
    let mut ping_a = rig.a().spawn(
        &[
            "ping", "-n", "-q", "-i", "0.01", "-w", "16", "-I", HOST_A, SERVER,
        ],
        &ping_log,
    );

    // (1) Add the load balancer: its VIP serves at once.
    let gws = [gw_a.clone()];
    let t1 = reload_to(&rig, with_tenants(&rig, &gws, &lb_yaml(&[VIP1])), 2);
    let s_log = dir.join("stream_lb.log");
    let (_stream, up) = start_stream(
        &rig,
        &s_log,
        Side::Server,
        [VIP1, &lport, SERVER, "12", "0.2"],
    );
    assert!(
        up - t1 < 3.0,
        "VIP served {:.2} s after the reload",
        up - t1
    );
    eprintln!("lb web: first echo {:.3} s after SIGHUP", up - t1);

    // (2) Add a second VIP: served too.
    reload_to(&rig, with_tenants(&rig, &gws, &lb_yaml(&[VIP1, VIP2])), 3);
    let o = python_in(rig.server(), CONNECT_ONCE, &[VIP2, &lport, SERVER, "3"], 10);
    assert!(o.stdout.contains("CONNECTED"), "the added VIP: {o}");
    let m = rig.app.metrics();
    assert!(
        m.get("flowgate_lb_active_flows", &[("lb", "web")]) >= Some(1.0),
        "{}",
        m.excerpt("flowgate_lb_active")
    );

    // (3) Remove the load balancer: no new flows, the open one continues until the 3 s
    // drain deadline, then the series go.
    let t3 = reload_to(&rig, with_tenants(&rig, &gws, ""), 4);
    let o = python_in(rig.server(), CONNECT_ONCE, &[VIP1, &lport, SERVER, "1"], 10);
    assert!(
        o.stdout.contains("NOCONNECT"),
        "new flow to a draining LB: {o}"
    );
    assert_drained(
        &rig,
        &s_log,
        t3,
        "lb web",
        ("flowgate_lb_active_flows", ("lb", "web")),
        "load balancer web: drain ended",
    );

    // The unchanged gateway lost nothing.
    let _ = ping_a.wait_timeout(Duration::from_secs(20));
    let pl = fs::read_to_string(&ping_log).unwrap_or_default();
    let (sent, recv) = ping_counts(&pl).unwrap_or_else(|| panic!("ping output: {pl}"));
    assert!(sent > 500, "ping flood too small: {pl}");
    assert_eq!(sent, recv, "A's ping lost packets across reloads: {pl}");
    eprintln!("gateway a: ping flood {recv}/{sent} (LB test)");
    if which("promtool").is_some() {
        let f = dir.join("metrics.txt");
        fs::write(&f, rig.app.metrics_text()).unwrap();
        let o = sh(&format!("promtool check metrics < {}", f.display()), 20);
        assert!(o.ok(), "promtool check metrics:\n{o}");
    }
}

/// Waits until the stream client logging to `log` printed `DONE`.
fn wait_done(log: &std::path::Path, secs: u64) {
    assert!(
        wait_for(Duration::from_secs(secs), || fs::read_to_string(log)
            .unwrap_or_default()
            .contains("DONE")
            .then_some(()))
        .is_some(),
        "stream did not end: {}",
        fs::read_to_string(log).unwrap_or_default()
    );
}

/// The open connection logging to `log` worked to its end, also after `t`.
fn assert_unbroken(log: &std::path::Path, t: f64, who: &str) {
    let ok = events(log, "OK");
    assert!(
        events(log, "FAIL").is_empty(),
        "{who}: the open connection broke: {}",
        fs::read_to_string(log).unwrap()
    );
    assert!(
        ok.iter().filter(|&&x| x > t + 1.0).count() >= 3,
        "{who}: the open connection did not continue after the reload: {ok:?} (at {t})"
    );
    let gap = ok.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
    eprintln!("{who}: {} echoes, longest gap {gap:.3} s", ok.len());
}

#[test]
fn reload_replaces_a_nat_gateway_with_a_new_mode_under_its_own_traffic() {
    let Some(_g) = setup("reload_replaces_a_nat_gateway_with_a_new_mode_under_its_own_traffic")
    else {
        return;
    };
    let topo = NatTopology::new("rlm");
    let full = topo.config(&NatOpts::default());
    let base = full[..full.find("nat_gateways:").unwrap()].to_string();
    let gw_a = gw_yaml("a", HOST_A, PUB_A, 20000, 29999, 30, 8);
    let app = Appliance::start(&format!("{base}nat_gateways:\n{gw_a}"));
    let rig = NatRig { app, topo };
    for (ns, dst) in [(rig.a(), INSIDE_GW), (rig.router(), OUTSIDE_IP)] {
        assert!(ping_until_reply(ns, dst, 10), "no answer from {dst}");
    }
    let dir = TempDir::new("reload_mode");
    let srv_log = dir.join("server.log");
    let _srv = rig.server().spawn(
        &["python3", "-c", ECHO_SERVER, SERVER, &ECHO_PORT.to_string()],
        &srv_log,
    );
    rig.server()
        .wait_listen("tcp", ECHO_PORT, Duration::from_secs(10));
    let port = ECHO_PORT.to_string();
    assert!(ping_until_reply(rig.a(), SERVER, 10), "A does not work");
    // The changed gateway's own traffic: a ping flood and a TCP stream across the reload.
    let ping_log = dir.join("ping_a.log");
    let mut ping_a = rig.a().spawn(
        &[
            "ping", "-n", "-q", "-i", "0.01", "-w", "6", "-I", HOST_A, SERVER,
        ],
        &ping_log,
    );
    let a_log = dir.join("stream_a.log");
    let (_stream_a, _) = start_stream(&rig, &a_log, Side::A, [SERVER, &port, HOST_A, "6", "0.05"]);
    std::thread::sleep(Duration::from_secs(1));
    let m0 = rig.app.metrics();
    let cap0 = m0.value("flowgate_nat_flow_capacity", &[]);

    // rfc4787 and a bigger table: a new gateway for new flows, the old one drains (8 s).
    let gw_a2 = gw_a
        .replace("flows_per_core: 4096", "flows_per_core: 8192")
        .replace(
            "    drain_timeout_s",
            "    mode: rfc4787\n    drain_timeout_s",
        );
    let t = reload(&rig, &base, &[gw_a2], 2);
    assert!(rig.app.log().contains("replaced"), "{}", rig.app.log());
    let o = python_in(rig.a(), CONNECT_ONCE, &[SERVER, &port, HOST_A, "3"], 10);
    assert!(o.stdout.contains("CONNECTED"), "a new connection: {o}");
    let m = rig.app.metrics();
    assert_eq!(
        m.value("flowgate_nat_flow_capacity", &[]),
        cap0 + 8192.0,
        "both tables while the old one drains"
    );
    assert!(
        m.get(
            "flowgate_nat_active_connections",
            &[("gateway", "a~replaced")]
        ) >= Some(1.0),
        "the old flows stay on the replaced gateway: {}",
        m.excerpt("flowgate_nat_active")
    );
    assert!(
        m.value(
            "flowgate_nat_connection_attempts_total",
            &[("gateway", "a")]
        ) >= 1.0
            || m.get("flowgate_nat_active_connections", &[("gateway", "a")]) >= Some(1.0),
        "the new connection is on the new gateway: {}",
        m.excerpt("flowgate_nat")
    );
    wait_done(&a_log, 10);
    assert_unbroken(&a_log, t, "gateway a (replaced)");
    let _ = ping_a.wait_timeout(Duration::from_secs(10));
    let pl = fs::read_to_string(&ping_log).unwrap_or_default();
    let (sent, recv) = ping_counts(&pl).unwrap_or_else(|| panic!("ping output: {pl}"));
    assert!(sent > 300, "ping flood too small: {pl}");
    assert_eq!(
        sent, recv,
        "A's ping lost packets across the replacement: {pl}"
    );
    eprintln!("gateway a: ping flood {recv}/{sent} across the replacement");
    // The old one retires after its drain; the new one keeps serving.
    let retired = wait_for(Duration::from_secs(15), || {
        rig.app
            .log()
            .contains("nat gateway a: replaced one drained, retired")
            .then_some(())
    });
    assert!(retired.is_some(), "{}", rig.app.log());
    eprintln!(
        "replaced gateway retired {:.1} s after SIGHUP (drain 8 s)",
        now_s() - t
    );
    let m = rig.app.wait_metrics(Duration::from_secs(5), |m| {
        m.get(
            "flowgate_nat_active_connections",
            &[("gateway", "a~replaced")],
        )
        .is_none()
    });
    // The freed slot holds an empty placeholder (16 flows).
    let cap = m.value("flowgate_nat_flow_capacity", &[]);
    assert!(
        cap >= 8192.0 && cap < cap0 + 8192.0,
        "capacity {cap} after the drain"
    );
    let o = python_in(rig.a(), CONNECT_ONCE, &[SERVER, &port, HOST_A, "3"], 10);
    assert!(o.stdout.contains("CONNECTED"), "after the drain: {o}");
}

#[test]
fn reload_changes_the_port_range_with_two_workers_in_handoff_mode() {
    let Some(_g) = setup("reload_changes_the_port_range_with_two_workers_in_handoff_mode") else {
        return;
    };
    let opts = NatOpts {
        workers: vec![1, 2],
        queues: 2,
        ..NatOpts::default()
    };
    // Both workers on cpu 1 (a 2-core machine).
    let rig = NatRig::start_with("rlp", &opts, &["--lcores", "0@0,1@1,2@1"]);
    let dir = TempDir::new("reload_ports");
    let srv_log = dir.join("server.log");
    let _srv = rig.server().spawn(
        &["python3", "-c", ECHO_SERVER, SERVER, &ECHO_PORT.to_string()],
        &srv_log,
    );
    rig.server()
        .wait_listen("tcp", ECHO_PORT, Duration::from_secs(10));
    let port = ECHO_PORT.to_string();
    assert!(ping_until_reply(rig.a(), SERVER, 10), "A does not work");
    let a_log = dir.join("stream_a.log");
    let (_stream_a, _) = start_stream(&rig, &a_log, Side::A, [SERVER, &port, HOST_A, "6", "0.05"]);
    let old_port = accepted(&srv_log).last().unwrap().1;
    // An odd shift of `first` (per-worker slices used to be anchored at it: every port
    // changed owner) to a half range that still holds the open connection's port.
    let (first, last) = if old_port >= 25001 {
        (25001, 29999)
    } else {
        (20001, 25000)
    };
    let text = fs::read_to_string(&rig.app.config_path).unwrap().replace(
        "port_range: {first: 20000, last: 29999}",
        &format!("port_range: {{first: {first}, last: {last}}}"),
    );
    let t = reload_to(&rig, text, 2);
    let o = python_in(rig.a(), CONNECT_ONCE, &[SERVER, &port, HOST_A, "3"], 10);
    assert!(o.stdout.contains("CONNECTED"), "a new connection: {o}");
    let acc = accepted(&srv_log);
    let new_port = acc.last().unwrap().1;
    assert!((first..=last).contains(&new_port), "{acc:?}");
    wait_done(&a_log, 10);
    assert_unbroken(&a_log, t, "two workers, port range changed");
    eprintln!("open connection on port {old_port} survived; new one on {new_port}");
    let m = rig.app.metrics();
    eprintln!("handoffs: {}", m.value("flowgate_handoff_sent_total", &[]));
}

/// Load balancer `web`, full NAT from `lb_address`, in front of host b's echo server.
fn lb_fnat_yaml(lb_address: &str, flows: u32) -> String {
    format!(
        "load_balancers:\n  - id: web\n    vips: [\"{VIP1}\"]\n    lb_addresses: \
         [\"{lb_address}\"]\n    flows_per_core: {flows}\n    drain_timeout_s: 8\n    \
         listeners:\n      - {{protocol: tcp, port: {LB_PORT}, target_group: web}}\n    \
         target_groups:\n      - name: web\n        preserve_client_ip: false\n        \
         targets:\n          - {{ip: \"{HOST_B}\", port: {LB_PORT}}}\n"
    )
}

#[test]
fn reload_replaces_a_load_balancer_with_new_lb_addresses_under_its_own_traffic() {
    let Some(_g) =
        setup("reload_replaces_a_load_balancer_with_new_lb_addresses_under_its_own_traffic")
    else {
        return;
    };
    // On the outside subnet: the target's replies reach them through its default route.
    const LBA1: &str = "192.0.2.30";
    const LBA2: &str = "192.0.2.31";
    let topo = NatTopology::new("rlr");
    // Gateway a covers both private hosts (their sources pass the inside filter).
    let gw_a =
        gw_yaml("a", "10.0.1.0", PUB_A, 20000, 29999, 30, 30).replace("10.0.1.0/32", "10.0.1.0/24");
    let full = topo.config(&NatOpts::default());
    let base = full[..full.find("nat_gateways:").unwrap()].to_string();
    let app = Appliance::start(&format!("{base}nat_gateways:\n{gw_a}"));
    let rig = NatRig { app, topo };
    for (ns, dst) in [
        (rig.a(), INSIDE_GW),
        (rig.b(), INSIDE_GW),
        (rig.router(), OUTSIDE_IP),
    ] {
        assert!(ping_until_reply(ns, dst, 10), "no answer from {dst}");
    }
    let dir = TempDir::new("reload_lb_fnat");
    let lport = LB_PORT.to_string();
    let t_log = dir.join("target.log");
    let _target = rig
        .b()
        .spawn(&["python3", "-c", ECHO_SERVER, HOST_B, &lport], &t_log);
    rig.b().wait_listen("tcp", LB_PORT, Duration::from_secs(10));
    let gws = [gw_a.clone()];
    reload_to(&rig, with_tenants(&rig, &gws, &lb_fnat_yaml(LBA1, 4096)), 2);
    let s_log = dir.join("stream_lb.log");
    let (_stream, _) = start_stream(
        &rig,
        &s_log,
        Side::Server,
        [VIP1, &lport, SERVER, "7", "0.05"],
    );
    assert_eq!(accepted(&t_log).last().unwrap().0, LBA1);
    std::thread::sleep(Duration::from_secs(1));

    // New LB address and a bigger table: replaced; the old one drains (8 s).
    let t = reload_to(&rig, with_tenants(&rig, &gws, &lb_fnat_yaml(LBA2, 8192)), 3);
    assert!(
        rig.app.log().contains("load balancer web: lb_addresses"),
        "{}",
        rig.app.log()
    );
    let o = python_in(rig.server(), CONNECT_ONCE, &[VIP1, &lport, SERVER, "3"], 10);
    assert!(o.stdout.contains("CONNECTED"), "a new connection: {o}");
    let acc = accepted(&t_log);
    assert_eq!(
        acc.last().unwrap().0,
        LBA2,
        "new flows use the new address: {acc:?}"
    );
    let m = rig.app.metrics();
    assert!(
        m.get("flowgate_lb_active_flows", &[("lb", "web~replaced")]) >= Some(1.0),
        "{}",
        m.excerpt("flowgate_lb_active")
    );
    wait_done(&s_log, 12);
    assert_unbroken(&s_log, t, "lb web (replaced)");
    let drained = wait_for(Duration::from_secs(15), || {
        rig.app
            .log()
            .contains("load balancer web~replaced: drain ended")
            .then_some(())
    });
    assert!(drained.is_some(), "{}", rig.app.log());
    eprintln!(
        "replaced load balancer retired {:.1} s after SIGHUP (drain 8 s)",
        now_s() - t
    );
    let o = python_in(rig.server(), CONNECT_ONCE, &[VIP1, &lport, SERVER, "3"], 10);
    assert!(o.stdout.contains("CONNECTED"), "after the drain: {o}");
    assert_eq!(accepted(&t_log).last().unwrap().0, LBA2);
}

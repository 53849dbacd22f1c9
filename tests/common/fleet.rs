//! Fleet test helpers: a real etcd on loopback, the fleet daemons, the router namespace.
//! Used by tests/fleet.rs as `#[path = "common/fleet.rs"] mod fleet_common;`.
#![allow(dead_code)]

use crate::common::{self, BgProc, Netns, TempDir};
use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// A free TCP port on 127.0.0.1 (bound, then released: a race is possible but harmless here).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A single-member etcd on 127.0.0.1 with random ports and its data in the test's temp dir.
pub struct Etcd {
    pub endpoint: String,
    peer: String,
    data: PathBuf,
    log: PathBuf,
    pub proc: Option<BgProc>,
}

impl Etcd {
    pub fn start(dir: &TempDir) -> Etcd {
        common::require_tool("etcd");
        common::require_tool("etcdctl");
        let mut e = Etcd {
            endpoint: format!("http://127.0.0.1:{}", free_port()),
            peer: format!("http://127.0.0.1:{}", free_port()),
            data: dir.join("etcd-data"),
            log: dir.join("etcd.log"),
            proc: None,
        };
        e.resume();
        e
    }

    /// (Re)starts etcd on the same ports and data and waits until it answers.
    pub fn resume(&mut self) {
        let mut c = Command::new("etcd");
        c.args(["--name", "fleet-test", "--data-dir"])
            .arg(&self.data)
            .args(["--listen-client-urls", &self.endpoint])
            .args(["--advertise-client-urls", &self.endpoint])
            .args(["--listen-peer-urls", &self.peer])
            .args(["--initial-advertise-peer-urls", &self.peer])
            .args(["--initial-cluster", &format!("fleet-test={}", self.peer)])
            .args(["--log-level", "warn"]);
        self.proc = Some(BgProc::spawn(c, "etcd", &self.log));
        let ok = common::wait_for(Duration::from_secs(15), || {
            self.ctl(&["endpoint", "health"]).ok().then_some(())
        });
        assert!(
            ok.is_some(),
            "etcd did not come up:\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    /// Stops etcd (SIGTERM), keeping its data for `resume`.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.stop_with(libc::SIGTERM, Duration::from_secs(5));
        }
    }

    pub fn ctl(&self, args: &[&str]) -> common::Out {
        let mut full = vec![
            "env",
            "ETCDCTL_API=3",
            "etcdctl",
            "--dial-timeout=2s",
            "--command-timeout=3s",
            "--endpoints",
            &self.endpoint,
        ];
        full.extend_from_slice(args);
        common::run(&full, 10)
    }

    pub fn put(&self, key: &str, value: &str) {
        self.ctl(&["put", key, value]).expect_ok("etcdctl put");
    }

    /// key suffix -> value for every key under `prefix`.
    pub fn list(&self, prefix: &str) -> BTreeMap<String, String> {
        let o = self.ctl(&["get", "--prefix", prefix]);
        if !o.ok() {
            return BTreeMap::new();
        }
        let lines: Vec<&str> = o.stdout.lines().collect();
        lines
            .chunks(2)
            .filter(|c| c.len() == 2)
            .filter_map(|c| Some((c[0].strip_prefix(prefix)?.to_string(), c[1].to_string())))
            .collect()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.stop_with(libc::SIGKILL, Duration::from_secs(2));
        }
    }
}

/// Shard value -> node set.
pub fn shard(v: &str) -> BTreeSet<String> {
    v.split(',')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// The next hops (`via X`) of routes listed by `ip -n NS route show ARGS`.
pub fn route_vias(router: &Netns, args: &[&str]) -> BTreeSet<String> {
    let mut full = vec!["ip", "route", "show"];
    full.extend_from_slice(args);
    let o = router.exec(&full, 5);
    let words: Vec<&str> = o.stdout.split_whitespace().collect();
    words
        .windows(2)
        .filter(|w| w[0] == "via")
        .map(|w| w[1].to_string())
        .collect()
}

/// `ip rule` lines of the router.
pub fn rules(router: &Netns) -> String {
    router.exec(&["ip", "rule", "show"], 5).stdout
}

/// A Prometheus text-file gauge value.
pub fn gauge(path: &std::path::Path, name: &str) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find(|l| l.starts_with(name) && !l.starts_with('#'))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Fleet test addressing: node i's fabric address.
pub fn node_addr(i: usize) -> String {
    format!("10.99.{i}.2")
}

/// Tenant t's public IP.
pub fn public_ip(t: usize) -> String {
    format!("203.0.113.{}", 10 + t)
}

/// Tenant t's inside prefix.
pub fn inside(t: usize) -> String {
    format!("10.{}.0.0/24", 100 + t)
}

/// Tenant t's spec in etcd: a NAT gateway with NAT ports `ports` and `extra` gateway
/// settings (e.g. `, flows_per_core: 16384`).
pub fn nat_tenant_spec(t: usize, ports: (u16, u16), extra: &str) -> String {
    format!(
        "kind: nat\npublic: [{ip}/32]\ninside: [{p}]\nconfig: {{inside_prefixes: [{p}], public_ips: [{ip}], port_range: {{first: {a}, last: {b}}}{extra}}}\n",
        ip = public_ip(t),
        p = inside(t),
        a = ports.0,
        b = ports.1
    )
}

/// Starts the placement controller (k=2, m=1) and the fabric agent programming router
/// namespace `router` (`extra` fabric arguments, e.g. `--status FILE`), logging into `dir`.
pub fn start_controller_and_fabric(
    etcd: &Etcd,
    fleet: &str,
    nodes: usize,
    ttl: u64,
    router: &str,
    extra: &[&str],
    dir: &std::path::Path,
) -> Vec<BgProc> {
    start_controller_and_fabric_m(etcd, fleet, nodes, ttl, router, extra, dir, 1)
}

/// [`start_controller_and_fabric`] with overlap bound `m` (m=2 with k=2: tenants may share
/// a whole shard).
#[allow(clippy::too_many_arguments)]
pub fn start_controller_and_fabric_m(
    etcd: &Etcd,
    fleet: &str,
    nodes: usize,
    ttl: u64,
    router: &str,
    extra: &[&str],
    dir: &std::path::Path,
    m: usize,
) -> Vec<BgProc> {
    let bin = common::flowgate_bin();
    let mut c = Command::new(&bin);
    c.args(["controller", "--etcd", &etcd.endpoint, "--fleet", fleet])
        .args(["--k", "2", "--m", &m.to_string()])
        .args(["--min-nodes", &nodes.to_string()])
        .args(["--ttl", &ttl.to_string()]);
    let controller = BgProc::spawn(c, "controller", &dir.join("controller.log"));
    let mut c = Command::new(&bin);
    c.args(["fabric", "--etcd", &etcd.endpoint, "--fleet", fleet])
        .args(["--netns", router])
        .args(extra);
    vec![
        controller,
        BgProc::spawn(c, "fabric", &dir.join("fabric.log")),
    ]
}

/// A node agent `n{i}` supervising a real flowgate (`--no-pci --no-huge -m 256`, EAL file
/// prefix `{prefix}{pid}n{i}`). Its files live in `dir` as `n{i}.*`: base config (written
/// here from `base_yaml`), rendered config, state, flowgate pid file and logs. `extra`:
/// further agent options (`--status FILE`, `--repl-listen ADDR`, ...).
#[allow(clippy::too_many_arguments)] // the agent's own options, named at the call site
pub fn node_agent(
    dir: &std::path::Path,
    etcd: &str,
    fleet: &str,
    i: usize,
    ttl: u64,
    base_yaml: &str,
    prefix: &str,
    extra: &[String],
) -> BgProc {
    let bin = common::flowgate_bin();
    let base = dir.join(format!("n{i}.base.yaml"));
    std::fs::write(&base, base_yaml).unwrap();
    let cfg = dir.join(format!("n{i}.yaml"));
    let mut c = Command::new(&bin);
    c.args(["node-agent", "--etcd", etcd, "--fleet", fleet])
        .args(["--node", &format!("n{i}"), "--addr", &node_addr(i)])
        .args(["--ttl", &ttl.to_string()])
        .args(extra)
        .arg("--state")
        .arg(dir.join(format!("n{i}.state")))
        .arg("--base-config")
        .arg(&base)
        .arg("--config-out")
        .arg(&cfg)
        .arg("--flowgate-pid-file")
        .arg(dir.join(format!("n{i}.pid")))
        .arg("--flowgate-log")
        .arg(dir.join(format!("n{i}.flowgate.log")))
        .arg("--")
        .arg(&bin)
        .args(["run", "-c"])
        .arg(&cfg)
        .args(["--", "--no-pci", "--no-huge", "-m", "256", "--file-prefix"])
        .arg(format!("{prefix}{}n{i}", std::process::id()));
    BgProc::spawn(
        c,
        &format!("node-agent n{i}"),
        &dir.join(format!("n{i}.log")),
    )
}

/// The pid of node `i`'s flowgate, from the pid file its agent writes (`node_agent`).
pub fn flowgate_pid(dir: &std::path::Path, i: usize) -> Option<i32> {
    std::fs::read_to_string(dir.join(format!("n{i}.pid")))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Teardown of `node_agent`s: SIGTERM stops an agent and its flowgate; a flowgate left
/// behind (its agent was SIGKILLed) is killed by its pid file.
pub fn stop_node_agents(agents: &mut BTreeMap<usize, BgProc>, dir: &std::path::Path, nodes: usize) {
    for (_, mut a) in std::mem::take(agents) {
        a.stop_with(libc::SIGTERM, Duration::from_secs(8));
    }
    for i in 1..=nodes {
        if let Some(pid) = flowgate_pid(dir, i) {
            let cmd = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if cmd.contains("flowgate") {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
    }
}

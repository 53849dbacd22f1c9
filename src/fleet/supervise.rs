//! The node's `flowgate run`, supervised by its node agent (`flowgate node-agent ... --
//! CMD...`).
//!
//! The agent writes the node's config (see [`apply`](super::apply)) and tells this thread;
//! the thread owns the data-path process:
//! - not running yet (or it exited): start CMD and wait until its /metrics answers;
//! - running: SIGHUP it and watch `flowgate_config_reloads_total{result=...}` on its /metrics
//!   (address from the config's `metrics.listen`). `ok` went up: done, flows kept. `refused`
//!   went up, or nothing within [`RELOAD_WAIT`]: restart it (SIGTERM, then SIGKILL) on the new
//!   config, and say so in the log and the status counters. Today a change of `nat_gateways`
//!   is refused ("restart needed"), so tenant changes restart the node; once live tenant
//!   reload lands the SIGHUP path simply succeeds and nothing here changes.
//!
//! It runs on its own thread so a restart (seconds of DPDK init) never delays the agent's
//! lease keep-alives. SIGTERM/SIGINT of the agent stop the data path first.
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a SIGHUP may take to show up in the reload counters before the agent restarts.
pub const RELOAD_WAIT: Duration = Duration::from_secs(5);
/// How long a (re)started flowgate may take until its /metrics answers.
pub const START_WAIT: Duration = Duration::from_secs(30);

#[derive(Clone, Debug)]
pub struct SuperviseOpts {
    pub node: String,
    /// The command line of the node's data path (`flowgate run -c CONFIG -- EAL...`).
    pub cmd: Vec<String>,
    /// The config the agent writes (read for `metrics.listen`).
    pub config: PathBuf,
    /// The child's pid is written here (for operators and tests).
    pub pid_file: Option<PathBuf>,
    /// The child's stdout/stderr are appended here (inherited otherwise).
    pub log: Option<PathBuf>,
}

/// What the supervisor did, for the agent's status file.
#[derive(Clone, Debug, Default)]
pub struct SuperviseStatus {
    pub up: bool,
    pub pid: u32,
    pub starts: u64,
    pub reloads_ok: u64,
    pub restarts_for_reload: u64,
    pub exits: u64,
    /// Tenant ids (gateway / load balancer ids) of the config the running flowgate has
    /// (empty while it is down or restarting).
    pub live: std::collections::BTreeSet<String>,
}

/// The tenant ids (`nat_gateways[].id`, `load_balancers[].id`) of a rendered config.
pub fn tenant_ids(config: &str) -> std::collections::BTreeSet<String> {
    let v: serde_yaml::Value = serde_yaml::from_str(config).unwrap_or_default();
    ["nat_gateways", "load_balancers"]
        .iter()
        .filter_map(|s| v[*s].as_sequence())
        .flatten()
        .filter_map(|e| e["id"].as_str().map(String::from))
        .collect()
}

enum Msg {
    Changed,
    Stop,
}

pub struct Supervisor {
    tx: Sender<Msg>,
    pub status: Arc<Mutex<SuperviseStatus>>,
}

impl Supervisor {
    pub fn start(o: SuperviseOpts) -> Supervisor {
        let (tx, rx) = channel();
        let status = Arc::new(Mutex::new(SuperviseStatus::default()));
        let st = status.clone();
        std::thread::Builder::new()
            .name("supervise".into())
            .spawn(move || {
                let mut s = State {
                    o,
                    child: None,
                    want: false,
                    failed_at: None,
                    st,
                };
                loop {
                    // 100 ms: a crashed flowgate is noticed (and `applied/<node>` emptied, so
                    // the fabric stops sending to it) within ~0.1 s plus the agent's loop.
                    let changed = match rx.recv_timeout(Duration::from_millis(100)) {
                        Ok(Msg::Changed) => true,
                        Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => {
                            s.stop();
                            std::process::exit(0);
                        }
                        Err(RecvTimeoutError::Timeout) => false,
                    };
                    s.step(changed);
                }
            })
            .expect("supervise thread");
        let stop = tx.clone();
        match signal_hook::iterator::Signals::new([libc::SIGTERM, libc::SIGINT]) {
            Ok(mut sig) => {
                std::thread::spawn(move || {
                    if sig.forever().next().is_some() {
                        let _ = stop.send(Msg::Stop);
                    }
                });
            }
            Err(e) => {
                warn!("supervise: no SIGTERM handler ({e}): the data path outlives the agent")
            }
        }
        Supervisor { tx, status }
    }

    /// The config file changed (or was written for the first time).
    pub fn config_changed(&self) {
        let _ = self.tx.send(Msg::Changed);
    }
}

struct State {
    o: SuperviseOpts,
    child: Option<Child>,
    /// A config has been written: the data path should run.
    want: bool,
    failed_at: Option<Instant>,
    st: Arc<Mutex<SuperviseStatus>>,
}

impl State {
    fn set(&self, f: impl FnOnce(&mut SuperviseStatus)) {
        if let Ok(mut g) = self.st.lock() {
            f(&mut g);
        }
    }

    fn step(&mut self, changed: bool) {
        self.want |= changed;
        if let Some(c) = &mut self.child {
            if let Ok(Some(st)) = c.try_wait() {
                warn!(
                    "node-agent {}: flowgate (pid {}) exited ({st}): starting it again",
                    self.o.node,
                    c.id()
                );
                self.child = None;
                self.set(|s| {
                    s.up = false;
                    s.exits += 1;
                    s.live.clear();
                });
            }
        }
        if !self.want {
            return;
        }
        if self.child.is_none() {
            // After a failed start, wait a little before the next try.
            if self
                .failed_at
                .is_some_and(|t| t.elapsed() < Duration::from_secs(2))
            {
                return;
            }
            self.spawn("start");
            return;
        }
        if changed {
            self.reload();
        }
    }

    fn metrics_addr(&self) -> Option<SocketAddr> {
        crate::config::load(&self.o.config)
            .ok()
            .map(|c| c.metrics.listen)
    }

    fn spawn(&mut self, why: &str) {
        let Some((prog, args)) = self.o.cmd.split_first() else {
            return;
        };
        let mut c = Command::new(prog);
        c.args(args).stdin(Stdio::null());
        if let Some(l) = &self.o.log {
            match std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(l)
            {
                Ok(f) => {
                    if let Ok(f2) = f.try_clone() {
                        c.stdout(f2);
                    }
                    c.stderr(f);
                }
                Err(e) => warn!("node-agent {}: log {}: {e}", self.o.node, l.display()),
            }
        }
        let text = std::fs::read_to_string(&self.o.config).unwrap_or_default();
        let t0 = Instant::now();
        let mut child = match c.spawn() {
            Ok(ch) => ch,
            Err(e) => {
                error!("node-agent {}: cannot start {prog}: {e}", self.o.node);
                self.failed_at = Some(Instant::now());
                return;
            }
        };
        let pid = child.id();
        if let Some(p) = &self.o.pid_file {
            let _ = super::status::write_atomic(p, &format!("{pid}\n"));
        }
        let addr = self.metrics_addr();
        let ready = loop {
            if let Ok(Some(st)) = child.try_wait() {
                break Err(format!("exited during start ({st})"));
            }
            // Ready, not just answering: /healthz is 503 while a replicating node pulls
            // its peers' flows (full resync), and the fabric must not send it traffic before.
            if addr.is_some_and(|a| get(a, "/healthz").is_ok()) {
                break Ok(());
            }
            if t0.elapsed() > START_WAIT {
                break Err(format!("/healthz not ready (200) after {START_WAIT:?}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        match ready {
            Ok(()) => {
                info!(
                    "node-agent {}: flowgate {why}: pid {pid} ready in {:.2} s",
                    self.o.node,
                    t0.elapsed().as_secs_f64()
                );
                self.failed_at = None;
                self.child = Some(child);
                self.set(|s| {
                    s.up = true;
                    s.pid = pid;
                    s.starts += 1;
                    s.live = tenant_ids(&text);
                });
            }
            Err(e) => {
                error!("node-agent {}: flowgate {why} failed: {e}", self.o.node);
                let _ = child.kill();
                let _ = child.wait();
                self.failed_at = Some(Instant::now());
                self.set(|s| s.up = false);
            }
        }
    }

    /// SIGHUP and confirm through the reload counters; restart when refused or unconfirmed.
    fn reload(&mut self) {
        let Some(pid) = self.child.as_ref().map(Child::id) else {
            return;
        };
        let addr = self.metrics_addr();
        let text = std::fs::read_to_string(&self.o.config).unwrap_or_default();
        let counts = || addr.and_then(|a| scrape(a).ok()).map(|t| reload_counts(&t));
        let before = counts();
        let t0 = Instant::now();
        let verdict = match (before, super::apply::sighup(pid as i32)) {
            (_, Err(e)) => Err(e),
            (None, _) => Err("its /metrics does not answer".to_string()),
            (Some((ok0, refused0)), Ok(())) => loop {
                match counts() {
                    Some((ok, _)) if ok > ok0 => break Ok(()),
                    Some((_, r)) if r > refused0 => {
                        break Err("reload refused (flowgate_config_reloads_total{result=\"refused\"} went up)".to_string())
                    }
                    _ if t0.elapsed() > RELOAD_WAIT => {
                        break Err(format!("reload not confirmed within {RELOAD_WAIT:?}"))
                    }
                    _ => std::thread::sleep(Duration::from_millis(50)),
                }
            },
        };
        match verdict {
            Ok(()) => {
                info!(
                    "node-agent {}: flowgate pid {pid} reloaded its config live (SIGHUP, {:.2} s)",
                    self.o.node,
                    t0.elapsed().as_secs_f64()
                );
                self.set(|s| {
                    s.reloads_ok += 1;
                    s.live = tenant_ids(&text);
                });
            }
            Err(e) => {
                warn!(
                    "node-agent {}: flowgate pid {pid}: {e}: restarting it on the new config (its flows are lost)",
                    self.o.node
                );
                self.stop();
                self.set(|s| s.restarts_for_reload += 1);
                self.spawn("restart");
            }
        }
    }

    /// SIGTERM, up to 5 s to exit, then SIGKILL.
    fn stop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        self.set(|s| s.live.clear());
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = c.try_wait() {
                self.set(|s| s.up = false);
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
        self.set(|s| s.up = false);
    }
}

/// GET /metrics over plain HTTP/1.0 (control side, once per reload).
pub fn scrape(addr: SocketAddr) -> Result<String, String> {
    get(addr, "/metrics")
}

/// GET `path` over plain HTTP/1.0; Ok(body) on 200.
pub fn get(addr: SocketAddr, path: &str) -> Result<String, String> {
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: flowgate\r\n\r\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(|e| e.to_string())?;
    match text.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.") && head.contains(" 200") => {
            Ok(body.to_string())
        }
        _ => Err(format!("bad answer from {addr}")),
    }
}

/// (ok, refused) of `flowgate_config_reloads_total`.
pub fn reload_counts(metrics: &str) -> (u64, u64) {
    let get = |r: &str| {
        let key = format!("flowgate_config_reloads_total{{result=\"{r}\"}}");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&key))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0) as u64
    };
    (get("ok"), get("refused"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_reload_counters() {
        let m = "# HELP x\nflowgate_config_reloads_total{result=\"ok\"} 3\nflowgate_config_reloads_total{result=\"refused\"} 1\n";
        assert_eq!(reload_counts(m), (3, 1));
        assert_eq!(reload_counts(""), (0, 0));
    }

    #[test]
    fn lists_tenant_ids() {
        let ids =
            tenant_ids("ports: []\nnat_gateways: [{id: b}, {id: a}]\nload_balancers: [{id: w}]\n");
        assert_eq!(ids.into_iter().collect::<Vec<_>>(), ["a", "b", "w"]);
        assert!(tenant_ids("ports: []\n").is_empty());
    }
}

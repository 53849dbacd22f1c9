//! Integration-test harness shared by every file in tests/ (`mod common;`).
//!
//! What it gives a test:
//! - [`setup`]: the root / netns check (prints a `SKIP:` line and returns `None` when the
//!   machine can't run namespace tests, or when `FLOWGATE_SKIP_NETNS=1`), plus a global lock
//!   (an in-process mutex and a cross-process `flock`) so that no two DPDK tests ever overlap
//!   on a small box, and a per-test watchdog.
//! - [`Netns`]: a network namespace: exec with a timeout, background processes, removed with
//!   everything in it on Drop (also during a panic); a leftover of the same name from a crashed
//!   run is removed first.
//! - [`Veth`]: a veth pair with one end moved into a namespace, TSO/GSO off on both ends,
//!   IPv6 off, the root-side end made inert for the root kernel (no ARP, no forwarding).
//! - [`Topology::standard`]: the two-host router topology (client `10.0.1.2/24` via
//!   `10.0.1.1`, server `198.51.100.2/24`), and [`TapTopology`] for the net_tap variant.
//! - [`Appliance`]: runs the `flowgate` binary on a config, waits for `/metrics`, scrapes and
//!   parses it ([`Metrics`]), stops it with SIGTERM, prints its log when the test fails.
//!
//! Names: every test passes its own short prefix (`[a-z0-9]{1,8}`), all namespaces and links are
//! derived from it, so tests can't collide and leftovers are found by exact name.
//! Integration tests are meant to run with `--test-threads=1` (the Makefile does); the global
//! lock makes them safe even without it.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// System python: it has scapy (python3-scapy); a pyenv/venv `python3` first on PATH may not.
pub const PYTHON: &str = "/usr/bin/python3";

/// Client-side and server-side addresses of the standard topology.
pub const CLIENT_GW: &str = "10.0.1.1";
pub const CLIENT_IP: &str = "10.0.1.2";
pub const SERVER_GW: &str = "198.51.100.1";
pub const SERVER_IP: &str = "198.51.100.2";

static SERIAL: Mutex<()> = Mutex::new(());
static UNIQUE: AtomicU32 = AtomicU32::new(0);

fn unique() -> u32 {
    UNIQUE.fetch_add(1, Ordering::SeqCst)
}

// ---------------------------------------------------------------------------------------------
// Skip check, global lock, watchdog
// ---------------------------------------------------------------------------------------------

/// Why this machine can't run the namespace tests, or None if it can.
pub fn skip_reason() -> Option<String> {
    if std::env::var("FLOWGATE_SKIP_NETNS").as_deref() == Ok("1") {
        return Some("FLOWGATE_SKIP_NETNS=1".into());
    }
    if unsafe { libc::geteuid() } != 0 {
        return Some("not running as root (network namespaces, veth, DPDK need root)".into());
    }
    if !Path::new("/sys/class/net").is_dir() {
        return Some("/sys/class/net missing (no network stack visible)".into());
    }
    if which("ip").is_none() {
        return Some("`ip` (iproute2) not installed; run scripts/setup.sh".into());
    }
    None
}

/// Held for the whole test: serialises namespace/DPDK tests within this process (mutex) and
/// across processes (flock on /tmp/flowgate-netns-tests.lock), and arms a watchdog that aborts
/// the test process if the test runs past `FLOWGATE_TEST_TIMEOUT` seconds (default 300): the
/// children die with it (PDEATHSIG) and the next run removes the leftover namespaces.
pub struct TestGuard {
    pub name: String,
    _serial: MutexGuard<'static, ()>,
    _flock: File,
    done: Arc<AtomicBool>,
}

impl Drop for TestGuard {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
    }
}

/// Start of every namespace test: `let Some(_g) = common::setup("name") else { return };`
/// Under CI (`CI=true`) a skip is a failure: a runner without root or namespaces must not
/// turn the integration suite green by skipping it.
pub fn setup(test: &str) -> Option<TestGuard> {
    if let Some(why) = skip_reason() {
        skip_or_fail(test, &why, in_ci());
        return None;
    }
    Some(lock(test))
}

/// `CI` set to `true` or `1` (GitHub Actions, GitLab and most CI systems set `CI=true`).
pub fn in_ci() -> bool {
    matches!(
        std::env::var("CI")
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Ok("true") | Ok("1")
    )
}

/// Reports a skip, or panics when `ci`.
pub fn skip_or_fail(test: &str, why: &str, ci: bool) {
    if ci {
        panic!("{test}: cannot run under CI=true: {why} (skipping is not allowed in CI)");
    }
    println!("SKIP: {test}: {why}");
    eprintln!("SKIP: {test}: {why}");
}

/// The global lock alone (for tests that need no root but must not overlap DPDK tests).
pub fn lock(test: &str) -> TestGuard {
    let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let lock_path = "/tmp/flowgate-netns-tests.lock";
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock_path)
        .unwrap_or_else(|e| panic!("open {lock_path}: {e}"));
    let t0 = Instant::now();
    loop {
        use std::os::fd::AsRawFd;
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            break;
        }
        if t0.elapsed() > Duration::from_secs(900) {
            panic!("{test}: could not take {lock_path} within 900 s (another test run stuck?)");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let limit: u64 = std::env::var("FLOWGATE_TEST_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let done = Arc::new(AtomicBool::new(false));
    let d2 = done.clone();
    let name = test.to_string();
    std::thread::spawn(move || {
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(limit) {
            if d2.load(Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        if !d2.load(Ordering::SeqCst) {
            eprintln!("WATCHDOG: test {name} ran past {limit} s (FLOWGATE_TEST_TIMEOUT); aborting");
            std::process::abort();
        }
    });
    TestGuard {
        name: test.to_string(),
        _serial: serial,
        _flock: f,
        done,
    }
}

// ---------------------------------------------------------------------------------------------
// Commands with timeouts
// ---------------------------------------------------------------------------------------------

/// Output of a finished (or timed out) command.
pub struct Out {
    pub cmd: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn ok(&self) -> bool {
        self.status.success()
    }
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
    /// `timeout` exits 124 (TERM) or 137 (KILL after -k) when the command ran out of time.
    pub fn timed_out(&self) -> bool {
        matches!(self.status.code(), Some(124) | Some(137))
    }
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
    /// Panics with the whole output if the command failed.
    pub fn expect_ok(self, what: &str) -> Out {
        if !self.ok() {
            panic!("{what}: command failed\n{self}");
        }
        self
    }
}

impl fmt::Display for Out {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "$ {}\n[exit {:?}{}]\n--- stdout ---\n{}--- stderr ---\n{}",
            self.cmd,
            self.status.code(),
            if self.timed_out() { ", TIMED OUT" } else { "" },
            self.stdout,
            self.stderr
        )
    }
}

fn shell_quote(args: &[&str]) -> String {
    args.iter()
        .map(|a| {
            if a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c))
                && !a.is_empty()
            {
                a.to_string()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `timeout -k 2 SECS args...` in the root namespace and collects its output.
pub fn run(args: &[&str], secs: u64) -> Out {
    assert!(!args.is_empty());
    let secs_s = secs.to_string();
    let mut full: Vec<&str> = vec!["timeout", "-k", "2", &secs_s];
    full.extend_from_slice(args);
    let cmdline = shell_quote(args);
    let o = Command::new(full[0])
        .args(&full[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("spawn `{cmdline}`: {e}"));
    Out {
        cmd: cmdline,
        status: o.status,
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// `run`, panicking if the command fails.
pub fn must(args: &[&str], secs: u64) -> Out {
    run(args, secs).expect_ok("root namespace")
}

/// `sh -c SCRIPT` in the root namespace, with a timeout.
pub fn sh(script: &str, secs: u64) -> Out {
    run(&["sh", "-c", script], secs)
}

pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(
            ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
                .iter()
                .map(PathBuf::from),
        )
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// Panics with an install hint if a tool the test needs is missing.
pub fn require_tool(tool: &str) {
    if which(tool).is_none() {
        panic!("`{tool}` is not installed: run scripts/setup.sh (as root) first");
    }
}

/// Sets PDEATHSIG=SIGKILL on a command so the process dies if the test thread/process dies.
fn die_with_parent(cmd: &mut Command) {
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// Polls `f` every 100 ms until it returns Some, or the time is up.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if t0.elapsed() >= timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn pid_alive(pid: i32) -> bool {
    unsafe { libc::kill(pid, 0) == 0 }
}

// ---------------------------------------------------------------------------------------------
// Temp dirs and background processes
// ---------------------------------------------------------------------------------------------

/// A directory under /tmp/flowgate-tests, removed on Drop unless the test is failing
/// (then kept and its path printed, for post-mortem).
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let path = std::env::temp_dir().join("flowgate-tests").join(format!(
            "{tag}-{}-{}",
            std::process::id(),
            unique()
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        TempDir { path }
    }
    pub fn join(&self, p: &str) -> PathBuf {
        self.path.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("(kept {} for inspection)", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// A background process (output to a log file). Drop sends SIGTERM, then SIGKILL after 2 s.
pub struct BgProc {
    pub what: String,
    pub child: Child,
    pub log: PathBuf,
    status: Option<ExitStatus>,
}

impl BgProc {
    /// Spawns `cmd` with stdin null and stdout+stderr appended to `log`.
    pub fn spawn(mut cmd: Command, what: &str, log: &Path) -> BgProc {
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("open {}: {e}", log.display()));
        let f2 = f.try_clone().unwrap();
        cmd.stdin(Stdio::null()).stdout(f).stderr(f2);
        die_with_parent(&mut cmd);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        BgProc {
            what: what.to_string(),
            child,
            log: log.to_path_buf(),
            status: None,
        }
    }
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }
    pub fn log_text(&self) -> String {
        fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }
    pub fn signal(&self, sig: i32) {
        if self.status.is_none() {
            unsafe {
                libc::kill(self.pid(), sig);
            }
        }
    }
    /// Exit status if it has exited (reaps it).
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            if let Ok(Some(s)) = self.child.try_wait() {
                self.status = Some(s);
            }
        }
        self.status
    }
    pub fn running(&mut self) -> bool {
        self.try_status().is_none()
    }
    /// Waits up to `timeout` for the process to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_for(timeout, || self.try_status())
    }
    /// Sends `sig`, waits up to `grace`; if still running, SIGKILL. Returns the exit status
    /// and whether SIGKILL was needed.
    pub fn stop_with(&mut self, sig: i32, grace: Duration) -> (ExitStatus, bool) {
        if let Some(s) = self.try_status() {
            return (s, false);
        }
        self.signal(sig);
        if let Some(s) = self.wait_timeout(grace) {
            return (s, false);
        }
        let _ = self.child.kill();
        let s = self.child.wait().expect("wait after SIGKILL");
        self.status = Some(s);
        (s, true)
    }
}

impl Drop for BgProc {
    fn drop(&mut self) {
        if self.try_status().is_none() {
            self.stop_with(libc::SIGTERM, Duration::from_secs(2));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Network namespaces and veth pairs
// ---------------------------------------------------------------------------------------------

fn check_ifname(name: &str) {
    assert!(
        !name.is_empty() && name.len() <= 15,
        "interface/namespace name {name:?} must be 1..=15 chars"
    );
}

fn netns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// Kills every process in namespace `name` and deletes it (if it exists).
pub fn delete_netns(name: &str) {
    if !netns_exists(name) {
        return;
    }
    let pids = run(&["ip", "netns", "pids", name], 5);
    for pid in pids.stdout.split_whitespace() {
        if let Ok(p) = pid.parse::<i32>() {
            unsafe {
                libc::kill(p, libc::SIGKILL);
            }
        }
    }
    let _ = run(&["ip", "netns", "del", name], 10);
    wait_for(Duration::from_secs(3), || {
        (!netns_exists(name)).then_some(())
    });
}

/// Deletes a link in the root namespace (if it exists) and waits for it to be gone.
pub fn delete_link(name: &str) {
    if link_exists(name) {
        let _ = run(&["ip", "link", "del", name], 10);
        wait_for(Duration::from_secs(3), || {
            (!link_exists(name)).then_some(())
        });
    }
}

/// A network namespace. Created fresh (a leftover with the same name is removed first), with
/// `lo` up and IPv6 disabled (no RS/MLD noise on the test links). Drop kills everything
/// running in it and deletes it.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(name: &str) -> Netns {
        check_ifname(name);
        delete_netns(name);
        must(&["ip", "netns", "add", name], 10);
        let ns = Netns {
            name: name.to_string(),
        };
        ns.must(&["ip", "link", "set", "lo", "up"], 5);
        ns.must(
            &[
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ],
            5,
        );
        ns
    }

    fn prefix_args(&self) -> Vec<String> {
        vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            self.name.clone(),
        ]
    }

    /// Runs a command in the namespace with a timeout (`timeout -k 2 SECS ip netns exec ...`).
    pub fn exec(&self, args: &[&str], secs: u64) -> Out {
        let mut full: Vec<&str> = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(args);
        let mut o = run(&full, secs);
        o.cmd = format!("[{}] {}", self.name, shell_quote(args));
        o
    }

    /// `exec`, panicking with the output if it fails.
    pub fn must(&self, args: &[&str], secs: u64) -> Out {
        let what = format!("netns {}", self.name);
        self.exec(args, secs).expect_ok(&what)
    }

    /// `sh -c SCRIPT` in the namespace.
    pub fn sh(&self, script: &str, secs: u64) -> Out {
        self.exec(&["sh", "-c", script], secs)
    }

    /// A `Command` that runs `args` inside the namespace (for custom spawning).
    pub fn command(&self, args: &[&str]) -> Command {
        let p = self.prefix_args();
        let mut c = Command::new(&p[0]);
        c.args(&p[1..]).args(args);
        c
    }

    /// Starts a background process in the namespace, output to `log`. It is stopped when the
    /// returned handle is dropped, and killed at the latest when the namespace is dropped.
    pub fn spawn(&self, args: &[&str], log: &Path) -> BgProc {
        let what = format!("[{}] {}", self.name, shell_quote(args));
        BgProc::spawn(self.command(args), &what, log)
    }

    /// Waits until something listens on `port` (`proto` "tcp" or "udp") in this namespace.
    pub fn wait_listen(&self, proto: &str, port: u16, timeout: Duration) {
        let flag = if proto == "udp" { "-Hlnu" } else { "-Hlnt" };
        let filter = format!("sport = :{port}");
        let ok = wait_for(timeout, || {
            let o = self.exec(&["ss", flag, &filter], 5);
            (o.ok() && !o.stdout.trim().is_empty()).then_some(())
        });
        if ok.is_none() {
            let o = self.exec(&["ss", "-lnptu"], 5);
            panic!(
                "nothing listens on {proto} port {port} in netns {} after {:?}\n{o}",
                self.name, timeout
            );
        }
    }

    /// MAC address the namespace has learned for `ip` (from `ip neigh`), if any.
    pub fn neighbor_mac(&self, ip: &str) -> Option<String> {
        let o = self.exec(&["ip", "neigh", "show", ip], 5);
        let words: Vec<&str> = o.stdout.split_whitespace().collect();
        words
            .iter()
            .position(|w| *w == "lladdr")
            .and_then(|i| words.get(i + 1))
            .map(|s| s.to_string())
    }

    /// MAC address of interface `ifname` inside the namespace.
    pub fn mac_of(&self, ifname: &str) -> String {
        let o = self.must(&["cat", &format!("/sys/class/net/{ifname}/address")], 5);
        o.stdout.trim().to_string()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        delete_netns(&self.name);
    }
}

/// Turns off segmentation offloads only (`ethtool -K ... tso off gso off`), in the root
/// namespace (`ns` None) or a namespace. Checksum offloads stay at the kernel's defaults, as
/// on a user's machine: flowgate completes partial checksums from af_packet ports
/// (src/pipeline/offload.rs). TSO/GSO must be off because a veth has no wire: its peer would
/// hand af_packet 64 KiB super-frames that no NIC ever delivers (see docs/nat.md, offloads).
pub fn segmentation_off(ns: Option<&Netns>, ifname: &str) {
    let args = ["ethtool", "-K", ifname, "tso", "off", "gso", "off"];
    let o = match ns {
        Some(n) => n.exec(&args, 10),
        None => run(&args, 10),
    };
    // ethtool exits nonzero if one feature can't be changed (e.g. "fixed"); that's fine as long
    // as the interface exists.
    if !o.ok() && o.stderr.contains("No such device") {
        panic!("segmentation_off {ifname}: {o}");
    }
}

/// Turns off checksum offloads too (`tx off rx off`), on both ends of `v`. Only for peers
/// that forward frames untouched without completing partial checksums (testpmd's io
/// forwarding in the harness self-test); flowgate's own tests keep the kernel defaults.
pub fn checksum_offloads_off(v: &Veth, ns: &Netns) {
    for (n, ifname) in [(None, v.root.as_str()), (Some(ns), v.peer.as_str())] {
        let args = ["ethtool", "-K", ifname, "tx", "off", "rx", "off"];
        let _ = match n {
            Some(n) => n.exec(&args, 10),
            None => run(&args, 10),
        };
    }
}

/// A Linux bridge `br0` in `ns` (no STP, no forwarding delay), up, with `port` enslaved:
/// the one-armed tests' L2 segment.
pub fn bridge_with(ns: &Netns, port: &str) {
    ns.must(
        &[
            "ip",
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "stp_state",
            "0",
            "forward_delay",
            "0",
        ],
        5,
    );
    ns.must(&["ip", "link", "set", "br0", "up"], 5);
    ns.must(&["ip", "link", "set", port, "master", "br0"], 5);
}

/// Makes a root-namespace interface inert for the root kernel: IPv6 off, no ARP, no IPv4
/// forwarding of anything received on it (so nothing a test sends can leave the machine
/// through the root namespace's routes).
pub fn root_side_inert(ifname: &str) {
    must(
        &[
            "sysctl",
            "-qw",
            &format!("net.ipv6.conf.{ifname}.disable_ipv6=1"),
        ],
        5,
    );
    let _ = run(
        &[
            "sysctl",
            "-qw",
            &format!("net.ipv4.conf.{ifname}.forwarding=0"),
            &format!("net.ipv4.conf.{ifname}.rp_filter=1"),
        ],
        5,
    );
    must(&["ip", "link", "set", ifname, "arp", "off"], 5);
}

/// A veth pair: `root` stays in the root namespace with no address (for the appliance's
/// net_af_packet), `peer` lives in namespace `ns`. Drop deletes it.
pub struct Veth {
    pub root: String,
    pub peer: String,
    pub ns: String,
    pub mtu: u32,
}

impl Veth {
    /// Creates the pair (removing a leftover of the same names first), moves `peer` into `ns`,
    /// sets `mtu` on both ends, TSO/GSO off on both (checksum offloads at kernel defaults, see
    /// [`segmentation_off`]), IPv6 off, both ends up.
    pub fn new(root: &str, peer: &str, ns: &Netns, mtu: u32) -> Veth {
        Self::create(root, peer, ns, mtu, false)
    }

    /// As [`Veth::new`], but checksum and segmentation offloads stay at the kernel's
    /// defaults (tx checksum offload, TSO, GSO on): the appliance then receives partial
    /// checksums and GSO frames, as it would from any kernel peer.
    pub fn new_default_offloads(root: &str, peer: &str, ns: &Netns, mtu: u32) -> Veth {
        Self::create(root, peer, ns, mtu, true)
    }

    fn create(root: &str, peer: &str, ns: &Netns, mtu: u32, defaults: bool) -> Veth {
        check_ifname(root);
        check_ifname(peer);
        delete_link(root);
        delete_link(peer);
        let mtu_s = mtu.to_string();
        must(
            &[
                "ip", "link", "add", root, "mtu", &mtu_s, "type", "veth", "peer", "name", peer,
                "mtu", &mtu_s,
            ],
            10,
        );
        let v = Veth {
            root: root.to_string(),
            peer: peer.to_string(),
            ns: ns.name.clone(),
            mtu,
        };
        must(&["ip", "link", "set", peer, "netns", &ns.name], 10);
        root_side_inert(root);
        let _ = ns.exec(
            &[
                "sysctl",
                "-qw",
                &format!("net.ipv6.conf.{peer}.disable_ipv6=1"),
            ],
            5,
        );
        if !defaults {
            segmentation_off(None, root);
            segmentation_off(Some(ns), peer);
        }
        must(&["ip", "link", "set", root, "up"], 5);
        ns.must(&["ip", "link", "set", peer, "up"], 5);
        v
    }

    /// Adds an address (`a.b.c.d/len`) to the namespace end.
    pub fn add_addr(&self, ns: &Netns, cidr: &str) {
        ns.must(&["ip", "addr", "add", cidr, "dev", &self.peer], 5);
    }

    pub fn set_mtu(&self, ns: &Netns, mtu: u32) {
        let m = mtu.to_string();
        must(&["ip", "link", "set", &self.root, "mtu", &m], 5);
        ns.must(&["ip", "link", "set", &self.peer, "mtu", &m], 5);
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        delete_link(&self.root);
    }
}

/// Adds a route in a namespace: `ip route add PREFIX via GW`.
pub fn add_route(ns: &Netns, prefix: &str, via: &str) {
    ns.must(&["ip", "route", "add", prefix, "via", via], 5);
}

/// Checks a test name prefix: 1..=8 chars of [a-z0-9] (so `<prefix>c0` etc. fit in 15 chars).
pub fn check_prefix(prefix: &str) {
    assert!(
        !prefix.is_empty()
            && prefix.len() <= 8
            && prefix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()),
        "test name prefix {prefix:?} must be 1..=8 chars of [a-z0-9]"
    );
}

// ---------------------------------------------------------------------------------------------
// Topologies
// ---------------------------------------------------------------------------------------------

/// The standard two-host topology around the appliance (which runs in the root namespace on
/// the root-side veth ends with net_af_packet):
///
/// ```text
///  netns <p>-c                      root ns (flowgate)                      netns <p>-s
///  <p>c1 10.0.1.2/24  ==veth==  <p>c0 [client 10.0.1.1]   [server 198.51.100.1] <p>s0  ==veth==  <p>s1 198.51.100.2/24
///  default via 10.0.1.1                                                        10.0.0.0/16 via 198.51.100.1
/// ```
pub struct Topology {
    pub prefix: String,
    pub mtu: u32,
    // Field order = drop order: links first, then namespaces.
    pub client_veth: Veth,
    pub server_veth: Veth,
    pub client: Netns,
    pub server: Netns,
}

impl Topology {
    pub fn standard(prefix: &str, mtu: u32) -> Topology {
        check_prefix(prefix);
        require_tool("ethtool");
        let client = Netns::new(&format!("{prefix}-c"));
        let server = Netns::new(&format!("{prefix}-s"));
        let client_veth = Veth::new(&format!("{prefix}c0"), &format!("{prefix}c1"), &client, mtu);
        let server_veth = Veth::new(&format!("{prefix}s0"), &format!("{prefix}s1"), &server, mtu);
        client_veth.add_addr(&client, &format!("{CLIENT_IP}/24"));
        server_veth.add_addr(&server, &format!("{SERVER_IP}/24"));
        client.must(&["ip", "route", "add", "default", "via", CLIENT_GW], 5);
        add_route(&server, "10.0.0.0/16", SERVER_GW);
        Topology {
            prefix: prefix.to_string(),
            mtu,
            client_veth,
            server_veth,
            client,
            server,
        }
    }

    /// net_af_packet device strings for the two ports.
    pub fn client_device(&self) -> String {
        format!(
            "net_af_packet0,iface={},framesz=10240,blocksz=20480",
            self.client_veth.root
        )
    }
    pub fn server_device(&self) -> String {
        format!(
            "net_af_packet1,iface={},framesz=10240,blocksz=20480",
            self.server_veth.root
        )
    }

    /// Router config for this topology (see [`router_yaml`]).
    pub fn router_config(&self, opts: &RouterOpts) -> String {
        router_yaml(&self.client_device(), &self.server_device(), self.mtu, opts)
    }
}

/// Knobs of the generated router config.
#[derive(Clone, Debug, Default)]
pub struct RouterOpts {
    /// Egress MTU of the route toward the server subnet (`routes[].mtu`), if any.
    pub server_route_mtu: Option<u32>,
    /// Extra YAML appended verbatim at the top level.
    pub extra: String,
}

/// A flowgate config for the standard addresses: port `client` (10.0.1.1/24) on
/// `client_dev`, port `server` (198.51.100.1/24) on `server_dev` (both subnets connected),
/// one worker on lcore 1. No `metrics:` section: [`Appliance::start`] adds one with a
/// free port. No EAL memory/prefix args: the harness passes them after `--`.
pub fn router_yaml(client_dev: &str, server_dev: &str, mtu: u32, opts: &RouterOpts) -> String {
    // Both subnets are connected (from the port addresses); an explicit route for the
    // server subnet is only needed to give it its own egress MTU.
    let routes = match opts.server_route_mtu {
        Some(m) => {
            format!("routes:\n  - prefix: \"198.51.100.0/24\"\n    port: server\n    mtu: {m}\n")
        }
        None => "routes: []\n".to_string(),
    };
    format!(
        r#"# generated by tests/common/mod.rs
lcores:
  main: 0
  workers: [1]
mempool:
  mbufs: 8191
  cache: 256
  data_room: 10240
ports:
  - name: client
    device: "{client_dev}"
    addresses: ["10.0.1.1/24"]
    mtu: {mtu}
    queues: 1
    role: data
  - name: server
    device: "{server_dev}"
    addresses: ["198.51.100.1/24"]
    mtu: {mtu}
    queues: 1
    role: data
{routes}worker:
  burst: 32
  tx_drain_us: 100
  idle_sleep_us: 50
neighbor:
  timeout_s: 300
  pending_max: 64
{extra}"#,
        extra = opts.extra
    )
}

/// The standard topology's namespaces for the net_tap variant: the appliance creates the taps
/// (`net_tap0,iface=<p>tc0`, `net_tap1,iface=<p>ts0`) in the root namespace; once it is up,
/// [`TapTopology::attach`] moves each tap into its host namespace and configures it there.
pub struct TapTopology {
    pub prefix: String,
    pub mtu: u32,
    pub client_tap: String,
    pub server_tap: String,
    pub client: Netns,
    pub server: Netns,
}

impl TapTopology {
    pub fn new(prefix: &str, mtu: u32) -> TapTopology {
        check_prefix(prefix);
        let client_tap = format!("{prefix}tc0");
        let server_tap = format!("{prefix}ts0");
        delete_link(&client_tap);
        delete_link(&server_tap);
        TapTopology {
            prefix: prefix.to_string(),
            mtu,
            client: Netns::new(&format!("{prefix}-c")),
            server: Netns::new(&format!("{prefix}-s")),
            client_tap,
            server_tap,
        }
    }

    pub fn router_config(&self, opts: &RouterOpts) -> String {
        router_yaml(
            &format!("net_tap0,iface={}", self.client_tap),
            &format!("net_tap1,iface={}", self.server_tap),
            self.mtu,
            opts,
        )
    }

    /// Moves the appliance's taps into the host namespaces and configures them
    /// (offloads off, MTU, address, up, routes). Call after the appliance is ready.
    pub fn attach(&self) {
        for (tap, ns, cidr) in [
            (&self.client_tap, &self.client, format!("{CLIENT_IP}/24")),
            (&self.server_tap, &self.server, format!("{SERVER_IP}/24")),
        ] {
            if !link_exists(tap) {
                let o = run(&["ip", "-br", "link"], 5);
                panic!("the appliance did not create tap {tap}\n{o}");
            }
            must(&["ip", "link", "set", tap, "netns", &ns.name], 10);
            let _ = ns.exec(
                &[
                    "sysctl",
                    "-qw",
                    &format!("net.ipv6.conf.{tap}.disable_ipv6=1"),
                ],
                5,
            );
            segmentation_off(Some(ns), tap);
            ns.must(&["ip", "link", "set", tap, "mtu", &self.mtu.to_string()], 5);
            ns.must(&["ip", "addr", "add", &cidr, "dev", tap], 5);
            ns.must(&["ip", "link", "set", tap, "up"], 5);
        }
        self.client
            .must(&["ip", "route", "add", "default", "via", CLIENT_GW], 5);
        add_route(&self.server, "10.0.0.0/16", SERVER_GW);
    }
}

// ---------------------------------------------------------------------------------------------
// Prometheus text format
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed /metrics scrape.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    pub text: String,
    pub samples: Vec<Sample>,
}

impl Metrics {
    /// Parses the Prometheus text exposition format (comments skipped; an optional timestamp
    /// after the value ignored). Panics on a line it can't parse: that's a bug worth seeing.
    pub fn parse(text: &str) -> Metrics {
        let mut samples = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match parse_sample(line) {
                Some(s) => samples.push(s),
                None => panic!("metrics line {}: can't parse {line:?}\n{text}", i + 1),
            }
        }
        Metrics {
            text: text.to_string(),
            samples,
        }
    }

    /// Samples named `name` whose labels include all of `labels`.
    pub fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }

    /// Sum of the samples named `name` whose labels include all of `labels`; None if no
    /// sample matches. `get("flowgate_packets_dropped_total", &[("reason", "no_route")])`.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut it = self.matching(name, labels).peekable();
        it.peek()?;
        Some(it.map(|s| s.value).sum())
    }

    /// Like `get`, 0 when absent (counters that never moved may not be exported).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or(0.0)
    }

    /// `flowgate_packets_dropped_total{reason}`.
    pub fn dropped(&self, reason: &str) -> f64 {
        self.value("flowgate_packets_dropped_total", &[("reason", reason)])
    }

    /// All `flowgate_packets_dropped_total` samples as reason -> value.
    pub fn drops(&self) -> BTreeMap<String, f64> {
        self.matching("flowgate_packets_dropped_total", &[])
            .map(|s| (s.labels.get("reason").cloned().unwrap_or_default(), s.value))
            .collect()
    }

    pub fn has(&self, name: &str) -> bool {
        self.samples.iter().any(|s| s.name == name)
    }

    /// Lines of the raw text starting with `prefix` (for messages).
    pub fn excerpt(&self, prefix: &str) -> String {
        self.text
            .lines()
            .filter(|l| l.starts_with(prefix))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn parse_sample(line: &str) -> Option<Sample> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    {
        return None;
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if rest.starts_with('{') {
        let mut chars = rest[1..].char_indices();
        let mut key = String::new();
        let mut end = None;
        loop {
            let (i, c) = chars.next()?;
            match c {
                '}' if key.trim().is_empty() => {
                    end = Some(i + 2);
                    break;
                }
                ',' if key.trim().is_empty() => continue,
                '=' => {
                    let (_, q) = chars.next()?;
                    if q != '"' {
                        return None;
                    }
                    let mut val = String::new();
                    loop {
                        let (_, c) = chars.next()?;
                        match c {
                            '\\' => match chars.next()?.1 {
                                'n' => val.push('\n'),
                                other => val.push(other),
                            },
                            '"' => break,
                            other => val.push(other),
                        }
                    }
                    labels.insert(key.trim().to_string(), val);
                    key.clear();
                }
                c => key.push(c),
            }
            if end.is_some() {
                break;
            }
        }
        rest = &rest[end?..];
    }
    let mut parts = rest.split_whitespace();
    let v = parts.next()?;
    let value = match v {
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        _ => v.parse().ok()?,
    };
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// `GET /metrics` over a plain TcpStream (HTTP/1.0). Returns the body of a 200 answer.
pub fn scrape(addr: SocketAddr) -> Result<String, String> {
    let t = Duration::from_secs(5);
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).map_err(|e| format!("{e}"))?;
    s.set_read_timeout(Some(t)).ok();
    s.set_write_timeout(Some(t)).ok();
    s.write_all(
        format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\nAccept: text/plain\r\n\r\n").as_bytes(),
    )
    .map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .or_else(|| text.split_once("\n\n"))
        .ok_or_else(|| format!("no end of headers in {text:?}"))?;
    let status_line = head.lines().next().unwrap_or("");
    if status_line.split_whitespace().nth(1) != Some("200") {
        return Err(format!("HTTP status {status_line:?}"));
    }
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("transfer-encoding:")
            && l.to_ascii_lowercase().contains("chunked")
    });
    if chunked {
        Ok(dechunk(body))
    } else {
        Ok(body.to_string())
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size_line, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
            .unwrap_or(0);
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].strip_prefix("\r\n").unwrap_or(&rest[size..]);
    }
    out
}

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

// ---------------------------------------------------------------------------------------------
// The appliance
// ---------------------------------------------------------------------------------------------

/// Path of the flowgate binary under test.
pub fn flowgate_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_flowgate"))
}

/// A running `flowgate run`. Each instance gets its own `--file-prefix`, metrics port, temp
/// dir (config + log) and the EAL args `--no-pci --no-huge -m 512`. Drop stops it (SIGTERM,
/// then SIGKILL) and, if the test is failing, prints its log.
pub struct Appliance {
    pub proc: Option<BgProc>,
    pub dir: TempDir,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    pub metrics_addr: SocketAddr,
    pub file_prefix: String,
    pub eal_args: Vec<String>,
}

impl Appliance {
    /// Writes `yaml` to a temp file and starts the appliance on it; waits (up to 20 s,
    /// `FLOWGATE_READY_TIMEOUT`) for /metrics to answer. `yaml` may say
    /// `listen: "@METRICS_LISTEN@"`; without any `metrics:` section one is appended with a
    /// free port; with its own `metrics.listen`, that address is used.
    pub fn start(yaml: &str) -> Appliance {
        Self::start_with(yaml, &[])
    }

    /// `start`, with extra EAL args appended after the harness's own.
    pub fn start_with(yaml: &str, extra_eal: &[&str]) -> Appliance {
        let mut a = Self::launch(yaml, extra_eal);
        a.wait_ready();
        a
    }

    /// Spawns without waiting for readiness.
    pub fn launch(yaml: &str, extra_eal: &[&str]) -> Appliance {
        Self::launch_base(yaml, &["--no-pci", "--no-huge", "-m", "512"], extra_eal)
    }

    /// `start` on hugepages (`--no-pci -m 256`, no `--no-huge`): DPDK secondary processes
    /// (dpdk-dumpcap, dpdk-pdump, dpdk-proc-info) map the primary's hugepage files.
    pub fn start_hugepages(yaml: &str, extra_eal: &[&str]) -> Appliance {
        let mut a = Self::launch_base(yaml, &["--no-pci", "-m", "256"], extra_eal);
        a.wait_ready();
        a
    }

    /// Spawns with `base` EAL args (then `--file-prefix`, then `extra_eal`).
    pub fn launch_base(yaml: &str, base: &[&str], extra_eal: &[&str]) -> Appliance {
        let n = unique();
        let file_prefix = format!("fgt{}_{n}", std::process::id());
        let dir = TempDir::new(&format!("appliance{n}"));
        let (text, metrics_addr) = with_metrics_listen(yaml);
        let config_path = dir.join("flowgate.yaml");
        fs::write(&config_path, &text).expect("write config");
        let log_path = dir.join("flowgate.log");
        let mut eal_args: Vec<String> = base.iter().map(|s| s.to_string()).collect();
        eal_args.push("--file-prefix".into());
        eal_args.push(file_prefix.clone());
        eal_args.extend(extra_eal.iter().map(|s| s.to_string()));
        let mut cmd = Command::new(flowgate_bin());
        cmd.arg("run")
            .arg("-c")
            .arg(&config_path)
            .arg("--")
            .args(&eal_args)
            .env("RUST_BACKTRACE", "1");
        let what = format!("flowgate run -c {}", config_path.display());
        let proc = BgProc::spawn(cmd, &what, &log_path);
        Appliance {
            proc: Some(proc),
            dir,
            config_path,
            log_path,
            metrics_addr,
            file_prefix,
            eal_args,
        }
    }

    fn proc_mut(&mut self) -> &mut BgProc {
        self.proc.as_mut().expect("appliance process")
    }

    /// Waits for /metrics; panics (after stopping the process, with its log) on exit or timeout.
    pub fn wait_ready(&mut self) {
        let secs: u64 = std::env::var("FLOWGATE_READY_TIMEOUT")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(20);
        let t0 = Instant::now();
        let mut last_err: String;
        loop {
            if let Some(st) = self.proc_mut().try_status() {
                panic!(
                    "flowgate exited before /metrics answered ({st})\n{}",
                    self.log_dump()
                );
            }
            match scrape(self.metrics_addr) {
                Ok(body) if body.contains("flowgate_") => return,
                Ok(body) => last_err = format!("no flowgate_ metrics in body: {body:?}"),
                Err(e) => last_err = e,
            }
            if t0.elapsed() > Duration::from_secs(secs) {
                panic!(
                    "flowgate /metrics at {} not ready after {secs} s (last: {last_err})",
                    self.metrics_addr
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Scrapes and parses /metrics (panics if it doesn't answer).
    pub fn metrics(&self) -> Metrics {
        let body = scrape(self.metrics_addr)
            .unwrap_or_else(|e| panic!("scrape {}: {e}", self.metrics_addr));
        Metrics::parse(&body)
    }

    /// Raw /metrics text.
    pub fn metrics_text(&self) -> String {
        scrape(self.metrics_addr).unwrap_or_else(|e| panic!("scrape {}: {e}", self.metrics_addr))
    }

    /// Scrapes until `pred` holds (up to `timeout`); returns the last scrape either way.
    pub fn wait_metrics(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&Metrics) -> bool,
    ) -> Metrics {
        let t0 = Instant::now();
        loop {
            let m = self.metrics();
            if pred(&m) || t0.elapsed() >= timeout {
                return m;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn pid(&self) -> i32 {
        self.proc.as_ref().map(|p| p.pid()).unwrap_or(0)
    }

    pub fn signal(&self, sig: i32) {
        if let Some(p) = &self.proc {
            p.signal(sig);
        }
    }

    pub fn running(&mut self) -> bool {
        self.proc.as_mut().map(|p| p.running()).unwrap_or(false)
    }

    pub fn log(&self) -> String {
        fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    fn log_dump(&self) -> String {
        format!(
            "===== flowgate log {} =====\n{}\n===== config {} =====\n{}\n===== end =====",
            self.log_path.display(),
            self.log(),
            self.config_path.display(),
            fs::read_to_string(&self.config_path).unwrap_or_default()
        )
    }

    /// SIGTERM; waits up to 15 s, then SIGKILL. Returns the exit status (a SIGKILLed run
    /// shows as killed by signal 9, so `status.success()` is the clean-exit check).
    pub fn stop(&mut self) -> ExitStatus {
        let p = self.proc_mut();
        let (st, killed) = p.stop_with(libc::SIGTERM, Duration::from_secs(15));
        if killed {
            eprintln!("flowgate did not exit within 15 s of SIGTERM; SIGKILLed");
        }
        self.cleanup_runtime();
        st
    }

    fn cleanup_runtime(&self) {
        let _ = fs::remove_dir_all(Path::new("/var/run/dpdk").join(&self.file_prefix));
    }
}

impl Drop for Appliance {
    fn drop(&mut self) {
        if let Some(p) = self.proc.as_mut() {
            if p.try_status().is_none() {
                p.stop_with(libc::SIGTERM, Duration::from_secs(10));
            }
        }
        if std::thread::panicking() {
            eprintln!("{}", self.log_dump());
        }
        self.cleanup_runtime();
    }
}

/// Returns the config text with a metrics listen address, and that address.
fn with_metrics_listen(yaml: &str) -> (String, SocketAddr) {
    if yaml.contains("@METRICS_LISTEN@") {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        return (yaml.replace("@METRICS_LISTEN@", &addr.to_string()), addr);
    }
    let has_metrics = yaml.lines().any(|l| l.starts_with("metrics:"));
    if has_metrics {
        // Use the address the config names.
        let mut in_metrics = false;
        for l in yaml.lines() {
            if l.starts_with("metrics:") {
                in_metrics = true;
                if let Some(i) = l.find("listen:") {
                    if let Some(a) = parse_listen(&l[i + 7..]) {
                        return (yaml.to_string(), a);
                    }
                }
                continue;
            }
            if in_metrics {
                if !l.starts_with(' ') && !l.trim().is_empty() {
                    break;
                }
                if let Some(i) = l.find("listen:") {
                    if let Some(a) = parse_listen(&l[i + 7..]) {
                        return (yaml.to_string(), a);
                    }
                }
            }
        }
        return (yaml.to_string(), "127.0.0.1:9100".parse().unwrap());
    }
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut t = yaml.to_string();
    if !t.ends_with('\n') {
        t.push('\n');
    }
    t.push_str(&format!("metrics:\n  listen: \"{addr}\"\n"));
    (t, addr)
}

fn parse_listen(s: &str) -> Option<SocketAddr> {
    s.trim()
        .trim_end_matches('}')
        .trim()
        .trim_matches(|c| c == '"' || c == '\'')
        .parse()
        .ok()
}

// ---------------------------------------------------------------------------------------------
// Traffic helpers (all bounded in time)
// ---------------------------------------------------------------------------------------------

/// Parses "N packets transmitted, M received" from ping's summary.
pub fn ping_counts(out: &str) -> Option<(u32, u32)> {
    let line = out.lines().find(|l| l.contains("packets transmitted"))?;
    let nums: Vec<u32> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect();
    Some((*nums.first()?, *nums.get(1)?))
}

/// `ping -c COUNT -i 0.2 -W 1 [extra] DST` from `ns`.
pub fn ping(ns: &Netns, dst: &str, count: u32, extra: &[&str]) -> Out {
    let c = count.to_string();
    let mut args = vec!["ping", "-n", "-c", &c, "-i", "0.2", "-W", "1"];
    args.extend_from_slice(extra);
    args.push(dst);
    ns.exec(&args, 5 + count as u64)
}

/// Pings until one reply comes back (ARP warm-up), up to `tries` one-packet pings.
pub fn ping_until_reply(ns: &Netns, dst: &str, tries: u32) -> bool {
    (0..tries).any(|_| ping(ns, dst, 1, &[]).ok())
}

/// Asserts that `count` pings from `ns` to `dst` all get replies.
pub fn assert_ping(ns: &Netns, dst: &str, count: u32) {
    let o = ping(ns, dst, count, &[]);
    match ping_counts(&o.stdout) {
        Some((tx, rx)) if tx == count && rx == count => {}
        _ => panic!(
            "ping {dst} from {}: expected {count}/{count} replies\n{o}",
            ns.name
        ),
    }
}

/// Deterministic pseudo-random bytes (xorshift) for transfer checks.
pub fn test_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// `python3 -m http.server` in a namespace, serving a temp dir. Its stderr (the access log,
/// one line per request with the client address) is in `log`.
pub struct HttpServer {
    pub proc: BgProc,
    pub dir: TempDir,
    pub ip: String,
    pub port: u16,
}

impl HttpServer {
    pub fn start(ns: &Netns, ip: &str, port: u16) -> HttpServer {
        let dir = TempDir::new("www");
        let root = dir.join("root");
        fs::create_dir_all(&root).unwrap();
        let log = dir.join("http.log");
        let port_s = port.to_string();
        let root_s = root.to_string_lossy().into_owned();
        let proc = ns.spawn(
            &[
                PYTHON,
                "-u",
                "-m",
                "http.server",
                &port_s,
                "--bind",
                ip,
                "--directory",
                &root_s,
            ],
            &log,
        );
        ns.wait_listen("tcp", port, Duration::from_secs(10));
        HttpServer {
            proc,
            dir,
            ip: ip.to_string(),
            port,
        }
    }

    /// Puts a file in the served directory.
    pub fn put(&self, name: &str, content: &[u8]) {
        fs::write(self.dir.join("root").join(name), content).unwrap();
    }

    pub fn url(&self, name: &str) -> String {
        format!("http://{}:{}/{}", self.ip, self.port, name)
    }

    pub fn access_log(&self) -> String {
        self.proc.log_text()
    }
}

/// Fetches `url` with curl from `ns` into a temp file and returns the bytes (panics with
/// curl's output on failure).
pub fn curl_get(ns: &Netns, url: &str) -> Vec<u8> {
    require_tool("curl");
    let dir = TempDir::new("curl");
    let out = dir.join("body");
    let out_s = out.to_string_lossy().into_owned();
    let o = ns.exec(
        &[
            "curl",
            "-sS",
            "--fail",
            "--max-time",
            "10",
            "--connect-timeout",
            "5",
            "-o",
            &out_s,
            url,
        ],
        15,
    );
    if !o.ok() {
        panic!("curl {url} from {} failed\n{o}", ns.name);
    }
    fs::read(&out).unwrap_or_default()
}

const UDP_ECHO_SERVER: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
print("udp echo listening", flush=True)
while True:
    d, a = s.recvfrom(65535)
    print("from %s:%d %r" % (a[0], a[1], d[:64]), flush=True)
    s.sendto(b"echo:" + d, a)
"#;

const UDP_CLIENT: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1.0)
msg = sys.argv[3].encode()
for attempt in range(5):
    s.sendto(msg, (sys.argv[1], int(sys.argv[2])))
    try:
        d, a = s.recvfrom(65535)
        sys.stdout.write(d.decode(errors="replace"))
        sys.exit(0)
    except socket.timeout:
        continue
sys.stderr.write("no UDP reply after 5 tries\n")
sys.exit(1)
"#;

/// A UDP echo server (replies `echo:<payload>`) in a namespace; its log has one line per
/// datagram with the sender's address.
pub fn udp_echo_server(ns: &Netns, ip: &str, port: u16, log: &Path) -> BgProc {
    let p = ns.spawn(
        &[PYTHON, "-u", "-c", UDP_ECHO_SERVER, ip, &port.to_string()],
        log,
    );
    ns.wait_listen("udp", port, Duration::from_secs(10));
    p
}

/// Sends `msg` by UDP from `ns` to `ip:port` (up to 5 tries, 1 s each) and returns the reply.
pub fn udp_request(ns: &Netns, ip: &str, port: u16, msg: &str) -> Out {
    ns.exec(&[PYTHON, "-c", UDP_CLIENT, ip, &port.to_string(), msg], 15)
}

/// A tcpdump capture (to a pcap file) on an interface in a namespace.
pub struct Capture {
    proc: BgProc,
    pcap: PathBuf,
    ns: String,
    _dir: TempDir,
}

impl Capture {
    /// Starts `tcpdump -i IF -U -w FILE FILTER` and waits until it is listening.
    pub fn start(ns: &Netns, ifname: &str, filter: &str) -> Capture {
        require_tool("tcpdump");
        let dir = TempDir::new("cap");
        let pcap = dir.join("cap.pcap");
        let log = dir.join("tcpdump.log");
        let pcap_s = pcap.to_string_lossy().into_owned();
        // --immediate-mode: without it, packets still in the current TPACKET_V3 block when
        // tcpdump is stopped are lost ("N received by filter", 0 captured).
        let mut args = vec![
            "tcpdump",
            "--immediate-mode",
            "-i",
            ifname,
            "-nn",
            "-U",
            "-w",
            &pcap_s,
        ];
        args.extend(filter.split_whitespace());
        let proc = ns.spawn(&args, &log);
        let ok = wait_for(Duration::from_secs(10), || {
            proc.log_text().contains("listening on").then_some(())
        });
        if ok.is_none() {
            panic!("tcpdump did not start in {}:\n{}", ns.name, proc.log_text());
        }
        Capture {
            proc,
            pcap,
            ns: ns.name.clone(),
            _dir: dir,
        }
    }

    /// Stops the capture and returns tcpdump's one-line-per-packet decode (with link headers).
    pub fn finish(mut self) -> Vec<String> {
        std::thread::sleep(Duration::from_millis(300));
        self.proc.stop_with(libc::SIGINT, Duration::from_secs(5));
        let pcap_s = self.pcap.to_string_lossy().into_owned();
        let o = run(&["tcpdump", "-nn", "-e", "-r", &pcap_s], 10);
        o.stdout
            .lines()
            .map(str::to_string)
            .filter(|l| !l.trim().is_empty())
            .collect()
    }
}

/// Runs a python3 (system, with scapy) script in a namespace; extra args follow the script.
pub fn python_in(ns: &Netns, script: &str, args: &[&str], secs: u64) -> Out {
    let mut a = vec![PYTHON, "-c", script];
    a.extend_from_slice(args);
    ns.exec(&a, secs)
}

/// Parses an IPv4 address (helper for tests).
pub fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

/// The standard topology with a flowgate running on it. Field order = drop order: the
/// appliance stops before its links and namespaces go away.
pub struct Rig {
    pub app: Appliance,
    pub topo: Topology,
}

impl Rig {
    /// Builds `Topology::standard(prefix, mtu)`, starts flowgate on `topo.router_config(opts)`,
    /// and warms up ARP on both sides (client -> 10.0.1.1, server -> 198.51.100.1).
    pub fn standard(prefix: &str, mtu: u32, opts: &RouterOpts) -> Rig {
        let topo = Topology::standard(prefix, mtu);
        let app = Appliance::start(&topo.router_config(opts));
        let rig = Rig { app, topo };
        assert!(
            ping_until_reply(&rig.topo.client, CLIENT_GW, 5),
            "the appliance does not answer ping on {CLIENT_GW} from the client"
        );
        assert!(
            ping_until_reply(&rig.topo.server, SERVER_GW, 5),
            "the appliance does not answer ping on {SERVER_GW} from the server"
        );
        rig
    }
    pub fn client(&self) -> &Netns {
        &self.topo.client
    }
    pub fn server(&self) -> &Netns {
        &self.topo.server
    }
}

//! The load balancer topology (tests/lb.rs), built on the shared harness (`common`).
//!
//! ```text
//!  netns <p>-c (client) 203.0.113.2/24 ==veth== <p>f0 [front 203.0.113.1/24]
//!  default via 203.0.113.1                                flowgate (root ns, af_packet)
//!                                                         <p>b0 [back 10.1.0.1/24]
//!                                                            ==veth==
//!  netns <p>-l: bridge br0 -- targets <p>-t1..t5 (10.1.0.11..15/24)
//! ```
//!
//! Targets t1..t4 have a default route via 10.1.0.1 (client IP preservation: replies go
//! back through the appliance). t5 has only its connected subnet: it serves the full-NAT
//! group, whose LB address 10.1.0.100 sits on that subnet (the appliance answers ARP for
//! it), so the client is unreachable from t5 except through the LB.
//!
//! Every target runs `TARGET_SERVER`: HTTP on 8080 answering `name=<target> client=<ip>`
//! (and `/stream?n=N`: N deterministic bytes), a UDP echo on 5353 answering
//! `name=<target> client=<ip>:<port>` (also on UDP 8080, for the `tcp_udp` listener).
//! Each logs `HTTP <client ip>` / `UDP <ip>`.

#![allow(dead_code)]

use super::common::*;
use std::path::Path;

pub const FRONT_IP: &str = "203.0.113.1";
pub const CLIENT: &str = "203.0.113.2";
pub const BACK_IP: &str = "10.1.0.1";
pub const VIP: &str = "198.51.100.10";
pub const LB_ADDR: &str = "10.1.0.100";
pub const LB_ID: &str = "web";

pub fn target_ip(i: usize) -> String {
    format!("10.1.0.{}", 10 + i)
}

pub const TARGET_SERVER: &str = r#"
import socket, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
name, ip = sys.argv[1], sys.argv[2]
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a):
        pass
    def do_GET(self):
        print("HTTP %s %d" % (self.client_address[0], self.client_address[1]), flush=True)
        if self.path.startswith("/stream"):
            n = int(self.path.split("n=")[1])
            self.send_response(200)
            self.send_header("Content-Length", str(n))
            self.end_headers()
            x = 12345
            chunk = bytearray(65536)
            left = n
            while left > 0:
                k = min(left, 65536)
                for i in range(k):
                    x = (x * 1103515245 + 12345) & 0x7fffffff
                    chunk[i] = (x >> 16) & 0xff
                self.wfile.write(bytes(chunk[:k]))
                left -= k
            return
        body = ("name=%s client=%s\n" % (name, self.client_address[0])).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
class S(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024
def udp(port):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind((ip, port))
    while True:
        d, a = u.recvfrom(2048)
        print("UDP %s %d" % a, flush=True)
        u.sendto(("name=%s client=%s:%d" % (name, a[0], a[1])).encode(), a)
for p in (5353, 8080):
    threading.Thread(target=udp, args=(p,), daemon=True).start()
srv = S((ip, 8080), H)
print("listening", flush=True)
srv.serve_forever()
"#;

/// The namespaces and links. Field order = drop order.
pub struct LbTopology {
    pub prefix: String,
    pub front_veth: Option<Veth>,
    pub back_veth: Option<Veth>,
    pub client: Netns,
    pub lan: Netns,
    pub targets: Vec<Netns>,
}

fn ns_veth(left: &Netns, lname: &str, right: &Netns, rname: &str) {
    left.must(
        &[
            "ip",
            "link",
            "add",
            lname,
            "type",
            "veth",
            "peer",
            "name",
            rname,
            "netns",
            &right.name,
        ],
        10,
    );
    for (ns, ifn) in [(left, lname), (right, rname)] {
        let _ = ns.exec(
            &[
                "sysctl",
                "-qw",
                &format!("net.ipv6.conf.{ifn}.disable_ipv6=1"),
            ],
            5,
        );
        // Checksum offloads stay at the kernel defaults (flowgate completes partial
        // checksums from af_packet ports); only TSO/GSO are off: af_packet truncates 64 KiB
        // GSO frames, which a real NIC never delivers (see docs/nat.md, offloads).
        ns.must(&["ethtool", "-K", ifn, "tso", "off", "gso", "off"], 10);
        ns.must(&["ip", "link", "set", ifn, "up"], 5);
    }
}

impl LbTopology {
    pub fn new(prefix: &str) -> LbTopology {
        check_prefix(prefix);
        require_tool("ethtool");
        let client = Netns::new(&format!("{prefix}-c"));
        let lan = Netns::new(&format!("{prefix}-l"));
        let targets: Vec<Netns> = (1..=5)
            .map(|i| Netns::new(&format!("{prefix}-t{i}")))
            .collect();
        let front = Veth::new(
            &format!("{prefix}f0"),
            &format!("{prefix}f1"),
            &client,
            1500,
        );
        let back = Veth::new(&format!("{prefix}b0"), &format!("{prefix}b1"), &lan, 1500);
        front.add_addr(&client, &format!("{CLIENT}/24"));
        add_route(&client, "default", FRONT_IP);
        bridge_with(&lan, &back.peer);
        for (i, t) in targets.iter().enumerate() {
            let l = format!("{prefix}l{}", i + 1);
            let h = format!("{prefix}h{}", i + 1);
            ns_veth(&lan, &l, t, &h);
            lan.must(&["ip", "link", "set", &l, "master", "br0"], 5);
            t.must(
                &[
                    "ip",
                    "addr",
                    "add",
                    &format!("{}/24", target_ip(i + 1)),
                    "dev",
                    &h,
                ],
                5,
            );
            if i < 4 {
                add_route(t, "default", BACK_IP);
            }
        }
        LbTopology {
            prefix: prefix.to_string(),
            front_veth: Some(front),
            back_veth: Some(back),
            client,
            lan,
            targets,
        }
    }

    /// Starts every target's server (logs in `dir`).
    pub fn start_servers(&self, dir: &Path) -> Vec<BgProc> {
        let v: Vec<BgProc> = self
            .targets
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let name = format!("t{}", i + 1);
                let ip = target_ip(i + 1);
                t.spawn(
                    &[PYTHON, "-u", "-c", TARGET_SERVER, &name, &ip],
                    &dir.join(format!("{name}.log")),
                )
            })
            .collect();
        for t in &self.targets {
            t.wait_listen("tcp", 8080, std::time::Duration::from_secs(10));
        }
        v
    }

    /// The appliance config: listener tcp 80 -> group `web` (t1..t4 with `weights`, client
    /// IP preserved), udp 53 -> group `fnat` (t5, full NAT), tcp_udp 8080 -> group `web`.
    pub fn config(&self, weights: &[u32; 4], extra_targets: &str) -> String {
        let p = &self.prefix;
        let web: String = (1..=4)
            .filter(|&i| !extra_targets.contains(&format!("skip{i}")))
            .map(|i| {
                format!(
                    "          - {{ip: {}, port: 8080, weight: {}}}\n",
                    target_ip(i),
                    weights[i - 1]
                )
            })
            .collect();
        format!(
            r#"# generated by tests/common/lb_topology.rs
lcores:
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
worker:
  idle_sleep_us: 50
load_balancers:
  - id: {LB_ID}
    vips: [{VIP}]
    lb_addresses: [{LB_ADDR}]
    flows_per_core: 65536
    listeners:
      - {{protocol: tcp, port: 80, target_group: web}}
      - {{protocol: udp, port: 53, target_group: fnat}}
      - {{protocol: tcp_udp, port: 8080, target_group: web}}
    target_groups:
      - name: web
        deregistration_delay_s: 30
        tcp_idle_timeout_s: 60
        targets:
{web}      - name: fnat
        preserve_client_ip: false
        targets:
          - {{ip: {t5}, port: 5353}}
"#,
            t5 = target_ip(5),
        )
    }
}

/// The topology with flowgate running on it and the target servers up.
pub struct LbRig {
    pub servers: Vec<BgProc>,
    pub app: Appliance,
    pub topo: LbTopology,
    pub dir: TempDir,
}

/// `yaml` with two workers and two queue pairs per port.
pub fn two_workers(yaml: &str) -> String {
    yaml.replace("workers: [1]", "workers: [1, 2]").replace(
        ",framesz=10240,blocksz=20480\"",
        ",framesz=10240,blocksz=20480,qpairs=2\"\n    queues: 2",
    )
}

impl LbRig {
    pub fn start(prefix: &str, weights: &[u32; 4]) -> LbRig {
        Self::start_yaml(prefix, |t| t.config(weights, ""), &[])
    }

    /// Starts with the config `make` builds for the topology, extra EAL args appended.
    pub fn start_yaml(
        prefix: &str,
        make: impl Fn(&LbTopology) -> String,
        extra_eal: &[&str],
    ) -> LbRig {
        let topo = LbTopology::new(prefix);
        let dir = TempDir::new(&format!("lb-{prefix}"));
        let servers = topo.start_servers(&dir.join(""));
        let app = Appliance::start_with(&make(&topo), extra_eal);
        assert!(
            ping_until_reply(&topo.client, FRONT_IP, 10),
            "the appliance does not answer ping on the front port"
        );
        assert!(
            ping_until_reply(&topo.targets[0], BACK_IP, 10),
            "the appliance does not answer ping on the back port"
        );
        LbRig {
            servers,
            app,
            topo,
            dir,
        }
    }

    pub fn server_log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.join(&format!("t{i}.log"))).unwrap_or_default()
    }

    /// Rewrites the running config and sends SIGHUP; waits until the reload is counted.
    pub fn reload(&self, yaml: &str) {
        let before = self
            .app
            .metrics()
            .value("flowgate_config_reloads_total", &[("result", "ok")]);
        let (text, _) = (yaml.to_string(), ());
        let text = format!("{text}metrics:\n  listen: \"{}\"\n", self.app.metrics_addr);
        std::fs::write(&self.app.config_path, text).expect("write config");
        self.app.signal(libc::SIGHUP);
        let m = self
            .app
            .wait_metrics(std::time::Duration::from_secs(10), |m| {
                m.value("flowgate_config_reloads_total", &[("result", "ok")]) > before
            });
        assert!(
            m.value("flowgate_config_reloads_total", &[("result", "ok")]) > before,
            "reload not applied:\n{}",
            self.app.log()
        );
    }
}

/// The appliance's exception tap, for health probes (tests/lb_health.rs). flowgate runs in
/// the root namespace and its health checker uses the root kernel's TCP stack, so the root
/// kernel must reach the targets through the tap: the tap's kernel side gets the back
/// port's address `BACK_IP/24`, which (a) lets probe sockets bind that source address and
/// receive the replies the pipeline hands to the kernel, and (b) adds the connected route
/// 10.1.0.0/24 dev <tap> in the root namespace, so the kernel ARPs for targets on the tap
/// (the pipeline answers every ARP from the kernel) rather than following the root
/// namespace's default route. Nothing else in the root namespace uses 10.1.0.0/24, and the
/// root ends of the test veths have ARP off, so the root kernel never answers ARP for
/// BACK_IP on the data links. Drop removes the address and its route (the tap itself
/// disappears with the appliance).
pub struct ProbeTap {
    pub name: String,
}

impl ProbeTap {
    /// The `ports:` entry and the `exception:` section for a tap named `name`.
    pub fn yaml(name: &str) -> (String, String) {
        (
            format!(
                "  - name: kernel\n    device: \"net_tap0,iface={name}\"\n    role: exception\n"
            ),
            "exception:\n  port: kernel\n".to_string(),
        )
    }

    /// Configures the kernel side once the appliance has created the tap.
    pub fn attach(name: &str) -> ProbeTap {
        let ok = wait_for(std::time::Duration::from_secs(10), || {
            run(&["ip", "link", "show", name], 5).ok().then_some(())
        });
        assert!(ok.is_some(), "the appliance did not create tap {name}");
        let tap = ProbeTap {
            name: name.to_string(),
        };
        let _ = run(
            &[
                "sysctl",
                "-qw",
                &format!("net.ipv6.conf.{name}.disable_ipv6=1"),
            ],
            5,
        );
        segmentation_off(None, name);
        must(
            &["ip", "addr", "add", &format!("{BACK_IP}/24"), "dev", name],
            5,
        );
        must(&["ip", "link", "set", name, "up"], 5);
        tap
    }
}

impl Drop for ProbeTap {
    fn drop(&mut self) {
        if run(&["ip", "link", "show", &self.name], 5).ok() {
            let _ = run(
                &[
                    "ip",
                    "addr",
                    "del",
                    &format!("{BACK_IP}/24"),
                    "dev",
                    &self.name,
                ],
                5,
            );
        }
    }
}

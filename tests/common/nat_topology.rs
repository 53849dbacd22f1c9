//! The NAT gateway topology (tests/nat.rs), built on the shared harness (`common`).
//!
//! ```text
//!  netns <p>-a  10.0.1.2/24 --+
//!                             +-- br0 in netns <p>-l --<p>i1 ==veth== <p>i0 [inside 10.0.1.1/24]
//!  netns <p>-b  10.0.1.3/24 --+                                               flowgate (root ns,
//!  (default via 10.0.1.1)                                                      net_af_packet)
//!                                                                          <p>o0 [outside 192.0.2.1/24]
//!                                                                             ==veth==
//!  netns <p>-r (router, ip_forward=1): <p>o1 192.0.2.254/24 | <p>r1 203.0.113.1/24
//!                                                              ==veth==
//!  netns <p>-s (server): <p>s1 203.0.113.10/24 (and .11), 192.0.2.0/24 via 203.0.113.1
//! ```
//!
//! The gateway's public IPs 192.0.2.10 and 192.0.2.11 sit on the router's connected subnet:
//! the router ARPs for them and the appliance answers (proxy ARP). Nothing in the router or
//! server namespaces routes 10.0.0.0/8, so an untranslated private source can't get an answer.
//! The router has no default route: nothing leaves the machine.
//!
//! Drop order (fields): the root-side veths go first (the appliance, owned by [`NatRig`],
//! is stopped before them), then the namespaces (which take their own veths and bridge with
//! them, and kill whatever runs in them).

#![allow(dead_code)]

use super::common::*;
use std::time::Duration;

pub const INSIDE_GW: &str = "10.0.1.1";
pub const HOST_A: &str = "10.0.1.2";
pub const HOST_B: &str = "10.0.1.3";
pub const OUTSIDE_IP: &str = "192.0.2.1";
pub const ROUTER_OUT: &str = "192.0.2.254";
pub const ROUTER_IN: &str = "203.0.113.1";
pub const SERVER: &str = "203.0.113.10";
/// A second address of the server (a second destination IP for the rfc4787 tests).
pub const SERVER2: &str = "203.0.113.11";
pub const PUBLIC_IPS: [&str; 2] = ["192.0.2.10", "192.0.2.11"];
pub const GW_ID: &str = "gw1";

/// The namespaces and links. See the module docs.
pub struct NatTopology {
    pub prefix: String,
    /// net_tap variant: the appliance creates the taps `<p>t0` (inside) and `<p>t1`
    /// (outside); [`NatTopology::attach_taps`] moves them into host a / the router.
    pub tap: bool,
    // Field order = drop order: root-side links first, then namespaces.
    pub inside_veth: Option<Veth>,
    pub outside_veth: Option<Veth>,
    pub a: Netns,
    pub b: Netns,
    pub lan: Netns,
    pub router: Netns,
    pub server: Netns,
}

fn ns_veth(left: &Netns, lname: &str, right: &Netns, rname: &str, mtu: u32) {
    let m = mtu.to_string();
    left.must(
        &[
            "ip",
            "link",
            "add",
            lname,
            "mtu",
            &m,
            "type",
            "veth",
            "peer",
            "name",
            rname,
            "mtu",
            &m,
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
        // Offloads stay at the kernel defaults (issue 8 item 5): the appliance must cope
        // with partial checksums and GSO frames from kernel peers.
        ns.must(&["ip", "link", "set", ifn, "up"], 5);
    }
}

impl NatTopology {
    /// The af_packet topology (see the module docs).
    pub fn new(prefix: &str) -> NatTopology {
        Self::build(prefix, false)
    }

    /// The net_tap variant: host a sits directly on the appliance's inside tap (10.0.1.2,
    /// no bridge; host b is not connected), the router directly on its outside tap. Used
    /// where the appliance must see IP fragments: DPDK's af_packet PMD joins its sockets to
    /// a `PACKET_FANOUT_HASH | PACKET_FANOUT_FLAG_DEFRAG` group, so the kernel reassembles
    /// every fragmented datagram before the appliance sees it.
    pub fn new_tap(prefix: &str) -> NatTopology {
        Self::build(prefix, true)
    }

    fn build(prefix: &str, tap: bool) -> NatTopology {
        check_prefix(prefix);
        require_tool("ethtool");
        let a = Netns::new(&format!("{prefix}-a"));
        let b = Netns::new(&format!("{prefix}-b"));
        let lan = Netns::new(&format!("{prefix}-l"));
        let router = Netns::new(&format!("{prefix}-r"));
        let server = Netns::new(&format!("{prefix}-s"));
        let mut topo = NatTopology {
            prefix: prefix.to_string(),
            tap,
            inside_veth: None,
            outside_veth: None,
            a,
            b,
            lan,
            router,
            server,
        };
        if tap {
            for t in [topo.inside_if(), topo.outside_if()] {
                delete_link(&t);
            }
        } else {
            topo.build_veths();
        }
        topo.build_far_side();
        topo
    }

    fn build_veths(&mut self) {
        let prefix = self.prefix.clone();
        let (a, b, lan, router) = (&self.a, &self.b, &self.lan, &self.router);
        let inside_veth =
            Veth::new_default_offloads(&format!("{prefix}i0"), &format!("{prefix}i1"), lan, 1500);
        let outside_veth = Veth::new_default_offloads(
            &format!("{prefix}o0"),
            &format!("{prefix}o1"),
            router,
            1500,
        );

        // Offloads at the kernel defaults everywhere (checksum offload on: the appliance
        // gets partial checksums and must fix them) except TSO/GSO on the two links that
        // feed the appliance: with them a kernel forwards whole GSO super-frames (up to
        // 64 KiB) to the af_packet socket, which DPDK 22.11's af_packet PMD (no vnet
        // header) truncates to its ring frame. The appliance drops and counts such frames
        // (`oversize_frame`, `ipv4_bad_total_length`); a real NIC never delivers them.
        for (ns, ifn) in [(lan, &inside_veth.peer), (router, &outside_veth.peer)] {
            ns.must(&["ethtool", "-K", ifn, "tso", "off", "gso", "off"], 10);
        }

        // The LAN: a bridge joining the appliance's inside port and both private hosts.
        bridge_with(lan, &inside_veth.peer);
        for (host, tag, ip) in [(a, "a", HOST_A), (b, "b", HOST_B)] {
            let l = format!("{prefix}{tag}0");
            let h = format!("{prefix}{tag}1");
            ns_veth(lan, &l, host, &h, 1500);
            lan.must(&["ip", "link", "set", &l, "master", "br0"], 5);
            host.must(&["ip", "addr", "add", &format!("{ip}/24"), "dev", &h], 5);
            host.must(&["ip", "route", "add", "default", "via", INSIDE_GW], 5);
        }
        outside_veth.add_addr(router, &format!("{ROUTER_OUT}/24"));
        self.inside_veth = Some(inside_veth);
        self.outside_veth = Some(outside_veth);
    }

    /// The router between the appliance's outside subnet and the "internet", the server.
    fn build_far_side(&self) {
        let prefix = &self.prefix;
        let (router, server) = (&self.router, &self.server);
        let rs = format!("{prefix}r1");
        let sr = format!("{prefix}s1");
        ns_veth(router, &rs, server, &sr, 1500);
        router.must(
            &["ip", "addr", "add", &format!("{ROUTER_IN}/24"), "dev", &rs],
            5,
        );
        router.must(
            &[
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
                "net.ipv4.icmp_ratelimit=0",
                "net.ipv4.conf.all.rp_filter=0",
                "net.ipv4.conf.default.rp_filter=0",
            ],
            5,
        );

        // The server.
        server.must(
            &["ip", "addr", "add", &format!("{SERVER}/24"), "dev", &sr],
            5,
        );
        server.must(
            &["ip", "addr", "add", &format!("{SERVER2}/24"), "dev", &sr],
            5,
        );
        add_route(server, "192.0.2.0/24", ROUTER_IN);
        server.must(&["sysctl", "-qw", "net.ipv4.icmp_ratelimit=0"], 5);
    }

    /// Names of the appliance's ports' interfaces (root-side veth ends, or taps).
    pub fn inside_if(&self) -> String {
        if self.tap {
            format!("{}t0", self.prefix)
        } else {
            format!("{}i0", self.prefix)
        }
    }
    pub fn outside_if(&self) -> String {
        if self.tap {
            format!("{}t1", self.prefix)
        } else {
            format!("{}o0", self.prefix)
        }
    }

    /// Tap variant, once the appliance is up: moves the inside tap into host a (10.0.1.2/24,
    /// default via 10.0.1.1) and the outside tap into the router (192.0.2.254/24).
    pub fn attach_taps(&self) {
        assert!(self.tap);
        for (t, ns, cidr) in [
            (self.inside_if(), &self.a, format!("{HOST_A}/24")),
            (self.outside_if(), &self.router, format!("{ROUTER_OUT}/24")),
        ] {
            if !std::path::Path::new("/sys/class/net").join(&t).exists() {
                let o = run(&["ip", "-br", "link"], 5);
                panic!("the appliance did not create tap {t}\n{o}");
            }
            must(&["ip", "link", "set", &t, "netns", &ns.name], 10);
            let _ = ns.exec(
                &[
                    "sysctl",
                    "-qw",
                    &format!("net.ipv6.conf.{t}.disable_ipv6=1"),
                ],
                5,
            );
            ns.must(&["ip", "link", "set", &t, "mtu", "1500"], 5);
            ns.must(&["ip", "addr", "add", &cidr, "dev", &t], 5);
            ns.must(&["ip", "link", "set", &t, "up"], 5);
        }
        self.a
            .must(&["ip", "route", "add", "default", "via", INSIDE_GW], 5);
    }

    /// Interface of a private host / the server / the router's server-side link.
    pub fn a_if(&self) -> String {
        if self.tap {
            self.inside_if()
        } else {
            format!("{}a1", self.prefix)
        }
    }
    pub fn b_if(&self) -> String {
        format!("{}b1", self.prefix)
    }
    pub fn server_if(&self) -> String {
        format!("{}s1", self.prefix)
    }
    pub fn router_server_if(&self) -> String {
        format!("{}r1", self.prefix)
    }

    /// MAC address of the appliance's inside port, as host a resolved it (call after an
    /// exchange with 10.0.1.1, e.g. the warm-up of [`NatRig::start`]).
    pub fn inside_mac(&self) -> String {
        self.a
            .neighbor_mac(INSIDE_GW)
            .expect("host a has no ARP entry for 10.0.1.1")
    }

    /// The MTU of the router <-> server link (both ends).
    pub fn set_far_mtu(&self, mtu: u32) {
        let m = mtu.to_string();
        self.router.must(
            &["ip", "link", "set", &self.router_server_if(), "mtu", &m],
            5,
        );
        self.server
            .must(&["ip", "link", "set", &self.server_if(), "mtu", &m], 5);
    }

    pub fn device(&self, idx: u32, iface: &str, qpairs: u16) -> String {
        if self.tap {
            return format!("net_tap{idx},iface={iface}");
        }
        let mut d = format!("net_af_packet{idx},iface={iface},framesz=10240,blocksz=20480");
        if qpairs > 1 {
            d.push_str(&format!(",qpairs={qpairs}"));
        }
        d
    }

    /// The appliance config for this topology.
    pub fn config(&self, o: &NatOpts) -> String {
        let workers: Vec<String> = o.workers.iter().map(|w| w.to_string()).collect();
        let limit = match o.limit {
            Some(l) => format!("    max_connections_per_destination: {l}\n"),
            None => String::new(),
        };
        let ips: Vec<String> = o.public_ips.iter().map(|i| format!("\"{i}\"")).collect();
        format!(
            r#"# generated by tests/common/nat_topology.rs
lcores:
  main: 0
  workers: [{workers}]
mempool:
  mbufs: {mbufs}
  cache: 256
  data_room: 10240
ports:
  - name: inside
    device: "{inside_dev}"
    addresses: ["{INSIDE_GW}/24"]
    mtu: 1500
    queues: {queues}
    role: data
  - name: outside
    device: "{outside_dev}"
    addresses: ["{OUTSIDE_IP}/24"]
    mtu: 1500
    queues: {queues}
    role: data
routes:
  - prefix: "203.0.113.0/24"
    port: outside
    via: "{ROUTER_OUT}"
  - prefix: "0.0.0.0/0"
    port: outside
    via: "{ROUTER_OUT}"
worker:
  burst: 32
  tx_drain_us: 100
  idle_sleep_us: 50
neighbor:
  timeout_s: 300
  pending_max: 64
nat_gateways:
  - id: {GW_ID}
    inside_prefixes: ["10.0.1.0/24"]
    public_ips: [{ips}]
    port_range: {{first: {first}, last: {last}}}
{limit}    timeouts:
      tcp_established_s: {tcp_est}
      tcp_transitory_s: {tcp_trans}
      udp_s: {udp}
      icmp_s: {icmp}
    flows_per_core: {flows}
    mode: {mode}
"#,
            workers = workers.join(", "),
            mbufs = o.mbufs,
            inside_dev = self.device(0, &self.inside_if(), o.queues),
            outside_dev = self.device(1, &self.outside_if(), o.queues),
            queues = o.queues,
            ips = ips.join(", "),
            first = o.port_first,
            last = o.port_last,
            tcp_est = o.tcp_established_s,
            tcp_trans = o.tcp_transitory_s,
            udp = o.udp_s,
            icmp = o.icmp_s,
            flows = o.flows_per_core,
            mode = o.mode,
        )
    }
}

/// Knobs of the generated NAT config.
#[derive(Clone, Debug)]
pub struct NatOpts {
    pub workers: Vec<u32>,
    /// Queue pairs per port (af_packet `qpairs` and `queues`).
    pub queues: u16,
    pub mbufs: u32,
    pub public_ips: Vec<String>,
    pub port_first: u32,
    pub port_last: u32,
    pub limit: Option<u32>,
    pub tcp_established_s: u32,
    pub tcp_transitory_s: u32,
    pub udp_s: u32,
    pub icmp_s: u32,
    pub flows_per_core: u32,
    pub mode: &'static str,
}

impl Default for NatOpts {
    fn default() -> Self {
        NatOpts {
            workers: vec![1],
            queues: 1,
            mbufs: 8191,
            public_ips: PUBLIC_IPS.iter().map(|s| s.to_string()).collect(),
            port_first: 20000,
            port_last: 29999,
            limit: None,
            tcp_established_s: 30,
            tcp_transitory_s: 10,
            udp_s: 10,
            icmp_s: 10,
            flows_per_core: 65536,
            mode: "aws",
        }
    }
}

/// The NAT topology with a flowgate running on it. Field order = drop order: the appliance
/// stops before its links and namespaces go away.
pub struct NatRig {
    pub app: Appliance,
    pub topo: NatTopology,
}

impl NatRig {
    pub fn start(prefix: &str, o: &NatOpts) -> NatRig {
        Self::start_with(prefix, o, &[])
    }

    /// Builds the topology, starts flowgate (extra EAL args appended), warms up ARP on both
    /// sides of the appliance (private hosts -> 10.0.1.1, router -> 192.0.2.1).
    pub fn start_with(prefix: &str, o: &NatOpts, extra_eal: &[&str]) -> NatRig {
        Self::launch(NatTopology::new(prefix), o, extra_eal)
    }

    /// The net_tap variant ([`NatTopology::new_tap`]): host a and the router only.
    pub fn start_tap(prefix: &str, o: &NatOpts) -> NatRig {
        Self::launch(NatTopology::new_tap(prefix), o, &[])
    }

    /// [`NatRig::start_tap`] with extra EAL args (e.g. `--lcores` for several workers).
    pub fn start_tap_with(prefix: &str, o: &NatOpts, extra_eal: &[&str]) -> NatRig {
        Self::launch(NatTopology::new_tap(prefix), o, extra_eal)
    }

    fn launch(topo: NatTopology, o: &NatOpts, extra_eal: &[&str]) -> NatRig {
        let app = Appliance::start_with(&topo.config(o), extra_eal);
        let rig = NatRig { app, topo };
        if rig.topo.tap {
            rig.topo.attach_taps();
        }
        let mut warm = vec![(&rig.topo.a, INSIDE_GW), (&rig.topo.router, OUTSIDE_IP)];
        if !rig.topo.tap {
            warm.push((&rig.topo.b, INSIDE_GW));
        }
        for (ns, dst) in warm {
            assert!(
                ping_until_reply(ns, dst, 10),
                "the appliance does not answer ping on {dst} from {}",
                ns.name
            );
        }
        rig
    }

    pub fn a(&self) -> &Netns {
        &self.topo.a
    }
    pub fn b(&self) -> &Netns {
        &self.topo.b
    }
    pub fn server(&self) -> &Netns {
        &self.topo.server
    }
    pub fn router(&self) -> &Netns {
        &self.topo.router
    }

    /// Gateway metric value (`flowgate_nat_<name>` with gateway label, plus extra labels).
    pub fn nat(&self, m: &Metrics, name: &str, extra: &[(&str, &str)]) -> f64 {
        let mut labels: Vec<(&str, &str)> = vec![("gateway", GW_ID)];
        labels.extend_from_slice(extra);
        m.value(&format!("flowgate_nat_{name}"), &labels)
    }

    /// Waits (up to `secs`) until the global drop counter for `reason` is at least `min`.
    pub fn wait_dropped(&self, reason: &str, min: f64, secs: u64) -> Metrics {
        self.app
            .wait_metrics(Duration::from_secs(secs), |m| m.dropped(reason) >= min)
    }
}

//! Latency through flowgate: our own generator stamps the TSC into every packet it sends
//! and reads it back when flowgate returns the packet (both processes run on one machine
//! and share the TSC), so each sample is the time the packet spent in memif + flowgate.
//!
//!   cargo bench --bench latency -- [--flowgate PATH] [--seconds S] [--mode route|nat]
//!
//! Topology: flowgate one-armed on a `net_memif` client port (10.254.0.1/16, route
//! 10.253.0.0/16 back out via 10.254.0.2); this process is the memif server at
//! 10.254.0.2 and answers flowgate's ARP itself. flowgate is the client because DPDK
//! 22.11's memif server can crash when its client disconnects; at the end this process
//! stops its port first (the client survives its server leaving), then flowgate is
//! stopped with SIGTERM and must print its exit summary (`latency_flowgate_clean_exit`). It first sends as fast as it can for a
//! moment to find the maximum rate flowgate returns, then sends TSC-paced at 10 %, 50 %
//! and 90 % of it and reports p50/p99/p999 of the added latency. flowgate's worker is
//! pinned to cpu 1, the generator to cpu 0. Output ends with `key: value` lines.

use flowgate::packet::{BufAlloc, PacketBuf};
use flowgate::pmd::{self, Eal, Mbuf, MbufAlloc, Mempool, Port, PortSetup, RxBurst, TxBuffer};
use flowgate::wire::{arp, EtherType, EthernetFrame, Ipv4Packet, MacAddr, UdpPacket};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const GEN_MAC: MacAddr = MacAddr::new(0x02, 0, 0, 0x1a, 0, 0x02);
const DUT_MAC: MacAddr = MacAddr::new(0x02, 0, 0, 0x1a, 0, 0x01);
const GEN_IP: Ipv4Addr = Ipv4Addr::new(10, 254, 0, 2);
const MAGIC: u32 = 0x464c_4154; // "FLAT"
const FRAME: usize = 64;
const FLOWS: u32 = 1024;

struct Opts {
    flowgate: PathBuf,
    seconds: f64,
    nat: bool,
}

fn opts() -> Opts {
    let mut o = Opts {
        flowgate: PathBuf::from(
            std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into()),
        )
        .join("release/flowgate"),
        seconds: 3.0,
        nat: false,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--flowgate" => {
                o.flowgate = PathBuf::from(&args[i + 1]);
                i += 1;
            }
            "--seconds" => {
                o.seconds = args[i + 1].parse().expect("--seconds N");
                i += 1;
            }
            "--mode" => {
                o.nat = args[i + 1] == "nat";
                i += 1;
            }
            "--smoke" => o.seconds = 0.5,
            _ => {} // cargo bench passes --bench
        }
        i += 1;
    }
    o
}

fn config(sock: &str, metrics: &str, nat: bool) -> String {
    let nat = if nat {
        "nat_gateways:\n  - id: lat\n    inside_prefixes: [10.254.0.0/16]\n    public_ips: [198.18.0.1]\n"
    } else {
        ""
    };
    format!(
        "eal:\n  args: [--file-prefix, fgl-dut, --no-pci, --in-memory, --lcores, \"0@0,1@1\", --log-level=lib.eal:warning]\n\
lcores: {{main: 0, workers: [1]}}\n\
mempool: {{mbufs: 16383, cache: 256, data_room: 2176}}\n\
ports:\n  - name: link\n    device: net_memif0,role=client,socket={sock},id=0,mac={DUT_MAC}\n    addresses: [10.254.0.1/16]\n\
routes:\n  - prefix: 10.253.0.0/16\n    port: link\n    via: 10.254.0.2\n\
{nat}metrics: {{listen: \"{metrics}\"}}\n\
worker: {{idle_sleep_us: 0}}\n\
neighbor: {{timeout_s: 86400}}\n"
    )
}

/// A UDP frame toward flow `f` carrying (MAGIC, tsc).
fn stamp(m: &mut Mbuf, f: u32, tsc: u64) -> bool {
    if !m.set_len(FRAME) {
        return false;
    }
    let d = m.data_mut();
    d.fill(0);
    {
        let mut e = EthernetFrame::new_unchecked(&mut d[..]);
        e.set_dst_addr(DUT_MAC);
        e.set_src_addr(GEN_MAC);
        e.set_ethertype(EtherType::IPV4);
    }
    let ip_len = FRAME - 14;
    let mut ip = Ipv4Packet::new_unchecked(&mut d[14..]);
    ip.set_version_ihl(5);
    ip.set_total_len(ip_len as u16);
    ip.set_ttl(64);
    ip.set_protocol(17);
    ip.set_src_addr(GEN_IP);
    ip.set_dst_addr(Ipv4Addr::from(0x0afd_0000 + (f % FLOWS)));
    ip.fill_checksum();
    let mut udp = UdpPacket::new_unchecked(ip.payload_mut());
    udp.set_src_port(1000 + (f % FLOWS) as u16);
    udp.set_dst_port(1001);
    udp.set_len((ip_len - 20) as u16);
    let p = udp.payload_mut();
    p[..4].copy_from_slice(&MAGIC.to_be_bytes());
    p[4..12].copy_from_slice(&tsc.to_le_bytes());
    true
}

/// The TSC stamp of a returned packet, if it is one of ours.
fn stamp_of(d: &[u8]) -> Option<u64> {
    let p = d.get(14 + 20 + 8..14 + 20 + 8 + 12)?;
    (u32::from_be_bytes(p[..4].try_into().ok()?) == MAGIC)
        .then(|| u64::from_le_bytes(p[4..12].try_into().unwrap_or([0; 8])))
}

/// Answer flowgate's ARP request for GEN_IP in place; true if `m` was one.
fn answer_arp(m: &mut Mbuf) -> bool {
    let d = m.data_mut();
    if d.len() < 42 || EthernetFrame::new_unchecked(&d[..]).ethertype() != EtherType::ARP {
        return false;
    }
    let (sender_mac, sender_ip, target) = {
        let a = arp::ArpPacket::new_unchecked(&d[14..]);
        if a.operation() != arp::ARP_REQUEST {
            return false;
        }
        (a.sender_hw_addr(), a.sender_ip(), a.target_ip())
    };
    if target != GEN_IP {
        return false;
    }
    {
        let mut e = EthernetFrame::new_unchecked(&mut d[..]);
        e.set_dst_addr(sender_mac);
        e.set_src_addr(GEN_MAC);
    }
    let mut a = arp::ArpPacket::new_unchecked(&mut d[14..]);
    a.set_operation(arp::ARP_REPLY);
    a.set_sender_hw_addr(GEN_MAC);
    a.set_sender_ip(GEN_IP);
    a.set_target_hw_addr(sender_mac);
    a.set_target_ip(sender_ip);
    true
}

struct Gen {
    port: u16,
    alloc: MbufAlloc,
    rx: RxBurst,
    tx: TxBuffer,
    hz: u64,
    flow: u32,
}

impl Gen {
    /// Receive what is there; answer ARP; record latencies (ns) of our packets.
    fn poll(&mut self, lat: &mut Vec<u32>, record: bool) -> u64 {
        let mut n = 0;
        self.rx.rx(self.port, 0, 32);
        let now = pmd::rdtsc();
        while let Some(mut m) = self.rx.take() {
            if answer_arp(&mut m) {
                self.tx.push(m);
                self.tx.flush();
                continue;
            }
            if let Some(t) = stamp_of(m.data()) {
                n += 1;
                if record && lat.len() < lat.capacity() {
                    let ns = now.wrapping_sub(t) as u128 * 1_000_000_000 / self.hz as u128;
                    lat.push(ns.min(u32::MAX as u128) as u32);
                }
            }
        }
        n
    }

    fn send(&mut self, count: usize) {
        for _ in 0..count {
            let Some(mut m) = self.alloc.alloc() else {
                break;
            };
            self.flow = self.flow.wrapping_add(1);
            if stamp(&mut m, self.flow, pmd::rdtsc()) {
                self.tx.push(m);
            }
        }
        self.tx.flush();
    }
}

fn pct(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn start_flowgate(o: &Opts, work: &std::path::Path, sock: &str) -> Child {
    let cfg = work.join("flowgate-latency.yaml");
    std::fs::write(&cfg, config(sock, "127.0.0.1:9191", o.nat)).expect("config");
    let log = std::fs::File::create(work.join("flowgate.log")).expect("log");
    let child = Command::new(&o.flowgate)
        .args(["run", "-c"])
        .arg(&cfg)
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", o.flowgate.display()));
    // flowgate (memif client) connects to our server socket at its port start; the
    // caller's `Port::start` waits for that link.
    child
}

fn main() {
    let o = opts();
    if !o.flowgate.exists() {
        println!("latency: {} not built; skipped", o.flowgate.display());
        return;
    }
    let work = std::env::temp_dir().join(format!("flowgate-latency-{}", std::process::id()));
    std::fs::create_dir_all(&work).expect("work dir");
    let sock = work.join("memif.sock").to_string_lossy().into_owned();
    let device = format!("net_memif0,role=server,socket={sock},id=0,mac={GEN_MAC}");
    let eal_args: Vec<String> = [
        "--no-pci",
        "--in-memory",
        "--file-prefix",
        "fgl-gen",
        "--lcores",
        "0@0",
        "--log-level=lib.eal:warning",
        "--vdev",
        &device,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // EAL probes the memif server (its socket listens from here on); then flowgate, the
    // client, starts and connects while our port start waits for the link.
    let eal = Eal::init(&eal_args).expect("EAL");
    let mut dut = start_flowgate(&o, &work, &sock);
    let pool = Mempool::create("fgl_pool", 8191, 256, 2176).expect("mempool");
    let setup = PortSetup {
        name: "gen".into(),
        device: device.clone(),
        mtu: 1500,
        queues: 1,
        rx_desc: 1024,
        tx_desc: 1024,
        scatter: false,
    };
    let port = Port::start(&setup, pool).expect("memif server port");
    let hz = pmd::tsc_hz();
    let mut g = Gen {
        port: port.id,
        alloc: MbufAlloc { pool },
        rx: RxBurst::default(),
        tx: TxBuffer::new(port.id, 0),
        hz,
        flow: 0,
    };
    let mut lat: Vec<u32> = Vec::with_capacity(20_000_000);

    // Warm-up: let flowgate resolve us (ARP) and, in NAT mode, create the flows.
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(1500) {
        g.send(32);
        g.poll(&mut lat, false);
        std::thread::sleep(Duration::from_micros(200));
    }
    // Maximum rate: keep 32 in flight per poll, count what comes back.
    let t0 = Instant::now();
    let mut back = 0u64;
    while t0.elapsed().as_secs_f64() < o.seconds {
        g.send(32);
        back += g.poll(&mut lat, false);
    }
    let max_pps = back as f64 / t0.elapsed().as_secs_f64();
    println!(
        "# flowgate latency ({} mode, memif one-armed, {FRAME}-byte frames, {FLOWS} flows)",
        if o.nat { "nat" } else { "route" }
    );
    println!("  max returned rate: {:.3} Mpps", max_pps / 1e6);
    let mut keys = vec![(
        "latency_max_mpps".to_string(),
        format!("{:.3}", max_pps / 1e6),
    )];

    for load in [10u32, 50, 90] {
        // Drain, then send TSC-paced bursts of 8 at load % of the maximum.
        for _ in 0..1000 {
            g.poll(&mut lat, false);
        }
        lat.clear();
        let pps = max_pps * load as f64 / 100.0;
        let burst = 8usize;
        let gap = (hz as f64 * burst as f64 / pps.max(1.0)) as u64;
        let end = pmd::rdtsc() + (o.seconds * hz as f64) as u64;
        let mut next = pmd::rdtsc();
        let mut sent = 0u64;
        while pmd::rdtsc() < end {
            if pmd::rdtsc() >= next {
                g.send(burst);
                sent += burst as u64;
                next += gap;
            }
            g.poll(&mut lat, true);
        }
        let t1 = Instant::now();
        while t1.elapsed() < Duration::from_millis(50) {
            g.poll(&mut lat, true);
        }
        lat.sort_unstable();
        let (p50, p99, p999) = (pct(&lat, 0.5), pct(&lat, 0.99), pct(&lat, 0.999));
        println!(
            "  load {load:>2} % ({:.3} Mpps offered): {} of {} returned; latency p50 {:.1} us  p99 {:.1} us  p999 {:.1} us",
            pps / 1e6,
            lat.len(),
            sent,
            p50 as f64 / 1e3,
            p99 as f64 / 1e3,
            p999 as f64 / 1e3
        );
        for (k, v) in [("p50", p50), ("p99", p99), ("p999", p999)] {
            keys.push((
                format!("latency_{load}pct_{k}_us"),
                format!("{:.1}", v as f64 / 1e3),
            ));
        }
    }

    // Results first: nothing after this point can lose them.
    for (k, v) in keys {
        println!("{k}: {v}");
    }
    // The server (us) leaves first, then flowgate (the client, which survives that) stops
    // on SIGTERM and must print its summary.
    drop(g);
    port.stop();
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(dut.id().to_string())
        .status();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(10) {
        if let Ok(Some(_)) = dut.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = dut.kill();
    let _ = dut.wait();
    let log = std::fs::read_to_string(work.join("flowgate.log")).unwrap_or_default();
    let clean = log.contains("Pipeline: forwarded");
    if !clean {
        println!("  flowgate ended without its exit summary; log:\n{log}");
    }
    println!("latency_flowgate_clean_exit: {}", u8::from(clean));
    drop(eal);
    let _ = std::fs::remove_dir_all(&work);
}

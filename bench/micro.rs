//! Criterion microbenchmarks: `cargo bench --bench micro` (add `-- --quick` for a fast run,
//! or a filter such as `-- lpm`).
//!
//! - parse: Ethernet + IPv4 + TCP views with every check the pipeline does on ingress.
//! - checksum: full (IPv4 header, 1460-byte payload) and incremental (RFC 1624) updates.
//! - lpm: longest-prefix match with 4 prefix lengths in use (/32, /24, /16, /0).
//! - lpm_scheme: hash-per-length vs DIR-24-8 (`route::dir24`) at 4, 21k and 1M routes
//!   (internet-like lengths), random destinations; DIR-24-8 also per burst of 32 with the
//!   tbl24 lines prefetched first.
//! - pipeline: `Pipeline::handle` on a `VecBuf` for a routed TCP packet whose next hop is
//!   resolved (ns per packet), and the frame refill it includes, to subtract.
//! - nat: flow-table lookup hit/miss (10k, 1M flows), port allocation, Toeplitz hash.
//! - maglev: LB lookup-table build (1,000 targets, M=65537 and 655373) and lookup.
//! - stage_dispatch: the stage chain (LB then NAT) called three ways — the enum
//!   `StageChain` as the pipeline calls it (static dispatch), the same chain behind one
//!   `Box<dyn Stages>` (the old single boxed stage), and a `Vec<Box<dyn Stages>>` with one
//!   virtual call per stage — for a packet the LB claims (established flow), one the NAT
//!   claims after the LB passed (established flow) and one neither claims.

use criterion::{black_box, criterion_group, BatchSize, Criterion, Throughput};
use flowgate::packet::{PacketBuf, VecAlloc, VecBuf};
use flowgate::pipeline::route::dir24::Dir24;
use flowgate::pipeline::route::Lpm;
use flowgate::pipeline::{Output, Pipeline, PipelineParams};
use flowgate::wire::{checksum, EthernetFrame, Ipv4Packet, TcpPacket};
use std::net::Ipv4Addr;

#[path = "common.rs"]
mod common;
use common::*;

fn parse(c: &mut Criterion) {
    let frame = tcp_frame(7, flow_dest(7), 64);
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Elements(1));
    g.bench_function("eth_ipv4_tcp_checked", |b| {
        b.iter(|| {
            let d = black_box(&frame[..]);
            let eth = EthernetFrame::new_checked(d).unwrap();
            let et = eth.ethertype();
            let ip = Ipv4Packet::new_checked(&d[ETH..]).unwrap();
            let ok = ip.verify_checksum() && !ip.has_options();
            let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
            black_box((et, ok, ip.dst_addr(), tcp.src_port(), tcp.flags_legal()))
        })
    });
    g.finish();
}

fn checksums(c: &mut Criterion) {
    let frame = tcp_frame(7, flow_dest(7), 1514);
    let hdr = &frame[ETH..ETH + 20];
    let payload = &frame[ETH + 40..];
    let mut g = c.benchmark_group("checksum");
    g.bench_function("full_ipv4_header_20B", |b| {
        b.iter(|| checksum::checksum(black_box(hdr)))
    });
    g.throughput(Throughput::Bytes(payload.len() as u64));
    g.bench_function("full_payload_1460B", |b| {
        b.iter(|| checksum::checksum(black_box(payload)))
    });
    g.throughput(Throughput::Elements(1));
    // A NAT source rewrite: new address in the IP header checksum, and address + port in
    // the TCP checksum (pseudo header).
    let old = Ipv4Addr::new(10, 0, 1, 7);
    let new = Ipv4Addr::new(203, 0, 113, 9);
    g.bench_function("incremental_snat_addr_port", |b| {
        b.iter(|| {
            let ipc = checksum::update_addr(black_box(0x1c46), old, new);
            let tc = checksum::update_addr(black_box(0xb1e6), old, new);
            let tc = checksum::update16(tc, black_box(40000), black_box(1024));
            black_box((ipc, tc))
        })
    });
    g.bench_function("incremental_ttl", |b| {
        b.iter(|| checksum::update16(black_box(0x1c46), black_box(0x4006), black_box(0x3f06)))
    });
    g.finish();
}

fn lpm(c: &mut Criterion) {
    let mut l: Lpm<u32> = Lpm::new();
    let mut rng = Rng(0x9e3779b97f4a7c15);
    // 10k /32, 10k /24, 1k /16 and a default route.
    l.insert(Ipv4Addr::UNSPECIFIED, 0, 0);
    for i in 0..1000u32 {
        l.insert(
            Ipv4Addr::from((rng.next_u64() as u32) & 0xffff_0000),
            16,
            16 + i,
        );
    }
    for i in 0..10_000u32 {
        l.insert(
            Ipv4Addr::from((rng.next_u64() as u32) & 0xffff_ff00),
            24,
            24 + i,
        );
    }
    let mut hosts = Vec::new();
    for i in 0..10_000u32 {
        let a = rng.next_u64() as u32;
        l.insert(Ipv4Addr::from(a), 32, 32 + i);
        hosts.push(a);
    }
    // Lookups: a quarter each end at /32, /24 (likely), /16 (likely) and /0.
    let mut addrs = Vec::with_capacity(4096);
    for i in 0..4096usize {
        let a = match i % 4 {
            0 => hosts[i % hosts.len()],
            _ => rng.next_u64() as u32,
        };
        addrs.push(Ipv4Addr::from(a));
    }
    let mut g = c.benchmark_group("lpm");
    g.throughput(Throughput::Elements(1));
    g.bench_function("lookup_4_lengths_21k_routes", |b| {
        let mut i = 0usize;
        b.iter(|| {
            i = (i + 1) & 4095;
            black_box(l.lookup(black_box(addrs[i])))
        })
    });
    let hit32 = Ipv4Addr::from(hosts[0]);
    g.bench_function("lookup_hit_32_first_probe", |b| {
        b.iter(|| black_box(l.lookup(black_box(hit32))))
    });
    let miss = Ipv4Addr::new(240, 0, 0, 1);
    g.bench_function("lookup_default_route_4_probes", |b| {
        b.iter(|| black_box(l.lookup(black_box(miss))))
    });
    g.finish();
}

fn lpm_scheme(c: &mut Criterion) {
    let mut g = c.benchmark_group("lpm_scheme");
    g.throughput(Throughput::Elements(1));
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    // 1M random destinations: beyond every cache for DIR-24-8's 64 MiB tbl24.
    let addrs: Vec<u32> = (0..1 << 20)
        .map(|_| public_addr(rng.next_u64() as u32))
        .collect();
    let mask = addrs.len() - 1;
    for n in [4usize, 21_000, 1_000_000] {
        let mut routes = vec![(Ipv4Addr::UNSPECIFIED, 0u8)];
        routes.extend(internet_routes(n - 1, 0x5eed));
        let hash = {
            let mut l = Lpm::with_dir_min(usize::MAX);
            for (i, &(p, len)) in routes.iter().enumerate() {
                l.insert(p, len, i as u32 % 8);
            }
            l
        };
        let dir = hash.rebuilt(0);
        let label = if n >= 1_000_000 {
            format!("{}M", n / 1_000_000)
        } else if n >= 1000 {
            format!("{}k", n / 1000)
        } else {
            n.to_string()
        };
        for (name, l) in [("hash", &hash), ("dir24", &dir)] {
            g.bench_function(format!("{name}_{label}_routes"), |b| {
                let mut i = 0usize;
                b.iter(|| {
                    i = (i + 1) & mask;
                    black_box(l.lookup(Ipv4Addr::from(black_box(addrs[i]))))
                })
            });
        }
        let mut d: Dir24<u32> = Dir24::new();
        for (i, &(p, len)) in routes.iter().enumerate() {
            d.insert(u32::from(p), len, i as u32 % 8);
        }
        g.throughput(Throughput::Elements(32));
        g.bench_function(format!("dir24_burst32_{label}_routes"), |b| {
            let mut i = 0usize;
            let mut out = [None; 32];
            b.iter(|| {
                i = (i + 32) & mask;
                d.lookup_burst(black_box(&addrs[i..i + 32]), &mut out);
                black_box(&out);
            })
        });
        g.bench_function(format!("dir24_single32_{label}_routes"), |b| {
            let mut i = 0usize;
            let mut out = [None; 32];
            b.iter(|| {
                i = (i + 32) & mask;
                for (o, &a) in out.iter_mut().zip(black_box(&addrs[i..i + 32])) {
                    *o = d.lookup(a);
                }
                black_box(&out);
            })
        });
        g.throughput(Throughput::Elements(1));
    }
    g.finish();
}

/// Keeps the one buffer that goes round the pipeline.
#[derive(Default)]
struct Slot {
    buf: Option<VecBuf>,
    tx: u64,
    discarded: u64,
}

impl Output<VecBuf> for Slot {
    fn tx(&mut self, _port: u16, pkt: VecBuf) {
        self.tx += 1;
        self.buf = Some(pkt);
    }
    fn discard(&mut self, pkt: VecBuf) {
        self.discarded += 1;
        self.buf = Some(pkt);
    }
}

fn refill(buf: &mut VecBuf, frame: &[u8]) {
    buf.set_len(frame.len());
    buf.data_mut().copy_from_slice(frame);
}

fn pipeline(c: &mut Criterion) {
    let fib = bench_fib();
    let now = 10_000_000_000u64;
    let mut p: Pipeline<VecBuf> = Pipeline::new(fib, PipelineParams::for_tests());
    let mut alloc = VecAlloc::default();
    let mut out = Slot::default();
    p.neighbor_resolved(1, GATEWAY_IP, GATEWAY_MAC, now, &mut alloc, &mut out);
    let frame = tcp_frame(7, flow_dest(7), 64);
    out.buf = Some(VecBuf::from_frame(&frame));

    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(1));
    g.bench_function("frame_refill_only", |b| {
        b.iter(|| {
            let mut buf = out.buf.take().unwrap();
            refill(&mut buf, black_box(&frame));
            out.buf = Some(black_box(buf));
        })
    });
    g.bench_function("handle_routed_tcp_resolved_neighbor", |b| {
        b.iter(|| {
            let mut buf = out.buf.take().unwrap();
            refill(&mut buf, black_box(&frame));
            p.handle(buf, 0, now, &mut alloc, &mut out);
        })
    });
    // The same with a fresh heap buffer each time (what a VecBuf-based test pays).
    g.bench_function("handle_routed_tcp_fresh_vecbuf", |b| {
        b.iter_batched(
            || VecBuf::from_frame(&frame),
            |buf| {
                p.handle(buf, 0, now, &mut alloc, &mut out);
                out.buf.take()
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
    // tx stays 0 when a name filter skipped these benchmarks (their setup still runs).
    assert!(out.discarded == 0, "the benchmark packet was not forwarded");
}

/// NAT building blocks: flow-table lookups (hit and miss) at 10k and 1M flows, public port
/// allocation, and the Toeplitz hash the RSS-aware allocator evaluates.
fn nat(c: &mut Criterion) {
    use flowgate::nat::flow::{Flow, FlowTable, Key};
    use flowgate::nat::ports::{PortAllocator, Probe, Rng as NatRng};
    use flowgate::nat::toeplitz;

    let mut g = c.benchmark_group("nat");
    g.throughput(Throughput::Elements(1));
    for &n in &[10_000u32, 1_000_000] {
        let mut t = FlowTable::new(n as usize + n as usize / 8, 0x5eed);
        let mut keys = Vec::with_capacity(n as usize);
        for i in 0..n {
            let (src, sport) = flow_source(i);
            let dst = flow_dest(i);
            let f = Flow {
                inside_ip: u32::from(src),
                remote_ip: u32::from(dst),
                public_ip: u32::from(PUBLIC_IP),
                inside_port: sport,
                remote_port: 443,
                public_port: 1024 + (i % 64000) as u16,
                proto: 6,
                ..Flow::default()
            };
            t.insert(f).expect("flow table full");
            keys.push(Key::new(6, src, sport, dst, 443));
        }
        let mut rng = Rng(0xdead_beef ^ n as u64);
        let idx: Vec<u32> = (0..4096).map(|_| rng.below(n)).collect();
        g.bench_function(format!("flow_lookup_hit_{n}"), |b| {
            let mut i = 0usize;
            b.iter(|| {
                i = (i + 1) & 4095;
                black_box(t.lookup_in(black_box(&keys[idx[i] as usize])))
            })
        });
        let misses: Vec<Key> = (0..4096u32)
            .map(|i| Key::new(17, Ipv4Addr::new(10, 9, 9, 9), i as u16, flow_dest(i), 53))
            .collect();
        g.bench_function(format!("flow_lookup_miss_{n}"), |b| {
            let mut i = 0usize;
            b.iter(|| {
                i = (i + 1) & 4095;
                black_box(t.lookup_in(black_box(&misses[i])))
            })
        });
    }

    // Port allocation toward one destination, with an `ok` check that accepts the first
    // candidate (empty table) and one that refuses half of them.
    let pa = PortAllocator::new(1024, 65535, 55_000, 0, 2);
    let mut rng = NatRng::new(42);
    let mut d = 0u32;
    g.bench_function("port_allocate_free", |b| {
        b.iter(|| {
            d = (d + 1) % 27_500;
            black_box(pa.allocate(&mut rng, false, black_box(d), |_| Probe::Free))
        })
    });
    g.bench_function("port_allocate_half_used", |b| {
        b.iter(|| {
            d = (d + 1) % 27_500;
            black_box(pa.allocate(&mut rng, false, black_box(d), |p| {
                if p & 2 == 0 {
                    Probe::Free
                } else {
                    Probe::Taken
                }
            }))
        })
    });
    let src = Ipv4Addr::new(66, 9, 149, 187);
    let dst = Ipv4Addr::new(161, 142, 100, 80);
    g.bench_function("toeplitz_v4_l4", |b| {
        b.iter(|| {
            toeplitz::hash_v4_l4(
                &toeplitz::MS_KEY,
                black_box(src),
                black_box(dst),
                black_box(2794),
                black_box(1766),
            )
        })
    });
    g.finish();
}

/// Nanoseconds this thread has run on a CPU (`/proc/thread-self/schedstat`, first field);
/// 0 where unavailable.
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Maglev: table build for 1,000 equal targets at M=65537 and 655373 (goals 5 ms, 50 ms),
/// the same with weights 1..=100, and a lookup (flow hash + slot read).
fn maglev(c: &mut Criterion) {
    use flowgate::lb::maglev::{flow_hash, stable_key, MaglevTable, MaglevTarget};
    let targets = |weighted: bool| -> Vec<MaglevTarget> {
        (0..1000u32)
            .map(|i| MaglevTarget {
                key: stable_key(Ipv4Addr::from(0x0a00_0000 + i + 1), 80),
                weight: if weighted { i % 100 + 1 } else { 1 },
            })
            .collect()
    };
    // Criterion's means include the time the thread waits for a core on a loaded machine:
    // also print the fastest of 20 builds and their mean on-CPU time (schedstat, which the
    // kernel updates at ticks and switches: too coarse for a minimum).
    for m in [65537u32, 655373] {
        let t = targets(false);
        let (mut wall, mut cpu) = (f64::MAX, 0.0);
        for _ in 0..20 {
            let c0 = thread_cpu_ns();
            let w0 = std::time::Instant::now();
            black_box(MaglevTable::build(black_box(&t), m));
            wall = wall.min(w0.elapsed().as_secs_f64() * 1e3);
            cpu += (thread_cpu_ns() - c0) as f64 / 1e6 / 20.0;
        }
        println!("maglev_build_1000_equal_m{m}: fastest {wall:.2} ms, on-CPU mean {cpu:.2} ms (20 builds)");
    }
    let mut g = c.benchmark_group("maglev");
    g.sample_size(10);
    for (name, weighted) in [("equal", false), ("weighted", true)] {
        let t = targets(weighted);
        for m in [65537u32, 655373] {
            g.bench_function(format!("build_1000_{name}_m{m}"), |b| {
                b.iter(|| MaglevTable::build(black_box(&t), m))
            });
        }
    }
    let table = MaglevTable::build(&targets(false), 65537);
    let dst = Ipv4Addr::new(192, 0, 2, 1);
    let mut i = 0u32;
    g.bench_function("hash_and_lookup", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            let src = Ipv4Addr::from(0xc633_6400 ^ (i >> 8));
            black_box(table.lookup(flow_hash(6, src, i as u16, dst, 80)))
        })
    });
    g.finish();
}

/// The LB stage behind the `Stages` trait (it has inherent methods only: the chain calls
/// it through the `Stage` enum), for the `dyn` variant.
struct DynLb(flowgate::lb::stage::LbStage);

impl<B: PacketBuf> flowgate::pipeline::Stages<B> for DynLb {
    fn process(
        &mut self,
        pkt: &mut B,
        p: &flowgate::pipeline::Parsed,
        now: u64,
    ) -> flowgate::pipeline::StageVerdict {
        self.0.process(pkt, p, now)
    }
    fn poll(&mut self, now: u64) {
        self.0.poll(now)
    }
}

/// A fresh LB stage and NAT stage over `BENCH_YAML` + a NAT gateway + a load balancer
/// (VIP 203.0.113.50, UDP 53, 16 targets).
fn stage_pair(hz: u64) -> (flowgate::lb::stage::LbStage, flowgate::nat::stage::NatStage) {
    use flowgate::lb::{control::LbControl, stage::LbPublished, LbWorker};
    use flowgate::nat::{stage::NatPublished, NatWorker};
    use std::sync::Arc;
    let targets: String = (1..=16)
        .map(|i| format!("          - {{ip: 172.16.0.{i}, port: 8053}}\n"))
        .collect();
    let yaml = format!(
        "{BENCH_YAML}
nat_gateways:
  - id: bench
    inside_prefixes: [10.0.1.0/24]
    public_ips: [{PUBLIC_IP}]
    flows_per_core: 4096
load_balancers:
  - id: bench
    vips: [203.0.113.50]
    flows_per_core: 4096
    listeners:
      - {{protocol: udp, port: 53, target_group: tg}}
    target_groups:
      - name: tg
        targets:
{targets}"
    );
    let cfg =
        flowgate::config::parse_str(&yaml, "micro-stages.yaml").unwrap_or_else(|e| panic!("{e}"));
    let ctl = LbControl::new(&cfg.load_balancers, hz, 0);
    let lb = LbWorker::new(&cfg.load_balancers, ctl.cell(), 0, 1, hz);
    let nat = NatWorker::new(&cfg.nat_gateways, 0, 1, hz);
    (
        flowgate::lb::stage::LbStage::new(lb, Arc::new(LbPublished::new(1))),
        flowgate::nat::stage::NatStage::new(nat, Arc::new(NatPublished::new(1))),
    )
}

/// The frames of the dispatch comparison: one the LB claims, one the NAT claims after the
/// LB passed, one neither claims.
fn dispatch_frames() -> Vec<(&'static str, Vec<u8>)> {
    let vip = Ipv4Addr::new(203, 0, 113, 50);
    vec![
        ("lb_hit", udp_frame(7, vip, 64)),
        ("nat_hit", udp_frame(7, flow_dest(7), 64)),
        // Outside to outside: not a VIP, LB address, target or NAT flow; both pass.
        ("pass", {
            let mut f = udp_frame(7, Ipv4Addr::new(192, 0, 2, 77), 64);
            let mut ip = Ipv4Packet::new_unchecked(&mut f[ETH..]);
            ip.set_src_addr(Ipv4Addr::new(198, 51, 100, 7));
            ip.fill_checksum();
            // No UDP checksum (0 is valid for IPv4) rather than a stale one.
            f[ETH + 26..ETH + 28].copy_from_slice(&[0, 0]);
            f
        }),
    ]
}

type DynStage = Box<dyn flowgate::pipeline::Stages<VecBuf>>;

/// The three chains, each with its own stages, every frame's flow established in each.
struct Chains {
    enum_chain: flowgate::stages::StageChain,
    boxed_chain: DynStage,
    per_stage: Vec<DynStage>,
}

const DISPATCH_NOW: u64 = 1_000_000;

fn chains(frames: &[(&str, Vec<u8>)]) -> Chains {
    use flowgate::stages::StageChain;
    let hz = PipelineParams::for_tests().tsc_hz;
    let (lb, nat) = stage_pair(hz);
    let enum_chain = StageChain::build(Some(lb), Some(nat)).expect("two stages");
    let (lb, nat) = stage_pair(hz);
    let boxed_chain: DynStage = Box::new(StageChain::build(Some(lb), Some(nat)).expect("two"));
    let (lb, nat) = stage_pair(hz);
    let per_stage: Vec<DynStage> = vec![Box::new(DynLb(lb)), Box::new(nat)];
    let mut c = Chains {
        enum_chain,
        boxed_chain,
        per_stage,
    };
    // The first packet of each flow creates it.
    for (_, f) in frames {
        let b = || VecBuf::from_frame(f);
        let _ = via_enum(&mut c.enum_chain, &mut b());
        let _ = via_boxed(&mut c.boxed_chain, &mut b());
        let _ = via_dyn_per_stage(&mut c.per_stage, &mut b());
    }
    c
}

#[inline(always)]
fn via_enum(
    chain: &mut flowgate::stages::StageChain,
    pkt: &mut VecBuf,
) -> flowgate::pipeline::StageVerdict {
    let p = parsed(pkt);
    flowgate::pipeline::Stages::<VecBuf>::process(chain, pkt, &p, DISPATCH_NOW)
}

/// The descriptor the pipeline's ingress would hand the stages (parse once, issue 11).
#[inline(always)]
fn parsed(pkt: &VecBuf) -> flowgate::pipeline::Parsed {
    flowgate::pipeline::Parsed::read(pkt.data()).expect("IPv4 frame")
}

#[inline(always)]
fn via_boxed(chain: &mut DynStage, pkt: &mut VecBuf) -> flowgate::pipeline::StageVerdict {
    let p = parsed(pkt);
    chain.process(pkt, &p, DISPATCH_NOW)
}

/// The chain loop of `StageChain`, over trait objects.
#[inline(always)]
fn via_dyn_per_stage(v: &mut [DynStage], pkt: &mut VecBuf) -> flowgate::pipeline::StageVerdict {
    let p = parsed(pkt);
    for s in v.iter_mut() {
        match s.process(pkt, &p, DISPATCH_NOW) {
            flowgate::pipeline::StageVerdict::Pass => continue,
            v => return v,
        }
    }
    flowgate::pipeline::StageVerdict::Pass
}

/// Enum (static) dispatch of the stage chain against `dyn` dispatch (issue 7 §1: "an enum
/// of stages if `dyn` shows in the benchmark — measure it"). Every variant processes a
/// fresh copy of the same frame (copying is outside the timing). Times on a loaded machine
/// are noise at this scale: `FLOWGATE_DISPATCH_INSTR` (below) counts instructions.
fn stage_dispatch(c: &mut Criterion) {
    let frames = dispatch_frames();
    let mut ch = chains(&frames);
    let mut g = c.benchmark_group("stage_dispatch");
    g.throughput(Throughput::Elements(1));
    for (name, f) in &frames {
        let fresh = || VecBuf::from_frame(f);
        g.bench_function(format!("{name}_enum"), |b| {
            b.iter_batched_ref(
                fresh,
                |p| black_box(via_enum(&mut ch.enum_chain, p)),
                BatchSize::SmallInput,
            )
        });
        g.bench_function(format!("{name}_dyn_chain"), |b| {
            b.iter_batched_ref(
                fresh,
                |p| black_box(via_boxed(&mut ch.boxed_chain, p)),
                BatchSize::SmallInput,
            )
        });
        g.bench_function(format!("{name}_dyn_per_stage"), |b| {
            b.iter_batched_ref(
                fresh,
                |p| black_box(via_dyn_per_stage(&mut ch.per_stage, p)),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

#[inline(never)]
fn measured_dispatch_enum(ch: &mut Chains, bufs: &mut [VecBuf]) {
    for b in bufs.iter_mut() {
        black_box(via_enum(&mut ch.enum_chain, b));
    }
}

#[inline(never)]
fn measured_dispatch_dyn_chain(ch: &mut Chains, bufs: &mut [VecBuf]) {
    for b in bufs.iter_mut() {
        black_box(via_boxed(&mut ch.boxed_chain, b));
    }
}

#[inline(never)]
fn measured_dispatch_dyn_per_stage(ch: &mut Chains, bufs: &mut [VecBuf]) {
    for b in bufs.iter_mut() {
        black_box(via_dyn_per_stage(&mut ch.per_stage, b));
    }
}

/// `FLOWGATE_DISPATCH_INSTR=<frame>` (lb_hit, nat_hit or pass): no criterion; 10,000
/// fresh copies of the frame through each of the three chains, in the functions
/// `measured_dispatch_{enum,dyn_chain,dyn_per_stage}`, for callgrind to count
/// (`valgrind --tool=callgrind --toggle-collect='*measured_dispatch*'`, then
/// `callgrind_annotate --inclusive=yes`; see docs/benchmarks.md).
fn dispatch_instr(kind: &str) {
    const N: usize = 10_000;
    let frames = dispatch_frames();
    let Some((_, f)) = frames.iter().find(|(n, _)| *n == kind) else {
        panic!("FLOWGATE_DISPATCH_INSTR: unknown frame {kind} (lb_hit, nat_hit, pass)");
    };
    let mut ch = chains(&frames);
    let mut run = |m: fn(&mut Chains, &mut [VecBuf])| {
        let mut bufs: Vec<VecBuf> = (0..N).map(|_| VecBuf::from_frame(f)).collect();
        m(&mut ch, &mut bufs);
    };
    run(measured_dispatch_enum);
    run(measured_dispatch_dyn_chain);
    run(measured_dispatch_dyn_per_stage);
    println!("dispatch_instr_packets: {N} per chain ({kind})");
}

criterion_group!(
    benches,
    maglev,
    parse,
    checksums,
    lpm,
    lpm_scheme,
    pipeline,
    nat,
    stage_dispatch
);

fn main() {
    if let Ok(kind) = std::env::var("FLOWGATE_DISPATCH_INSTR") {
        dispatch_instr(&kind);
        return;
    }
    // What `criterion_main!(benches)` expands to.
    benches();
    Criterion::default().configure_from_args().final_summary();
}

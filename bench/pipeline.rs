//! In-process pipeline benchmark: drives `Pipeline::handle` (the worker's per-packet
//! function) on one core over many packets and reports ns/packet and Mpps.
//!
//!   cargo bench --bench pipeline -- [--mode route|nat|nat-new|lb|lb-new|handoff]
//!                                   [--flows 10000,1000000]
//!                                   [--seconds S] [--buf mbuf|vec] [--smoke] [--instr N]
//!                                   [--workers 2]
//!
//! Packets are real DPDK mbufs from a real mempool (EAL started with `--no-huge`, no
//! ports) unless `--buf vec`. Each burst of 32 is refilled with frames (not timed: that is
//! the NIC's job), then timed with the TSC around the 32 `handle` calls exactly as the
//! worker loop makes them (same `now` per burst, next packet's data prefetched); transmitted
//! packets are collected and recycled as the next burst. The frame data is therefore warm
//! in cache, as it would be after the NIC's DMA on a machine with DDIO, not cold.
//!
//! Modes:
//! - `route`: TCP from the inside subnet to `--flows` internet destinations, routed to a
//!   resolved next hop (no stateful stage). `--routes N` adds N internet-like routes
//!   (`common::internet_routes`) and spreads the destinations over the address space;
//!   `--lpm hash|dir` forces the LPM scheme (default: the pipeline's size threshold).
//! - `nat`: the same through a NAT gateway, after the flows are established (one packet of
//!   each flow first); each timed packet belongs to a random established flow.
//! - `nat-new`: every packet opens a new connection (TCP SYN of a never-seen 5-tuple).
//! - `lb`: UDP from `--flows` clients to a load balancer VIP (16 targets, Maglev M=65537,
//!   client IP preserved), after the flows are pinned; random established flow per packet.
//! - `lb-new`: every packet a TCP SYN of a never-seen 5-tuple to the VIP (new flows/s).
//!   Its flows never expire during a run (idle timeouts are at least 60 s), so unlike
//!   `nat-new` the table only fills: a run stops before 90 % of its 2M slots (65,536 in
//!   `--instr` mode).
//!
//! `--instr N` is the instruction-count mode (for `valgrind --tool=callgrind`, see
//! bench/instr.sh): exactly N measured packets per case, a fake clock (1 tick = 1 ns,
//! `INSTR_BURST_NS` per burst, timers polled after every burst) so nothing depends on
//! wall time, and all measured work (the `handle` calls and `poll_timers`) inside
//! `measured_burst`, the function callgrind's `--toggle-collect` counts; setup
//! (establishing flows, warm-up, frame refill) runs in `setup_burst` and is not counted.
//!
//! Memory per flow is measured with a counting global allocator (bytes held after
//! establishing N flows minus bytes held before creating the NAT state, divided by N).
//! Output ends with `key: value` lines.

use flowgate::lb::control::LbControl;
use flowgate::lb::stage::{LbPublished, LbStage};
use flowgate::lb::LbWorker;
use flowgate::nat::stage::{NatPublished, NatStage};
use flowgate::nat::NatWorker;
use flowgate::packet::{BufAlloc, PacketBuf, VecAlloc, VecBuf};
use flowgate::pipeline::counters::DropReason;
use flowgate::pipeline::handoff::{HandoffEndpoints, HandoffMesh, HANDOFF_RING_SIZE};
use flowgate::pipeline::route::{Fib, NextHop};
use flowgate::pipeline::{Output, Pipeline, PipelineParams};
use flowgate::pmd::thp::ThpAlloc;
use flowgate::pmd::{self, Eal, Mbuf, MbufAlloc, Mempool};
use flowgate::stages::StageChain;
use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "common.rs"]
mod common;
use common::*;
#[path = "pipeline_workers.rs"]
mod workers;

// ---------------------------------------------------------------------------------------
// Counting allocator: bytes currently held by the Rust heap.

struct Counting;
static HELD: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { ThpAlloc.alloc(l) };
        if !p.is_null() {
            let h = HELD.fetch_add(l.size(), Relaxed) + l.size();
            PEAK.fetch_max(h, Relaxed);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let p = unsafe { ThpAlloc.alloc_zeroed(l) };
        if !p.is_null() {
            let h = HELD.fetch_add(l.size(), Relaxed) + l.size();
            PEAK.fetch_max(h, Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { ThpAlloc.dealloc(p, l) };
        HELD.fetch_sub(l.size(), Relaxed);
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let q = unsafe { ThpAlloc.realloc(p, l, new) };
        if !q.is_null() {
            HELD.fetch_sub(l.size(), Relaxed);
            let h = HELD.fetch_add(new, Relaxed) + new;
            PEAK.fetch_max(h, Relaxed);
        }
        q
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Heap bytes plus the flow tables' own mappings (`pmd::hugemem`, which the counting
/// allocator does not see).
fn held() -> usize {
    HELD.load(Relaxed) + pmd::hugemem::mapped_bytes().0
}

/// The `key: value` lines printed at the end.
type Keys = Vec<(String, String)>;

// ---------------------------------------------------------------------------------------
// Options.

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Route,
    Nat,
    NatNew,
    Lb,
    LbNew,
    Handoff,
}

#[allow(dead_code)]
impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Route => "route",
            Mode::Nat => "nat",
            Mode::NatNew => "nat-new",
            Mode::Lb => "lb",
            Mode::LbNew => "lb-new",
            Mode::Handoff => "handoff",
        }
    }
}

struct Opts {
    modes: Vec<Mode>,
    flows: Vec<u32>,
    seconds: f64,
    vecbuf: bool,
    /// `--instr N`: N measured packets per case on the fake clock.
    instr: Option<u64>,
    /// `--workers 2`: also route and NAT on two threads at once (`pipeline_workers.rs`).
    workers: usize,
    /// `--routes N[,N..]` (route mode): extra internet-like routes in the FIB, and
    /// destinations spread over the whole address space. 0 = the 4-route table.
    routes: Vec<u32>,
    /// `--lpm hash|dir|auto`: which LPM scheme the route table uses (`auto`: the
    /// pipeline's own size threshold).
    lpm_dir_min: Option<usize>,
}

fn parse_opts() -> Opts {
    let mut o = Opts {
        modes: vec![],
        flows: vec![],
        seconds: 2.0,
        vecbuf: false,
        instr: None,
        workers: 1,
        routes: vec![],
        lpm_dir_min: None,
    };
    let mut smoke = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = |name: &str| {
            args.next()
                .unwrap_or_else(|| die(&format!("{name} needs a value")))
        };
        match a.as_str() {
            "--mode" | "--modes" => {
                for m in val("--mode").split(',') {
                    o.modes.push(match m {
                        "route" => Mode::Route,
                        "nat" => Mode::Nat,
                        "nat-new" => Mode::NatNew,
                        "lb" => Mode::Lb,
                        "lb-new" => Mode::LbNew,
                        "handoff" => Mode::Handoff,
                        _ => die(&format!(
                            "unknown mode {m} (route, nat, nat-new, lb, lb-new, handoff)"
                        )),
                    })
                }
            }
            "--flows" => {
                for f in val("--flows").split(',') {
                    o.flows.push(parse_count(f));
                }
            }
            "--seconds" => {
                o.seconds = val("--seconds")
                    .parse()
                    .unwrap_or_else(|_| die("bad --seconds"))
            }
            "--buf" => o.vecbuf = val("--buf") == "vec",
            "--routes" => {
                for r in val("--routes").split(',') {
                    o.routes.push(parse_count(r));
                }
            }
            "--lpm" => {
                o.lpm_dir_min = match val("--lpm").as_str() {
                    "hash" => Some(usize::MAX),
                    "dir" => Some(0),
                    "auto" => None,
                    l => die(&format!("unknown --lpm {l} (hash, dir, auto)")),
                }
            }
            "--instr" => {
                let n = parse_count(&val("--instr")) as u64;
                // Whole bursts, so every case measures exactly n packets.
                o.instr = Some(n.div_ceil(BURST as u64) * BURST as u64);
            }
            "--smoke" => smoke = true,
            "--workers" => {
                o.workers = val("--workers")
                    .parse()
                    .unwrap_or_else(|_| die("bad --workers"))
            }
            // Compare: the flow lookahead of `run_burst` off.
            "--no-lookahead" => NO_LOOKAHEAD.store(true, Relaxed),
            "--tcp-slots" => {
                let v = val("--tcp-slots");
                let pct = v.parse::<u32>().ok().filter(|&p| p <= 100);
                TCP_SLOTS_PCT.store(
                    pct.unwrap_or_else(|| die("--tcp-slots: a percentage 0..=100")),
                    Relaxed,
                );
            }
            // cargo bench passes --bench; ignore it and any filter.
            "--bench" => {}
            "-h" | "--help" => {
                println!("usage: cargo bench --bench pipeline -- [--mode route|nat|nat-new[,..]] [--flows N[,N..]] [--routes N[,N..]] [--lpm hash|dir|auto] [--seconds S] [--buf mbuf|vec] [--smoke] [--instr N] [--no-lookahead] [--tcp-slots PCT] [--workers 2]");
                std::process::exit(0);
            }
            _ => {}
        }
    }
    if smoke {
        o.seconds = 0.3;
        if o.flows.is_empty() {
            o.flows = vec![10_000];
        }
    }
    if o.modes.is_empty() {
        o.modes = vec![Mode::Route, Mode::Nat, Mode::NatNew, Mode::Lb, Mode::LbNew];
    }
    if o.flows.is_empty() {
        o.flows = vec![10_000, 1_000_000];
    }
    if o.instr.is_some() {
        o.seconds = 1e9; // the packet count ends each case
        FAKE_CLOCK.store(INSTR_CLOCK_START, Relaxed);
    }
    o
}

// ---------------------------------------------------------------------------------------
// Clock: the TSC, or in `--instr` mode a fake one (1 tick = 1 ns) advanced per burst.

/// Fake clock value; 0 = use the TSC.
static FAKE_CLOCK: AtomicU64 = AtomicU64::new(0);
/// Where the fake clock starts (non-zero, so "never" timestamps stay in the past).
const INSTR_CLOCK_START: u64 = 1_000_000_000;
/// Fake time per burst of 32: 4 ms (8k packets/s), so a few thousand packets span the
/// 1 s NAT timeouts of `nat-new` and its expiry reaches steady state quickly.
const INSTR_BURST_NS: u64 = 4_000_000;
/// TSC rate the cases are told in `--instr` mode (the fake clock's).
const INSTR_HZ: u64 = 1_000_000_000;

fn instr_mode() -> bool {
    FAKE_CLOCK.load(Relaxed) != 0
}

fn clock() -> u64 {
    match FAKE_CLOCK.load(Relaxed) {
        0 => pmd::rdtsc(),
        t => t,
    }
}

/// "10k", "1M", "10000000".
fn parse_count(s: &str) -> u32 {
    let (n, mul) = match s.chars().last() {
        Some('k') | Some('K') => (&s[..s.len() - 1], 1_000),
        Some('m') | Some('M') => (&s[..s.len() - 1], 1_000_000),
        _ => (s, 1),
    };
    n.parse::<u32>()
        .map(|v| v * mul)
        .unwrap_or_else(|_| die(&format!("bad count {s}")))
}

fn die(msg: &str) -> ! {
    eprintln!("pipeline bench: {msg}");
    std::process::exit(2)
}

// ---------------------------------------------------------------------------------------
// Buffers: real mbufs or VecBufs behind one interface.

trait Bufs {
    type B: PacketBuf;
    type A: BufAlloc<Buf = Self::B>;
    fn alloc(&mut self) -> &mut Self::A;
    fn new_buf(&mut self) -> Self::B;
}

struct MbufBufs {
    alloc: MbufAlloc,
}

impl Bufs for MbufBufs {
    type B = Mbuf;
    type A = MbufAlloc;
    fn alloc(&mut self) -> &mut MbufAlloc {
        &mut self.alloc
    }
    fn new_buf(&mut self) -> Mbuf {
        self.alloc
            .alloc()
            .unwrap_or_else(|| die("mempool exhausted"))
    }
}

struct VecBufs {
    alloc: VecAlloc,
}

impl Bufs for VecBufs {
    type B = VecBuf;
    type A = VecAlloc;
    fn alloc(&mut self) -> &mut VecAlloc {
        &mut self.alloc
    }
    fn new_buf(&mut self) -> VecBuf {
        VecBuf::with_room(2048)
    }
}

/// Collects what the pipeline sends or drops, to recycle as the next burst.
struct Collect<B> {
    bufs: Vec<B>,
    tx: u64,
    discarded: u64,
}

impl<B> Output<B> for Collect<B> {
    #[inline]
    fn tx(&mut self, _port: u16, pkt: B) {
        self.tx += 1;
        self.bufs.push(pkt);
    }
    #[inline]
    fn discard(&mut self, pkt: B) {
        self.discarded += 1;
        self.bufs.push(pkt);
    }
}

#[inline]
fn write_frame<B: PacketBuf>(b: &mut B, frame: &[u8]) {
    let len = b.len();
    if len > frame.len() {
        b.trim(len - frame.len());
    } else if len < frame.len() {
        b.append(frame.len() - len);
    }
    b.data_mut().copy_from_slice(frame);
}

const BURST: usize = 32;

struct RunResult {
    packets: u64,
    cycles: u64,
    wall: Duration,
    tx: u64,
    discarded: u64,
}

/// `--no-lookahead`: handle bursts without the flow lookahead (for comparison).
static NO_LOOKAHEAD: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// `--tcp-slots PCT`: the share of the NAT table's slots that carry TCP window state
/// (`tcp_flows_per_core`; default 100). The established flows are UDP either way.
static TCP_SLOTS_PCT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(100);

/// One burst through the pipeline as the worker runs it (same `now` for the burst, next
/// packet's data prefetched), then the timers if `timers` (fake clock only).
#[inline(always)]
fn run_burst<S: Bufs>(
    p: &mut Pipeline<S::B>,
    burst: &mut Vec<S::B>,
    now: u64,
    alloc: &mut S::A,
    out: &mut Collect<S::B>,
    timers: bool,
) {
    // As the worker does it (see `worker::run`): parse the burst once, then stages and
    // routing with the flow and route lookahead (`Pipeline::handle_burst`).
    p.no_lookahead = NO_LOOKAHEAD.load(Relaxed);
    while !burst.is_empty() {
        p.handle_burst(burst, 0, now, alloc, out);
    }
    if timers {
        p.poll_timers(now, out);
    }
}

/// The measured bursts: the only function `bench/instr.sh` has callgrind count
/// (`--toggle-collect=*measured_*`); keep its name.
#[inline(never)]
fn measured_burst<S: Bufs>(
    p: &mut Pipeline<S::B>,
    burst: &mut Vec<S::B>,
    now: u64,
    alloc: &mut S::A,
    out: &mut Collect<S::B>,
    timers: bool,
) {
    run_burst::<S>(p, burst, now, alloc, out, timers)
}

/// Packets handled by `setup_burst` (also keeps its code distinct from
/// `measured_burst`'s, so the linker cannot fold the two into one symbol).
static SETUP_PACKETS: AtomicU64 = AtomicU64::new(0);

/// Setup bursts (establishing flows, warm-up): the same work, not counted.
#[inline(never)]
fn setup_burst<S: Bufs>(
    p: &mut Pipeline<S::B>,
    burst: &mut Vec<S::B>,
    now: u64,
    alloc: &mut S::A,
    out: &mut Collect<S::B>,
    timers: bool,
) {
    SETUP_PACKETS.fetch_add(burst.len() as u64, Relaxed);
    run_burst::<S>(p, burst, now, alloc, out, timers)
}

/// Run bursts of 32 through `p` for `seconds`: `next_frame(i)` gives packet i's frame.
fn drive<S: Bufs>(
    s: &mut S,
    p: &mut Pipeline<S::B>,
    seconds: f64,
    max_packets: u64,
    next_frame: impl FnMut(u64, &mut Vec<u8>),
) -> RunResult {
    drive_as(s, p, seconds, max_packets, true, next_frame)
}

/// `drive` for setup work: never counted in `--instr` mode.
fn drive_setup<S: Bufs>(
    s: &mut S,
    p: &mut Pipeline<S::B>,
    max_packets: u64,
    next_frame: impl FnMut(u64, &mut Vec<u8>),
) -> RunResult {
    drive_as(s, p, 1e6, max_packets, false, next_frame)
}

fn drive_as<S: Bufs>(
    s: &mut S,
    p: &mut Pipeline<S::B>,
    seconds: f64,
    max_packets: u64,
    measured: bool,
    mut next_frame: impl FnMut(u64, &mut Vec<u8>),
) -> RunResult {
    let mut out = Collect {
        bufs: Vec::with_capacity(4 * BURST),
        tx: 0,
        discarded: 0,
    };
    for _ in 0..BURST {
        let b = s.new_buf();
        out.bufs.push(b);
    }
    let mut burst: Vec<S::B> = Vec::with_capacity(4 * BURST);
    let mut frame = Vec::with_capacity(2048);
    let mut cycles = 0u64;
    let mut i = 0u64;
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(seconds);
    let mut last_timers = pmd::rdtsc();
    let timer_cycles = pmd::tsc_hz() / 10_000; // 100 us, as tx_drain_us
    let fake = instr_mode();
    'outer: loop {
        for _ in 0..64 {
            if i >= max_packets {
                break 'outer;
            }
            // Refill (untimed).
            while burst.len() < BURST {
                let mut b = out.bufs.pop().unwrap_or_else(|| s.new_buf());
                next_frame(i + burst.len() as u64, &mut frame);
                write_frame(&mut b, &frame);
                burst.push(b);
            }
            i += BURST as u64;
            burst.reverse();
            let t0 = pmd::rdtsc();
            let now = clock();
            let alloc = s.alloc();
            if measured {
                measured_burst::<S>(p, &mut burst, now, alloc, &mut out, fake);
            } else {
                setup_burst::<S>(p, &mut burst, now, alloc, &mut out, fake);
            }
            let t1 = pmd::rdtsc();
            cycles += t1 - t0;
            if fake {
                FAKE_CLOCK.fetch_add(INSTR_BURST_NS, Relaxed);
            } else if t1.wrapping_sub(last_timers) >= timer_cycles {
                p.poll_timers(t1, &mut out);
                last_timers = t1;
            }
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    let wall = start.elapsed();
    p.shutdown(&mut out);
    RunResult {
        packets: i,
        cycles,
        wall,
        tx: out.tx,
        discarded: out.discarded,
    }
}

fn report(name: &str, r: &RunResult, hz: u64, extra: &str) -> f64 {
    let ns = r.cycles as f64 * 1e9 / hz as f64 / r.packets.max(1) as f64;
    let mpps = 1e3 / ns;
    let wall_mpps = r.packets as f64 / r.wall.as_secs_f64() / 1e6;
    if instr_mode() {
        // Times under callgrind mean nothing; instructions come from callgrind itself.
        println!(
            "  {name:<28} {:>11} pkts measured (instruction-count mode)  tx {} dropped {}{extra}",
            r.packets, r.tx, r.discarded
        );
        return ns;
    }
    println!(
        "  {name:<28} {:>11} pkts  {ns:7.1} ns/pkt  {mpps:7.2} Mpps (pipeline only)  {wall_mpps:6.2} Mpps (with refill)  tx {} dropped {}{extra}",
        r.packets, r.tx, r.discarded
    );
    ns
}

// ---------------------------------------------------------------------------------------

fn bench_route<S: Bufs>(s: &mut S, o: &Opts, hz: u64, keys: &mut Vec<(String, String)>) {
    let params = PipelineParams {
        tsc_hz: hz,
        ..PipelineParams::for_tests()
    };
    let routes = if o.routes.is_empty() {
        vec![0]
    } else {
        o.routes.clone()
    };
    for &n_routes in &routes {
        let fib = route_fib(n_routes, o.lpm_dir_min);
        let scheme = if fib.routes_dir24() { "dir24" } else { "hash" };
        for &flows in &o.flows {
            let mut p: Pipeline<S::B> = Pipeline::new(fib.clone(), params);
            let mut c = Collect {
                bufs: Vec::new(),
                tx: 0,
                discarded: 0,
            };
            p.neighbor_resolved(1, GATEWAY_IP, GATEWAY_MAC, clock(), s.alloc(), &mut c);
            let mut rng = Rng(0x1234_5678_9abc_def1);
            let r = drive(s, &mut p, o.seconds, packets_to_measure(o), |_, f| {
                let flow = rng.below(flows);
                let dst = if n_routes == 0 {
                    flow_dest(flow)
                } else {
                    spread_dest(flow)
                };
                let t = tcp_frame(flow, dst, 64);
                f.clear();
                f.extend_from_slice(&t);
            });
            assert!(
                r.tx > 0 && r.discarded == 0,
                "route: packets were not forwarded ({} dropped)",
                r.discarded
            );
            let (name, key) = if n_routes == 0 {
                (format!("route {flows} flows"), count_key(flows))
            } else {
                (
                    format!("route {flows} fl {} rt {scheme}", count_key(n_routes)),
                    format!("{}_routes_{}", count_key(flows), count_key(n_routes)),
                )
            };
            let ns = report(&name, &r, hz, "");
            keys.push((format!("route_{key}_ns_per_pkt"), format!("{ns:.1}")));
            keys.push((format!("route_{key}_mpps"), format!("{:.2}", 1e3 / ns)));
        }
    }
}

/// The benchmark FIB plus `n` internet-like routes via the outside gateway, its LPM
/// scheme forced when `dir_min` is given.
fn route_fib(n: u32, dir_min: Option<usize>) -> Arc<Fib> {
    let mut fib = (*bench_fib()).clone();
    let hop = NextHop {
        port: 1,
        via: Some(GATEWAY_IP),
        mtu: 1500,
    };
    for (p, len) in internet_routes(n as usize, 0x5eed_0f4f) {
        fib.add_route(p, len, hop);
    }
    if let Some(m) = dir_min {
        fib.set_route_dir_min(m);
    }
    Arc::new(fib)
}

fn main() {
    let o = parse_opts();
    let mut keys: Vec<(String, String)> = Vec::new();
    let eal;
    println!("# flowgate in-process pipeline benchmark (one core, bursts of {BURST})");
    let buf_kind = if o.vecbuf {
        "VecBuf (heap)"
    } else {
        "DPDK mbufs (mempool, EAL --no-huge)"
    };
    println!("# buffers: {buf_kind}; {} s per case", o.seconds);
    let mut hz;
    if o.vecbuf {
        eal = None;
        hz = tsc_hz_estimate();
    } else {
        // Private runtime (`--no-shconf`, per-process prefix): several benchmark runs
        // (bench/instr.sh in CI next to someone else's) may share the machine.
        let prefix = format!("fgb-pipeline-{}", std::process::id());
        let args: Vec<String> = [
            "flowgate-bench",
            "--no-huge",
            "--no-shconf",
            "-m",
            "256",
            "--no-pci",
            "--no-telemetry",
            "--file-prefix",
            &prefix,
            "-l",
            "0",
            "--log-level",
            "lib.eal:warning",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        eal = Some(Eal::init(&args).unwrap_or_else(|e| die(&format!("EAL: {e}"))));
        hz = pmd::tsc_hz();
    }
    if let Some(n) = o.instr {
        // Instruction-count mode: the fake clock's rate, not the TSC's.
        hz = INSTR_HZ;
        println!("# --instr: {n} measured packets per case, fake clock; count with callgrind");
        keys.push(("instr_packets".into(), n.to_string()));
    }
    println!("# tsc: {:.3} GHz", hz as f64 / 1e9);
    keys.push((
        "buffers".into(),
        if o.vecbuf {
            "vecbuf".into()
        } else {
            "mbuf".into()
        },
    ));

    let run = |keys: &mut Keys, run_mode: &mut dyn FnMut(Mode, &mut Keys)| {
        for &m in &o.modes {
            run_mode(m, keys);
        }
    };
    if o.vecbuf {
        let mut s = VecBufs {
            alloc: VecAlloc::default(),
        };
        run(&mut keys, &mut |m, keys| run_mode(m, &mut s, &o, hz, keys));
        if o.workers > 1 {
            workers::bench_workers(&o, None, hz, &mut keys);
        }
    } else {
        let pool = Mempool::create("fgb_pool", 8191, 256, 2176)
            .unwrap_or_else(|e| die(&format!("mempool: {e}")));
        let mut s = MbufBufs {
            alloc: MbufAlloc { pool },
        };
        run(&mut keys, &mut |m, keys| run_mode(m, &mut s, &o, hz, keys));
        if o.workers > 1 {
            workers::bench_workers(&o, Some(pool), hz, &mut keys);
        }
    }
    println!();
    for (k, v) in &keys {
        println!("{k}: {v}");
    }
    drop(eal);
    // The per-process runtime directory EAL leaves behind (empty with --no-shconf).
    // (root: /var/run; otherwise $XDG_RUNTIME_DIR or /tmp).
    let xdg = std::env::var("XDG_RUNTIME_DIR").unwrap_or_else(|_| "/tmp".into());
    for rt in ["/var/run", &xdg, "/tmp"] {
        let _ = std::fs::remove_dir(format!("{rt}/dpdk/fgb-pipeline-{}", std::process::id()));
    }
}

fn run_mode<S: Bufs>(m: Mode, s: &mut S, o: &Opts, hz: u64, keys: &mut Vec<(String, String)>) {
    match m {
        Mode::Route => bench_route(s, o, hz, keys),
        Mode::Nat => bench_nat(s, o, hz, keys),
        Mode::NatNew => bench_nat_new(s, o, hz, keys),
        Mode::Lb => bench_lb(s, o, hz, keys),
        Mode::LbNew => bench_lb_new(s, o, hz, keys),
        Mode::Handoff => bench_handoff(s, o, hz, keys),
    }
}

// ---------------------------------------------------------------------------------------
// NAT.

fn nat_pipeline<S: Bufs>(s: &mut S, fib: &Arc<Fib>, nat: NatWorker, hz: u64) -> Pipeline<S::B> {
    let params = PipelineParams {
        tsc_hz: hz,
        ..PipelineParams::for_tests()
    };
    let mut p: Pipeline<S::B> = Pipeline::new(fib.clone(), params);
    let published = Arc::new(NatPublished::new(1));
    p.stages = StageChain::build(None, Some(NatStage::new(nat, published)));
    let mut c = Collect {
        bufs: Vec::new(),
        tx: 0,
        discarded: 0,
    };
    p.neighbor_resolved(1, GATEWAY_IP, GATEWAY_MAC, clock(), s.alloc(), &mut c);
    p
}

fn bench_nat<S: Bufs>(s: &mut S, o: &Opts, hz: u64, keys: &mut Vec<(String, String)>) {
    let fib = bench_fib();
    for &flows in &o.flows {
        // Room for the flows plus slack (the table refuses new flows when full).
        let cap = flows + flows / 8 + 1024;
        let mut cfg = nat_config(cap, 3600);
        let tcp_slots = (u64::from(cap) * u64::from(TCP_SLOTS_PCT.load(Relaxed)) / 100) as u32;
        cfg.nat_gateways[0].tcp_flows_per_core = Some(tcp_slots);
        let before = held();
        PEAK.store(HELD.load(Relaxed), Relaxed);
        let nat = with_flow_logs(NatWorker::new(&cfg.nat_gateways, 0, 1, hz), hz);
        let after_new = held();
        let mut p = nat_pipeline(s, &fib, nat, hz);
        // Establish: one UDP packet per flow creates its mapping.
        let t = Instant::now();
        let est = drive_setup(s, &mut p, flows as u64, |i, f| {
            let flow = i as u32;
            f.clear();
            f.extend_from_slice(&udp_frame(flow, flow_dest(flow), 64));
        });
        let setup = t.elapsed();
        let after_est = held();
        let per_flow = (after_est - before) as f64 / flows as f64;
        let per_slot = (after_new - before) as f64 / cap as f64;
        println!(
            "  nat: {flows} flows established in {:.2} s ({} refused); heap {:.1} MiB = {per_flow:.1} B/flow ({per_slot:.1} B per preallocated slot, {cap} slots); peak {:.1} MiB",
            setup.as_secs_f64(),
            est.discarded,
            (after_est - before) as f64 / 1048576.0,
            (PEAK.load(Relaxed) + pmd::hugemem::mapped_bytes().0 - before) as f64 / 1048576.0,
        );
        let (mapped, huge) = pmd::hugemem::mapped_bytes();
        println!(
            "    flow tables: {:.1} MiB mapped = {:.1} B/flow ({tcp_slots} of the {cap} slots carry TCP state), {:.1} MiB of it on MAP_HUGETLB pages",
            mapped as f64 / 1048576.0,
            mapped as f64 / flows as f64,
            huge as f64 / 1048576.0
        );
        // Steady state: random established flows.
        let mut rng = Rng(0x1234_5678_9abc_def1 ^ flows as u64);
        let r = drive(s, &mut p, o.seconds, packets_to_measure(o), |_, f| {
            let flow = rng.below(flows);
            f.clear();
            f.extend_from_slice(&udp_frame(flow, flow_dest(flow), 64));
        });
        let ns = report(&format!("nat {flows} established"), &r, hz, "");
        if r.discarded > 0 {
            println!("    warning: drops {:?}", nonzero_drops(&p));
        }
        let k = count_key(flows);
        keys.push((format!("nat_{k}_ns_per_pkt"), format!("{ns:.1}")));
        keys.push((format!("nat_{k}_mpps"), format!("{:.2}", 1e3 / ns)));
        keys.push((format!("nat_{k}_bytes_per_flow"), format!("{per_flow:.1}")));
        // The flow table alone (entries, TCP state, wheel links, both indexes): its
        // mappings per established flow and per preallocated slot (issue 11's ≤ 64 B).
        keys.push((
            format!("nat_{k}_table_bytes_per_flow"),
            format!("{:.1}", mapped as f64 / flows as f64),
        ));
        keys.push((
            format!("nat_{k}_table_bytes_per_slot"),
            format!("{:.1}", mapped as f64 / cap as f64),
        ));
        keys.push((format!("nat_{k}_dropped"), r.discarded.to_string()));
    }
}

/// `FLOWGATE_BENCH_FLOW_LOGS=1`: the NAT cases with flow logs and the translation log on
/// (docs/operations.md). Nobody drains the ring: once full, pushes fail and count a loss,
/// which costs what a successful push does.
fn with_flow_logs(mut nat: NatWorker, hz: u64) -> NatWorker {
    if std::env::var("FLOWGATE_BENCH_FLOW_LOGS").as_deref() == Ok("1") {
        let (ring, rx) = rtrb::RingBuffer::new(flowgate::config::RING_RECORDS);
        std::mem::forget(rx);
        nat.set_flow_log(flowgate::flowlog::Tap {
            ring,
            clock: flowgate::flowlog::Clock::at(0, 1_700_000_000_000, hz),
            shared: Arc::new(flowgate::flowlog::TapShared::new(1)),
            worker: 0,
            flows: true,
            mappings: true,
            interval_s: 60,
            lost: 0,
            flushed: false,
        });
    }
    nat
}

/// `FLOWGATE_BENCH_FLOW_LOGS=1`: the load-balancer cases with both logs on (as
/// `with_flow_logs`).
fn lb_with_flow_logs(mut lb: LbWorker, hz: u64) -> LbWorker {
    if std::env::var("FLOWGATE_BENCH_FLOW_LOGS").as_deref() == Ok("1") {
        let (ring, rx) = rtrb::RingBuffer::new(flowgate::config::RING_RECORDS);
        std::mem::forget(rx);
        lb.set_flow_log(flowgate::flowlog::Tap {
            ring,
            clock: flowgate::flowlog::Clock::at(0, 1_700_000_000_000, hz),
            shared: Arc::new(flowgate::flowlog::TapShared::new(1)),
            worker: 0,
            flows: true,
            mappings: true,
            interval_s: 60,
            lost: 0,
            flushed: false,
        });
    }
    lb
}

/// Every packet a TCP SYN of a never-seen 5-tuple; 1 s timeouts and the worker's expiry
/// (every 100 us, bounded work) keep the table bounded.
fn bench_nat_new<S: Bufs>(s: &mut S, o: &Opts, hz: u64, keys: &mut Vec<(String, String)>) {
    let fib = bench_fib();
    // --instr: the fake clock holds ~8k live flows (1 s at 32 per 4 ms); no need for 4M.
    let cap = if o.instr.is_some() { 65_536 } else { 4_000_000 };
    let cfg = nat_config(cap, 1);
    let nat = with_flow_logs(NatWorker::new(&cfg.nat_gateways, 0, 1, hz), hz);
    let mut p = nat_pipeline(s, &fib, nat, hz);
    let mut next = 0u32;
    // 250 hosts x 60000 ports x 64k destinations: unique far longer than 1 s.
    let mut syn = |_: u64, f: &mut Vec<u8>| {
        let flow = next;
        next = next.wrapping_add(1);
        f.clear();
        f.extend_from_slice(&tcp_syn_frame(flow, flow_dest(flow), 64));
    };
    if o.instr.is_some() {
        // Warm-up past the 1 s timeouts (fake clock), so expiry runs as in steady state.
        let warm = (1_250_000_000 / INSTR_BURST_NS) * BURST as u64;
        drive_setup(s, &mut p, warm, &mut syn);
    }
    // Long enough for the 1 s timeouts to start expiring flows (steady state).
    let secs = (o.seconds * 2.0).max(1.5);
    let r = drive(s, &mut p, secs, packets_to_measure(o), &mut syn);
    let ns = report("nat-new (SYN, new 5-tuple)", &r, hz, "");
    let ok = r.tx as f64 / r.packets.max(1) as f64;
    let cps = 1e9 / ns * ok;
    println!(
        "    {:.2} M new connections/s per core (pipeline time only); {:.1}% of SYNs translated; drops {:?}",
        cps / 1e6,
        ok * 100.0,
        nonzero_drops(&p)
    );
    keys.push(("nat_new_ns_per_pkt".into(), format!("{ns:.1}")));
    keys.push(("nat_new_conn_per_s".into(), format!("{cps:.0}")));
    keys.push(("nat_new_dropped".into(), r.discarded.to_string()));
}

// ---------------------------------------------------------------------------------------
// Load balancer.

/// `BENCH_YAML` plus one load balancer: VIP `LB_VIP`, UDP 53 and TCP 443 listeners, 16
/// targets behind the outside gateway.
fn lb_config(flows: u32) -> flowgate::config::Config {
    let targets: String = (1..=16)
        .map(|i| format!("          - {{ip: 172.16.0.{i}, port: 8053}}\n"))
        .collect();
    let yaml = format!(
        "{BENCH_YAML}
load_balancers:
  - id: bench
    vips: [{LB_VIP}]
    flows_per_core: {flows}
    listeners:
      - {{protocol: udp, port: 53, target_group: tg}}
      - {{protocol: tcp, port: 443, target_group: tg}}
    target_groups:
      - name: tg
        tcp_idle_timeout_s: 3600
        udp_idle_timeout_s: 3600
        targets:
{targets}"
    );
    flowgate::config::parse_str(&yaml, "bench-lb.yaml").unwrap_or_else(|e| panic!("{e}"))
}

const LB_VIP: std::net::Ipv4Addr = std::net::Ipv4Addr::new(203, 0, 113, 50);

fn lb_pipeline<S: Bufs>(s: &mut S, cfg: &flowgate::config::Config, hz: u64) -> Pipeline<S::B> {
    let fib = Arc::new(Fib::build(cfg, &[0, 1], &PORT_MAC, 1));
    let params = PipelineParams {
        tsc_hz: hz,
        ..PipelineParams::for_tests()
    };
    let mut p: Pipeline<S::B> = Pipeline::new(fib, params);
    let ctl = LbControl::new(&cfg.load_balancers, hz, clock());
    let w = lb_with_flow_logs(LbWorker::new(&cfg.load_balancers, ctl.cell(), 0, 1, hz), hz);
    let published = Arc::new(LbPublished::new(1));
    p.stages = StageChain::build(Some(LbStage::new(w, published)), None);
    let mut c = Collect {
        bufs: Vec::new(),
        tx: 0,
        discarded: 0,
    };
    p.neighbor_resolved(1, GATEWAY_IP, GATEWAY_MAC, clock(), s.alloc(), &mut c);
    p
}

fn bench_lb<S: Bufs>(s: &mut S, o: &Opts, hz: u64, keys: &mut Vec<(String, String)>) {
    for &flows in &o.flows {
        let cap = flows + flows / 8 + 1024;
        let cfg = lb_config(cap);
        let before = held();
        let mut p = lb_pipeline(s, &cfg, hz);
        let t = Instant::now();
        let est = drive_setup(s, &mut p, flows as u64, |i, f| {
            f.clear();
            f.extend_from_slice(&udp_frame(i as u32, LB_VIP, 64));
        });
        let per_flow = (held() - before) as f64 / flows as f64;
        println!(
            "  lb: {flows} flows pinned in {:.2} s ({} refused); heap {per_flow:.1} B/flow",
            t.elapsed().as_secs_f64(),
            est.discarded
        );
        let mut rng = Rng(0x1234_5678_9abc_def1 ^ flows as u64);
        let r = drive(s, &mut p, o.seconds, packets_to_measure(o), |_, f| {
            let flow = rng.below(flows);
            f.clear();
            f.extend_from_slice(&udp_frame(flow, LB_VIP, 64));
        });
        let ns = report(&format!("lb {flows} established"), &r, hz, "");
        if r.discarded > 0 {
            println!("    warning: drops {:?}", nonzero_drops(&p));
        }
        let k = count_key(flows);
        keys.push((format!("lb_{k}_ns_per_pkt"), format!("{ns:.1}")));
        keys.push((format!("lb_{k}_mpps"), format!("{:.2}", 1e3 / ns)));
        keys.push((format!("lb_{k}_bytes_per_flow"), format!("{per_flow:.1}")));
        keys.push((format!("lb_{k}_dropped"), r.discarded.to_string()));
    }
}

/// Every packet a TCP SYN of a never-seen 5-tuple to the VIP (the LB's idle timeout is at
/// least 60 s, so the run stops before the table fills).
fn bench_lb_new<S: Bufs>(s: &mut S, o: &Opts, hz: u64, keys: &mut Vec<(String, String)>) {
    // --instr: 16k measured SYNs need no 2M-slot table.
    let cap = if o.instr.is_some() { 65_536 } else { 2_000_000 };
    let cfg = lb_config(cap);
    let mut p = lb_pipeline(s, &cfg, hz);
    let mut next = 0u32;
    let r = drive(
        s,
        &mut p,
        o.seconds.max(0.5),
        ((cap as u64) * 9 / 10).min(packets_to_measure(o)),
        |_, f| {
            let flow = next;
            next = next.wrapping_add(1);
            f.clear();
            let mut syn = tcp_syn_frame(flow, LB_VIP, 64);
            // tcp_syn_frame aims at port 443 already: the TCP listener.
            f.append(&mut syn);
        },
    );
    let ns = report("lb-new (SYN, new 5-tuple)", &r, hz, "");
    let ok = r.tx as f64 / r.packets.max(1) as f64;
    let fps = 1e9 / ns * ok;
    println!(
        "    {:.2} M new flows/s per core (pipeline time only); {:.1}% of SYNs forwarded; drops {:?}",
        fps / 1e6,
        ok * 100.0,
        nonzero_drops(&p)
    );
    keys.push(("lb_new_ns_per_pkt".into(), format!("{ns:.1}")));
    keys.push(("lb_new_flows_per_s".into(), format!("{fps:.0}")));
    keys.push(("lb_new_dropped".into(), r.discarded.to_string()));
}

/// Packets a measured run handles: `--instr N`, else until the time is up.
fn packets_to_measure(o: &Opts) -> u64 {
    o.instr.unwrap_or(u64::MAX)
}

fn nonzero_drops<B>(p: &Pipeline<B>) -> Vec<(&'static str, u64)> {
    DropReason::ALL
        .iter()
        .map(|&r| (r.name(), p.counters.drops[r as usize]))
        .filter(|&(_, n)| n > 0)
        .collect()
}

fn count_key(n: u32) -> String {
    if n >= 1_000_000 && n.is_multiple_of(1_000_000) {
        format!("{}m", n / 1_000_000)
    } else if n >= 1000 && n.is_multiple_of(1000) {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    }
}

/// TSC frequency without EAL: count TSC ticks over 50 ms of wall time.
fn tsc_hz_estimate() -> u64 {
    let t0 = pmd::rdtsc();
    let w0 = Instant::now();
    std::thread::sleep(Duration::from_millis(50));
    let t1 = pmd::rdtsc();
    ((t1 - t0) as f64 / w0.elapsed().as_secs_f64()) as u64
}

// ---------------------------------------------------------------------------------------
// Handoff: worker 0 hands bursts of 32 mbufs to worker 1 through the handoff mesh, both
// ends on this thread (the per-packet cost of the rings themselves, without the
// cross-core cache-line transfers; docs/benchmarks.md discusses those).

fn bench_handoff<S: Bufs>(s: &mut S, o: &Opts, hz: u64, keys: &mut Vec<(String, String)>) {
    let mesh: HandoffMesh<S::B> = HandoffMesh::new(2, HANDOFF_RING_SIZE);
    let mut e0 = mesh.endpoints(0);
    let mut e1 = mesh.endpoints(1);
    let mut bufs: Vec<S::B> = (0..BURST).map(|_| s.new_buf()).collect();
    let max = packets_to_measure(o);
    let deadline = Instant::now() + Duration::from_secs_f64(o.seconds);
    let (mut packets, mut cycles, mut lost) = (0u64, 0u64, 0u64);
    while packets < max && Instant::now() < deadline {
        for _ in 0..64 {
            let t0 = pmd::rdtsc();
            lost += measured_handoff::<S::B>(&mut e0, &mut e1, &mut bufs);
            cycles += pmd::rdtsc() - t0;
            packets += BURST as u64;
            while bufs.len() < BURST {
                bufs.push(s.new_buf());
            }
            if packets >= max {
                break;
            }
        }
    }
    let r = RunResult {
        packets,
        cycles,
        wall: Duration::from_secs(1),
        tx: packets - lost,
        discarded: lost,
    };
    let ns = report("handoff (2 workers, 1 thread)", &r, hz, "");
    keys.push(("handoff_ns_per_pkt".into(), format!("{ns:.1}")));
}

/// One burst from worker 0 to worker 1 and back into `bufs`; returns packets refused.
/// Counted by bench/instr.sh like `measured_burst` (`--toggle-collect=*measured_*`).
#[inline(never)]
fn measured_handoff<B>(
    e0: &mut HandoffEndpoints<B>,
    e1: &mut HandoffEndpoints<B>,
    bufs: &mut Vec<B>,
) -> u64 {
    let mut lost = 0;
    for b in bufs.drain(..) {
        if e0.out.push(1, b).is_err() {
            lost += 1;
        }
    }
    e0.out.flush();
    e1.inbound.poll(BURST, |b| bufs.push(b));
    lost
}

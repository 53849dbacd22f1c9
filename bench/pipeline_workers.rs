//! `--workers 2` (issue 11 item 10): does anything serialise two workers?
//!
//! For route and NAT at the first `--flows` count: the case on one thread alone (the
//! partner, same process, same moment), then on two threads at once, pinned to cpus 0 and
//! 1, each a complete worker of its own built **on its own thread** (pipeline, NAT state,
//! buffers), sharing what real workers share: the `Arc<Fib>` (read only) and the mempool
//! (touched only at start: transmitted mbufs are recycled as the next burst). A barrier
//! starts both measurements together. If nothing serialises them, each thread's ns/packet
//! equals the single thread's and the total rate doubles (`scaling` 2.0); shared written
//! cache lines or a lock would show as a higher per-packet cost on both.
//!
//! On a shared machine the second thread competes with other processes for its cpu, and
//! TSC time then counts the time a thread spent preempted. So each thread's own cpu time
//! (`/proc/thread-self/schedstat`) per packet is reported too: it excludes preemption, and
//! a shared written line or a lock would raise it (a stalled load costs cycles while the
//! thread runs). `cpu_scaling` = 2 × (1-worker cpu ns/packet) / (mean 2-worker cpu
//! ns/packet): what two workers deliver with a whole core each.
//!
//! NAT workers here are each "worker 0 of 1" (the whole port range): with `n_workers` 2 a
//! NAT worker hands UDP 5-tuples it does not own to its peer (`Handoff`), which needs the
//! handoff mesh of the real data plane; `--mode handoff` measures that ring on its own.

use super::*;
use std::sync::Barrier;

/// Kind of packets a worker thread handles.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Case {
    Route,
    Nat,
}

/// One worker thread's result: ns per packet (pipeline time, TSC), packets, drops.
struct WorkerResult {
    /// The cpu the thread ran on when it started measuring.
    cpu: String,
    ns: f64,
    /// This thread's cpu time per packet (refill included), ns.
    cpu_ns: f64,
    packets: u64,
    dropped: u64,
}

pub(super) fn bench_workers(o: &Opts, pool: Option<Mempool>, hz: u64, keys: &mut Keys) {
    let Some(&flows) = o.flows.first() else {
        return;
    };
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    println!(
        "  workers: {} cpus visible; 1 thread, then 2 threads at once (pinned to cpus 0 and 1)",
        cores.len()
    );
    for (case, name) in [(Case::Route, "route"), (Case::Nat, "nat")] {
        let want = match case {
            Case::Route => Mode::Route,
            Case::Nat => Mode::Nat,
        };
        if !o.modes.contains(&want) {
            continue;
        }
        let k = count_key(flows);
        let one = run_threads(case, flows, 1, pool, o.seconds, hz);
        let two = run_threads(case, flows, 2, pool, o.seconds, hz);
        let mpps = |r: &[WorkerResult]| r.iter().map(|w| 1e3 / w.ns).sum::<f64>();
        let (m1, m2) = (mpps(&one), mpps(&two));
        println!(
            "  {name} {flows} flows: 1 worker {:.1} ns/pkt ({m1:.2} Mpps); 2 workers (cpus {}) {} ns/pkt ({m2:.2} Mpps in all): scaling {:.2}; drops {}",
            one[0].ns,
            two.iter().map(|w| w.cpu.as_str()).collect::<Vec<_>>().join(","),
            two.iter()
                .map(|w| format!("{:.1}", w.ns))
                .collect::<Vec<_>>()
                .join(" / "),
            m2 / m1,
            two.iter().map(|w| w.dropped).sum::<u64>() + one[0].dropped,
        );
        let cpu1 = one[0].cpu_ns;
        let cpu2 = two.iter().map(|w| w.cpu_ns).sum::<f64>() / two.len() as f64;
        println!(
            "    cpu time per packet (refill included, preemption excluded): 1 worker {cpu1:.1} ns; 2 workers {} ns: cpu scaling {:.2}",
            two.iter()
                .map(|w| format!("{:.1}", w.cpu_ns))
                .collect::<Vec<_>>()
                .join(" / "),
            2.0 * cpu1 / cpu2
        );
        keys.push((
            format!("w2_{name}_{k}_1w_cpu_ns_per_pkt"),
            format!("{cpu1:.1}"),
        ));
        keys.push((
            format!("w2_{name}_{k}_cpu_ns_per_pkt"),
            format!("{cpu2:.1}"),
        ));
        keys.push((
            format!("w2_{name}_{k}_cpu_scaling"),
            format!("{:.2}", 2.0 * cpu1 / cpu2),
        ));
        let pkts: u64 = two.iter().map(|w| w.packets).sum();
        keys.push((format!("w2_{name}_{k}_1w_mpps"), format!("{m1:.2}")));
        keys.push((format!("w2_{name}_{k}_mpps"), format!("{m2:.2}")));
        keys.push((format!("w2_{name}_{k}_scaling"), format!("{:.2}", m2 / m1)));
        for (i, w) in two.iter().enumerate() {
            keys.push((
                format!("w2_{name}_{k}_worker{i}_ns_per_pkt"),
                format!("{:.1}", w.ns),
            ));
        }
        keys.push((format!("w2_{name}_{k}_packets"), pkts.to_string()));
    }
}

fn run_threads(
    case: Case,
    flows: u32,
    n: usize,
    pool: Option<Mempool>,
    seconds: f64,
    hz: u64,
) -> Vec<WorkerResult> {
    let fib = bench_fib();
    let start = Barrier::new(n);
    std::thread::scope(|sc| {
        let hs: Vec<_> = (0..n)
            .map(|i| {
                let (fib, start) = (fib.clone(), &start);
                sc.spawn(move || {
                    // Pinned (cpu i), as the data plane pins its workers to lcores.
                    // (EAL pinned the main thread, and so its children, to cpu 0.)
                    if n > 1 && !core_affinity::set_for_current(core_affinity::CoreId { id: i }) {
                        println!("    warning: worker {i} could not be pinned to cpu {i}");
                    }
                    match pool {
                        Some(pool) => worker::<MbufBufs>(
                            &mut MbufBufs {
                                alloc: MbufAlloc { pool },
                            },
                            case,
                            flows,
                            &fib,
                            start,
                            seconds,
                            hz,
                        ),
                        None => worker::<VecBufs>(
                            &mut VecBufs {
                                alloc: VecAlloc::default(),
                            },
                            case,
                            flows,
                            &fib,
                            start,
                            seconds,
                            hz,
                        ),
                    }
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap_or_else(|_| die("worker thread panicked")))
            .collect()
    })
}

/// The cpu this thread is on (`processor`, field 39 of /proc/thread-self/stat).
fn on_cpu() -> String {
    std::fs::read_to_string("/proc/thread-self/stat")
        .ok()
        .and_then(|s| {
            let after = s.rsplit_once(')')?.1.to_string();
            after.split_whitespace().nth(36).map(str::to_string)
        })
        .unwrap_or_else(|| "?".into())
}

/// Cpu time this thread has run, ns (first field of /proc/thread-self/schedstat).
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// One worker: builds its own pipeline (and NAT state, establishing the flows) on this
/// thread, waits for the others, then runs for `seconds`.
fn worker<S: Bufs>(
    s: &mut S,
    case: Case,
    flows: u32,
    fib: &Arc<Fib>,
    start: &Barrier,
    seconds: f64,
    hz: u64,
) -> WorkerResult {
    let mut p = match case {
        Case::Route => {
            let params = PipelineParams {
                tsc_hz: hz,
                ..PipelineParams::for_tests()
            };
            let mut p: Pipeline<S::B> = Pipeline::new(fib.clone(), params);
            let mut c = Collect {
                bufs: Vec::new(),
                tx: 0,
                discarded: 0,
            };
            p.neighbor_resolved(1, GATEWAY_IP, GATEWAY_MAC, clock(), s.alloc(), &mut c);
            p
        }
        Case::Nat => {
            let cfg = nat_config(flows + flows / 8 + 1024, 3600);
            let nat = NatWorker::new(&cfg.nat_gateways, 0, 1, hz);
            let mut p = nat_pipeline(s, fib, nat, hz);
            drive_setup(s, &mut p, flows as u64, |i, f| {
                f.clear();
                f.extend_from_slice(&udp_frame(i as u32, flow_dest(i as u32), 64));
            });
            p
        }
    };
    // Frames built before the run: building one per packet would allocate, and the bench's
    // counting allocator updates one global atomic per allocation, a line both threads
    // would write per packet (the harness, not the pipeline).
    let frames: Vec<Vec<u8>> = (0..flows)
        .map(|flow| match case {
            Case::Route => tcp_frame(flow, flow_dest(flow), 64),
            Case::Nat => udp_frame(flow, flow_dest(flow), 64),
        })
        .collect();
    let mut rng = Rng(0x1234_5678_9abc_def1 ^ flows as u64);
    start.wait();
    let cpu = on_cpu();
    let cpu0 = thread_cpu_ns();
    let r = drive(s, &mut p, seconds, u64::MAX, |_, f| {
        f.clear();
        f.extend_from_slice(&frames[rng.below(flows) as usize]);
    });
    let cpu_ns = thread_cpu_ns().saturating_sub(cpu0) as f64 / r.packets.max(1) as f64;
    WorkerResult {
        cpu,
        cpu_ns,
        ns: r.cycles as f64 * 1e9 / hz as f64 / r.packets.max(1) as f64,
        packets: r.packets,
        dropped: r.discarded,
    }
}

//! The control thread (EAL main lcore): starts the EAL, ports and workers, serves
//! metrics, fans learned neighbors out to workers, reloads the config on SIGHUP, and
//! stops everything on SIGINT/SIGTERM with a testpmd-style per-port summary.

use crate::config::{self, Config, PortRole};
use crate::lb::control::LbControl;
use crate::lb::stage::{LbPublished, LbStage};
use crate::lb::LbWorker;
use crate::metrics::{self, Telemetry};
use crate::nat::east_west::NoTranslate;
use crate::nat::stage::{NatPublished, NatStage};
use crate::nat::{NatWorker, RssSteering};
use crate::pipeline::counters::SharedCounters;
use crate::pipeline::handoff::{HandoffMesh, HANDOFF_RING_SIZE};
use crate::pipeline::route::Fib;
use crate::pipeline::worker::{self, CtlMsg, WorkerEvent, WorkerSetup};
use crate::pipeline::PipelineParams;
use crate::pmd::{self, signal, Eal, Mempool, Port, PortSetup};
use crate::wire::MacAddr;
use crate::{error, info};
use crossbeam_channel::{bounded, Receiver, Sender};
use hashbrown::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// EAL arguments for `cfg`: the config's own, an lcore list if it gave none, one
/// `--vdev`/`-a` per port, then whatever the command line passed after `--`.
pub fn eal_args(cfg: &Config, extra: &[String]) -> Vec<String> {
    let given: Vec<String> = cfg.eal.args.iter().chain(extra.iter()).cloned().collect();
    let has = |flags: &[&str]| {
        given.iter().any(|a| {
            flags
                .iter()
                .any(|f| a == f || a.starts_with(&format!("{f}=")))
        })
    };
    let mut args = cfg.eal.args.clone();
    if !has(&["-l", "--lcores", "-c"]) {
        let mut l: Vec<u32> = vec![cfg.lcores.main];
        l.extend(cfg.lcores.workers.iter().copied());
        let list: Vec<String> = l.iter().map(|x| x.to_string()).collect();
        args.push("-l".into());
        args.push(list.join(","));
    }
    if !has(&["--main-lcore"]) {
        args.push("--main-lcore".into());
        args.push(cfg.lcores.main.to_string());
    }
    for p in &cfg.ports {
        let s = port_setup(cfg, p, 1);
        args.extend(s.eal_args());
    }
    args.extend(extra.iter().cloned());
    args
}

fn port_setup(cfg: &Config, p: &config::PortConfig, workers: u16) -> PortSetup {
    let _ = cfg;
    PortSetup {
        name: p.name.clone(),
        device: p.device.clone(),
        mtu: p.mtu,
        // rx queues as configured; every worker owns one tx queue on every port.
        queues: p.queues.max(workers),
        rx_desc: p.rx_desc,
        tx_desc: p.tx_desc,
        scatter: cfg.mempool.scatter && p.mtu + 18 > cfg.mempool.data_room,
    }
}

/// Which (port, queue) pairs each worker polls: queue q of a port goes to worker
/// q % workers (the exception port's single queue to worker 0).
pub fn rx_assignment(cfg: &Config, port_ids: &[u16], workers: usize) -> Vec<Vec<(u16, u16)>> {
    let mut a = vec![Vec::new(); workers];
    for (i, p) in cfg.ports.iter().enumerate() {
        // Every rx queue the port is given (`port_setup`: one queue pair per worker at
        // least) is polled: a PMD spreading traffic over queues (RSS, a multi-queue tap)
        // must not feed one nobody reads.
        let queues = polled_queues(p, workers);
        for q in 0..queues {
            a[q as usize % workers].push((port_ids[i], q));
        }
    }
    a
}

/// With `mempool.scatter` and a port MTU above the data room: the pool of jumbo buffers
/// chained mbufs are copied into (allocated once, at start).
fn linear_pool(cfg: &Config) -> Result<Option<Mempool>, String> {
    let m = &cfg.mempool;
    let max_frame = cfg.ports.iter().map(|p| p.mtu + 18).max().unwrap_or(0);
    if !m.scatter || max_frame <= m.data_room {
        return Ok(None);
    }
    let room = max_frame.div_ceil(1024) * 1024;
    let n = m.linear_mbufs.max(63);
    let pool = Mempool::create("fg_lin_pool", n, 32.min(n / 2), room).map_err(|e| e.to_string())?;
    info!("scatter rx: chained mbufs are linearized into {n} buffers of {room} bytes");
    Ok(Some(pool))
}

/// Rx queues of port `p` (as many as `port_setup` gives it); all are polled.
fn polled_queues(p: &config::PortConfig, workers: usize) -> u16 {
    p.queues.max(workers.min(u16::MAX as usize) as u16)
}

fn params(cfg: &Config) -> PipelineParams {
    PipelineParams {
        tsc_hz: pmd::tsc_hz(),
        neighbor_capacity: 4096,
        neighbor_timeout_s: cfg.neighbor.timeout_s,
        pending_max: cfg.neighbor.pending_max as usize,
        icmp_errors_per_s: 1000,
    }
}

/// What a reload may change without restarting: routes (unless they move NAT east-west
/// exemptions) and the log level. Ports, lcores, mempool, EAL arguments, NAT gateways,
/// neighbor and worker settings need a restart.
fn reload_compatible(old: &Config, new: &Config) -> Result<(), String> {
    if old.ports != new.ports {
        return Err("ports changed (restart needed)".into());
    }
    if old.lcores != new.lcores {
        return Err("lcores changed (restart needed)".into());
    }
    if old.mempool != new.mempool || old.eal != new.eal {
        return Err("mempool or eal changed (restart needed)".into());
    }
    if old.nat_gateways != new.nat_gateways {
        return Err("nat_gateways changed (restart needed: flows are owned by workers)".into());
    }
    LbControl::reload_compatible(&old.load_balancers, &new.load_balancers)?;
    if old.replication != new.replication {
        return Err("replication changed (restart needed)".into());
    }
    if old.metrics != new.metrics {
        return Err("metrics.listen changed (restart needed)".into());
    }
    // Read by the workers when they start (table sizes, timers, burst, drain timer): a
    // reload cannot change them, so it is refused rather than reported as applied.
    if old.neighbor != new.neighbor {
        return Err(
            "neighbor settings changed (timeout_s, pending_max apply when workers start; \
             restart needed)"
                .into(),
        );
    }
    if old.worker != new.worker {
        return Err(
            "worker settings changed (burst, tx_drain_us, idle_sleep_us apply when workers \
             start; restart needed)"
                .into(),
        );
    }
    for g in &new.nat_gateways {
        if NoTranslate::from_config(old, g) != NoTranslate::from_config(new, g) {
            return Err(format!(
                "routes changed which destinations gateway `{}` leaves untranslated \
                 (east-west through its inside ports; restart needed)",
                g.id
            ));
        }
    }
    Ok(())
}

/// Run the appliance until SIGINT/SIGTERM.
pub fn run(config_path: &Path, extra_eal: &[String]) -> Result<(), String> {
    let cfg = config::load(config_path).map_err(|e| e.to_string())?;
    crate::log::set_level(cfg.log_level);
    let args = eal_args(&cfg, extra_eal);
    info!("EAL arguments: {}", args.join(" "));
    let eal = Eal::init(&args).map_err(|e| e.to_string())?;
    signal::install();
    let capture = pmd::capture::CaptureServer::start(cfg.eal.capture != Some(false), &args);
    let result = run_with_eal(&cfg, config_path.to_path_buf());
    drop(capture);
    drop(eal);
    result
}

fn run_with_eal(cfg: &Config, path: PathBuf) -> Result<(), String> {
    let n_workers = cfg.lcores.workers.len();
    let pool = Mempool::create(
        "fg_pkt_pool",
        cfg.mempool.mbufs,
        cfg.mempool.cache,
        cfg.mempool.data_room,
    )
    .map_err(|e| e.to_string())?;
    let linear_pool = linear_pool(cfg)?;
    let mut ports = Vec::new();
    for p in &cfg.ports {
        let port =
            Port::start(&port_setup(cfg, p, n_workers as u16), pool).map_err(|e| e.to_string())?;
        info!(
            "port {} (id {}, {}): mac {} mtu {} queues {} link {} rss-key {}",
            port.name,
            port.id,
            port.driver,
            MacAddr(port.mac),
            port.mtu,
            port.queues,
            if port.link_up { "up" } else { "down" },
            if port.rss_key_programmable {
                "programmable"
            } else {
                "fixed"
            }
        );
        ports.push(port);
    }
    let port_ids: Vec<u16> = ports.iter().map(|p| p.id).collect();
    let macs: Vec<MacAddr> = ports.iter().map(|p| MacAddr(p.mac)).collect();
    let mut generation = 1;
    let fib = Arc::new(Fib::build(cfg, &port_ids, &macs, generation));

    let stop = Arc::new(AtomicBool::new(false));
    let (ev_tx, ev_rx): (Sender<WorkerEvent>, Receiver<WorkerEvent>) = bounded(4096);
    let assignment = rx_assignment(cfg, &port_ids, n_workers);
    let mesh: HandoffMesh<pmd::Mbuf> = HandoffMesh::new(n_workers, HANDOFF_RING_SIZE);
    let steering = rss_steering(cfg, &ports, n_workers);
    let nat_published: Vec<Arc<NatPublished>> = (0..n_workers)
        .map(|_| Arc::new(NatPublished::new(cfg.nat_gateways.len())))
        .collect();
    // Load balancers: snapshots built here on the control thread, picked up by workers.
    // A health checker reports through `lb_ctl` (`LbControl::set_target_health(_keyed)`),
    // its probe list is `LbControl::probe_targets()`; until one runs, targets are healthy.
    let lb_ctl = (!cfg.load_balancers.is_empty()).then(|| {
        Arc::new(std::sync::Mutex::new(LbControl::new(
            &cfg.load_balancers,
            pmd::tsc_hz(),
            pmd::rdtsc(),
        )))
    });
    let lb_published: Vec<Arc<LbPublished>> = (0..n_workers)
        .map(|_| Arc::new(LbPublished::new(cfg.load_balancers.len())))
        .collect();
    let mut ctl_txs = Vec::new();
    let mut shared = Vec::new();
    // Flow-state replication: each NAT worker's rings, the control ends for the sync thread.
    let mut repl_ends = Vec::new();
    if cfg.replication.is_some() {
        // Not ready (/healthz) from the first moment until the resync is done.
        crate::repl::set_resyncing();
    }
    for (i, &lcore) in cfg.lcores.workers.iter().enumerate() {
        let (ctx, crx) = bounded::<CtlMsg>(1024);
        let counters = Arc::new(SharedCounters::new(0));
        let setup = WorkerSetup {
            index: i,
            rx: assignment[i].clone(),
            tx_queue: i as u16,
            port_ids: port_ids.clone(),
            pool,
            fib: fib.clone(),
            params: params(cfg),
            burst: cfg.worker.burst as usize,
            tx_drain_us: cfg.worker.tx_drain_us,
            idle_sleep_us: cfg.worker.idle_sleep_us,
            ctl: crx,
            events: ev_tx.clone(),
            counters: counters.clone(),
            stop: stop.clone(),
            handoff: mesh.endpoints(i),
            linear_pool,
            stages: crate::stages::StageChain::build(
                lb_ctl.as_ref().and_then(|c| {
                    let cell = c.lock().ok()?.cell();
                    let w = LbWorker::new(&cfg.load_balancers, cell, i, n_workers, pmd::tsc_hz());
                    Some(LbStage::new(w, lb_published[i].clone()))
                }),
                (!cfg.nat_gateways.is_empty()).then(|| {
                    let mut nat = NatWorker::new(&cfg.nat_gateways, i, n_workers, pmd::tsc_hz());
                    nat.set_rss_steering(steering.clone());
                    nat.set_routes(cfg);
                    if let Some(r) = &cfg.replication {
                        let (wr, ce) = crate::repl::worker_rings();
                        nat.set_replication(wr, r.replica_grace_s);
                        repl_ends.push(ce);
                    }
                    NatStage::new(nat, nat_published[i].clone())
                }),
            ),
        };
        pmd::launch_on_lcore(lcore, move || worker::run(setup)).map_err(|e| e.to_string())?;
        info!("worker {i} on lcore {lcore} polls {:?}", assignment[i]);
        ctl_txs.push(ctx);
        shared.push(counters);
    }

    let telemetry = Arc::new(Telemetry::new(ports.clone(), pool, shared));
    if !cfg.nat_gateways.is_empty() {
        let ids: Vec<String> = cfg.nat_gateways.iter().map(|g| g.id.clone()).collect();
        for (g, id) in cfg.nat_gateways.iter().zip(&ids) {
            info!(
                "nat gateway {id}: inside {:?}, public {:?}, ports {}-{}, mode {:?}, {} flows/core",
                g.inside_prefixes
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>(),
                g.public_ips,
                g.port_range.first,
                g.port_range.last,
                g.mode,
                g.flows_per_core
            );
        }
        for p in &ports {
            info!(
                "port {}: NAT return traffic {}",
                p.name,
                if steering.is_some() {
                    "is RSS-steered to the owning worker (key and RETA programmed)"
                } else {
                    "reaching a non-owner worker is handed off through a ring"
                }
            );
        }
        let published = nat_published.clone();
        telemetry
            .collectors
            .lock()
            .expect("collectors")
            .push(Box::new(move |r| {
                metrics::nat_families(r, &ids, &published)
            }));
    }
    if let Some(ctl) = lb_ctl.clone() {
        for lb in &cfg.load_balancers {
            info!(
                "load balancer {}: vips {:?}, {} listener(s), {} target group(s), maglev M={}",
                lb.id,
                lb.vips,
                lb.listeners.len(),
                lb.target_groups.len(),
                lb.maglev_table_size
            );
        }
        let published = lb_published.clone();
        telemetry
            .collectors
            .lock()
            .expect("collectors")
            .push(Box::new(move |r| {
                crate::lb::metrics::lb_families(r, &ctl, &published)
            }));
    }
    if let Err(e) = crate::http::serve(cfg.metrics.listen, telemetry.clone(), cfg) {
        signal::request_stop();
        stop.store(true, Ordering::Relaxed);
        pmd::wait_all_lcores();
        return Err(format!(
            "metrics: cannot listen on {}: {e}",
            cfg.metrics.listen
        ));
    }
    crate::telemetry::register(telemetry.clone());
    if let Err(e) = crate::repl::launch(cfg, repl_ends, steering.clone(), &telemetry, stop.clone())
    {
        signal::request_stop();
        stop.store(true, Ordering::Relaxed);
        pmd::wait_all_lcores();
        return Err(e);
    }
    // Health checks (control side, kernel sockets): transitions applied in the loop below.
    let mut health = if lb_ctl.is_some() {
        Some(
            crate::lb::health_wiring::HealthWiring::start(cfg).map_err(|e| {
                signal::request_stop();
                stop.store(true, Ordering::Relaxed);
                pmd::wait_all_lcores();
                format!("health checks: cannot start: {e}")
            })?,
        )
    } else {
        None
    };
    if let Some(h) = &health {
        let stats = h.stats.clone();
        telemetry
            .collectors
            .lock()
            .expect("collectors")
            .push(Box::new(move |r| {
                crate::lb::health_wiring::families(r, &stats)
            }));
    }
    info!(
        "running: {} port(s), {n_workers} worker(s), metrics on http://{}/metrics",
        ports.len(),
        cfg.metrics.listen
    );

    let mut current = cfg.clone();
    let mut neighbors: HashSet<(u16, u32)> = HashSet::new();
    while !signal::stop_requested() {
        std::thread::sleep(Duration::from_millis(20));
        // Fan learned neighbors out to the other workers.
        while let Ok(WorkerEvent::Learned {
            worker,
            port,
            ip,
            mac,
        }) = ev_rx.try_recv()
        {
            neighbors.insert((port, u32::from(ip)));
            for (i, c) in ctl_txs.iter().enumerate() {
                if i != worker {
                    let _ = c.try_send(CtlMsg::Neighbor { port, ip, mac });
                }
            }
        }
        telemetry
            .neighbor_entries
            .store(neighbors.len() as u64, Ordering::Relaxed);
        if let (Some(h), Some(ctl)) = (&health, &lb_ctl) {
            h.poll(ctl);
        }
        if signal::take_reload() {
            match config::load(&path)
                .map_err(|e| e.to_string())
                .and_then(|new| reload_compatible(&current, &new).map(|_| new))
            {
                Ok(new) => {
                    generation += 1;
                    let fib = Arc::new(Fib::build(&new, &port_ids, &macs, generation));
                    for c in &ctl_txs {
                        // A full channel would mean a stuck worker; block briefly.
                        let _ = c.send_timeout(CtlMsg::Fib(fib.clone()), Duration::from_secs(1));
                    }
                    if let Some(ctl) = lb_ctl.as_ref() {
                        if let Ok(mut c) = ctl.lock() {
                            // Compatibility was checked above: this only publishes.
                            let _ = c.reload(&new.load_balancers, pmd::rdtsc());
                        }
                    }
                    if let Some(h) = health.as_mut() {
                        h.reload(&new);
                    }
                    telemetry.reloads_ok.fetch_add(1, Ordering::Relaxed);
                    telemetry
                        .config_generation
                        .store(generation, Ordering::Relaxed);
                    crate::log::set_level(new.log_level);
                    info!(
                        "config reloaded from {} (generation {generation})",
                        path.display()
                    );
                    current = new;
                }
                Err(e) => {
                    telemetry.reloads_refused.fetch_add(1, Ordering::Relaxed);
                    error!("config reload refused, keeping the running config: {e}");
                }
            }
        }
    }

    info!("stopping");
    if let Some(h) = health.take() {
        h.stop_in_background();
    }
    stop.store(true, Ordering::Relaxed);
    pmd::wait_all_lcores();
    print_summary(&telemetry);
    for p in &ports {
        p.stop();
    }
    for p in &ports {
        p.close();
    }
    Ok(())
}

/// RSS-aware NAT port choice is possible when every data port with several queues had
/// its key and RETA programmed identically and each worker polls one queue of the same
/// number on each port; otherwise None (return traffic goes through handoff rings).
fn rss_steering(cfg: &Config, ports: &[Port], workers: usize) -> Option<RssSteering> {
    if workers < 2 {
        return None;
    }
    let mut program: Option<&pmd::RssProgram> = None;
    for (p, pc) in ports.iter().zip(&cfg.ports) {
        if pc.role != PortRole::Data {
            continue;
        }
        let prog = p.rss_programmed.as_ref()?;
        if pc.queues as usize != workers || program.is_some_and(|q| q != prog) {
            return None;
        }
        program = Some(prog);
    }
    program.map(|p| RssSteering {
        key: p.key,
        reta: p.reta.clone(),
        queue_of_worker: (0..workers as u16).collect(),
    })
}

fn print_summary(t: &Telemetry) {
    let line = "-".repeat(22);
    for p in &t.ports {
        let s = p.stats();
        println!(
            "\n  {line} Forward statistics for port {} ({}) {line}",
            p.id, p.name
        );
        println!(
            "  RX-packets: {:<14} RX-missed: {:<14} RX-bytes:  {}",
            s.rx_packets, s.rx_missed, s.rx_bytes
        );
        println!(
            "  RX-errors: {:<15} RX-nombuf: {}",
            s.rx_errors, s.rx_nombuf
        );
        println!(
            "  TX-packets: {:<14} TX-errors: {:<14} TX-bytes:  {}",
            s.tx_packets, s.tx_errors, s.tx_bytes
        );
    }
    let tot = t.totals();
    let dropped: u64 = tot.drops.iter().sum();
    println!(
        "\n  Pipeline: forwarded {}  dropped {}  (see flowgate_packets_dropped_total)",
        tot.events.forwarded_packets, dropped
    );
    if dropped > 0 {
        for r in crate::pipeline::counters::DropReason::ALL {
            let v = tot.drops[*r as usize];
            if v > 0 {
                println!("    {:<24} {v}", r.name());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = "lcores: {workers: [1, 2]}
ports:
  - {name: a, device: net_null0, addresses: [10.0.1.1/24]}
  - {name: b, device: net_null1, addresses: [198.51.100.1/24], queues: 4}
  - {name: k, device: net_tap0, role: exception}
exception: {port: k}
neighbor: {timeout_s: 300, pending_max: 64}
worker: {burst: 32}
";

    #[test]
    fn every_configured_rx_queue_is_polled_exactly_once() {
        let cfg = config::parse_str(YAML, "t.yaml").unwrap();
        let a = rx_assignment(&cfg, &[0, 1, 2], 2);
        let mut all: Vec<(u16, u16)> = a.iter().flatten().copied().collect();
        all.sort();
        // a: 1 queue asked, 2 workers -> 2 queues; b: 4; the exception tap: 2.
        let want = vec![
            (0, 0),
            (0, 1),
            (1, 0),
            (1, 1),
            (1, 2),
            (1, 3),
            (2, 0),
            (2, 1),
        ];
        assert_eq!(all, want);
        for (i, p) in cfg.ports.iter().enumerate() {
            let s = port_setup(&cfg, p, 2);
            let polled = all.iter().filter(|(port, _)| *port == i as u16).count();
            assert_eq!(s.queues as usize, polled, "port {}", p.name);
        }
    }

    #[test]
    fn reload_refuses_start_only_settings_and_accepts_routes() {
        let old = config::parse_str(YAML, "t.yaml").unwrap();
        let edit =
            |from: &str, to: &str| config::parse_str(&YAML.replace(from, to), "t.yaml").unwrap();
        let e = reload_compatible(&old, &edit("timeout_s: 300", "timeout_s: 30")).unwrap_err();
        assert!(
            e.contains("neighbor settings changed") && e.contains("restart"),
            "{e}"
        );
        let e = reload_compatible(&old, &edit("pending_max: 64", "pending_max: 8")).unwrap_err();
        assert!(e.contains("neighbor"), "{e}");
        let e = reload_compatible(&old, &edit("burst: 32", "burst: 8")).unwrap_err();
        assert!(e.contains("worker settings changed"), "{e}");
        let routes = edit(
            "exception: {port: k}\n",
            "exception: {port: k}\nroutes: [{prefix: 0.0.0.0/0, port: b, via: 198.51.100.254}]\n",
        );
        assert_eq!(reload_compatible(&old, &routes), Ok(()));
    }
}

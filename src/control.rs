//! The control thread (EAL main lcore): starts the EAL, ports and workers, serves
//! metrics, fans learned neighbors out to workers, reloads the config on SIGHUP, and
//! stops everything on SIGINT/SIGTERM with a testpmd-style per-port summary.

use crate::config::{self, Config, PortRole};
use crate::lb::control::LbControl;
use crate::lb::stage::{LbPublished, LbStage};
use crate::lb::LbWorker;
use crate::metrics::{self, Telemetry};
use crate::nat::reconcile::NatTenants;
use crate::nat::stage::{NatPublished, NatStage};
use crate::nat::{NatWorker, RssSteering};
use crate::pipeline::counters::SharedCounters;
use crate::pipeline::handoff::{HandoffMesh, HANDOFF_RING_SIZE};
use crate::pipeline::route::Fib;
use crate::pipeline::worker::{self, CtlMsg, WorkerEvent, WorkerSetup};
use crate::pipeline::PipelineParams;
use crate::pmd::{self, signal, Eal, Mempool, Port, PortSetup};
use crate::stages::TenantUpdate;
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

/// What a reload may change without restarting: routes, the log level, NAT gateways
/// (see `nat::reconcile`) and load balancers' targets. Ports, lcores, mempool, EAL
/// arguments, metrics.listen, neighbor and worker settings need a restart.
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
    LbControl::reload_compatible(&old.load_balancers, &new.load_balancers)?;
    if old.flow_logs != new.flow_logs || old.translation_log != new.translation_log {
        return Err("flow_logs or translation_log changed (restart needed)".into());
    }
    // Peers may change live (the fleet derives them from the shards, see
    // `repl::update_peers`); anything else of the section needs a restart.
    let peers_only = match (&old.replication, &new.replication) {
        (Some(a), Some(b)) => crate::repl::only_peers_differ(a, b),
        _ => false,
    };
    if old.replication != new.replication && !peers_only {
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
    // NAT gateways (added, removed, changed) are reconciled live: `nat::reconcile`.
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
    // Sized for every gateway slot a live reload may use.
    let nat_slots = crate::nat::reconcile::MAX_SLOTS.max(cfg.nat_gateways.len());
    let nat_published: Vec<Arc<NatPublished>> = (0..n_workers)
        .map(|_| Arc::new(NatPublished::new(nat_slots)))
        .collect();
    let mut nat_tenants = NatTenants::new(&cfg.nat_gateways, pmd::tsc_hz());
    let nat_ids = Arc::new(std::sync::Mutex::new(nat_tenants.ids()));
    // Load balancers: snapshots built here on the control thread, picked up by workers.
    // A health checker reports through `lb_ctl` (`LbControl::set_target_health(_keyed)`),
    // its probe list is `LbControl::probe_targets()`; where one runs, targets start
    // `initial` (no new flows until they pass); elsewhere they are healthy.
    // Always there: a reload may add load balancers (with none, the stage claims nothing).
    let lb_ctl = Some(Arc::new(std::sync::Mutex::new(LbControl::new_checked(
        &cfg.load_balancers,
        &crate::lb::health_wiring::checks_run(cfg),
        pmd::tsc_hz(),
        pmd::rdtsc(),
    ))));
    let lb_slots = crate::lb::reconcile::MAX_SLOTS.max(cfg.load_balancers.len());
    let lb_published: Vec<Arc<LbPublished>> = (0..n_workers)
        .map(|_| Arc::new(LbPublished::new(lb_slots)))
        .collect();
    // Flow and translation logs: one ring per worker, drained by a control-side thread.
    let mut logs = crate::flowlog::LogSink::start(cfg, n_workers, pmd::rdtsc(), pmd::tsc_hz())?;
    if let (Some(l), Some(c)) = (&logs, &lb_ctl) {
        // Load balancers a reload adds log too.
        if let Ok(mut c) = c.lock() {
            c.set_log(l.settings());
        }
    }
    let mut ctl_txs = Vec::new();
    let mut shared = Vec::new();
    // Flow-state replication: each NAT worker's rings, the control ends for the sync thread.
    let mut repl_ends = Vec::new();
    let mut lb_repl_ends = Vec::new();
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
                    let mut w =
                        LbWorker::new(&cfg.load_balancers, cell, i, n_workers, pmd::tsc_hz());
                    if let Some(r) = &cfg.replication {
                        let (wr, ce) = crate::repl::worker_rings();
                        w.set_replication(wr, r.replica_grace_s);
                        lb_repl_ends.push(ce);
                    }
                    if let Some(tap) = logs.as_mut().and_then(|l| l.take_lb_tap(i)) {
                        w.set_flow_log(tap);
                    }
                    Some(LbStage::new(w, lb_published[i].clone()))
                }),
                // Always there (a reload may add gateways); with none it claims nothing.
                Some({
                    let mut nat = NatWorker::new(&cfg.nat_gateways, i, n_workers, pmd::tsc_hz());
                    nat.set_rss_steering(steering.clone());
                    nat.set_routes(cfg);
                    if let Some(tap) = logs.as_mut().and_then(|l| l.take_tap(i)) {
                        // Gateways a reload adds get their log counters too.
                        nat_tenants.set_log(tap.flows, tap.mappings, tap.interval_s);
                        nat.set_flow_log(tap);
                    }
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
    {
        let ids = nat_ids.clone();
        for g in &cfg.nat_gateways {
            let id = &g.id;
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
        for p in ports.iter().filter(|_| !cfg.nat_gateways.is_empty()) {
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
                let ids = ids.lock().map(|i| i.clone()).unwrap_or_default();
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
    if let Some(l) = &logs {
        let shared = l.shared.clone();
        telemetry
            .collectors
            .lock()
            .expect("collectors")
            .push(Box::new(move |r| {
                crate::flowlog::writer::families(r, &shared)
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
    if let Err(e) = crate::repl::launch(
        cfg,
        repl_ends,
        lb_repl_ends,
        steering.clone(),
        &telemetry,
        stop.clone(),
    ) {
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
    // Live reload: what workers hand back (freed here), and the control side's RNG for
    // new gateways' table seeds.
    let (back_tx, back_rx) = bounded::<Box<TenantUpdate>>(4 * n_workers + 4);
    let mut rng = crate::rng::Rng::new(pmd::rdtsc() ^ 0x7265_6c6f_6164);
    while !signal::stop_requested() {
        std::thread::sleep(Duration::from_millis(20));
        while back_rx.try_recv().is_ok() {}
        // Drains that ended: workers drop the flows, ARP is withdrawn, series go.
        let lb_draining = lb_ctl
            .as_ref()
            .and_then(|c| c.lock().ok().map(|c| c.draining()))
            .unwrap_or(false);
        if nat_tenants.draining() || lb_draining {
            let at = std::time::Instant::now();
            let mut log = nat_tenants.tick(at);
            if let Some(Ok(mut c)) = lb_ctl.as_ref().map(|c| c.lock()) {
                log.extend(c.tick(at, pmd::rdtsc()));
            }
            if !log.is_empty() {
                for l in &log {
                    info!("{l}");
                }
                send_tenant_update(
                    &mut nat_tenants,
                    lb_ctl.as_deref(),
                    &current,
                    &ctl_txs,
                    &back_tx,
                    &mut rng,
                );
                // Same config generation: only what drained changed.
                let fib = Arc::new(Fib::build(
                    &fib_config(&current, &nat_tenants, lb_ctl.as_deref()),
                    &port_ids,
                    &macs,
                    generation,
                ));
                for c in &ctl_txs {
                    let _ = c.send_timeout(CtlMsg::Fib(fib.clone()), Duration::from_secs(1));
                }
                if let Ok(mut ids) = nat_ids.lock() {
                    *ids = nat_tenants.ids();
                }
            }
        }
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
                .and_then(|new| {
                    // Checked first: a refusal there leaves both unchanged.
                    if let Some(Ok(c)) = lb_ctl.as_ref().map(|c| c.lock()) {
                        LbControl::reload_compatible(c.config(), &new.load_balancers)?;
                    }
                    // The workers mirror the slots: a refusal must leave them as they were.
                    let saved = nat_tenants.clone();
                    let mut log =
                        nat_tenants.reload(&new.nat_gateways, std::time::Instant::now())?;
                    if let Some(Ok(mut c)) = lb_ctl.as_ref().map(|c| c.lock()) {
                        // Targets of load balancers whose health checks run start `initial`.
                        let checked = |lb: &crate::config::LoadBalancerConfig| {
                            crate::lb::health_wiring::probe_options(&new, lb)
                                .bind_device
                                .is_some()
                        };
                        match c.reload_checked(&new.load_balancers, &checked, pmd::rdtsc()) {
                            Ok(l) => log.extend(l),
                            Err(e) => {
                                nat_tenants = saved;
                                return Err(e);
                            }
                        }
                    }
                    Ok((new, log))
                }) {
                Ok((new, log)) => {
                    for l in &log {
                        info!("{l}");
                    }
                    // New tenants' tables are built here; workers swap them in.
                    send_tenant_update(
                        &mut nat_tenants,
                        lb_ctl.as_deref(),
                        &new,
                        &ctl_txs,
                        &back_tx,
                        &mut rng,
                    );
                    if let Ok(mut ids) = nat_ids.lock() {
                        *ids = nat_tenants.ids();
                    }
                    generation += 1;
                    let fib = Arc::new(Fib::build(
                        &fib_config(&new, &nat_tenants, lb_ctl.as_deref()),
                        &port_ids,
                        &macs,
                        generation,
                    ));
                    for c in &ctl_txs {
                        // A full channel would mean a stuck worker; block briefly.
                        let _ = c.send_timeout(CtlMsg::Fib(fib.clone()), Duration::from_secs(1));
                    }
                    if let Some(h) = health.as_mut() {
                        // By load balancer slot (draining ones keep being probed).
                        h.reload(&fib_config(&new, &nat_tenants, lb_ctl.as_deref()));
                    }
                    telemetry.reloads_ok.fetch_add(1, Ordering::Relaxed);
                    telemetry
                        .config_generation
                        .store(generation, Ordering::Relaxed);
                    crate::log::set_level(new.log_level);
                    if let (Some(a), Some(b)) = (&current.replication, &new.replication) {
                        if a.peers != b.peers {
                            crate::repl::update_peers(b.peers.clone());
                        }
                    }
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
    graceful_drain(current.stop_drain_s, logs.as_ref());
    if let Some(h) = health.take() {
        h.stop_in_background();
    }
    stop.store(true, Ordering::Relaxed);
    pmd::wait_all_lcores();
    if let Some(l) = logs.take() {
        let lost = l.finish();
        info!("flow and translation logs flushed ({lost} records lost to full rings)");
    }
    signal::set_finished();
    print_summary(&telemetry);
    for p in &ports {
        p.stop();
    }
    for p in &ports {
        p.close();
    }
    Ok(())
}

/// SIGTERM: readiness already fails (`/healthz` says stopping, still answered); traffic
/// in flight keeps being forwarded for `drain_s`, then the workers flush their log
/// counters and end their mappings in the translation log (bounded wait).
fn graceful_drain(drain_s: u32, logs: Option<&crate::flowlog::LogSink>) {
    if drain_s > 0 {
        info!("draining for {drain_s} s (readiness: not ready)");
        std::thread::sleep(Duration::from_secs(u64::from(drain_s)));
    }
    if let Some(l) = logs {
        if !l.flush_workers(Duration::from_secs(2)) {
            error!("flow logs: a worker did not flush within 2 s");
        }
    }
}

/// The config the forwarding table is built from: `cfg` with the NAT gateways that still
/// hold flows (draining ones too) and their public IPs that are not retired, so ARP is
/// answered and source filters hold until a drain ends.
fn fib_config(
    cfg: &Config,
    tenants: &NatTenants,
    lb: Option<&std::sync::Mutex<LbControl>>,
) -> Config {
    let mut c = cfg.clone();
    c.nat_gateways = tenants.fib_gateways();
    if let Some(Ok(l)) = lb.map(|l| l.lock()) {
        // By slot: draining load balancers and VIPs included (drained slots are empty).
        c.load_balancers = l.config().to_vec();
    }
    c
}

/// Sends every worker its part of the NAT gateway slots and the tables of new load
/// balancers (built here, never on a worker).
fn send_tenant_update(
    tenants: &mut NatTenants,
    lb: Option<&std::sync::Mutex<LbControl>>,
    cfg: &Config,
    ctl_txs: &[Sender<CtlMsg>],
    back: &Sender<Box<TenantUpdate>>,
    rng: &mut crate::rng::Rng,
) {
    let n = ctl_txs.len();
    let mut lb = lb.and_then(|l| l.lock().ok());
    for (i, c) in ctl_txs.iter().enumerate() {
        let u = Box::new(TenantUpdate {
            nat: Some(tenants.update_for(cfg, i, n, rng)),
            lb: lb.as_ref().and_then(|l| l.update_for(i, n, rng)),
            back: back.clone(),
        });
        // Every worker must apply every update (slots are mirrored): wait for room.
        if c.send_timeout(CtlMsg::Tenants(u), Duration::from_secs(5))
            .is_err()
        {
            error!("worker {i} did not take the tenant update");
        }
    }
    tenants.sent();
    if let Some(l) = lb.as_mut() {
        l.sent();
    }
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

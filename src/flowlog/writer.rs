//! Control side: one thread pops every worker's ring, writes flow records as they come
//! (already aggregated per flow and interval by the workers), aggregates rejected packets
//! per 5-tuple and interval, closes each interval one grace second after its end (REJECT
//! lines, NODATA for a gateway without records, SKIPDATA when records were lost), and
//! writes mapping events to the translation log. Nothing here runs on a worker.

use super::format::{lb_mapping_line, lost_line, mapping_line, v2_status, v2_traffic, V2_HEADER};
use super::rotate::RotatingFile;
use super::tap::{Tap, TapShared};
use super::{Clock, Endpoint, Record, LB_TENANT};
use crate::config::{Config, RING_RECORDS};
use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often the writer drains the rings.
const PASS: Duration = Duration::from_millis(50);
/// An interval is closed this long after its end (the workers' sweeps are done by then).
const GRACE_S: u64 = 1;

type RejectKey = (u32, u16, u8, Endpoint, Endpoint);

struct Writer {
    rings: Vec<rtrb::Consumer<Record>>,
    shared: Arc<TapShared>,
    names: Vec<String>,
    /// Load balancers' ids by slot (their records' `interface-id`).
    lb_names: Vec<String>,
    account: String,
    interval_s: u32,
    flows_on: bool,
    flow_file: Option<RotatingFile>,
    stdout: bool,
    tlog: Option<RotatingFile>,
    /// (epoch, gw, proto, src, dst) -> (packets, bytes, first, last)
    rejects: BTreeMap<RejectKey, (u64, u64, u32, u32)>,
    seen: HashSet<(u32, u16)>,
    next_close: Option<u32>,
    lost_flow: u64,
    lost_tlog: u64,
}

impl Writer {
    fn name(&self, gw: u16) -> &str {
        let (names, i) = if gw & LB_TENANT != 0 {
            (&self.lb_names, gw & !LB_TENANT)
        } else {
            (&self.names, gw)
        };
        names.get(i as usize).map_or("-", String::as_str)
    }

    /// Every tenant an interval's NODATA / SKIPDATA lines are written for.
    fn tenants(&self) -> impl Iterator<Item = u16> {
        let lbs = (0..self.lb_names.len() as u16).map(|i| i | LB_TENANT);
        (0..self.names.len() as u16).chain(lbs)
    }

    /// The two ACCEPT lines (one per direction that carried packets) of `a` <-> `b`.
    #[allow(clippy::too_many_arguments)]
    fn accept_pair(
        &mut self,
        tenant: u16,
        proto: u8,
        a: Endpoint,
        b: Endpoint,
        (out_p, out_b): (u32, u64),
        (in_p, in_b): (u32, u64),
        first_s: u32,
        last_s: u32,
    ) {
        let (acct, name) = (self.account.clone(), self.name(tenant).to_string());
        for (src, dst, p, by) in [(a, b, out_p, out_b), (b, a, in_p, in_b)] {
            if p > 0 {
                let l = v2_traffic(
                    &acct,
                    &name,
                    proto,
                    src,
                    dst,
                    p.into(),
                    by,
                    first_s,
                    last_s,
                    true,
                );
                self.flow_line(&l);
            }
        }
    }

    fn translation_line(&mut self, l: &str) {
        self.shared
            .translation_lines
            .fetch_add(1, Ordering::Relaxed);
        if let Some(f) = self.tlog.as_mut() {
            if let Err(e) = f.write_line(l) {
                crate::error!("translation log: {e}");
            }
        }
    }

    /// A load balancer's records: each flow interval as the client's side (client <->
    /// VIP) and the target's side (client or, full NAT, LB address <-> target), as AWS
    /// logs an NLB's interface.
    fn handle_lb(&mut self, r: Record) {
        match r {
            Record::LbFlow {
                lb,
                proto,
                client_ip,
                client_port,
                vip_ip,
                vip_port,
                target_ip,
                target_port,
                snat_ip,
                snat_port,
                out_packets,
                in_packets,
                out_bytes,
                in_bytes,
                first_s,
                last_s,
            } => {
                let t = lb | LB_TENANT;
                self.seen.insert((first_s / self.interval_s, t));
                let client = Endpoint::new(client_ip, client_port);
                let vip = Endpoint::new(vip_ip, vip_port);
                let target = Endpoint::new(target_ip, target_port);
                let seen_by_target = if snat_ip != 0 {
                    Endpoint::new(snat_ip, snat_port)
                } else {
                    client
                };
                let (o, i) = ((out_packets, out_bytes), (in_packets, in_bytes));
                self.accept_pair(t, proto, client, vip, o, i, first_s, last_s);
                self.accept_pair(t, proto, seen_by_target, target, o, i, first_s, last_s);
            }
            Record::LbMapping {
                lb,
                created,
                proto,
                client,
                vip,
                target,
                snat,
                t_ms,
            } => {
                let snat = (snat.ip != 0).then_some(snat);
                let name = self.name(lb | LB_TENANT);
                let l = lb_mapping_line(t_ms, created, name, proto, client, vip, target, snat);
                self.translation_line(&l);
            }
            _ => {}
        }
    }

    fn flow_line(&mut self, line: &str) {
        self.shared.flow_lines.fetch_add(1, Ordering::Relaxed);
        if let Some(f) = self.flow_file.as_mut() {
            if let Err(e) = f.write_line(line) {
                crate::error!("flow log: {e}");
            }
        }
        if self.stdout {
            let mut o = std::io::stdout().lock();
            let _ = writeln!(o, "{line}");
        }
    }

    fn handle(&mut self, r: Record) {
        let iv = self.interval_s;
        match r {
            Record::Flow {
                gw,
                proto,
                inside,
                remote,
                out_packets,
                in_packets,
                out_bytes,
                in_bytes,
                first_s,
                last_s,
                ..
            } => {
                self.seen.insert((first_s / iv, gw));
                let (acct, name) = (self.account.clone(), self.name(gw).to_string());
                if out_packets > 0 {
                    let l = v2_traffic(
                        &acct,
                        &name,
                        proto,
                        inside,
                        remote,
                        out_packets.into(),
                        out_bytes,
                        first_s,
                        last_s,
                        true,
                    );
                    self.flow_line(&l);
                }
                if in_packets > 0 {
                    let l = v2_traffic(
                        &acct,
                        &name,
                        proto,
                        remote,
                        inside,
                        in_packets.into(),
                        in_bytes,
                        first_s,
                        last_s,
                        true,
                    );
                    self.flow_line(&l);
                }
            }
            Record::Reject {
                gw,
                proto,
                src,
                dst,
                bytes,
                t_s,
            } => {
                let e = self
                    .rejects
                    .entry((t_s / iv, gw, proto, src, dst))
                    .or_insert((0, 0, t_s, t_s));
                e.0 += 1;
                e.1 += u64::from(bytes);
                e.2 = e.2.min(t_s);
                e.3 = e.3.max(t_s);
            }
            Record::Mapping {
                gw,
                created,
                proto,
                inside,
                public,
                remote,
                t_ms,
            } => {
                let l = mapping_line(t_ms, created, self.name(gw), proto, inside, public, remote);
                self.translation_line(&l);
            }
            r @ (Record::LbFlow { .. } | Record::LbMapping { .. }) => self.handle_lb(r),
        }
    }

    /// Writes interval `e`'s rejects and its NODATA / SKIPDATA records.
    fn close(&mut self, e: u32, lost_now: u64) {
        let iv = self.interval_s;
        let keys: Vec<RejectKey> = self
            .rejects
            .range((e, 0, 0, Endpoint::default(), Endpoint::default())..)
            .take_while(|(k, _)| k.0 == e)
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            let Some((p, b, first, last)) = self.rejects.remove(&k) else {
                continue;
            };
            self.seen.insert((e, k.1));
            let (acct, name) = (self.account.clone(), self.name(k.1).to_string());
            let l = v2_traffic(&acct, &name, k.2, k.3, k.4, p, b, first, last, false);
            self.flow_line(&l);
        }
        let skipped = lost_now > self.lost_flow;
        self.lost_flow = lost_now;
        let (start, end) = (e * iv, (e + 1) * iv);
        for gw in self.tenants().collect::<Vec<u16>>() {
            let status = if skipped {
                "SKIPDATA"
            } else if self.seen.contains(&(e, gw)) {
                continue;
            } else {
                "NODATA"
            };
            let l = v2_status(&self.account, self.name(gw), start, end, status);
            self.flow_line(&l);
        }
        self.seen.retain(|(x, _)| *x > e);
    }

    /// Drains the rings; closes the intervals that are due (all of them when `last`).
    fn pass(&mut self, now_ms: u64, last: bool) {
        let mut rings = std::mem::take(&mut self.rings);
        for ring in rings.iter_mut() {
            while let Ok(r) = ring.pop() {
                self.handle(r);
            }
        }
        self.rings = rings;
        let lost = self.shared.lost_total();
        if self.flows_on {
            let iv = u64::from(self.interval_s);
            let now_s = now_ms / 1000;
            let cur = (now_s / iv) as u32;
            let mut e = *self.next_close.get_or_insert(cur);
            while e < cur && now_s >= (u64::from(e) + 1) * iv + GRACE_S || last && e <= cur {
                self.close(e, lost);
                e += 1;
            }
            self.next_close = Some(e);
            if let Some(f) = self.flow_file.as_mut() {
                let _ = f.flush();
            }
        }
        if let Some(f) = self.tlog.as_mut() {
            if lost > self.lost_tlog {
                let _ = f.write_line(&lost_line(now_ms, lost));
                self.lost_tlog = lost;
            }
            let _ = f.flush();
        }
    }
}

/// Prometheus families: records lost to full rings, lines written per log.
pub fn families(r: &prometheus::Registry, s: &TapShared) {
    use prometheus::{IntCounter, IntCounterVec, Opts};
    let Ok(lost) = IntCounter::new(
        "flowgate_flow_log_records_lost_total",
        "Flow-log and translation-log records dropped because a worker's ring or queue was \
         full (flow-log intervals with losses say SKIPDATA)",
    ) else {
        return;
    };
    let Ok(lines) = IntCounterVec::new(
        Opts::new(
            "flowgate_log_lines_written_total",
            "Lines written to the flow log and the translation log",
        ),
        &["log"],
    ) else {
        return;
    };
    if r.register(Box::new(lost.clone())).is_err() || r.register(Box::new(lines.clone())).is_err() {
        return;
    }
    lost.inc_by(s.lost_total());
    lines
        .with_label_values(&["flow"])
        .inc_by(s.flow_lines.load(Ordering::Relaxed));
    lines
        .with_label_values(&["translation"])
        .inc_by(s.translation_lines.load(Ordering::Relaxed));
}

/// The control side of the logs: the taps to hand to workers, and the writer thread.
pub struct LogSink {
    pub shared: Arc<TapShared>,
    taps: Vec<Option<Tap>>,
    /// The load balancers' ends, one per worker (their own rings).
    lb_taps: Vec<Option<Tap>>,
    settings: (bool, bool, u32),
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl LogSink {
    /// `None` when neither log is configured or there is no NAT gateway or load balancer
    /// to log.
    pub fn start(
        cfg: &Config,
        workers: usize,
        tsc_now: u64,
        hz: u64,
    ) -> Result<Option<LogSink>, String> {
        if (cfg.nat_gateways.is_empty() && cfg.load_balancers.is_empty())
            || (cfg.flow_logs.is_none() && cfg.translation_log.is_none())
        {
            return Ok(None);
        }
        let fl = cfg.flow_logs.as_ref();
        let flow_file = match fl.and_then(|f| f.path.as_ref().map(|p| (f, p))) {
            Some((f, p)) => Some(
                RotatingFile::open(p, f.rotate_bytes, f.keep, Some(V2_HEADER))
                    .map_err(|e| format!("flow_logs.path {}: {e}", p.display()))?,
            ),
            None => None,
        };
        let tlog = match &cfg.translation_log {
            Some(t) => Some(
                RotatingFile::open(&t.path, t.rotate_bytes, t.keep, None)
                    .map_err(|e| format!("translation_log.path {}: {e}", t.path.display()))?,
            ),
            None => None,
        };
        // Loss counters and flush flags: the NAT's taps 0..workers, the LB's after them.
        let shared = Arc::new(TapShared::new(2 * workers));
        let clock = Clock::sample(tsc_now, hz);
        let interval_s = fl.map_or(60, |f| f.interval_s);
        let mut taps = Vec::new();
        let mut rings = Vec::new();
        for w in 0..2 * workers {
            let (p, c) = rtrb::RingBuffer::new(RING_RECORDS);
            rings.push(c);
            taps.push(Some(Tap {
                ring: p,
                clock,
                shared: shared.clone(),
                worker: w,
                flows: fl.is_some(),
                mappings: cfg.translation_log.is_some(),
                interval_s,
                lost: 0,
                flushed: false,
            }));
        }
        let lb_taps = taps.split_off(workers);
        let mut writer = Writer {
            rings,
            shared: shared.clone(),
            names: cfg.nat_gateways.iter().map(|g| g.id.clone()).collect(),
            lb_names: cfg.load_balancers.iter().map(|l| l.id.clone()).collect(),
            account: fl.map_or("-".into(), |f| f.account_id.clone()),
            interval_s,
            flows_on: fl.is_some(),
            flow_file,
            stdout: fl.is_some_and(|f| f.stdout),
            tlog,
            rejects: BTreeMap::new(),
            seen: HashSet::new(),
            next_close: None,
            lost_flow: 0,
            lost_tlog: 0,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name("fg-flowlog".into())
            .spawn(move || {
                while !s.load(Ordering::Acquire) {
                    writer.pass(now_ms(), false);
                    std::thread::sleep(PASS);
                }
                writer.pass(now_ms(), true);
            })
            .map_err(|e| format!("flow log thread: {e}"))?;
        Ok(Some(LogSink {
            shared,
            taps,
            lb_taps,
            settings: (fl.is_some(), cfg.translation_log.is_some(), interval_s),
            stop,
            thread: Some(thread),
        }))
    }

    /// Worker `w`'s end of the logs (once).
    pub fn take_tap(&mut self, w: usize) -> Option<Tap> {
        self.taps.get_mut(w)?.take()
    }

    /// Worker `w`'s end of the logs for its load balancers (once).
    pub fn take_lb_tap(&mut self, w: usize) -> Option<Tap> {
        self.lb_taps.get_mut(w)?.take()
    }

    /// (flow logs on, translation log on, interval): what tables a reload adds need.
    pub fn settings(&self) -> (bool, bool, u32) {
        self.settings
    }

    /// Stop: asks every worker to emit its counters and end its mappings, and waits (at most
    /// `timeout`) until all did. Workers keep forwarding meanwhile.
    pub fn flush_workers(&self, timeout: Duration) -> bool {
        // A tap no worker took has nothing to flush.
        for (i, t) in self.taps.iter().chain(self.lb_taps.iter()).enumerate() {
            if t.is_some() {
                if let Some(f) = self.shared.flushed.get(i) {
                    f.store(true, Ordering::Release);
                }
            }
        }
        self.shared.flush_req.store(true, Ordering::Release);
        let t0 = Instant::now();
        while t0.elapsed() < timeout {
            if self
                .shared
                .flushed
                .iter()
                .all(|f| f.load(Ordering::Acquire))
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    /// After the workers stopped: the writer drains what is left, closes the current
    /// interval, flushes the files and ends.
    pub fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.shared.lost_total()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer(dir: &std::path::Path) -> (Writer, rtrb::Producer<Record>) {
        let (p, c) = rtrb::RingBuffer::new(64);
        let w = Writer {
            rings: vec![c],
            shared: Arc::new(TapShared::new(1)),
            names: vec!["nat-a".into(), "nat-b".into()],
            lb_names: Vec::new(),
            account: "123456789012".into(),
            interval_s: 10,
            flows_on: true,
            flow_file: Some(
                RotatingFile::open(&dir.join("f.log"), 1 << 20, 2, Some(V2_HEADER)).unwrap(),
            ),
            stdout: false,
            tlog: Some(RotatingFile::open(&dir.join("t.log"), 1 << 20, 2, None).unwrap()),
            rejects: BTreeMap::new(),
            seen: HashSet::new(),
            next_close: None,
            lost_flow: 0,
            lost_tlog: 0,
        };
        (w, p)
    }

    #[test]
    fn rejects_aggregate_and_idle_gateways_get_nodata() {
        let dir = std::env::temp_dir().join(format!("fg-writer-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (mut w, mut p) = writer(&dir);
        w.pass(1_000_000, false);
        let src = Endpoint::new(0xcb00_7101, 4444);
        let dst = Endpoint::new(0xc633_6401, 53);
        for t in [1_000, 1_003, 1_004] {
            p.push(Record::Reject {
                gw: 0,
                proto: 17,
                src,
                dst,
                bytes: 100,
                t_s: t,
            })
            .unwrap();
        }
        w.pass(1_005_000, false);
        w.pass(1_011_500, false);
        let text = std::fs::read_to_string(dir.join("f.log")).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], V2_HEADER);
        assert_eq!(
            lines[1],
            "2 123456789012 nat-a 203.0.113.1 198.51.100.1 4444 53 17 3 300 1000 1004 REJECT OK"
        );
        assert_eq!(
            lines[2],
            "2 123456789012 nat-b - - - - - - - 1000 1010 - NODATA"
        );
        assert_eq!(lines.len(), 3, "{text}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn lb_flows_give_both_sides_and_their_events() {
        let dir = std::env::temp_dir().join(format!("fg-writer-lb-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (mut w, mut p) = writer(&dir);
        w.names.clear();
        w.lb_names = vec!["web".into()];
        w.pass(1_000_000, false);
        let ip = |a: [u8; 4]| u32::from_be_bytes(a);
        p.push(Record::LbFlow {
            lb: 0,
            proto: 17,
            client_ip: ip([203, 0, 113, 2]),
            client_port: 40000,
            vip_ip: ip([198, 51, 100, 10]),
            vip_port: 53,
            target_ip: ip([10, 1, 0, 15]),
            target_port: 5353,
            snat_ip: ip([10, 1, 0, 100]),
            snat_port: 1024,
            out_packets: 3,
            in_packets: 2,
            out_bytes: 300,
            in_bytes: 200,
            first_s: 1_001,
            last_s: 1_002,
        })
        .unwrap();
        p.push(Record::LbMapping {
            lb: 0,
            created: true,
            proto: 17,
            client: Endpoint::new(ip([203, 0, 113, 2]), 40000),
            vip: Endpoint::new(ip([198, 51, 100, 10]), 53),
            target: Endpoint::new(ip([10, 1, 0, 15]), 5353),
            snat: Endpoint::new(ip([10, 1, 0, 100]), 1024),
            t_ms: 1_001_000,
        })
        .unwrap();
        p.push(Record::Reject {
            gw: LB_TENANT,
            proto: 6,
            src: Endpoint::new(ip([203, 0, 113, 2]), 5555),
            dst: Endpoint::new(ip([198, 51, 100, 10]), 81),
            bytes: 60,
            t_s: 1_003,
        })
        .unwrap();
        w.pass(1_011_500, false);
        let text = std::fs::read_to_string(dir.join("f.log")).unwrap();
        let a = "2 123456789012 web";
        assert_eq!(
            text.lines().skip(1).collect::<Vec<_>>(),
            [
                format!("{a} 203.0.113.2 198.51.100.10 40000 53 17 3 300 1001 1002 ACCEPT OK"),
                format!("{a} 198.51.100.10 203.0.113.2 53 40000 17 2 200 1001 1002 ACCEPT OK"),
                format!("{a} 10.1.0.100 10.1.0.15 1024 5353 17 3 300 1001 1002 ACCEPT OK"),
                format!("{a} 10.1.0.15 10.1.0.100 5353 1024 17 2 200 1001 1002 ACCEPT OK"),
                format!("{a} 203.0.113.2 198.51.100.10 5555 81 6 1 60 1003 1003 REJECT OK"),
            ],
            "{text}"
        );
        let t = std::fs::read_to_string(dir.join("t.log")).unwrap();
        assert!(
            t.contains(r#""kind":"lb""#) && t.contains(r#""lb_address":"10.1.0.100:1024""#),
            "{t}"
        );
        assert!(t.contains(r#""tenant":"web""#), "{t}");
        // A later interval without records: NODATA for the load balancer.
        w.pass(1_021_500, false);
        let text = std::fs::read_to_string(dir.join("f.log")).unwrap();
        assert!(
            text.ends_with("2 123456789012 web - - - - - - - 1010 1020 - NODATA\n"),
            "{text}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

//! The sync thread (control side): worker rings -> per-peer reliable UDP streams, peer
//! datagrams -> worker install rings, full resync (served and asked for).
//!
//! Reliability (go-back-N over UDP): every event gets the next sequence number of the
//! peer's stream; datagrams carry up to `wire::MAX_EVENTS` consecutive events; the peer
//! acknowledges cumulatively (in every datagram it sends, and in an empty one at least
//! every `HEARTBEAT`). No ACK progress for `retransmit_ms` sends the unacknowledged window
//! again; after `max_retransmits` rounds the in-flight events are given up (counted lost)
//! and the stream's `base` moves past them, which tells the receiver to skip them too.
//! A receiver accepts only the next expected event (anything beyond a gap waits for the
//! resend). A new `session` (the sender restarted) restarts the receive side at `base`.

use super::stats::ReplStats;
use super::wire::{self, Header, MAX_EVENTS, T_DATA, T_RESYNC};
use super::{ControlEnd, FlowEvent, EV_DUMP_DONE, EV_DUMP_END, EV_DUMP_REQ, RING_SIZE};
use crate::config::ReplicationConfig;
use crate::nat::ports::PortAllocator;
use crate::nat::RssSteering;
use std::collections::VecDeque;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Events in flight (sent, not acknowledged) per peer.
const WINDOW: u64 = 8192;
/// Events queued per peer (a dead peer's queue stops growing here; the oldest are lost).
const MAX_QUEUE: usize = 262_144;
/// An empty datagram (ACK, liveness) at least this often.
const HEARTBEAT: Duration = Duration::from_millis(100);
/// A peer silent this long is reported down (`flowgate_replication_peer_up` 0): 3 missed
/// heartbeats of 150 ms (we send one every 100 ms), so a node agent can tell the fabric to
/// stop sending to it well within a second (docs/fleet.md, failover).
pub const DOWN_AFTER: Duration = Duration::from_millis(450);
/// A restarting node repeats its resync request this often until answered.
const RESYNC_REPEAT: Duration = Duration::from_millis(300);
/// Events taken from each worker ring per loop.
const DRAIN: usize = 8192;

struct Pending {
    seq: u64,
    ev: FlowEvent,
    queued: Instant,
}

/// Where a peer is in the full-dump protocol (as a requester).
#[derive(Clone, Copy, PartialEq, Eq)]
enum DumpFor {
    None,
    /// Asked; waits for the next dump to start.
    Waiting,
    /// The running dump is for it: `EV_DUMP_DONE` follows its end.
    Running,
}

struct Peer {
    addr: SocketAddr,
    queue: VecDeque<Pending>,
    next_seq: u64,
    /// Events with `seq < sent_upto` were put on the wire in the current round.
    sent_upto: u64,
    /// Highest sequence number ever sent + 1 (tells first sends from resends).
    sent_max: u64,
    /// When the oldest unacknowledged event was last (re)sent, or ACK progress was made.
    head_tx: Instant,
    rounds: u32,
    last_tx: Instant,
    // Receive side.
    rx_session: u64,
    rx_expected: u64,
    ack_due: bool,
    last_heard: Option<Instant>,
    dump: DumpFor,
    /// The peer session whose resync request we already took (requests repeat).
    dump_session: u64,
    /// Our own resync: the peer sent its `EV_DUMP_DONE`.
    resynced: bool,
}

impl Peer {
    fn new(addr: SocketAddr, now: Instant) -> Peer {
        Peer {
            addr,
            queue: VecDeque::new(),
            next_seq: 1,
            sent_upto: 1,
            sent_max: 1,
            head_tx: now,
            rounds: 0,
            last_tx: now - HEARTBEAT,
            rx_session: 0,
            rx_expected: 0,
            ack_due: false,
            last_heard: None,
            dump: DumpFor::None,
            dump_session: 0,
            resynced: false,
        }
    }
    fn base(&self) -> u64 {
        self.queue.front().map_or(self.next_seq, |p| p.seq)
    }
}

/// What the sync thread needs.
pub struct SyncSetup {
    pub cfg: ReplicationConfig,
    /// Per worker running the NAT: its rings (index = worker index).
    pub workers: Vec<ControlEnd>,
    /// Per worker running the load balancer: its rings (index = worker index).
    pub lb_workers: Vec<ControlEnd>,
    /// Per NAT gateway: its tenant key, (first, last) public port (finds a flow's owner).
    pub port_ranges: Vec<(u32, (u16, u16))>,
    pub steering: Option<RssSteering>,
    pub stats: Arc<ReplStats>,
    pub stop: Arc<AtomicBool>,
}

/// Binds the sync socket (errors are the caller's to report) and starts the thread.
/// The node is not ready (`repl::readiness`) until its resync is done.
pub fn start(s: SyncSetup) -> std::io::Result<std::thread::JoinHandle<()>> {
    let sock = UdpSocket::bind(s.cfg.listen)?;
    sock.set_read_timeout(Some(Duration::from_millis(1)))?;
    super::set_resyncing();
    std::thread::Builder::new()
        .name("fg-repl".into())
        .spawn(move || Sync::new(s, sock).run())
}

struct Sync {
    s: SyncSetup,
    sock: UdpSocket,
    session: u64,
    peers: Vec<Peer>,
    /// Counters of `peers[i]` (the peer set can change on reload, `repl::update_peers`).
    pst: Vec<Arc<super::stats::PeerStats>>,
    owners: Vec<(u32, PortAllocator)>,
    /// A dump is running: `EV_DUMP_END`s seen, and workers still to be asked.
    dumping: bool,
    dump_ends: usize,
    dump_req_pending: Vec<bool>,
    /// Our own resync: started, last request sent; `None` once done.
    resync: Option<(Instant, Instant)>,
    /// Resync answered: waiting for the workers to take every install.
    draining: bool,
    buf: Vec<u8>,
    rx: Vec<u8>,
    evs: Vec<FlowEvent>,
}

impl Sync {
    fn new(s: SyncSetup, sock: UdpSocket) -> Sync {
        let now = Instant::now();
        let session = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            ^ (u64::from(std::process::id()) << 40)
            | 1;
        let n = s.workers.len();
        let ends = n + s.lb_workers.len();
        let owners = s
            .port_ranges
            .iter()
            .map(|&(k, (a, b))| (k, PortAllocator::new(a, b, 1, 0, n.max(1))))
            .collect();
        Sync {
            peers: s.cfg.peers.iter().map(|&a| Peer::new(a, now)).collect(),
            pst: s.stats.peers.clone(),
            session,
            owners,
            dumping: false,
            dump_ends: 0,
            dump_req_pending: vec![false; ends],
            resync: Some((now, now - RESYNC_REPEAT)),
            draining: false,
            s,
            sock,
            buf: Vec::with_capacity(1500),
            rx: vec![0u8; 2048],
            evs: Vec::with_capacity(MAX_EVENTS),
        }
    }

    fn run(mut self) {
        crate::info!(
            "replication: listening on {}, peers {:?}, session {:016x}",
            self.s.cfg.listen,
            self.s.cfg.peers,
            self.session
        );
        while !self.s.stop.load(Ordering::Relaxed) && !crate::pmd::signal::stop_requested() {
            if let Some(new) = super::take_peer_update() {
                self.set_peers(new);
            }
            self.receive();
            self.drain_workers();
            self.dump_progress();
            let now = Instant::now();
            self.resync_progress(now);
            for i in 0..self.peers.len() {
                self.send(i, now);
            }
            self.publish(now);
        }
    }

    /// All worker ends: the NAT stage's, then the LB stage's.
    fn ends(&mut self) -> impl Iterator<Item = &mut ControlEnd> {
        self.s
            .workers
            .iter_mut()
            .chain(self.s.lb_workers.iter_mut())
    }

    /// The ring a received event goes to: the owning worker's, of the NAT or LB stage.
    fn install_ring(&mut self, e: &FlowEvent) -> Option<&mut ControlEnd> {
        if super::is_lb(e.kind) {
            let n = self.s.lb_workers.len();
            let w = crate::lb::replica::owner(e, n);
            return self.s.lb_workers.get_mut(w);
        }
        let w = self.owner(e);
        self.s.workers.get_mut(w)
    }

    /// A reload changed the peer set: kept peers keep their streams; a new peer gets a full
    /// dump of our flows (as if it had asked for a resync), so it holds them before the
    /// fabric may send it their traffic; a removed peer's queue is dropped.
    fn set_peers(&mut self, new: Vec<SocketAddr>) {
        let now = Instant::now();
        let mut old: Vec<(Peer, Arc<super::stats::PeerStats>)> =
            self.peers.drain(..).zip(self.pst.drain(..)).collect();
        for a in &new {
            match old.iter().position(|(p, _)| p.addr == *a) {
                Some(i) => {
                    let (p, st) = old.swap_remove(i);
                    self.peers.push(p);
                    self.pst.push(st);
                }
                None => {
                    let mut p = Peer::new(*a, now);
                    p.dump = DumpFor::Waiting;
                    p.resynced = true;
                    self.peers.push(p);
                    self.pst.push(self.s.stats.peer(a));
                }
            }
        }
        for (_, st) in &old {
            st.up.store(0, Ordering::Relaxed);
            st.lag_ms.store(0, Ordering::Relaxed);
        }
        crate::info!(
            "replication: peers now {:?} (removed {:?})",
            new,
            old.iter().map(|(p, _)| p.addr).collect::<Vec<_>>()
        );
        self.s.cfg.peers = new;
    }

    /// The worker that owns a flow (the one whose port slice, or RSS bucket, it is in).
    fn owner(&self, e: &FlowEvent) -> usize {
        let n = self.s.workers.len();
        if n <= 1 {
            return 0;
        }
        if let Some(s) = self
            .s
            .steering
            .as_ref()
            .filter(|_| e.proto != crate::wire::IPPROTO_ICMP)
        {
            if let Some(w) = s.owner(
                e.remote_ip.into(),
                e.remote_port,
                e.public_ip.into(),
                e.public_port,
            ) {
                return w.min(n - 1);
            }
        }
        self.owners
            .iter()
            .find(|(k, _)| *k == e.tenant)
            .and_then(|(_, a)| a.owner_of(e.public_port))
            .unwrap_or(0)
            .min(n - 1)
    }

    fn receive(&mut self) {
        let mut first = true;
        loop {
            if !first {
                let _ = self.sock.set_nonblocking(true);
            }
            let r = self.sock.recv_from(&mut self.rx);
            if first {
                first = false;
            }
            let Ok((len, from)) = r else {
                break;
            };
            self.datagram(len, from);
        }
        let _ = self.sock.set_nonblocking(false);
    }

    fn datagram(&mut self, len: usize, from: SocketAddr) {
        let stats = self.s.stats.clone();
        let Some(pi) = self.peers.iter().position(|p| p.addr == from) else {
            stats.unknown_source.fetch_add(1, Ordering::Relaxed);
            return;
        };
        self.evs.clear();
        let h = match wire::decode(&self.rx[..len], &mut self.evs) {
            Ok(h) => h,
            Err(b) => {
                stats.reject(b);
                return;
            }
        };
        let now = Instant::now();
        let session = self.session;
        let ps = self.pst[pi].clone();
        let p = &mut self.peers[pi];
        p.last_heard = Some(now);
        // Acknowledgements of our stream.
        if h.ack_session == session {
            let mut progress = false;
            while p.queue.front().is_some_and(|q| q.seq < h.ack) {
                if let Some(q) = p.queue.pop_front() {
                    ps.acked.fetch_add(1, Ordering::Relaxed);
                    ps.ack_delay_us.store(
                        now.duration_since(q.queued).as_micros() as u64,
                        Ordering::Relaxed,
                    );
                    progress = true;
                }
            }
            if progress {
                p.rounds = 0;
                p.head_tx = now;
                p.sent_upto = p.sent_upto.max(p.base());
            }
        }
        // The peer's stream.
        if h.session != p.rx_session {
            p.rx_session = h.session;
            p.rx_expected = h.base;
        }
        p.ack_due = true;
        if h.kind == T_RESYNC {
            if p.dump_session != h.session {
                p.dump_session = h.session;
                p.dump = DumpFor::Waiting;
            }
            return;
        }
        if h.base > p.rx_expected {
            ps.gaps.fetch_add(h.base - p.rx_expected, Ordering::Relaxed);
            p.rx_expected = h.base;
        }
        let count = h.count as u64;
        if count == 0 {
            return;
        }
        let end = h.seq + count;
        if end <= p.rx_expected {
            ps.duplicates.fetch_add(count, Ordering::Relaxed);
            return;
        }
        if h.seq > p.rx_expected {
            ps.out_of_order.fetch_add(count, Ordering::Relaxed);
            return;
        }
        let skip = (p.rx_expected - h.seq) as usize;
        ps.duplicates.fetch_add(skip as u64, Ordering::Relaxed);
        ps.received
            .fetch_add(count - skip as u64, Ordering::Relaxed);
        p.rx_expected = end;
        let evs = std::mem::take(&mut self.evs);
        for e in &evs[skip..] {
            if e.kind == EV_DUMP_DONE {
                self.peers[pi].resynced = true;
                continue;
            }
            match self.install_ring(e).map(|c| c.installs.push(*e)) {
                Some(Ok(())) => stats.installed.fetch_add(1, Ordering::Relaxed),
                _ => stats.install_dropped.fetch_add(1, Ordering::Relaxed),
            };
        }
        self.evs = evs;
    }

    /// Worker events -> every peer's stream. Backpressure: no more than the fullest peer
    /// live peer's queue has room for (a big dump then waits in the workers' rings, which
    /// pause it, instead of pushing the oldest queued events out).
    fn drain_workers(&mut self) {
        let now = Instant::now();
        // Only peers that answer: a dead one's queue just loses its oldest events.
        let fullest = self
            .peers
            .iter()
            .filter(|p| {
                p.last_heard
                    .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
            })
            .map(|p| p.queue.len())
            .max()
            .unwrap_or(0);
        let mut room = MAX_QUEUE.saturating_sub(fullest);
        let n = self.s.workers.len();
        for wi in 0..n + self.s.lb_workers.len() {
            for _ in 0..DRAIN.min(room) {
                room -= 1;
                let end = if wi < n {
                    &mut self.s.workers[wi]
                } else {
                    &mut self.s.lb_workers[wi - n]
                };
                let Ok(e) = end.events.pop() else {
                    break;
                };
                if e.kind == EV_DUMP_END {
                    self.dump_ends += 1;
                    continue;
                }
                self.enqueue_all(e, now);
            }
        }
    }

    fn enqueue_all(&mut self, e: FlowEvent, now: Instant) {
        for (p, ps) in self.peers.iter_mut().zip(&self.pst) {
            enqueue(p, ps, e, now);
        }
    }

    /// Serving dumps: start one for the waiting requesters, end it with `EV_DUMP_DONE`.
    fn dump_progress(&mut self) {
        let now = Instant::now();
        if self.dumping {
            let mut pending = std::mem::take(&mut self.dump_req_pending);
            for (p, end) in pending.iter_mut().zip(self.ends()) {
                if *p {
                    let req = FlowEvent {
                        kind: EV_DUMP_REQ,
                        ..FlowEvent::default()
                    };
                    *p = end.installs.push(req).is_err();
                }
            }
            self.dump_req_pending = pending;
            if self.dump_ends < self.s.workers.len() + self.s.lb_workers.len() {
                return;
            }
            self.dumping = false;
            let done = FlowEvent {
                kind: EV_DUMP_DONE,
                ..FlowEvent::default()
            };
            for (p, ps) in self.peers.iter_mut().zip(&self.pst) {
                if p.dump == DumpFor::Running {
                    p.dump = DumpFor::None;
                    enqueue(p, ps, done, now);
                    self.s.stats.dumps_served.fetch_add(1, Ordering::Relaxed);
                    crate::info!("replication: full dump sent to {}", p.addr);
                }
            }
        }
        if !self.peers.iter().any(|p| p.dump == DumpFor::Waiting) {
            return;
        }
        for p in &mut self.peers {
            if p.dump == DumpFor::Waiting {
                p.dump = DumpFor::Running;
            }
        }
        self.dumping = true;
        self.dump_ends = 0;
        self.dump_req_pending.iter_mut().for_each(|x| *x = true);
    }

    /// Our own start-up resync: ask every peer until each has answered with a complete
    /// dump or stayed silent for `resync_timeout_ms`; then wait for the workers to take
    /// every install; then ready.
    fn resync_progress(&mut self, now: Instant) {
        let Some((started, last_req)) = self.resync else {
            return;
        };
        let timeout = Duration::from_millis(u64::from(self.s.cfg.resync_timeout_ms));
        let elapsed = now.duration_since(started);
        let answered = self
            .peers
            .iter()
            .all(|p| p.resynced || (p.last_heard.is_none() && elapsed >= timeout));
        // A peer that answers but never completes: do not wait forever.
        let give_up = elapsed >= timeout * 10;
        if !(answered || give_up) {
            if now.duration_since(last_req) >= RESYNC_REPEAT {
                for i in 0..self.peers.len() {
                    if !self.peers[i].resynced {
                        let h = self.header(i, T_RESYNC, 0);
                        wire::encode(&h, &[], &mut self.buf);
                        let _ = self.sock.send_to(&self.buf, self.peers[i].addr);
                    }
                }
                self.resync = Some((started, now));
            }
            return;
        }
        if !self.draining {
            self.draining = true;
            if give_up && !answered {
                crate::error!("replication: resync incomplete after {elapsed:?}; ready anyway");
            }
        }
        if self.ends().all(|w| w.installs.slots() == RING_SIZE) {
            self.resync = None;
            let ms = elapsed.as_millis() as u64;
            self.s.stats.resync_ms.store(ms.max(1), Ordering::Relaxed);
            self.s.stats.ready.store(1, Ordering::Relaxed);
            super::set_resynced();
            let from: Vec<String> = self
                .peers
                .iter()
                .filter(|p| p.resynced)
                .map(|p| p.addr.to_string())
                .collect();
            crate::info!(
                "replication: resync done in {ms} ms (full dump from {:?}); ready",
                from
            );
        }
    }

    fn header(&self, i: usize, kind: u8, seq: u64) -> Header {
        let p = &self.peers[i];
        Header {
            kind,
            count: 0,
            session: self.session,
            seq,
            base: p.base(),
            ack_session: p.rx_session,
            ack: p.rx_expected,
        }
    }

    /// Sends what the window allows, resends after `retransmit_ms`, ACKs and heartbeats.
    fn send(&mut self, i: usize, now: Instant) {
        let rto = Duration::from_millis(u64::from(self.s.cfg.retransmit_ms));
        let ps = self.pst[i].clone();
        {
            let p = &mut self.peers[i];
            let base = p.base();
            if p.sent_upto > base && now.duration_since(p.head_tx) >= rto {
                if p.rounds >= self.s.cfg.max_retransmits {
                    // Give up what was in flight; `base` moves past it.
                    let mut n = 0;
                    while p.queue.front().is_some_and(|q| q.seq < p.sent_upto) {
                        p.queue.pop_front();
                        n += 1;
                    }
                    ps.lost.fetch_add(n, Ordering::Relaxed);
                    p.rounds = 0;
                } else {
                    p.rounds += 1;
                    p.sent_upto = base;
                }
                p.head_tx = now;
            }
        }
        let mut sent_any = false;
        loop {
            let p = &self.peers[i];
            let base = p.base();
            if p.sent_upto >= p.next_seq || p.sent_upto - base >= WINDOW {
                break;
            }
            let from = (p.sent_upto - base) as usize;
            let n = (p.queue.len() - from).min(MAX_EVENTS);
            self.evs.clear();
            self.evs.extend(p.queue.range(from..from + n).map(|q| q.ev));
            let seq = p.sent_upto;
            let h = self.header(i, T_DATA, seq);
            let evs = std::mem::take(&mut self.evs);
            wire::encode(&h, &evs, &mut self.buf);
            self.evs = evs;
            let _ = self.sock.send_to(&self.buf, self.peers[i].addr);
            let p = &mut self.peers[i];
            let end = seq + n as u64;
            let fresh = end.saturating_sub(p.sent_max.max(seq));
            ps.sent.fetch_add(fresh, Ordering::Relaxed);
            ps.retransmitted
                .fetch_add(n as u64 - fresh, Ordering::Relaxed);
            if seq == base {
                p.head_tx = now;
            }
            p.sent_upto = end;
            p.sent_max = p.sent_max.max(end);
            sent_any = true;
        }
        let p = &self.peers[i];
        if !sent_any && (p.ack_due || now.duration_since(p.last_tx) >= HEARTBEAT) {
            let h = self.header(i, T_DATA, self.peers[i].next_seq);
            wire::encode(&h, &[], &mut self.buf);
            let _ = self.sock.send_to(&self.buf, self.peers[i].addr);
            sent_any = true;
        }
        if sent_any {
            let p = &mut self.peers[i];
            p.ack_due = false;
            p.last_tx = now;
        }
    }

    fn publish(&self, now: Instant) {
        let st = &self.s.stats;
        for (p, ps) in self.peers.iter().zip(&self.pst) {
            let lag = p
                .queue
                .front()
                .map_or(0, |q| now.duration_since(q.queued).as_millis() as u64);
            ps.lag_ms.store(lag, Ordering::Relaxed);
            let up = p
                .last_heard
                .is_some_and(|t| now.duration_since(t) < DOWN_AFTER);
            ps.up.store(u64::from(up), Ordering::Relaxed);
        }
        let dropped: u64 = self
            .s
            .workers
            .iter()
            .chain(&self.s.lb_workers)
            .map(|w| w.dropped.load(Ordering::Relaxed))
            .sum();
        st.ring_dropped.store(dropped, Ordering::Relaxed);
    }
}

/// Appends an event to a peer's stream (the oldest is lost when the queue is full).
fn enqueue(p: &mut Peer, ps: &super::stats::PeerStats, ev: FlowEvent, now: Instant) {
    if p.queue.len() >= MAX_QUEUE {
        p.queue.pop_front();
        ps.lost.fetch_add(1, Ordering::Relaxed);
        let base = p.base();
        p.sent_upto = p.sent_upto.max(base);
    }
    p.queue.push_back(Pending {
        seq: p.next_seq,
        ev,
        queued: now,
    });
    p.next_seq += 1;
}

//! Replication counters (written by the sync thread, relaxed atomics) and their
//! Prometheus families (built per scrape, like the NAT and LB families).

use super::wire::Bad;
use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

#[derive(Default)]
pub struct PeerStats {
    pub addr: String,
    /// Events put on the wire the first time.
    pub sent: AtomicU64,
    /// Events the peer acknowledged.
    pub acked: AtomicU64,
    /// Events put on the wire again (no ACK within `retransmit_ms`).
    pub retransmitted: AtomicU64,
    /// Events given up (`max_retransmits` reached, or the send queue overflowed).
    pub lost: AtomicU64,
    /// Replication lag: age of the oldest unacknowledged event (0 when all are acked), ms.
    pub lag_ms: AtomicU64,
    /// Last measured enqueue-to-ACK delay, microseconds.
    pub ack_delay_us: AtomicU64,
    /// A datagram from the peer arrived within the last second.
    pub up: AtomicU64,
    /// Events the peer sent that we accepted (in order).
    pub received: AtomicU64,
    /// Events from the peer below our expected sequence (duplicates) or beyond it (gap).
    pub duplicates: AtomicU64,
    pub out_of_order: AtomicU64,
    /// Events the peer gave up before we got them (its `base` moved past them).
    pub gaps: AtomicU64,
}

#[derive(Default)]
pub struct ReplStats {
    pub peers: Vec<Arc<PeerStats>>,
    /// Peers added by a reload (`repl::update_peers`); never removed (counters persist).
    pub added: std::sync::Mutex<Vec<Arc<PeerStats>>>,
    /// Events handed to workers for installation.
    pub installed: AtomicU64,
    /// Installs refused by a full worker ring.
    pub install_dropped: AtomicU64,
    /// Events the workers could not queue (full event ring).
    pub ring_dropped: AtomicU64,
    /// Datagrams refused, per `Bad` reason, and from an address that is no peer.
    pub rejected: [AtomicU64; 6],
    pub unknown_source: AtomicU64,
    /// Full dumps served to peers.
    pub dumps_served: AtomicU64,
    /// How long this node's own resync took (ms), once done.
    pub resync_ms: AtomicU64,
    pub ready: AtomicU64,
    /// Per worker end ("nat" or "lb" stage): what its installs did.
    pub workers: Vec<(&'static str, Arc<super::InstallCounts>)>,
}

impl ReplStats {
    pub fn new(peers: &[std::net::SocketAddr]) -> Arc<ReplStats> {
        Arc::new(ReplStats {
            peers: peers
                .iter()
                .map(|p| {
                    Arc::new(PeerStats {
                        addr: p.to_string(),
                        ..PeerStats::default()
                    })
                })
                .collect(),
            ..ReplStats::default()
        })
    }

    /// Every peer's counters: configured at start, then added by reloads.
    pub fn all_peers(&self) -> Vec<Arc<PeerStats>> {
        let mut v = self.peers.clone();
        if let Ok(a) = self.added.lock() {
            v.extend(a.iter().cloned());
        }
        v
    }

    /// The counters of `addr` (existing ones are reused when a peer comes back).
    pub fn peer(&self, addr: &std::net::SocketAddr) -> Arc<PeerStats> {
        let name = addr.to_string();
        if let Some(p) = self.all_peers().into_iter().find(|p| p.addr == name) {
            return p;
        }
        let p = Arc::new(PeerStats {
            addr: name,
            ..PeerStats::default()
        });
        if let Ok(mut a) = self.added.lock() {
            a.push(p.clone());
        }
        p
    }

    pub fn reject(&self, b: Bad) {
        if let Some(i) = Bad::ALL.iter().position(|&x| x == b) {
            self.rejected[i].fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> Option<IntCounterVec> {
    let c = IntCounterVec::new(Opts::new(name, help), labels).ok()?;
    r.register(Box::new(c.clone())).ok()?;
    Some(c)
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> Option<IntGaugeVec> {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).ok()?;
    r.register(Box::new(g.clone())).ok()?;
    Some(g)
}

fn ld(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

/// The `flowgate_replication_*` families.
pub fn families(r: &Registry, s: &ReplStats) {
    let peers = s.all_peers();
    type Field = fn(&PeerStats) -> &AtomicU64;
    let per_peer: [(&str, &str, Field); 8] = [
        (
            "events_sent",
            "Flow events sent to the peer (first transmission)",
            |p| &p.sent,
        ),
        ("events_acked", "Flow events the peer acknowledged", |p| {
            &p.acked
        }),
        (
            "events_retransmitted",
            "Flow events sent again for want of an ACK",
            |p| &p.retransmitted,
        ),
        (
            "events_lost",
            "Flow events given up (retransmission bound reached or queue overflow)",
            |p| &p.lost,
        ),
        (
            "events_received",
            "Flow events accepted from the peer",
            |p| &p.received,
        ),
        (
            "events_duplicate",
            "Flow events from the peer received twice",
            |p| &p.duplicates,
        ),
        (
            "events_out_of_order",
            "Flow events from the peer ahead of a gap (dropped, resent by the peer)",
            |p| &p.out_of_order,
        ),
        (
            "events_gap",
            "Flow events the peer gave up before we got them",
            |p| &p.gaps,
        ),
    ];
    for (name, help, get) in per_peer {
        if let Some(c) = counter_vec(
            r,
            &format!("flowgate_replication_{name}_total"),
            help,
            &["peer"],
        ) {
            for p in peers.iter().map(|p| p.as_ref()) {
                c.with_label_values(&[&p.addr]).inc_by(ld(get(p)));
            }
        }
    }
    if let Some(g) = gauge_vec(
        r,
        "flowgate_replication_lag_milliseconds",
        "Age of the oldest flow event the peer has not acknowledged (0: in sync)",
        &["peer"],
    ) {
        for p in peers.iter().map(|p| p.as_ref()) {
            g.with_label_values(&[&p.addr]).set(ld(&p.lag_ms) as i64);
        }
    }
    if let Some(g) = gauge_vec(
        r,
        "flowgate_replication_ack_delay_microseconds",
        "Last measured delay from an event leaving its worker to the peer's ACK",
        &["peer"],
    ) {
        for p in peers.iter().map(|p| p.as_ref()) {
            g.with_label_values(&[&p.addr])
                .set(ld(&p.ack_delay_us) as i64);
        }
    }
    if let Some(g) = gauge_vec(
        r,
        "flowgate_replication_peer_up",
        "1 when a datagram from the peer arrived within the last 450 ms (3 heartbeats of 150 ms)",
        &["peer"],
    ) {
        for p in peers.iter().map(|p| p.as_ref()) {
            g.with_label_values(&[&p.addr]).set(ld(&p.up) as i64);
        }
    }
    if let Some(c) = counter_vec(
        r,
        "flowgate_replication_datagrams_rejected_total",
        "Replication datagrams refused, by reason",
        &["reason"],
    ) {
        for (b, v) in Bad::ALL.iter().zip(&s.rejected) {
            c.with_label_values(&[b.name()]).inc_by(ld(v));
        }
        c.with_label_values(&["unknown_source"])
            .inc_by(ld(&s.unknown_source));
    }
    if let Some(c) = counter_vec(
        r,
        "flowgate_replication_events_dropped_total",
        "Flow events dropped on this node: worker event ring full, worker install ring full",
        &["reason"],
    ) {
        c.with_label_values(&["event_ring_full"])
            .inc_by(ld(&s.ring_dropped));
        c.with_label_values(&["install_ring_full"])
            .inc_by(ld(&s.install_dropped));
    }
    install_families(r, s);
    let scalars: [(&str, &str, &AtomicU64, bool); 4] = [
        (
            "flowgate_replication_events_installed_total",
            "Flow events handed to workers for installation",
            &s.installed,
            true,
        ),
        (
            "flowgate_replication_dumps_served_total",
            "Full dumps sent to restarting peers",
            &s.dumps_served,
            true,
        ),
        (
            "flowgate_replication_resync_milliseconds",
            "How long this node's full resync from its peers took",
            &s.resync_ms,
            false,
        ),
        (
            "flowgate_replication_ready",
            "1 once the start-up resync is complete",
            &s.ready,
            false,
        ),
    ];
    for (name, help, v, counter) in scalars {
        if counter {
            if let Some(c) = counter_vec(r, name, help, &[]) {
                c.with_label_values(&[]).inc_by(ld(v));
            }
        } else if let Some(g) = gauge_vec(r, name, help, &[]) {
            g.with_label_values(&[]).set(ld(v) as i64);
        }
    }
}

/// Per family (nat, lb): installs by outcome, and rejects by reason.
fn install_families(r: &Registry, s: &ReplStats) {
    let sum = |fam: &str, get: &dyn Fn(&super::InstallCounts) -> u64| -> u64 {
        s.workers
            .iter()
            .filter(|(f, _)| *f == fam)
            .map(|(_, c)| get(c))
            .sum()
    };
    if let Some(c) = counter_vec(
        r,
        "flowgate_replication_installs_total",
        "Replicated events applied by this node's workers, by flow family and outcome",
        &["family", "outcome"],
    ) {
        for fam in ["nat", "lb"] {
            c.with_label_values(&[fam, "installed"])
                .inc_by(sum(fam, &|c| ld(&c.installed)));
            c.with_label_values(&[fam, "updated"])
                .inc_by(sum(fam, &|c| ld(&c.updated)));
            c.with_label_values(&[fam, "deleted"])
                .inc_by(sum(fam, &|c| ld(&c.deleted)));
        }
    }
    if let Some(c) = counter_vec(
        r,
        "flowgate_replication_install_rejects_total",
        "Replicated events this node's workers refused, by flow family and reason",
        &["family", "reason"],
    ) {
        for fam in ["nat", "lb"] {
            for (i, why) in super::Reject::ALL.iter().enumerate() {
                c.with_label_values(&[fam, why.name()])
                    .inc_by(sum(fam, &|c| ld(&c.rejects[i])));
            }
        }
    }
}

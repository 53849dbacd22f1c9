//! ARP neighbor table and the queue of packets waiting for a next hop to resolve.
//!
//! Each worker owns one table. What a worker learns from ARP it reports to the control
//! thread, which fans the entry out to every worker (an ARP reply arrives on one queue
//! only, but any worker may be holding packets for that next hop).

use crate::wire::MacAddr;
use hashbrown::HashMap;
use std::collections::VecDeque;
use std::net::Ipv4Addr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neighbor {
    pub mac: Option<MacAddr>,
    /// TSC when the MAC was learned or confirmed.
    pub updated: u64,
    /// TSC of the last ARP request we sent for it (rate limit).
    pub last_request: u64,
}

/// What `lookup` says about a next hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// Known and fresh.
    Known(MacAddr),
    /// Known but older than the timeout: use it, and refresh with an ARP request now.
    Stale(MacAddr),
    /// Unknown: hold the packet; send an ARP request now if `true`.
    Unknown { send_request: bool },
}

pub struct NeighborTable {
    entries: HashMap<(u16, u32), Neighbor>,
    capacity: usize,
    /// Entries older than this (TSC cycles) are refreshed.
    timeout: u64,
    /// At most one ARP request per next hop per this many cycles.
    request_interval: u64,
    /// When the table is full, unknown next hops cannot be tracked one by one: they share
    /// this single rate limit (one request per interval in all).
    overflow_last_request: u64,
    /// The last fresh hit: most packets of a burst go to the same next hop (the VPC
    /// router), so one compare usually replaces the hash lookup.
    last: Option<((u16, u32), MacAddr, u64)>,
}

impl NeighborTable {
    pub fn new(capacity: usize, timeout_cycles: u64, request_interval_cycles: u64) -> Self {
        NeighborTable {
            // 2x: deleted slots are reclaimed by in-place rehash, not reallocation.
            entries: HashMap::with_capacity(2 * capacity + 1),
            capacity,
            timeout: timeout_cycles,
            request_interval: request_interval_cycles,
            overflow_last_request: 0,
            last: None,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Resolved entries (for metrics and the control thread).
    pub fn resolved(&self) -> usize {
        self.entries.values().filter(|n| n.mac.is_some()).count()
    }

    /// Record `ip` at `mac` on `port`. Returns false if the table is full.
    pub fn learn(&mut self, port: u16, ip: Ipv4Addr, mac: MacAddr, now: u64) -> bool {
        let key = (port, u32::from(ip));
        if matches!(self.last, Some((k, _, _)) if k == key) {
            self.last = Some((key, mac, now));
        }
        if let Some(e) = self.entries.get_mut(&key) {
            e.mac = Some(mac);
            e.updated = now;
            return true;
        }
        if self.entries.len() >= self.capacity {
            return false;
        }
        self.entries.insert(
            key,
            Neighbor {
                mac: Some(mac),
                updated: now,
                last_request: 0,
            },
        );
        true
    }

    /// The MAC known for a neighbor, without side effects.
    pub fn lookup_quiet(&self, port: u16, ip: Ipv4Addr) -> Option<MacAddr> {
        self.entries.get(&(port, u32::from(ip))).and_then(|e| e.mac)
    }

    /// The last fresh hit is answered here, inlined into the caller (most packets);
    /// anything else goes through the table (`lookup_table`, out of line).
    #[inline(always)]
    pub fn lookup(&mut self, port: u16, ip: Ipv4Addr, now: u64) -> Resolution {
        if let Some(((p, a), mac, updated)) = self.last {
            if p == port && a == u32::from(ip) && now.wrapping_sub(updated) < self.timeout {
                return Resolution::Known(mac);
            }
        }
        self.lookup_table(port, ip, now)
    }

    #[inline(never)]
    fn lookup_table(&mut self, port: u16, ip: Ipv4Addr, now: u64) -> Resolution {
        let key = (port, u32::from(ip));
        match self.entries.get_mut(&key) {
            Some(e) => match e.mac {
                Some(mac) if now.wrapping_sub(e.updated) < self.timeout => {
                    self.last = Some((key, mac, e.updated));
                    Resolution::Known(mac)
                }
                Some(mac) => {
                    if now.wrapping_sub(e.last_request) >= self.request_interval {
                        e.last_request = now;
                        // Refresh: one request; the answer re-arms `updated`.
                        return Resolution::Stale(mac);
                    }
                    Resolution::Known(mac)
                }
                None => {
                    let send = now.wrapping_sub(e.last_request) >= self.request_interval;
                    if send {
                        e.last_request = now;
                    }
                    Resolution::Unknown { send_request: send }
                }
            },
            None => {
                if self.entries.len() < self.capacity {
                    self.entries.insert(
                        key,
                        Neighbor {
                            mac: None,
                            updated: 0,
                            last_request: now,
                        },
                    );
                    return Resolution::Unknown { send_request: true };
                }
                let send = now.wrapping_sub(self.overflow_last_request) >= self.request_interval;
                if send {
                    self.overflow_last_request = now;
                }
                Resolution::Unknown { send_request: send }
            }
        }
    }

    /// Drop unresolved entries whose last request is older than `age` cycles, and
    /// resolved ones not confirmed for 4 timeouts, so the table cannot fill for good with
    /// addresses that never answer or are gone. Timer-paced, not per packet.
    pub fn expire_incomplete(&mut self, now: u64, age: u64) {
        self.last = None;
        let stale = self.timeout.saturating_mul(4);
        self.entries.retain(|_, e| match e.mac {
            Some(_) => now.wrapping_sub(e.updated) < stale,
            None => now.wrapping_sub(e.last_request) < age,
        });
    }
}

/// A packet waiting for its next hop's MAC.
pub struct Held<B> {
    pub pkt: B,
    pub port: u16,
    pub next_hop: Ipv4Addr,
    /// Egress MTU of the route that chose this next hop.
    pub mtu: u32,
    pub since: u64,
}

/// Bounded FIFO of held packets (preallocated; never grows).
pub struct PendingQueue<B> {
    q: VecDeque<Held<B>>,
    cap: usize,
}

impl<B> PendingQueue<B> {
    pub fn new(cap: usize) -> Self {
        PendingQueue {
            q: VecDeque::with_capacity(cap),
            cap,
        }
    }

    pub fn len(&self) -> usize {
        self.q.len()
    }

    pub fn is_empty(&self) -> bool {
        self.q.is_empty()
    }

    /// Hold a packet; gives it back if the queue is full.
    pub fn push(&mut self, h: Held<B>) -> Result<(), Held<B>> {
        if self.q.len() >= self.cap {
            return Err(h);
        }
        self.q.push_back(h);
        Ok(())
    }

    /// Remove and return every packet for (port, next_hop), in arrival order, via `f`.
    pub fn release(&mut self, port: u16, next_hop: Ipv4Addr, mut f: impl FnMut(Held<B>)) {
        if self.q.is_empty() {
            return;
        }
        let mut i = 0;
        while i < self.q.len() {
            if self.q[i].port == port && self.q[i].next_hop == next_hop {
                if let Some(h) = self.q.remove(i) {
                    f(h);
                }
            } else {
                i += 1;
            }
        }
    }

    /// Remove packets held longer than `max_age` cycles, via `f` (they are dropped).
    pub fn expire(&mut self, now: u64, max_age: u64, mut f: impl FnMut(Held<B>)) {
        while let Some(front) = self.q.front() {
            if now.wrapping_sub(front.since) < max_age {
                break;
            }
            if let Some(h) = self.q.pop_front() {
                f(h);
            }
        }
    }

    /// Remove everything (shutdown).
    pub fn drain(&mut self, f: impl FnMut(Held<B>)) {
        self.q.drain(..).for_each(f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn unknown_then_learned_then_stale() {
        let mut t = NeighborTable::new(8, 1000, 100);
        assert_eq!(
            t.lookup(0, ip("10.0.1.2"), 10),
            Resolution::Unknown { send_request: true }
        );
        // Rate limited while unresolved.
        assert_eq!(
            t.lookup(0, ip("10.0.1.2"), 50),
            Resolution::Unknown {
                send_request: false
            }
        );
        assert_eq!(
            t.lookup(0, ip("10.0.1.2"), 120),
            Resolution::Unknown { send_request: true }
        );
        assert!(t.learn(0, ip("10.0.1.2"), M, 200));
        assert_eq!(t.lookup(0, ip("10.0.1.2"), 300), Resolution::Known(M));
        // Same IP on another port is a different neighbor.
        assert!(matches!(
            t.lookup(1, ip("10.0.1.2"), 300),
            Resolution::Unknown { .. }
        ));
        assert_eq!(t.lookup(0, ip("10.0.1.2"), 1300), Resolution::Stale(M));
        assert_eq!(t.lookup(0, ip("10.0.1.2"), 1301), Resolution::Known(M));
        assert_eq!(t.resolved(), 1);
    }

    #[test]
    fn bounded_capacity_and_expiry_of_incomplete() {
        let mut t = NeighborTable::new(2, 1000, 100);
        t.lookup(0, ip("10.0.0.1"), 0);
        t.lookup(0, ip("10.0.0.2"), 0);
        t.lookup(0, ip("10.0.0.3"), 0);
        assert_eq!(t.len(), 2);
        assert!(!t.learn(0, ip("10.0.0.9"), M, 1));
        t.expire_incomplete(10_000, 5000);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn pending_queue_release_and_expire() {
        let mut q: PendingQueue<u32> = PendingQueue::new(3);
        let nh = ip("10.0.1.2");
        let other = ip("10.0.1.3");
        for (i, h) in [nh, other, nh].iter().enumerate() {
            q.push(Held {
                pkt: i as u32,
                port: 0,
                next_hop: *h,
                mtu: 1500,
                since: i as u64,
            })
            .ok()
            .unwrap();
        }
        assert!(q
            .push(Held {
                pkt: 9,
                port: 0,
                next_hop: nh,
                mtu: 1500,
                since: 9
            })
            .is_err());
        let mut got = vec![];
        q.release(0, nh, |h| got.push(h.pkt));
        assert_eq!(got, vec![0, 2]);
        assert_eq!(q.len(), 1);
        let mut expired = vec![];
        q.expire(100, 50, |h| expired.push(h.pkt));
        assert_eq!(expired, vec![1]);
        assert!(q.is_empty());
    }
}

//! The per-worker, per-gateway flow table (NAT and LB): a preallocated slab of compact
//! entries, reachable from both directions through two `FlowIndex`es (bucketised cuckoo,
//! one cache line per bucket, signature + slot number per slot; see `flow_index`).
//!
//! Why two indexes of slot numbers rather than one map per direction holding the entry:
//! the entry is stored once (24 bytes + a 4-byte wheel link, plus 28 of TCP state in TCP
//! slots) and each index costs ~4.6 bytes per slot.
//!
//! TCP window state is kept only for the first `tcp_capacity` slots ("TCP slots"): a TCP
//! flow always takes one of them, a UDP/ICMP flow takes another slot while there is one
//! and a TCP slot otherwise (so a UDP-only load can use the whole table). Why: the window
//! state is more than half of a slot, and UDP/ICMP flows never read it; an operator whose
//! load is not all TCP sizes the TCP share (`tcp_flows_per_core`) and saves 28 B per slot
//! left out. The slot number is the index into the window array, so nothing is spent on
//! finding it. Everything is created with the full capacity up front,
//! on huge pages when the pool has them (`pmd::hugemem`), and never grows: inserting never
//! allocates, rehashes or rebuilds on the packet path, and deleting leaves no tombstone.

use super::expiry::NIL;
use super::flow_index::{FlowIndex, MAX_CAPACITY};
use super::tcp_state::TcpWin;
use crate::pmd::hugemem::{prefetch, HugeArray};
use std::net::Ipv4Addr;

/// One side of a mapping as seen on the wire: `local` is the inside endpoint (inside index)
/// or the public endpoint (outside index). ICMP echo uses the identifier as `local_port`
/// and 0 as `remote_port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    pub proto: u8,
    pub local_ip: u32,
    pub local_port: u16,
    pub remote_ip: u32,
    pub remote_port: u16,
}

impl Key {
    pub fn new(proto: u8, local: Ipv4Addr, lport: u16, remote: Ipv4Addr, rport: u16) -> Key {
        Key {
            proto,
            local_ip: u32::from(local),
            local_port: lport,
            remote_ip: u32::from(remote),
            remote_port: rport,
        }
    }
}

/// TCP/flow state bits kept in `Flow::state`.
pub mod st {
    /// Low 4 bits: the TCP state (see `tcp_state`); 0 for UDP/ICMP.
    pub const TCP_MASK: u8 = 0x0f;
    /// A packet came back from the remote (UDP/ICMP "established").
    pub const SEEN_REPLY: u8 = 0x10;
    /// `rfc4787` mode: the inside endpoint has sent on this flow, so it holds a filtering
    /// permission for its remote IP (see `eim`).
    pub const ALLOWS: u8 = 0x40;
    /// Installed from a peer (replication) and not touched by a packet here since.
    pub const REPLICA: u8 = 0x20;
    /// Unindexed, waiting for the wheel to free the slot.
    pub const DEAD: u8 = 0x80;
}

/// A mapping. Addresses are host-order `u32`s to keep the entry at 24 bytes (TCP window
/// state is kept apart, in `FlowTable::tcp`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flow {
    pub inside_ip: u32,
    pub remote_ip: u32,
    pub public_ip: u32,
    pub inside_port: u16,
    pub remote_port: u16,
    pub public_port: u16,
    pub proto: u8,
    pub state: u8,
    /// Expiry tick (see `expiry`): refreshed by every packet.
    pub deadline: u32,
}

impl Flow {
    pub fn in_key(&self) -> Key {
        Key {
            proto: self.proto,
            local_ip: self.inside_ip,
            local_port: self.inside_port,
            remote_ip: self.remote_ip,
            remote_port: self.remote_port,
        }
    }
    pub fn out_key(&self) -> Key {
        Key {
            proto: self.proto,
            local_ip: self.public_ip,
            local_port: self.public_port,
            remote_ip: self.remote_ip,
            remote_port: self.remote_port,
        }
    }
    pub fn inside(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.inside_ip)
    }
    pub fn public(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.public_ip)
    }
    pub fn remote(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.remote_ip)
    }
    pub fn is_dead(&self) -> bool {
        self.state & st::DEAD != 0
    }
}

/// Keyed 64-bit mix of a key (not cryptographic; the per-worker random seed keeps an
/// outsider from aiming many keys at one bucket chain).
#[inline]
pub fn hash_key(seed: u64, k: &Key) -> u64 {
    let a = (u64::from(k.local_ip) << 32) | u64::from(k.remote_ip);
    let b = (u64::from(k.proto) << 32) | (u64::from(k.local_port) << 16) | u64::from(k.remote_port);
    mix2(seed, a, b)
}

#[inline]
pub fn mix2(seed: u64, a: u64, b: u64) -> u64 {
    let mut h = (a ^ seed).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    h = (h.rotate_left(31) ^ b).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    h ^= h >> 29;
    h = h.wrapping_mul(0x1656_67B1_9E37_79F9);
    h ^ (h >> 32)
}

pub struct FlowTable {
    flows: HugeArray<Flow>,
    /// TCP window tracking of the TCP slots `0..tcp.len()` (`tcp_state`), reset when a
    /// slot is taken.
    tcp: HugeArray<TcpWin>,
    /// Wheel link of an armed flow, or free-list link of a free slot.
    pub next: HugeArray<u32>,
    /// Free TCP slots (`< tcp.len()`), and free other slots.
    free_tcp: u32,
    free_other: u32,
    by_in: FlowIndex,
    by_out: FlowIndex,
    /// Slots in use (live or dead-but-not-yet-freed).
    used: usize,
    /// Live (indexed) flows.
    live: usize,
    seed: u64,
}

impl FlowTable {
    /// A table whose every slot can hold a TCP flow.
    pub fn new(capacity: usize, seed: u64) -> FlowTable {
        Self::with_tcp_slots(capacity, capacity, seed)
    }

    /// A table of `capacity` slots of which `tcp_slots` (at most all) carry TCP window
    /// state: at most that many TCP flows at once, every slot for UDP/ICMP.
    pub fn with_tcp_slots(capacity: usize, tcp_slots: usize, seed: u64) -> FlowTable {
        let cap = capacity.clamp(1, MAX_CAPACITY);
        let n_tcp = tcp_slots.min(cap);
        // Two free lists, each in slot order: 0..n_tcp and n_tcp..cap.
        let link = |i: usize| {
            if i + 1 == n_tcp || i + 1 == cap {
                NIL
            } else {
                i as u32 + 1
            }
        };
        let head = |first: usize| if first < cap { first as u32 } else { NIL };
        FlowTable {
            // Written rather than left zero: pages faulted in at start, not per packet.
            flows: HugeArray::filled(cap, Flow::default()),
            tcp: HugeArray::filled(n_tcp, TcpWin::default()),
            next: HugeArray::from_fn(cap, link),
            free_tcp: if n_tcp > 0 { 0 } else { NIL },
            free_other: head(n_tcp),
            by_in: FlowIndex::new(cap),
            by_out: FlowIndex::new(cap),
            used: 0,
            live: 0,
            seed,
        }
    }

    pub fn capacity(&self) -> usize {
        self.flows.len()
    }
    /// Slots that can hold a TCP flow (they carry window state).
    pub fn tcp_capacity(&self) -> usize {
        self.tcp.len()
    }
    /// Live flows (reachable by lookup).
    pub fn len(&self) -> usize {
        self.live
    }
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }
    /// Bytes held by the slab, the TCP state, the link array and both indexes.
    pub fn memory_bytes(&self) -> usize {
        self.flows.bytes()
            + self.tcp.bytes()
            + self.next.bytes()
            + self.by_in.memory_bytes()
            + self.by_out.memory_bytes()
    }
    /// Whether the big arrays got explicit huge pages (`MAP_HUGETLB`).
    pub fn on_hugetlb(&self) -> bool {
        self.flows.is_hugetlb() && self.by_in.on_hugetlb()
    }

    pub fn get(&self, idx: u32) -> Option<&Flow> {
        self.flows.get(idx as usize)
    }
    pub fn get_mut(&mut self, idx: u32) -> Option<&mut Flow> {
        self.flows.get_mut(idx as usize)
    }
    /// The flow and its TCP window state.
    pub fn get_tcp_mut(&mut self, idx: u32) -> Option<(&mut Flow, &mut TcpWin)> {
        Some((
            self.flows.get_mut(idx as usize)?,
            self.tcp.get_mut(idx as usize)?,
        ))
    }

    /// The seed of `hash_key` for this table (burst lookahead hashes once, ahead).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Starts loading the index line a lookup of the key hashed to `h` (`hash_key`) will
    /// read first, in the outside index if `outside` else the inside one.
    #[inline]
    pub fn prefetch_bucket(&self, outside: bool, h: u64) {
        if outside {
            self.by_out.prefetch(h)
        } else {
            self.by_in.prefetch(h)
        }
    }

    /// Starts loading the entries whose signature matches `h` (their bucket should be in
    /// cache by now): the entry the lookup will compare and the packet then update. Keys
    /// are not compared here: that would wait for the very line being prefetched.
    #[inline]
    pub fn prefetch_entry(&self, outside: bool, h: u64) {
        let flows = &self.flows;
        let index = if outside { &self.by_out } else { &self.by_in };
        index.candidates(h, |i| {
            if let Some(f) = flows.get(i as usize) {
                prefetch(f);
            }
        });
    }

    #[inline]
    pub fn lookup_in(&self, k: &Key) -> Option<u32> {
        let flows = &self.flows;
        self.by_in.find(hash_key(self.seed, k), |i| {
            flows.get(i as usize).is_some_and(|f| f.in_key() == *k)
        })
    }

    #[inline]
    pub fn lookup_out(&self, k: &Key) -> Option<u32> {
        self.lookup_out_hashed(k, hash_key(self.seed, k))
    }

    /// `lookup_out` with `h = hash_key(self.seed(), k)` (kept for `insert_hashed`).
    #[inline]
    pub fn lookup_out_hashed(&self, k: &Key, h: u64) -> Option<u32> {
        let flows = &self.flows;
        self.by_out.find(h, |i| {
            flows.get(i as usize).is_some_and(|f| f.out_key() == *k)
        })
    }

    /// Stores `flow` and indexes it both ways. `None` when the table is full (nothing
    /// changes). The caller must have checked that neither key is present, and must arm
    /// the returned slot in the timer wheel.
    pub fn insert(&mut self, flow: Flow) -> Option<u32> {
        let seed = self.seed;
        self.insert_hashed(
            flow,
            hash_key(seed, &flow.in_key()),
            hash_key(seed, &flow.out_key()),
        )
    }

    /// `insert` with the keys' hashes (`hash_key` of `in_key()` and `out_key()`) already
    /// computed by the caller's lookups.
    pub fn insert_hashed(&mut self, flow: Flow, h_in: u64, h_out: u64) -> Option<u32> {
        // TCP flows need a TCP slot; others take one only when no other slot is left.
        let idx = if flow.proto == crate::wire::IPPROTO_TCP || self.free_other == NIL {
            self.free_tcp
        } else {
            self.free_other
        };
        if idx == NIL || self.live >= self.flows.len() {
            return None;
        }
        *self.flows.get_mut(idx as usize)? = flow;
        let seed = self.seed;
        let flows = &self.flows;
        let in_key = |i: u32| {
            flows
                .get(i as usize)
                .map_or(0, |f| hash_key(seed, &f.in_key()))
        };
        let out_key = |i: u32| {
            flows
                .get(i as usize)
                .map_or(0, |f| hash_key(seed, &f.out_key()))
        };
        // Each index holds at most `capacity` entries at ≤ 92 % of its slots, so a refusal
        // (no cuckoo path found) is rare; it is undone and reported as a full table.
        let ok = self.by_in.insert(h_in, idx, in_key)
            && (self.by_out.insert(h_out, idx, out_key) || !self.by_in.remove(h_in, idx));
        if !ok {
            if let Some(f) = self.flows.get_mut(idx as usize) {
                *f = Flow::default();
            }
            return None;
        }
        if let Some(w) = self.tcp.get_mut(idx as usize) {
            *w = TcpWin::default();
        }
        let rest = self.next.get(idx as usize).copied().unwrap_or(NIL);
        if (idx as usize) < self.tcp.len() {
            self.free_tcp = rest;
        } else {
            self.free_other = rest;
        }
        self.used += 1;
        self.live += 1;
        Some(idx)
    }

    /// Removes the flow from both indexes and marks it dead; its slot stays allocated (it
    /// is still linked in the timer wheel) until `free`.
    pub fn unindex(&mut self, idx: u32) {
        let Some(f) = self.flows.get(idx as usize).copied() else {
            return;
        };
        self.unindex_flow(idx, &f);
    }

    /// `unindex` for a caller that has just read slot `idx` as `f` (no second copy).
    #[inline]
    pub fn unindex_flow(&mut self, idx: u32, f: &Flow) {
        if f.is_dead() {
            return;
        }
        self.by_in.remove(hash_key(self.seed, &f.in_key()), idx);
        self.by_out.remove(hash_key(self.seed, &f.out_key()), idx);
        if let Some(f) = self.flows.get_mut(idx as usize) {
            f.state |= st::DEAD;
        }
        self.live -= 1;
    }

    /// Returns a dead slot to the free list (called by the wheel once it unlinked it).
    pub fn free(&mut self, idx: u32) {
        let (Some(f), Some(link)) = (
            self.flows.get_mut(idx as usize),
            self.next.get_mut(idx as usize),
        ) else {
            return;
        };
        if !f.is_dead() {
            return;
        }
        *f = Flow::default();
        let head = if (idx as usize) < self.tcp.len() {
            &mut self.free_tcp
        } else {
            &mut self.free_other
        };
        *link = *head;
        *head = idx;
        self.used -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(n: u32) -> Flow {
        Flow {
            inside_ip: 0x0a00_0001,
            remote_ip: 0x0808_0808,
            public_ip: 0xcb00_710a,
            inside_port: n as u16,
            remote_port: 53,
            public_port: 10_000 + n as u16,
            proto: 17,
            ..Flow::default()
        }
    }

    #[test]
    fn both_ways_bounded_and_slots_reused() {
        let mut t = FlowTable::new(100, 7);
        let mut idx = Vec::new();
        for n in 0..100 {
            idx.push(t.insert(flow(n)).unwrap());
        }
        assert_eq!(t.insert(flow(100)), None, "full");
        assert_eq!(t.len(), 100);
        let f = flow(42);
        assert_eq!(t.lookup_in(&f.in_key()), Some(idx[42]));
        assert_eq!(t.lookup_out(&f.out_key()), Some(idx[42]));
        t.unindex(idx[42]);
        assert_eq!(t.lookup_in(&f.in_key()), None);
        assert_eq!(t.lookup_out(&f.out_key()), None);
        assert_eq!(t.insert(flow(100)), None, "dead slot not yet freed");
        t.free(idx[42]);
        let again = t.insert(flow(100)).unwrap();
        assert_eq!(again, idx[42]);
        assert_eq!(t.lookup_out(&flow(100).out_key()), Some(again));
        for n in 0..100 {
            if n != 42 {
                assert_eq!(t.lookup_in(&flow(n).in_key()), Some(idx[n as usize]));
            }
        }
    }

    #[test]
    fn churn_at_full_capacity_never_reallocates_the_indexes() {
        let cap = 1000;
        let mut t = FlowTable::new(cap, 3);
        let mut live: Vec<u32> = (0..cap as u32)
            .map(|n| t.insert(flow(n)).unwrap())
            .collect();
        let bytes = t.memory_bytes();
        let mut rng = crate::rng::Rng::new(0x9e37_79b9);
        for n in cap as u32..200_000 {
            let victim = rng.below(cap);
            t.unindex(live[victim]);
            t.free(live[victim]);
            let mut f = flow(n % 50_000);
            f.remote_ip = n;
            live[victim] = t.insert(f).expect("a slot was freed");
            assert_eq!(
                t.memory_bytes(),
                bytes,
                "index tables reallocated at churn {n}"
            );
        }
        assert_eq!(t.len(), cap);
    }

    #[test]
    fn churn_at_capacity_keeps_both_directions_and_leaves_no_tombstones() {
        // A table kept full (every index at its design load) while flows are replaced at
        // random: every live flow stays reachable both ways, every removed one is gone
        // from both, and the indexes hold exactly the live flows (no tombstones).
        let cap = 20_000;
        let mut t = FlowTable::new(cap, 11);
        let mk = |n: u32| Flow {
            remote_ip: n.wrapping_mul(2_654_435_761),
            public_port: (n % 60_000) as u16,
            ..flow(n)
        };
        let mut live: Vec<(u32, Flow)> = (0..cap as u32)
            .map(|n| (t.insert(mk(n)).expect("room"), mk(n)))
            .collect();
        assert_eq!(t.insert(mk(cap as u32)), None, "full table refused");
        let mut rng = crate::rng::Rng::new(5);
        for n in cap as u32 + 1..400_000 {
            let v = rng.below(cap);
            let (idx, old) = live[v];
            t.unindex(idx);
            assert_eq!(t.lookup_in(&old.in_key()), None);
            assert_eq!(t.lookup_out(&old.out_key()), None);
            t.free(idx);
            let f = mk(n);
            let i = t.insert(f).expect("a slot was freed");
            assert_eq!(t.lookup_in(&f.in_key()), Some(i));
            assert_eq!(t.lookup_out(&f.out_key()), Some(i));
            live[v] = (i, f);
        }
        assert_eq!((t.len(), t.by_in.len(), t.by_out.len()), (cap, cap, cap));
        for &(i, f) in &live {
            assert_eq!(t.lookup_in(&f.in_key()), Some(i));
            assert_eq!(t.lookup_out(&f.out_key()), Some(i));
            assert_eq!(t.get(i), Some(&f));
        }
        // Emptied, it is as new.
        for &(i, _) in &live {
            t.unindex(i);
            t.free(i);
        }
        assert_eq!((t.len(), t.by_in.len(), t.by_out.len()), (0, 0, 0));
    }

    #[test]
    fn in_and_out_keys_do_not_alias() {
        // A flow's out key equal to another flow's in key: each direction finds its own.
        let mut t = FlowTable::new(8, 2);
        let a = flow(1);
        let b = Flow {
            inside_ip: a.public_ip,
            inside_port: a.public_port,
            public_ip: 0xcb00_710b,
            ..a
        };
        let (ia, ib) = (t.insert(a).unwrap(), t.insert(b).unwrap());
        assert_eq!(a.out_key(), b.in_key());
        assert_eq!(t.lookup_out(&a.out_key()), Some(ia));
        assert_eq!(t.lookup_in(&b.in_key()), Some(ib));
        assert_eq!(t.lookup_in(&a.in_key()), Some(ia));
        assert_eq!(t.lookup_out(&b.out_key()), Some(ib));
    }

    #[test]
    fn tcp_flows_only_in_tcp_slots_others_anywhere() {
        let mut t = FlowTable::with_tcp_slots(10, 4, 5);
        assert_eq!((t.capacity(), t.tcp_capacity()), (10, 4));
        let tcp = |n| Flow {
            proto: crate::wire::IPPROTO_TCP,
            ..flow(n)
        };
        // UDP takes the 6 other slots first, then a TCP slot.
        let udp: Vec<u32> = (0..7).map(|n| t.insert(flow(n)).unwrap()).collect();
        assert!(udp[..6].iter().all(|&i| i >= 4), "{udp:?}");
        assert!(udp[6] < 4);
        assert!(t.get_tcp_mut(udp[0]).is_none(), "no window state there");
        let tc: Vec<u32> = (100..103).map(|n| t.insert(tcp(n)).unwrap()).collect();
        assert!(tc.iter().all(|&i| i < 4 && t.get_tcp_mut(i).is_some()));
        assert_eq!(t.insert(tcp(103)), None, "full");
        // A freed other slot takes UDP again, never TCP.
        t.unindex(udp[0]);
        t.free(udp[0]);
        assert_eq!(t.insert(tcp(103)), None, "no TCP slot free");
        assert_eq!(t.insert(flow(50)), Some(udp[0]));
        // A freed TCP slot takes TCP, its window state reset.
        if let Some((_, w)) = t.get_tcp_mut(tc[1]) {
            *w = crate::nat::tcp_state::from_scales([0x87, 0x87]);
        }
        t.unindex(tc[1]);
        t.free(tc[1]);
        assert_eq!(t.insert(tcp(104)), Some(tc[1]));
        assert_eq!(
            t.get_tcp_mut(tc[1]).map(|(_, w)| *w),
            Some(TcpWin::default())
        );
        for (i, f) in [(tc[1], tcp(104)), (udp[0], flow(50)), (udp[6], flow(6))] {
            assert_eq!(t.lookup_in(&f.in_key()), Some(i));
            assert_eq!(t.lookup_out(&f.out_key()), Some(i));
        }
        // No TCP slots at all (the load balancer's case if it never tracks windows).
        let mut t = FlowTable::with_tcp_slots(3, 0, 5);
        assert_eq!(t.insert(tcp(1)), None);
        assert!((0..3).all(|n| t.insert(flow(n)).is_some()));
    }

    #[test]
    fn flow_entry_size() {
        // Reported in docs: the entry itself, and what the table costs per flow overall,
        // with window state in every slot (the default), half of them, and none.
        for cap in [200_000, 1_000_000] {
            for tcp in [cap, cap / 2, 0] {
                let t = FlowTable::with_tcp_slots(cap, tcp, 1);
                let per_flow = t.memory_bytes() as f64 / cap as f64;
                println!(
                    "size_of::<Flow>() = {} B, TCP window = {} B, wheel/free link = 4 B, \
                     indexes {:.2} B (2 x 64 B buckets of 15); {} slots, {} TCP: {} bytes \
                     total = {:.1} B/slot; MAP_HUGETLB: {}",
                    std::mem::size_of::<Flow>(),
                    std::mem::size_of::<TcpWin>(),
                    (t.by_in.memory_bytes() + t.by_out.memory_bytes()) as f64 / cap as f64,
                    cap,
                    tcp,
                    t.memory_bytes(),
                    per_flow,
                    t.on_hugetlb(),
                );
                assert_eq!(std::mem::size_of::<Flow>(), 24);
                assert_eq!(std::mem::size_of::<TcpWin>(), 28);
                // 28 B of entry + 28 per TCP slot + ~9.3 B of indexes, plus page rounding.
                let want = 37.5 + 28.0 * tcp as f64 / cap as f64;
                assert!(per_flow <= want + 1.0, "{per_flow} > {want}");
            }
        }
    }
}

//! TIME_WAIT guard (issue 8 item 12): after a TCP connection through the NAT closed, the
//! remote still holds it in TIME_WAIT (2 MSL, 60-240 s) and would answer a new SYN on the
//! same 4-tuple with a stale ACK or drop it. So its (public IP, public port) is not handed
//! out again toward the same (remote IP, remote port) for a guard time, even when the
//! mapping itself expired long before (short transitory timeouts). Only when nothing but
//! guarded ports is left below the limit is the one closed longest ago taken (counted).
//!
//! Storage: a preallocated FIFO ring of closed keys in close order (the guard time is the
//! same for all, so they also expire in that order) plus a hashbrown index of ring
//! positions, sized at start like the flow indexes (twice the entries: in-place rehash
//! only, never a reallocation on the packet path). A full ring forgets its oldest entry
//! early. 16 bytes per entry + 10 bytes of index.

use super::expiry::is_due;
use super::flow::mix2;
use hashbrown::HashTable;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GuardKey {
    pub remote_ip: u32,
    /// public IP index << 16 | public port.
    pub public: u32,
    pub remote_port: u16,
}

impl GuardKey {
    pub fn new(pip_idx: usize, public_port: u16, remote_ip: u32, remote_port: u16) -> Self {
        GuardKey {
            remote_ip,
            public: ((pip_idx as u32 & 0xff) << 16) | u32::from(public_port),
            remote_port,
        }
    }
}

/// The key's fields flattened so that the flag fits in its padding (16 bytes).
#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    remote_ip: u32,
    public: u32,
    remote_port: u16,
    /// Still indexed (false: forgotten or re-inserted, waiting to leave the ring).
    live: bool,
    /// Tick of the close.
    closed: u32,
}

impl Entry {
    fn key(&self) -> GuardKey {
        GuardKey {
            remote_ip: self.remote_ip,
            public: self.public,
            remote_port: self.remote_port,
        }
    }
}

/// `cap` default entries, written (not `calloc`ed) so that the pages are faulted in at
/// start-up rather than on the packet path.
fn prefaulted(cap: usize) -> Vec<Entry> {
    let mut v = Vec::with_capacity(cap);
    v.resize(cap, Entry::default());
    v
}

pub struct TimeWaitGuard {
    ring: Vec<Entry>,
    head: usize,
    len: usize,
    index: HashTable<u32>,
    /// Guard time in ticks (0: disabled).
    guard: u32,
    seed: u64,
}

impl TimeWaitGuard {
    pub fn new(capacity: usize, guard_ticks: u32, seed: u64) -> Self {
        let cap = if guard_ticks == 0 { 1 } else { capacity.max(1) };
        TimeWaitGuard {
            ring: prefaulted(cap),
            head: 0,
            len: 0,
            index: HashTable::with_capacity(2 * cap + 1),
            guard: guard_ticks,
            seed,
        }
    }

    #[inline]
    fn hash(seed: u64, k: &GuardKey) -> u64 {
        mix2(
            seed,
            (u64::from(k.remote_ip) << 32) | u64::from(k.public),
            u64::from(k.remote_port),
        )
    }

    fn find(&self, k: &GuardKey) -> Option<usize> {
        let ring = &self.ring;
        self.index
            .find(Self::hash(self.seed, k), |&i| {
                ring.get(i as usize)
                    .is_some_and(|e| e.live && e.key() == *k)
            })
            .map(|&i| i as usize)
    }

    /// How long ago (ticks) `k` closed, if it is still guarded at `now`.
    #[inline]
    pub fn age(&self, k: &GuardKey, now: u32) -> Option<u32> {
        if self.len == 0 {
            return None;
        }
        let e = self.ring.get(self.find(k)?)?;
        let age = now.wrapping_sub(e.closed);
        (age < self.guard).then_some(age)
    }

    /// Forgets `k` (its port was taken again).
    pub fn remove(&mut self, k: &GuardKey) {
        let Some(pos) = self.find(k) else {
            return;
        };
        self.unindex(pos);
    }

    fn unindex(&mut self, pos: usize) {
        let Some(e) = self.ring.get_mut(pos) else {
            return;
        };
        if !e.live {
            return;
        }
        e.live = false;
        let k = e.key();
        if let Ok(o) = self
            .index
            .find_entry(Self::hash(self.seed, &k), |&i| i as usize == pos)
        {
            o.remove();
        }
    }

    /// `k` closed at `now`: guarded from now on.
    pub fn insert(&mut self, k: GuardKey, now: u32) {
        if self.guard == 0 {
            return;
        }
        self.remove(&k);
        if self.len == self.ring.len() {
            self.pop_front();
        }
        let cap = self.ring.len();
        let mut pos = self.head + self.len;
        if pos >= cap {
            pos -= cap;
        }
        if let Some(e) = self.ring.get_mut(pos) {
            *e = Entry {
                remote_ip: k.remote_ip,
                public: k.public,
                remote_port: k.remote_port,
                live: true,
                closed: now,
            };
        }
        self.len += 1;
        let (seed, ring) = (self.seed, &self.ring);
        self.index
            .insert_unique(Self::hash(seed, &k), pos as u32, |&i| {
                ring.get(i as usize)
                    .map_or(0, |e| Self::hash(seed, &e.key()))
            });
    }

    fn pop_front(&mut self) {
        if self.len == 0 {
            return;
        }
        self.unindex(self.head);
        self.head += 1;
        if self.head == self.ring.len() {
            self.head = 0;
        }
        self.len -= 1;
    }

    /// Forgets entries whose guard ended, at most `budget` of them.
    pub fn expire(&mut self, now: u32, budget: u32) {
        for _ in 0..budget {
            let Some(e) = self.ring.get(self.head).copied() else {
                return;
            };
            if self.len == 0 || (e.live && !is_due(e.closed.wrapping_add(self.guard), now)) {
                return;
            }
            self.pop_front();
        }
    }

    /// Keys in the guard (live or not yet popped).
    pub fn len(&self) -> usize {
        self.index.len()
    }
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }
    pub fn memory_bytes(&self) -> usize {
        self.ring.len() * std::mem::size_of::<Entry>() + self.index.allocation_size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guarded_until_the_guard_ends_then_forgotten() {
        let mut g = TimeWaitGuard::new(4, 100, 1);
        let a = GuardKey::new(0, 1024, 7, 80);
        let b = GuardKey::new(0, 1025, 7, 80);
        g.insert(a, 10);
        g.insert(b, 50);
        assert_eq!(g.age(&a, 60), Some(50));
        assert_eq!(
            g.age(&GuardKey::new(1, 1024, 7, 80), 60),
            None,
            "per public IP"
        );
        assert_eq!(
            g.age(&GuardKey::new(0, 1024, 7, 81), 60),
            None,
            "per destination"
        );
        assert_eq!(g.age(&a, 110), None, "guard over");
        g.expire(110, 10);
        assert_eq!(g.len(), 1);
        assert_eq!(g.age(&b, 110), Some(60));
        g.remove(&b);
        assert_eq!(g.age(&b, 110), None);
        g.expire(200, 10);
        assert!(g.is_empty());
    }

    #[test]
    fn a_full_ring_forgets_its_oldest_and_never_reallocates() {
        let mut g = TimeWaitGuard::new(8, 1000, 2);
        let bytes = g.memory_bytes();
        for i in 0..100_000u32 {
            g.insert(GuardKey::new(0, (i % 60_000) as u16, i, 80), i / 100);
            if i % 3 == 0 {
                g.expire(i / 100, 4);
            }
        }
        assert!(g.len() <= 8);
        assert_eq!(std::mem::size_of::<Entry>(), 16);
        assert_eq!(g.memory_bytes(), bytes);
        let last = GuardKey::new(0, (99_999 % 60_000) as u16, 99_999, 80);
        assert!(g.age(&last, 1000).is_some());
        assert_eq!(g.age(&GuardKey::new(0, 0, 0, 80), 1000), None);
        // Re-inserting a key moves it to the back.
        g.insert(last, 1001);
        assert_eq!(g.age(&last, 1001), Some(0));
    }
}

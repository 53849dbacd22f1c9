//! `rfc4787` mode state: endpoint-independent mappings (RFC 4787 REQ-1, RFC 5382 REQ-1) and
//! the permissions of address-dependent filtering (RFC 4787 REQ-8).
//!
//! A mapping binds one inside endpoint (proto, inside IP, inside port or ICMP identifier)
//! to one public endpoint (proto, public IP, public port), whatever the destination. Every
//! flow of an `rfc4787` gateway belongs to exactly one mapping (found through the flow's
//! own inside or public endpoint, so the 32-byte flow entry needs no extra field) and the
//! mapping counts its live flows: it is created with the first flow and removed when the
//! last one is retired (by the timer wheel, or by a lookup finding it expired), never on
//! its own. While it lives, its public endpoint is taken for every destination, so port
//! allocation asks "is (proto, public IP, port) free?" here instead of the per-destination
//! question of `aws` mode.
//!
//! A permission (proto, public IP, public port, remote IP) says the inside endpoint has
//! sent to that remote IP. It counts the flows toward that IP on which the inside endpoint
//! has sent (flow bit `st::ALLOWS`); inbound packets to the public endpoint are accepted
//! from any port of a permitted IP (a new remote port gets its own flow, bound to the same
//! mapping) and refused (`NatFiltered`) from any other IP.
//!
//! Bounds: every mapping and every permission is held by at least one live flow, so both
//! never hold more entries than the flow table's capacity; both are preallocated at that
//! capacity and refuse to grow (no allocation on the packet path).

use super::flow::{mix2, Flow};
use hashbrown::HashTable;

/// One endpoint-independent mapping. Addresses are host-order `u32`s.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Mapping {
    pub inside_ip: u32,
    pub public_ip: u32,
    /// Live flows using this mapping.
    pub refs: u32,
    pub inside_port: u16,
    pub public_port: u16,
    pub proto: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Perm {
    public_ip: u32,
    remote_ip: u32,
    refs: u32,
    public_port: u16,
    proto: u8,
}

#[inline]
fn ep_hash(seed: u64, proto: u8, ip: u32, port: u16) -> u64 {
    mix2(
        seed,
        (u64::from(ip) << 16) | u64::from(port),
        u64::from(proto),
    )
}

#[inline]
fn perm_hash(seed: u64, proto: u8, public_ip: u32, public_port: u16, remote_ip: u32) -> u64 {
    mix2(
        seed ^ 0x7065_726d,
        (u64::from(public_ip) << 32) | u64::from(remote_ip),
        (u64::from(proto) << 16) | u64::from(public_port),
    )
}

pub struct Eim {
    maps: Vec<Mapping>,
    /// Free slab slots (a stack preallocated at full capacity: never reallocates).
    free: Vec<u32>,
    by_inside: HashTable<u32>,
    by_public: HashTable<u32>,
    perms: HashTable<Perm>,
    cap: usize,
    seed: u64,
}

impl Eim {
    pub fn new(capacity: usize, seed: u64) -> Eim {
        let cap = capacity.clamp(1, (u32::MAX - 1) as usize);
        Eim {
            maps: vec![Mapping::default(); cap],
            free: (0..cap as u32).rev().collect(),
            // 2x: deleted slots are then reclaimed by in-place rehash, never by a
            // reallocation on the packet path (see flow.rs).
            by_inside: HashTable::with_capacity(2 * cap + 1),
            by_public: HashTable::with_capacity(2 * cap + 1),
            perms: HashTable::with_capacity(2 * cap + 1),
            cap,
            seed,
        }
    }

    /// Live mappings.
    pub fn len(&self) -> usize {
        self.cap - self.free.len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Live permissions (distinct (public endpoint, remote IP) pairs).
    pub fn permissions(&self) -> usize {
        self.perms.len()
    }
    pub fn capacity(&self) -> usize {
        self.cap
    }
    /// Bytes held by the slab, the free stack and the three tables.
    pub fn memory_bytes(&self) -> usize {
        self.maps.len() * std::mem::size_of::<Mapping>()
            + self.free.capacity() * 4
            + self.by_inside.allocation_size()
            + self.by_public.allocation_size()
            + self.perms.allocation_size()
    }

    pub fn get(&self, idx: u32) -> Option<&Mapping> {
        self.maps.get(idx as usize)
    }

    /// The mapping of an inside endpoint.
    #[inline]
    pub fn lookup_inside(&self, proto: u8, ip: u32, port: u16) -> Option<u32> {
        let maps = &self.maps;
        self.by_inside
            .find(ep_hash(self.seed, proto, ip, port), |&i| {
                maps.get(i as usize)
                    .is_some_and(|m| m.proto == proto && m.inside_ip == ip && m.inside_port == port)
            })
            .copied()
    }

    /// The mapping holding a public endpoint.
    #[inline]
    pub fn lookup_public(&self, proto: u8, ip: u32, port: u16) -> Option<u32> {
        let maps = &self.maps;
        self.by_public
            .find(ep_hash(self.seed, proto, ip, port), |&i| {
                maps.get(i as usize)
                    .is_some_and(|m| m.proto == proto && m.public_ip == ip && m.public_port == port)
            })
            .copied()
    }

    /// Stores a new mapping (with no flow yet: the caller acquires it for its first flow
    /// or removes it with `release_unused`). `None` when full. The caller must have checked
    /// that neither endpoint is mapped.
    pub fn insert(&mut self, m: Mapping) -> Option<u32> {
        if self.by_inside.len() >= self.cap || self.by_public.len() >= self.cap {
            return None;
        }
        let idx = self.free.pop()?;
        let Some(slot) = self.maps.get_mut(idx as usize) else {
            self.free.push(idx);
            return None;
        };
        *slot = Mapping { refs: 0, ..m };
        let seed = self.seed;
        let maps = &self.maps;
        self.by_inside.insert_unique(
            ep_hash(seed, m.proto, m.inside_ip, m.inside_port),
            idx,
            |&i| {
                maps.get(i as usize)
                    .map_or(0, |m| ep_hash(seed, m.proto, m.inside_ip, m.inside_port))
            },
        );
        self.by_public.insert_unique(
            ep_hash(seed, m.proto, m.public_ip, m.public_port),
            idx,
            |&i| {
                maps.get(i as usize)
                    .map_or(0, |m| ep_hash(seed, m.proto, m.public_ip, m.public_port))
            },
        );
        Some(idx)
    }

    /// One more flow uses mapping `idx`.
    pub fn acquire(&mut self, idx: u32) {
        if let Some(m) = self.maps.get_mut(idx as usize) {
            m.refs = m.refs.saturating_add(1);
        }
    }

    /// Removes mapping `idx` if no flow uses it (a mapping created for a flow that could
    /// not be stored).
    pub fn release_unused(&mut self, idx: u32) {
        if self.maps.get(idx as usize).is_some_and(|m| m.refs == 0) {
            self.remove(idx);
        }
    }

    fn remove(&mut self, idx: u32) {
        let Some(m) = self.maps.get(idx as usize).copied() else {
            return;
        };
        let seed = self.seed;
        let mut found = false;
        if let Ok(e) = self
            .by_inside
            .find_entry(ep_hash(seed, m.proto, m.inside_ip, m.inside_port), |&i| {
                i == idx
            })
        {
            e.remove();
            found = true;
        }
        if let Ok(e) = self
            .by_public
            .find_entry(ep_hash(seed, m.proto, m.public_ip, m.public_port), |&i| {
                i == idx
            })
        {
            e.remove();
        }
        if found {
            if let Some(slot) = self.maps.get_mut(idx as usize) {
                *slot = Mapping::default();
            }
            self.free.push(idx);
        }
    }

    /// Whether the inside endpoint behind a public endpoint has sent to `remote_ip`.
    #[inline]
    pub fn allowed(&self, proto: u8, public_ip: u32, public_port: u16, remote_ip: u32) -> bool {
        self.perms
            .find(
                perm_hash(self.seed, proto, public_ip, public_port, remote_ip),
                |p| {
                    p.proto == proto
                        && p.public_ip == public_ip
                        && p.public_port == public_port
                        && p.remote_ip == remote_ip
                },
            )
            .is_some()
    }

    /// Flow `f` (of a live mapping) now holds a permission for its remote IP. False (and
    /// nothing held) when the table is full, which the flow-count bound rules out.
    pub fn permit(&mut self, f: &Flow) -> bool {
        let seed = self.seed;
        let h = perm_hash(seed, f.proto, f.public_ip, f.public_port, f.remote_ip);
        if let Some(p) = self.perms.find_mut(h, |p| {
            p.proto == f.proto
                && p.public_ip == f.public_ip
                && p.public_port == f.public_port
                && p.remote_ip == f.remote_ip
        }) {
            p.refs = p.refs.saturating_add(1);
            return true;
        }
        if self.perms.len() >= self.cap {
            return false;
        }
        self.perms.insert_unique(
            h,
            Perm {
                public_ip: f.public_ip,
                remote_ip: f.remote_ip,
                refs: 1,
                public_port: f.public_port,
                proto: f.proto,
            },
            |p| perm_hash(seed, p.proto, p.public_ip, p.public_port, p.remote_ip),
        );
        true
    }

    fn revoke(&mut self, f: &Flow) {
        let h = perm_hash(self.seed, f.proto, f.public_ip, f.public_port, f.remote_ip);
        if let Ok(mut e) = self.perms.find_entry(h, |p| {
            p.proto == f.proto
                && p.public_ip == f.public_ip
                && p.public_port == f.public_port
                && p.remote_ip == f.remote_ip
        }) {
            let p = e.get_mut();
            p.refs = p.refs.saturating_sub(1);
            if p.refs == 0 {
                e.remove();
            }
        }
    }

    /// Flow `f` is being retired: drop its permission (if it held one, `allows`) and its
    /// reference to its mapping, removing the mapping with its last flow.
    pub fn release_flow(&mut self, f: &Flow, allows: bool) {
        if allows {
            self.revoke(f);
        }
        let Some(idx) = self.lookup_public(f.proto, f.public_ip, f.public_port) else {
            return;
        };
        let mut last = false;
        if let Some(m) = self.maps.get_mut(idx as usize) {
            m.refs = m.refs.saturating_sub(1);
            last = m.refs == 0;
        }
        if last {
            self.remove(idx);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(n: u16) -> Mapping {
        Mapping {
            inside_ip: 0x0a00_0001,
            public_ip: 0xcb00_710a,
            refs: 0,
            inside_port: n,
            public_port: 10_000 + n,
            proto: 17,
        }
    }

    fn flow(m: &Mapping, remote_ip: u32, remote_port: u16) -> Flow {
        Flow {
            inside_ip: m.inside_ip,
            remote_ip,
            public_ip: m.public_ip,
            inside_port: m.inside_port,
            remote_port,
            public_port: m.public_port,
            proto: m.proto,
            ..Flow::default()
        }
    }

    #[test]
    fn memory_per_flow_slot() {
        // rfc4787 mode's cost on top of the flow table, per flow of capacity.
        let cap = 200_000;
        let e = Eim::new(cap, 1);
        let per = e.memory_bytes() as f64 / cap as f64;
        println!(
            "size_of::<Mapping>() = {} B; eim tables for {cap} flows: {} bytes = {per:.1} B/flow",
            std::mem::size_of::<Mapping>(),
            e.memory_bytes()
        );
        assert_eq!(std::mem::size_of::<Mapping>(), 20);
        assert!(per <= 96.0, "{per}");
    }

    #[test]
    fn mappings_refcounted_permissions_by_remote_ip_bounded() {
        let mut e = Eim::new(4, 9);
        let idx: Vec<u32> = (0..4).map(|n| e.insert(map(n)).unwrap()).collect();
        assert_eq!(e.insert(map(9)), None, "full");
        assert_eq!(e.lookup_inside(17, 0x0a00_0001, 2), Some(idx[2]));
        assert_eq!(e.lookup_public(17, 0xcb00_710a, 10_002), Some(idx[2]));
        assert_eq!(
            e.lookup_public(6, 0xcb00_710a, 10_002),
            None,
            "per protocol"
        );
        let m = map(2);
        let (f1, f2) = (flow(&m, 7, 53), flow(&m, 7, 54));
        e.acquire(idx[2]);
        e.acquire(idx[2]);
        assert!(e.permit(&f1) && e.permit(&f2));
        assert_eq!(e.permissions(), 1, "one remote IP");
        assert!(e.allowed(17, m.public_ip, m.public_port, 7));
        assert!(!e.allowed(17, m.public_ip, m.public_port, 8));
        e.release_flow(&f1, true);
        assert!(e.allowed(17, m.public_ip, m.public_port, 7));
        assert_eq!(e.len(), 4);
        e.release_flow(&f2, true);
        assert!(!e.allowed(17, m.public_ip, m.public_port, 7));
        assert_eq!(e.len(), 3, "last flow removes the mapping");
        assert_eq!(e.lookup_inside(17, 0x0a00_0001, 2), None);
        e.release_unused(idx[3]);
        assert_eq!(e.len(), 2);
        assert!(e.insert(map(9)).is_some());
        assert!(e.insert(map(10)).is_some());
        assert_eq!(e.insert(map(11)), None);
    }
}

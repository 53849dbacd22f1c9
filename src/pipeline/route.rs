//! The forwarding information base: ports, the appliance's own addresses, and static
//! routes with longest-prefix match. Built by the control thread from a config, handed
//! to workers as an immutable `Arc<Fib>` snapshot (read-copy-update: a worker swaps its
//! pointer between bursts; nothing on the packet path locks).

use crate::config::{Config, Ipv4Net, PortRole};
use crate::wire::MacAddr;
use hashbrown::HashMap;
use std::hash::Hash;
use std::net::Ipv4Addr;

pub mod dir24;

/// A port as the pipeline sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct PortInfo {
    pub id: u16,
    pub name: String,
    pub mac: MacAddr,
    pub mtu: u32,
    pub addresses: Vec<Ipv4Net>,
    pub exception: bool,
}

/// Where a matched route sends a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NextHop {
    pub port: u16,
    /// Gateway; `None` means the destination is on-link.
    pub via: Option<Ipv4Addr>,
    pub mtu: u32,
}

impl NextHop {
    /// The address to resolve with ARP for destination `dst`.
    #[inline]
    pub fn neighbor(&self, dst: Ipv4Addr) -> Ipv4Addr {
        self.via.unwrap_or(dst)
    }
}

/// Longest-prefix match over a handful of prefix lengths: one hash table per length,
/// probed from the longest. Lookups cost one probe per distinct length in use
/// (typically 2-4), independent of the number of routes.
///
/// Small tables (an appliance usually has a handful of routes) are also kept as one
/// array sorted longest prefix first and scanned linearly: a few compares on one or two
/// cache lines beat hashing at every level.
#[derive(Debug, Clone)]
pub struct Lpm<V> {
    /// (prefix length, mask, table keyed by the masked address), longest first.
    levels: Vec<(u8, u32, HashMap<u32, V>)>,
    /// The routes longest prefix first, while there are at most SMALL of them
    /// (`small_on`): see `SmallTable`.
    small: SmallTable<V>,
    small_on: bool,
    /// The same routes as a DIR-24-8 table, once there are at least `dir_min` of them.
    dir: Option<Box<dir24::Dir24<V>>>,
    dir_min: usize,
}

/// Up to this many routes, lookups scan `small`.
const SMALL: usize = 16;

/// A small route table as two fixed arrays, longest prefix first: masks and masked
/// prefixes (one cache line each), values apart. A lookup compares the address against
/// all `SMALL` slots at once (four per SSE2 compare: `pmd::simd::match_prefixes`), without a branch per
/// route; the first match is the longest. Unused slots hold
/// mask 0 and key 1, which no address matches.
#[derive(Debug, Clone)]
struct SmallTable<V> {
    masks: [u32; SMALL],
    keys: [u32; SMALL],
    values: Vec<V>,
}

impl<V> Default for SmallTable<V> {
    fn default() -> Self {
        SmallTable {
            masks: [0; SMALL],
            keys: [1; SMALL],
            values: Vec::new(),
        }
    }
}

impl<V> SmallTable<V> {
    fn from_routes(routes: impl Iterator<Item = (u32, u32, V)>) -> Self {
        let mut t = Self::default();
        for (i, (m, k, v)) in routes.take(SMALL).enumerate() {
            t.masks[i] = m;
            t.keys[i] = k;
            t.values.push(v);
        }
        t
    }

    #[inline]
    fn lookup(&self, a: u32) -> Option<&V> {
        let hits = crate::pmd::simd::match_prefixes(&self.masks, &self.keys, a);
        // No hit: trailing_zeros is 32, past the end of `values`.
        self.values.get(hits.trailing_zeros() as usize)
    }
}

/// From this many routes on, lookups use DIR-24-8 (`dir24`; measured in
/// docs/benchmarks.md).
const DIR_MIN: usize = 4096;

impl<V> Default for Lpm<V> {
    fn default() -> Self {
        Lpm {
            levels: Vec::new(),
            small: SmallTable::default(),
            small_on: true,
            dir: None,
            dir_min: DIR_MIN,
        }
    }
}

#[inline]
fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - len as u32)
    }
}

impl<V: Clone + Eq + Hash> Lpm<V> {
    pub fn new() -> Self {
        Lpm::default()
    }

    /// An empty table that switches to DIR-24-8 lookups at `dir_min` routes
    /// (`usize::MAX`: never; 0: always). Benchmarks and tests compare the two schemes.
    pub fn with_dir_min(dir_min: usize) -> Self {
        Lpm {
            dir_min,
            ..Lpm::default()
        }
    }

    /// The same routes in a table with another DIR-24-8 threshold (benchmarks).
    pub fn rebuilt(&self, dir_min: usize) -> Lpm<V> {
        let mut l = Lpm::with_dir_min(dir_min);
        for (len, _, t) in self.levels.iter().rev() {
            for (k, v) in t {
                l.insert(Ipv4Addr::from(*k), *len, v.clone());
            }
        }
        l
    }

    /// Starts loading the line a lookup of `addr` will read first (DIR-24-8 only: the
    /// other schemes' lines are few and stay cached).
    #[inline]
    pub fn prefetch(&self, addr: Ipv4Addr) {
        if let Some(d) = &self.dir {
            d.prefetch(u32::from(addr));
        }
    }

    /// Whether lookups go through the DIR-24-8 table.
    pub fn is_dir24(&self) -> bool {
        self.dir.is_some()
    }

    /// Builds the DIR-24-8 table from every route once the table is large enough, then
    /// keeps it current with each insert (shorter prefixes first: a longer one is never
    /// overwritten anyway, but this writes each entry fewer times).
    fn update_dir(&mut self, key: u32, len: u8, v: &V) {
        if let Some(d) = self.dir.as_mut() {
            d.insert(key, len, v.clone());
            return;
        }
        if self.len() + 1 < self.dir_min {
            return;
        }
        let mut d = Box::new(dir24::Dir24::new());
        for (l, _, t) in self.levels.iter().rev() {
            for (k, v) in t {
                d.insert(*k, *l, v.clone());
            }
        }
        d.insert(key, len, v.clone());
        self.dir = Some(d);
    }

    /// Insert or replace the value for `prefix/len`.
    pub fn insert(&mut self, prefix: Ipv4Addr, len: u8, v: V) {
        let m = mask(len);
        let key = u32::from(prefix) & m;
        self.update_dir(key, len, &v);
        match self.levels.iter_mut().find(|(l, _, _)| *l == len) {
            Some((_, _, t)) => {
                t.insert(key, v);
            }
            None => {
                let mut t = HashMap::new();
                t.insert(key, v);
                self.levels.push((len, m, t));
                self.levels.sort_by_key(|l| std::cmp::Reverse(l.0));
            }
        }
        self.small_on = self.dir.is_none() && self.len() <= SMALL;
        self.small = if self.small_on {
            SmallTable::from_routes(
                self.levels
                    .iter()
                    .flat_map(|(_, m, t)| t.iter().map(|(k, v)| (*m, *k, v.clone()))),
            )
        } else {
            SmallTable::default()
        };
    }

    #[inline]
    pub fn lookup(&self, addr: Ipv4Addr) -> Option<&V> {
        let a = u32::from(addr);
        // `small` and `dir` are never both in use: small tables take the same path as
        // before DIR-24-8 existed.
        if self.small_on {
            return self.small.lookup(a);
        }
        if let Some(d) = &self.dir {
            return d.lookup(a);
        }
        for (_, m, t) in &self.levels {
            if let Some(v) = t.get(&(a & *m)) {
                return Some(v);
            }
        }
        None
    }

    pub fn len(&self) -> usize {
        self.levels.iter().map(|(_, _, t)| t.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A set of addresses tested per packet (own addresses, broadcasts, proxy ARP): a
/// 64-bit filter on the address's low 6 bits first (the usual answer, "no", costs one
/// bit test), then a scan of the few members, or a binary search of many.
#[derive(Debug, Clone, Default)]
struct AddrSet {
    bits: u64,
    /// Sorted, distinct.
    addrs: Vec<u32>,
}

impl AddrSet {
    /// Up to this many members, `contains` scans instead of bisecting.
    const SCAN: usize = 8;

    #[inline]
    fn bit(a: u32) -> u64 {
        1u64 << (a & 63)
    }

    fn insert(&mut self, a: u32) {
        if let Err(i) = self.addrs.binary_search(&a) {
            self.addrs.insert(i, a);
        }
        self.bits |= Self::bit(a);
    }

    #[inline(always)]
    fn contains(&self, a: u32) -> bool {
        if self.bits & Self::bit(a) == 0 {
            return false;
        }
        if self.addrs.len() <= Self::SCAN {
            // Not `contains`: that calls an out-of-line `SliceContains` (measured).
            #[allow(clippy::manual_contains)]
            self.addrs.iter().any(|&x| x == a)
        } else {
            self.addrs.binary_search(&a).is_ok()
        }
    }
}

/// One immutable forwarding snapshot.
#[derive(Debug, Clone, Default)]
pub struct Fib {
    /// Indexed by DPDK port id.
    ports: Vec<Option<PortInfo>>,
    routes: Lpm<NextHop>,
    /// The appliance's own addresses -> the port they live on.
    /// A few entries at most (an appliance has a handful of addresses): a linear scan of
    /// a contiguous array beats hashing here, and it runs twice per packet.
    local: Vec<(u32, u16)>,
    /// `AddrSet::bits` of `local`: most addresses asked about are not local, and one
    /// bit test says so without the scan.
    local_bits: u64,
    pub exception_port: Option<u16>,
    /// Directed-broadcast addresses of every connected subnet (never forwarded: RFC 2644).
    broadcasts: AddrSet,
    /// Addresses the appliance answers ARP for on every data port without owning them
    /// as interface addresses: the NAT gateways' public IPs.
    proxy_arp: AddrSet,
    /// `local` and `proxy_arp` together: the sources nobody else may use (`super::spoof`,
    /// one test per packet instead of two).
    own_sources: AddrSet,
    /// Monotonic id of the config this snapshot came from.
    pub generation: u64,
    /// Anti-spoofing settings per port (`super::spoof`).
    pub filters: super::spoof::SourceFilters,
    /// Smallest egress MTU (`super::pmtu`).
    pub min_egress_mtu: u32,
}

impl Fib {
    /// Build a snapshot from a validated config and the ports' runtime facts
    /// (`port_ids[i]`, `macs[i]` belong to `cfg.ports[i]`).
    pub fn build(cfg: &Config, port_ids: &[u16], macs: &[MacAddr], generation: u64) -> Fib {
        let mut fib = Fib {
            generation,
            ..Fib::default()
        };
        for (i, p) in cfg.ports.iter().enumerate() {
            let id = port_ids[i];
            let info = PortInfo {
                id,
                name: p.name.clone(),
                mac: macs[i],
                mtu: p.mtu,
                addresses: p.addresses.clone(),
                exception: p.role == PortRole::Exception,
            };
            if info.exception {
                fib.exception_port = Some(id);
            } else {
                for a in &p.addresses {
                    let addr = u32::from(a.addr);
                    fib.local.push((addr, id));
                    fib.local_bits |= AddrSet::bit(addr);
                    fib.own_sources.insert(addr);
                    if a.len < 31 {
                        fib.broadcasts.insert(u32::from(a.broadcast()));
                    }
                    // Connected route for the port's subnet.
                    fib.routes.insert(
                        a.addr,
                        a.len,
                        NextHop {
                            port: id,
                            via: None,
                            mtu: p.mtu,
                        },
                    );
                }
            }
            let idx = id as usize;
            if fib.ports.len() <= idx {
                fib.ports.resize(idx + 1, None);
            }
            fib.ports[idx] = Some(info);
        }
        for g in &cfg.nat_gateways {
            for ip in &g.public_ips {
                fib.add_proxy_arp(*ip);
            }
        }
        for lb in &cfg.load_balancers {
            for ip in lb.vips.iter().chain(&lb.lb_addresses) {
                fib.add_proxy_arp(*ip);
            }
        }
        fib.filters = super::spoof::SourceFilters::build(cfg, port_ids);
        fib.min_egress_mtu = super::pmtu::min_egress_mtu(cfg);
        for r in &cfg.routes {
            if let Some(i) = cfg.ports.iter().position(|p| p.name == r.port) {
                let port_mtu = cfg.ports[i].mtu;
                fib.routes.insert(
                    r.prefix.addr,
                    r.prefix.len,
                    NextHop {
                        port: port_ids[i],
                        via: r.via,
                        mtu: r.mtu.unwrap_or(port_mtu).min(port_mtu),
                    },
                );
            }
        }
        fib
    }

    /// Adds (or replaces) a static route (benchmarks: tables beyond what a config holds).
    pub fn add_route(&mut self, prefix: Ipv4Addr, len: u8, hop: NextHop) {
        self.routes.insert(prefix, len, hop);
    }

    /// Rebuilds the route table switching to DIR-24-8 at `dir_min` routes (benchmarks
    /// compare the schemes: `usize::MAX` never, 0 always).
    pub fn set_route_dir_min(&mut self, dir_min: usize) {
        self.routes = self.routes.rebuilt(dir_min);
    }

    /// Whether route lookups use the DIR-24-8 table (many routes).
    pub fn routes_dir24(&self) -> bool {
        self.routes.is_dir24()
    }

    /// Starts loading the route table line a lookup of `dst` will read (DIR-24-8 only).
    #[inline]
    pub fn prefetch_route(&self, dst: Ipv4Addr) {
        self.routes.prefetch(dst);
    }

    /// Number of routes (connected and static).
    pub fn route_count(&self) -> usize {
        self.routes.len()
    }

    /// Answer ARP for `addr` on every data port (NAT public addresses).
    pub fn add_proxy_arp(&mut self, addr: Ipv4Addr) {
        self.proxy_arp.insert(u32::from(addr));
        self.own_sources.insert(u32::from(addr));
    }

    /// Is `addr` the broadcast address of one of the appliance's connected subnets?
    #[inline]
    pub fn is_directed_broadcast(&self, addr: Ipv4Addr) -> bool {
        self.broadcasts.contains(u32::from(addr))
    }

    #[inline]
    pub fn is_proxy_arp(&self, addr: Ipv4Addr) -> bool {
        self.proxy_arp.contains(u32::from(addr))
    }

    /// Is `addr` one of the appliance's own addresses or a proxy-ARP address
    /// (`local_port(addr).is_some() || is_proxy_arp(addr)`, in one test)?
    #[inline]
    pub fn is_own_source(&self, addr: Ipv4Addr) -> bool {
        self.own_sources.contains(u32::from(addr))
    }

    #[inline]
    pub fn port(&self, id: u16) -> Option<&PortInfo> {
        self.ports.get(id as usize).and_then(|p| p.as_ref())
    }

    pub fn ports(&self) -> impl Iterator<Item = &PortInfo> {
        self.ports.iter().flatten()
    }

    /// The port owning `addr` if it is one of the appliance's own addresses.
    #[inline]
    pub fn local_port(&self, addr: Ipv4Addr) -> Option<u16> {
        let a = u32::from(addr);
        if self.local_bits & AddrSet::bit(a) == 0 {
            return None;
        }
        self.local.iter().find(|(l, _)| *l == a).map(|(_, p)| *p)
    }

    #[inline]
    pub fn route(&self, dst: Ipv4Addr) -> Option<&NextHop> {
        self.routes.lookup(dst)
    }

    /// The appliance's address on `port` to use as source of ICMP errors sent there
    /// (the first address of the port; else any address of the appliance).
    pub fn source_address(&self, port: u16) -> Option<Ipv4Addr> {
        self.port(port)
            .and_then(|p| p.addresses.first().map(|a| a.addr))
            .or_else(|| {
                self.ports()
                    .filter(|p| !p.exception)
                    .find_map(|p| p.addresses.first().map(|a| a.addr))
            })
    }

    /// Is `addr` inside a subnet directly attached to `port`?
    pub fn on_link(&self, port: u16, addr: Ipv4Addr) -> bool {
        self.port(port)
            .map(|p| p.addresses.iter().any(|a| a.contains(addr)))
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn lpm_prefers_longest() {
        let mut l = Lpm::new();
        l.insert(a("0.0.0.0"), 0, 0);
        l.insert(a("10.0.0.0"), 8, 8);
        l.insert(a("10.1.0.0"), 16, 16);
        l.insert(a("10.1.2.3"), 32, 32);
        assert_eq!(l.lookup(a("10.1.2.3")), Some(&32));
        assert_eq!(l.lookup(a("10.1.2.4")), Some(&16));
        assert_eq!(l.lookup(a("10.2.0.1")), Some(&8));
        assert_eq!(l.lookup(a("192.0.2.1")), Some(&0));
        assert_eq!(l.len(), 4);
    }

    #[test]
    fn lpm_masks_host_bits_on_insert_and_replaces() {
        let mut l = Lpm::new();
        l.insert(a("198.51.100.77"), 24, 1);
        assert_eq!(l.lookup(a("198.51.100.1")), Some(&1));
        l.insert(a("198.51.100.0"), 24, 2);
        assert_eq!(l.lookup(a("198.51.100.200")), Some(&2));
        assert_eq!(l.lookup(a("198.51.101.1")), None);
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn lpm_small_scan_and_hashed_levels_agree() {
        let mut small = Lpm::new();
        let mut big = Lpm::new();
        let routes = [
            ("0.0.0.0", 0u8),
            ("10.0.0.0", 8),
            ("10.1.0.0", 16),
            ("10.1.2.0", 24),
            ("10.1.2.3", 32),
        ];
        for (i, (p, l)) in routes.iter().enumerate() {
            small.insert(a(p), *l, i);
            big.insert(a(p), *l, i);
        }
        // Push `big` past the linear-scan size with unrelated host routes.
        for i in 0..40u32 {
            big.insert(Ipv4Addr::from(0xC000_0200 + i), 32, 100 + i as usize);
        }
        assert!(small.small_on && !big.small_on);
        let mut x: u32 = 0x1234_5678;
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let probe = Ipv4Addr::from(x & 0x0A01_FFFF | 0x0A00_0000);
            assert_eq!(small.lookup(probe), big.lookup(probe), "{probe}");
        }
    }

    #[test]
    fn lpm_empty_and_host_route() {
        let mut l: Lpm<u8> = Lpm::new();
        assert!(l.is_empty());
        assert_eq!(l.lookup(a("1.2.3.4")), None);
        l.insert(a("1.2.3.4"), 32, 9);
        assert_eq!(l.lookup(a("1.2.3.4")), Some(&9));
        assert_eq!(l.lookup(a("1.2.3.5")), None);
    }

    #[test]
    fn lpm_dir24_and_hashed_levels_agree_and_switch_at_the_threshold() {
        let mut hashed = Lpm::with_dir_min(usize::MAX);
        let mut dir = Lpm::with_dir_min(0);
        let mut switching = Lpm::with_dir_min(200);
        let mut x: u32 = 0x2545_f491;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        for i in 0..400u32 {
            // Lengths 0..=32, clustered in 10.0.0.0/14 so that they overlap.
            let len = (next() % 33) as u8;
            let p = Ipv4Addr::from(0x0a00_0000 | (next() & 0x0003_ffff));
            for l in [&mut hashed, &mut dir, &mut switching] {
                l.insert(p, len, i);
            }
            assert_eq!(switching.is_dir24(), switching.len() >= 200, "{i}");
        }
        assert!(dir.is_dir24() && !hashed.is_dir24() && switching.is_dir24());
        for _ in 0..50_000 {
            let probe = Ipv4Addr::from(0x0a00_0000 | (next() & 0x0007_ffff));
            let want = hashed.lookup(probe);
            assert_eq!(dir.lookup(probe), want, "{probe}");
            assert_eq!(switching.lookup(probe), want, "{probe}");
        }
    }

    fn xorshift(x: &mut u32) -> u32 {
        *x ^= *x << 13;
        *x ^= *x >> 17;
        *x ^= *x << 5;
        *x
    }

    #[test]
    fn lpm_small_table_matches_a_brute_force_oracle() {
        let mut x: u32 = 0x9e37_79b9;
        for round in 0..300 {
            let mut l = Lpm::new();
            // (prefix, len) -> value, last insert wins: what a lookup must see.
            let mut routes: Vec<(u32, u8, u32)> = Vec::new();
            let n = round % (SMALL + 1);
            for v in 0..n as u32 {
                let len = match xorshift(&mut x) % 6 {
                    0 => 0,
                    1 => 32,
                    _ => (xorshift(&mut x) % 33) as u8,
                };
                // Clustered in 10.0.0.0/12 so that prefixes nest and collide.
                let p = 0x0a00_0000 | (xorshift(&mut x) & 0x000f_ffff);
                let key = p & mask(len);
                routes.retain(|&(k, l2, _)| !(k == key && l2 == len));
                routes.push((key, len, v));
                l.insert(Ipv4Addr::from(p), len, v);
            }
            assert_eq!(l.small_on, l.len() <= SMALL, "{round}");
            for _ in 0..200 {
                let a = 0x0a00_0000 | (xorshift(&mut x) & 0x001f_ffff);
                let want = routes
                    .iter()
                    .filter(|&&(k, len, _)| a & mask(len) == k)
                    .max_by_key(|&&(_, len, _)| len)
                    .map(|&(_, _, v)| v);
                assert_eq!(l.lookup(Ipv4Addr::from(a)).copied(), want, "{round} {a:#x}");
            }
        }
    }

    #[test]
    fn addr_set_agrees_with_a_hash_set() {
        let mut x: u32 = 0x0bad_cafe;
        for n in [0usize, 1, 2, 7, 8, 9, 40, 300] {
            let mut s = AddrSet::default();
            let mut oracle = std::collections::HashSet::new();
            for _ in 0..n {
                // A narrow range so that probes hit members and share their low bits.
                let a = 0xcb00_7100 | (xorshift(&mut x) & 0x3ff);
                s.insert(a);
                oracle.insert(a);
            }
            for _ in 0..5000 {
                let a = 0xcb00_7100 | (xorshift(&mut x) & 0x7ff);
                assert_eq!(s.contains(a), oracle.contains(&a), "{n} {a:#x}");
            }
            assert!(!s.contains(0) || oracle.contains(&0));
        }
    }

    #[test]
    fn own_sources_are_local_addresses_and_proxy_arp_addresses() {
        let cfg = crate::config::parse_str(
            "lcores: {workers: [1]}
ports:
  - {name: a, device: net_null0, addresses: [10.0.1.1/24, 10.0.2.1/31]}
  - {name: b, device: net_null1, addresses: [198.51.100.1/24]}
nat_gateways:
  - {id: g, inside_prefixes: [10.0.1.0/24], public_ips: [198.51.100.10, 203.0.113.65]}
",
            "t.yaml",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let mac = MacAddr([2, 0, 0, 0, 0, 1]);
        let fib = Fib::build(&cfg, &[0, 1], &[mac, mac], 1);
        for probe in [
            "10.0.1.1",
            "10.0.2.1",
            "198.51.100.1",
            "198.51.100.10",
            "203.0.113.65",
            "203.0.113.1",
            "10.0.1.65",
            "10.0.1.255",
            "10.0.2.1",
            "198.51.100.255",
            "0.0.0.0",
            "255.255.255.255",
        ] {
            let p = a(probe);
            let local = match probe {
                "10.0.1.1" | "10.0.2.1" => Some(0),
                "198.51.100.1" => Some(1),
                _ => None,
            };
            let proxy = matches!(probe, "198.51.100.10" | "203.0.113.65");
            assert_eq!(fib.local_port(p), local, "{probe}");
            assert_eq!(fib.is_proxy_arp(p), proxy, "{probe}");
            assert_eq!(fib.is_own_source(p), local.is_some() || proxy, "{probe}");
            let bcast = matches!(probe, "10.0.1.255" | "198.51.100.255");
            assert_eq!(fib.is_directed_broadcast(p), bcast, "{probe}");
        }
    }
}

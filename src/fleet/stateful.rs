//! Stateful shuffle sharding with an overlap bound (Route 53 Infima's
//! `StatefulSearchingShuffleSharder`): no two tenants share more than `m` nodes.
//!
//! The rule: every placed tenant "uses" all (m+1)-subsets of its shard; a candidate shard is
//! rejected if any of its (m+1)-subsets is already used. Two tenants sharing m+1 nodes would
//! share such a subset, so accepted shards overlap by at most m.
//!
//! Candidates are deterministic: attempt `a` for tenant `t` is the rendezvous shard with the
//! fleet seed replaced by `mix64(seed ^ mix64(a))` (attempt 0 is the stateless shard). The
//! search stops after `max_attempts` and reports [`PlaceError::NoPlacement`]: with N=8, k=3,
//! m=1 at most 8 tenants fit (28 node pairs, 3 per tenant, Johnson bound), the 9th fails.
//! The outcome depends on the order tenants are placed in; the controller places new tenants
//! in id order and keeps existing placements, so it is reproducible.
use super::hash;
use super::shard::{top_k_by, Nodes};
use std::collections::{BTreeMap, HashMap};
use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlaceError {
    /// Fewer live nodes than k.
    TooFewNodes {
        tenant: String,
        k: usize,
        nodes: usize,
    },
    /// The search found no shard within the overlap bound.
    NoPlacement {
        tenant: String,
        k: usize,
        m: usize,
        nodes: usize,
        attempts: u32,
    },
}

impl fmt::Display for PlaceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlaceError::TooFewNodes { tenant, k, nodes } => {
                write!(f, "tenant {tenant}: needs k={k} nodes, only {nodes} live")
            }
            PlaceError::NoPlacement {
                tenant,
                k,
                m,
                nodes,
                attempts,
            } => write!(
                f,
                "tenant {tenant}: no placement of k={k} of {nodes} nodes sharing at most m={m} \
                 with every placed tenant after {attempts} attempts (fleet full for this m: \
                 add nodes or raise m)"
            ),
        }
    }
}

impl std::error::Error for PlaceError {}

/// Seed of candidate number `attempt` (attempt 0 = the fleet seed, the stateless shard).
pub fn attempt_seed(seed: u64, attempt: u32) -> u64 {
    if attempt == 0 {
        seed
    } else {
        hash::mix64(seed ^ hash::mix64(u64::from(attempt)))
    }
}

/// Placements of one fleet plus the set of used (m+1)-subsets.
#[derive(Clone, Debug)]
pub struct StatefulSharder {
    pub seed: u64,
    pub k: usize,
    pub m: usize,
    pub max_attempts: u32,
    /// tenant -> shard (sorted node names).
    placements: BTreeMap<String, Vec<String>>,
    /// sorted (m+1)-subset of node names -> how many tenants use it (1 unless placements were
    /// loaded from a store written under a weaker bound).
    used: HashMap<Vec<String>, u32>,
}

impl StatefulSharder {
    pub fn new(seed: u64, k: usize, m: usize) -> StatefulSharder {
        StatefulSharder {
            seed,
            k,
            m,
            max_attempts: 10_000,
            placements: BTreeMap::new(),
            used: HashMap::new(),
        }
    }

    pub fn placements(&self) -> &BTreeMap<String, Vec<String>> {
        &self.placements
    }

    pub fn get(&self, tenant: &str) -> Option<&Vec<String>> {
        self.placements.get(tenant)
    }

    /// No constraint when m >= k (two k-sets can't share more than k).
    fn bounded(&self) -> bool {
        self.m < self.k
    }

    /// All sorted (m+1)-subsets of a sorted shard.
    fn subsets(&self, shard: &[String]) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        if !self.bounded() || shard.len() <= self.m {
            return out;
        }
        let r = self.m + 1;
        let mut idx: Vec<usize> = (0..r).collect();
        loop {
            out.push(idx.iter().map(|&i| shard[i].clone()).collect());
            // Next combination in lexicographic order.
            let mut i = r;
            while i > 0 && idx[i - 1] == shard.len() - r + i - 1 {
                i -= 1;
            }
            if i == 0 {
                return out;
            }
            idx[i - 1] += 1;
            for j in i..r {
                idx[j] = idx[j - 1] + 1;
            }
        }
    }

    fn fits(&self, shard: &[String]) -> bool {
        self.subsets(shard)
            .iter()
            .all(|s| !self.used.contains_key(s))
    }

    /// Records a placement as is (loading state from etcd); replaces the tenant's old one.
    pub fn record(&mut self, tenant: &str, shard: &[String]) {
        self.remove(tenant);
        let mut shard = shard.to_vec();
        shard.sort();
        for s in self.subsets(&shard) {
            *self.used.entry(s).or_insert(0) += 1;
        }
        self.placements.insert(tenant.to_string(), shard);
    }

    /// Forgets a tenant, freeing its subsets.
    pub fn remove(&mut self, tenant: &str) -> Option<Vec<String>> {
        let old = self.placements.remove(tenant)?;
        for s in self.subsets(&old) {
            if let Some(c) = self.used.get_mut(&s) {
                *c -= 1;
                if *c == 0 {
                    self.used.remove(&s);
                }
            }
        }
        Some(old)
    }

    /// Searches a shard for `tenant` that contains `keep` (nodes that stay) plus
    /// `k - keep.len()` nodes of `live`, within the overlap bound. Does not record it.
    fn search(
        &self,
        tenant: &str,
        live: &Nodes,
        keep: &[String],
    ) -> Result<Vec<String>, PlaceError> {
        if live.len() < self.k {
            return Err(PlaceError::TooFewNodes {
                tenant: tenant.into(),
                k: self.k,
                nodes: live.len(),
            });
        }
        let want = self.k - keep.len();
        let kept: Vec<bool> = (0..live.len())
            .map(|i| keep.iter().any(|k| k == live.name(i)))
            .collect();
        let mut pick = Vec::with_capacity(want);
        for attempt in 0..self.max_attempts {
            let key = hash::tenant_key(attempt_seed(self.seed, attempt), tenant);
            top_k_by(key, live, want, |i| kept[i], &mut pick);
            let mut cand: Vec<String> = keep.to_vec();
            cand.extend(pick.iter().map(|&i| live.name(i).to_string()));
            cand.sort();
            if self.fits(&cand) {
                return Ok(cand);
            }
            if !self.bounded() {
                break;
            }
        }
        Err(PlaceError::NoPlacement {
            tenant: tenant.into(),
            k: self.k,
            m: self.m,
            nodes: live.len(),
            attempts: self.max_attempts,
        })
    }

    /// Places a new tenant (or re-places an existing one from scratch) on `live` nodes.
    pub fn place<S: AsRef<str>>(
        &mut self,
        tenant: &str,
        live: &[S],
    ) -> Result<Vec<String>, PlaceError> {
        let old = self.remove(tenant);
        match self.search(tenant, &Nodes::new(live), &[]) {
            Ok(shard) => {
                self.record(tenant, &shard);
                Ok(shard)
            }
            Err(e) => {
                if let Some(old) = old {
                    self.record(tenant, &old);
                }
                Err(e)
            }
        }
    }

    /// Repairs a tenant whose shard lost nodes: keeps the shard's nodes that are still live and
    /// adds replacements (so its flows on surviving nodes stay where they are); if no
    /// replacement fits the bound, searches a whole new shard. A tenant whose nodes are all
    /// live is left untouched. Returns the new shard and whether it changed.
    pub fn repair<S: AsRef<str>>(
        &mut self,
        tenant: &str,
        live: &[S],
    ) -> Result<(Vec<String>, bool), PlaceError> {
        let live_nodes = Nodes::new(live);
        let Some(old) = self.placements.get(tenant).cloned() else {
            return self.place(tenant, live).map(|s| (s, true));
        };
        let keep: Vec<String> = old
            .iter()
            .filter(|n| live_nodes.index_of(n).is_some())
            .cloned()
            .collect();
        if keep.len() == old.len() && old.len() == self.k {
            return Ok((old, false));
        }
        self.remove(tenant);
        let keep: Vec<String> = keep.into_iter().take(self.k).collect();
        let found = self
            .search(tenant, &live_nodes, &keep)
            .or_else(|_| self.search(tenant, &live_nodes, &[]));
        match found {
            Ok(shard) => {
                self.record(tenant, &shard);
                Ok((shard, true))
            }
            Err(e) => {
                // Keep what survives: a degraded shard still serves the tenant.
                self.record(tenant, &keep);
                Err(e)
            }
        }
    }

    /// Largest overlap between any two placed tenants.
    pub fn max_overlap(&self) -> usize {
        let v: Vec<&Vec<String>> = self.placements.values().collect();
        let mut worst = 0;
        for i in 0..v.len() {
            for j in i + 1..v.len() {
                worst = worst.max(v[i].iter().filter(|n| v[j].contains(n)).count());
            }
        }
        worst
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("node-{i}")).collect()
    }

    #[test]
    fn overlap_bound_holds() {
        for (n, k, m, t) in [
            (20, 4, 1, 15),
            (100, 5, 1, 200),
            (30, 5, 2, 100),
            (12, 3, 0, 4),
        ] {
            let mut s = StatefulSharder::new(9, k, m);
            for i in 0..t {
                let shard = s
                    .place(&format!("nat/t{i}"), &names(n))
                    .unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(shard.len(), k);
            }
            assert!(
                s.max_overlap() <= m,
                "N={n} k={k} m={m}: {}",
                s.max_overlap()
            );
        }
    }

    #[test]
    fn deterministic() {
        let run = || {
            let mut s = StatefulSharder::new(5, 3, 1);
            (0..8)
                .map(|i| s.place(&format!("t{i}"), &names(10)).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
    }

    #[test]
    fn first_candidate_is_the_stateless_shard() {
        let mut s = StatefulSharder::new(77, 3, 1);
        let stateless = super::super::shard::Sharder::new(77).shard("nat/a", &names(10), 3);
        assert_eq!(s.place("nat/a", &names(10)).unwrap(), stateless);
    }

    #[test]
    fn fails_clearly_when_full() {
        // Any two 3-subsets of 4 nodes share 2: the second tenant can't fit m=1.
        let mut s = StatefulSharder::new(1, 3, 1);
        s.max_attempts = 500;
        s.place("a", &names(4)).unwrap();
        let e = s.place("b", &names(4)).unwrap_err();
        assert!(
            matches!(e, PlaceError::NoPlacement { attempts: 500, .. }),
            "{e:?}"
        );
        assert!(e.to_string().contains("no placement"), "{e}");
        assert!(s.get("b").is_none());
        // N=8, k=3, m=1: at most 8 tenants (each uses 3 of 28 pairs; a node is in at most 3).
        let mut s = StatefulSharder::new(1, 3, 1);
        let placed = (0..20)
            .take_while(|i| s.place(&format!("t{i}"), &names(8)).is_ok())
            .count();
        assert!((4..=8).contains(&placed), "{placed}");
        assert!(s.max_overlap() <= 1);
        let e = s.place("x", &names(2)).unwrap_err();
        assert!(matches!(e, PlaceError::TooFewNodes { nodes: 2, .. }));
    }

    #[test]
    fn repair_replaces_only_the_lost_node() {
        let mut s = StatefulSharder::new(3, 3, 1);
        let all = names(12);
        for i in 0..10 {
            s.place(&format!("t{i}"), &all).unwrap();
        }
        let before = s.placements().clone();
        let dead = before["t0"][1].clone();
        let live: Vec<String> = all.iter().filter(|n| **n != dead).cloned().collect();
        for t in before.keys() {
            let (after, changed) = s.repair(t, &live).unwrap();
            let old = &before[t];
            assert_eq!(changed, old.contains(&dead), "{t}");
            assert!(!after.contains(&dead));
            // Survivors stay: at most the dead node moved.
            assert_eq!(
                old.iter().filter(|n| !after.contains(n)).count(),
                usize::from(changed)
            );
        }
        assert!(s.max_overlap() <= 1);
    }

    #[test]
    fn unbounded_when_m_at_least_k() {
        let mut s = StatefulSharder::new(3, 3, 3);
        for i in 0..50 {
            s.place(&format!("t{i}"), &names(4)).unwrap();
        }
        assert_eq!(s.max_overlap(), 3);
    }
}

//! Stateless shuffle sharding by rendezvous (highest-random-weight) hashing.
//!
//! A tenant's shard is the k nodes with the highest [`hash::score`] for that tenant. Every
//! node and tool computes the same answer from (fleet seed, tenant id, node list), the node
//! list's order does not matter, and the shard is stable under churn: removing a node that is
//! not in the shard changes nothing, removing one that is replaces just it (with the (k+1)-th
//! best node); adding a node changes the shard by at most that node (it enters if it beats
//! the k-th best).
use super::hash;

/// A fleet's node list, pre-hashed once.
#[derive(Clone, Debug)]
pub struct Nodes {
    names: Vec<String>,
    hashes: Vec<u64>,
}

impl Nodes {
    pub fn new<S: AsRef<str>>(names: &[S]) -> Nodes {
        let names: Vec<String> = names.iter().map(|s| s.as_ref().to_string()).collect();
        let hashes = names.iter().map(|n| hash::fnv1a64(n.as_bytes())).collect();
        Nodes { names, hashes }
    }
    pub fn len(&self) -> usize {
        self.names.len()
    }
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
    pub fn name(&self, i: usize) -> &str {
        &self.names[i]
    }
    pub fn names(&self) -> &[String] {
        &self.names
    }
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }
}

/// Indices (into `nodes`) of the `k` highest-scoring nodes for `tenant_key`, best first,
/// skipping those for which `skip` says true. Ties (a 2^-64 event) go to the smaller name so
/// the answer never depends on list order. Fewer than `k` when not enough nodes are left.
pub fn top_k_by(
    tenant_key: u64,
    nodes: &Nodes,
    k: usize,
    mut skip: impl FnMut(usize) -> bool,
    out: &mut Vec<usize>,
) {
    out.clear();
    if k == 0 {
        return;
    }
    // Insertion into a small sorted buffer: k is a handful, N at most a few hundred.
    let mut best: Vec<(u64, usize)> = Vec::with_capacity(k + 1);
    for (i, &h) in nodes.hashes.iter().enumerate() {
        if skip(i) {
            continue;
        }
        let s = hash::score(tenant_key, h);
        let better = |a: &(u64, usize)| a.0 > s || (a.0 == s && nodes.names[a.1] < nodes.names[i]);
        if best.len() == k && better(&best[k - 1]) {
            continue;
        }
        let pos = best.iter().position(|a| !better(a)).unwrap_or(best.len());
        best.insert(pos, (s, i));
        best.truncate(k);
    }
    out.extend(best.iter().map(|&(_, i)| i));
}

/// The stateless sharder of one fleet.
#[derive(Clone, Copy, Debug)]
pub struct Sharder {
    pub seed: u64,
}

impl Sharder {
    pub fn new(seed: u64) -> Sharder {
        Sharder { seed }
    }

    /// Indices of `tenant`'s shard in `nodes`, best first.
    pub fn shard_indices(&self, tenant: &str, nodes: &Nodes, k: usize) -> Vec<usize> {
        let mut out = Vec::with_capacity(k);
        top_k_by(
            hash::tenant_key(self.seed, tenant),
            nodes,
            k,
            |_| false,
            &mut out,
        );
        out
    }

    /// `tenant`'s shard (node names, sorted): k nodes, or all of them when there are fewer.
    pub fn shard<S: AsRef<str>>(&self, tenant: &str, nodes: &[S], k: usize) -> Vec<String> {
        let nodes = Nodes::new(nodes);
        let mut v: Vec<String> = self
            .shard_indices(tenant, &nodes, k)
            .into_iter()
            .map(|i| nodes.name(i).to_string())
            .collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("node-{i}")).collect()
    }

    fn set(v: Vec<String>) -> BTreeSet<String> {
        v.into_iter().collect()
    }

    #[test]
    fn deterministic_and_order_independent() {
        let s = Sharder::new(42);
        let n = names(20);
        let mut rev = n.clone();
        rev.reverse();
        for t in 0..200 {
            let id = format!("nat/t{t}");
            let a = s.shard(&id, &n, 4);
            assert_eq!(a.len(), 4);
            assert_eq!(a, s.shard(&id, &n, 4));
            assert_eq!(a, s.shard(&id, &rev, 4));
            assert_eq!(a, Sharder::new(42).shard(&id, &n, 4));
        }
        // A different seed is a different fleet.
        let differs = (0..50)
            .filter(|t| {
                let id = format!("nat/t{t}");
                s.shard(&id, &n, 4) != Sharder::new(43).shard(&id, &n, 4)
            })
            .count();
        assert!(differs > 40, "{differs}");
    }

    /// Pinned (computed independently with a 10-line Python transcription of the documented
    /// formula): a change of hash or tie-break shows up here before it moves a real fleet.
    #[test]
    fn placement_is_pinned() {
        let got = Sharder::new(1).shard("nat/gw1", &names(8), 3);
        assert_eq!(got, ["node-1", "node-2", "node-7"]);
    }

    #[test]
    fn stable_when_a_node_leaves() {
        let s = Sharder::new(7);
        let n = names(30);
        for t in 0..300 {
            let id = format!("lb/t{t}");
            let before = set(s.shard(&id, &n, 5));
            for gone in [0usize, 7, 29] {
                let rest: Vec<String> = n.iter().filter(|x| **x != n[gone]).cloned().collect();
                let after = set(s.shard(&id, &rest, 5));
                if before.contains(&n[gone]) {
                    // Exactly the departed node is replaced.
                    assert_eq!(
                        before.difference(&after).collect::<Vec<_>>(),
                        vec![&n[gone]]
                    );
                    assert_eq!(after.difference(&before).count(), 1);
                } else {
                    assert_eq!(before, after);
                }
            }
        }
    }

    #[test]
    fn stable_when_a_node_joins() {
        let s = Sharder::new(7);
        let n = names(30);
        let mut more = n.clone();
        more.push("node-new".into());
        let mut moved = 0;
        for t in 0..1000 {
            let id = format!("nat/t{t}");
            let before = set(s.shard(&id, &n, 5));
            let after = set(s.shard(&id, &more, 5));
            let gained: Vec<_> = after.difference(&before).collect();
            assert!(gained.is_empty() || gained == vec![&"node-new".to_string()]);
            assert!(before.difference(&after).count() <= 1);
            moved += gained.len();
        }
        // The new node takes its fair share k/(N+1) of tenants, no more.
        assert!((120..=210).contains(&moved), "{moved}");
    }

    #[test]
    fn fewer_nodes_than_k() {
        let s = Sharder::new(0);
        assert_eq!(s.shard("x", &names(2), 3).len(), 2);
        assert!(s.shard("x", &Vec::<String>::new(), 3).is_empty());
        assert!(s.shard("x", &names(4), 0).is_empty());
    }
}

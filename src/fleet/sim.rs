//! `flowgate shard`: how much do two tenants' shards overlap? Simulated with the real sharder
//! and set next to the hypergeometric prediction P(X=j) = C(k,j) C(N-k,k-j) / C(N,k).
use super::hash;
use super::shard::{top_k_by, Nodes};
use super::stateful::{PlaceError, StatefulSharder};
use std::fmt::Write;

/// C(n, r) as f64 (exact for the sizes used here).
pub fn binomial(n: u64, r: u64) -> f64 {
    if r > n {
        return 0.0;
    }
    let r = r.min(n - r);
    (0..r).fold(1.0, |acc, i| acc * (n - i) as f64 / (i + 1) as f64)
}

/// P(two random k-of-N shards share exactly j nodes), j = 0..=k.
pub fn hypergeometric(n: usize, k: usize) -> Vec<f64> {
    let (n, k) = (n as u64, k as u64);
    (0..=k)
        .map(|j| binomial(k, j) * binomial(n - k, k - j) / binomial(n, k))
        .collect()
}

/// Names of a simulated fleet's nodes.
pub fn node_names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("node-{i}")).collect()
}

/// `trials` pairs of fresh tenants (ids `sim/0`, `sim/1`, ...), placed by the stateless
/// sharder: count[j] = pairs sharing j nodes.
pub fn simulate_pairs(seed: u64, n: usize, k: usize, trials: u64) -> Vec<u64> {
    let nodes = Nodes::new(&node_names(n));
    let mut counts = vec![0u64; k + 1];
    let (mut a, mut b) = (Vec::with_capacity(k), Vec::with_capacity(k));
    let mut id = String::new();
    for t in 0..trials {
        id.clear();
        let _ = write!(id, "sim/{}", 2 * t);
        top_k_by(hash::tenant_key(seed, &id), &nodes, k, |_| false, &mut a);
        id.clear();
        let _ = write!(id, "sim/{}", 2 * t + 1);
        top_k_by(hash::tenant_key(seed, &id), &nodes, k, |_| false, &mut b);
        let shared = a.iter().filter(|i| b.contains(i)).count();
        counts[shared.min(k)] += 1;
    }
    counts
}

/// Places `tenants` tenants with the stateful sharder (bound m) and counts the overlap of
/// every pair of placed tenants. Stops at the first tenant that does not fit.
pub fn simulate_stateful(
    seed: u64,
    n: usize,
    k: usize,
    m: usize,
    tenants: usize,
) -> (Vec<u64>, usize, Option<PlaceError>) {
    let names = node_names(n);
    let mut s = StatefulSharder::new(seed, k, m);
    let mut err = None;
    for t in 0..tenants {
        if let Err(e) = s.place(&format!("sim/{t}"), &names) {
            err = Some(e);
            break;
        }
    }
    let shards: Vec<&Vec<String>> = s.placements().values().collect();
    let mut counts = vec![0u64; k + 1];
    for i in 0..shards.len() {
        for j in i + 1..shards.len() {
            let shared = shards[i].iter().filter(|x| shards[j].contains(x)).count();
            counts[shared.min(k)] += 1;
        }
    }
    (counts, shards.len(), err)
}

/// Percentages of a histogram.
pub fn percent(counts: &[u64]) -> Vec<f64> {
    let total: u64 = counts.iter().sum();
    counts
        .iter()
        .map(|&c| {
            if total == 0 {
                0.0
            } else {
                100.0 * c as f64 / total as f64
            }
        })
        .collect()
}

/// The table printed by `flowgate shard`.
pub fn table(title: &str, counts: &[u64], n: usize, k: usize) -> String {
    let pred = hypergeometric(n, k);
    let pct = percent(counts);
    let mut s = format!("{title}\n  shared   pairs          simulated %   hypergeometric %\n");
    for j in 0..counts.len() {
        let _ = writeln!(
            s,
            "  {j:>6}   {:<12}   {:>11.4}   {:>16.4}",
            counts[j],
            pct[j],
            100.0 * pred[j]
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(sim: &[f64], want: &[f64], tol: f64) {
        for (j, (s, w)) in sim.iter().zip(want).enumerate() {
            assert!(
                (s - w).abs() <= tol,
                "j={j}: simulated {s:.3} % vs {w} % (tol {tol})"
            );
        }
    }

    /// SPEC §5 tables, as printed there (rounded), against the formula.
    #[test]
    fn hypergeometric_matches_spec_tables() {
        let p: Vec<f64> = hypergeometric(8, 3).iter().map(|x| 100.0 * x).collect();
        close(&p, &[17.9, 53.6, 26.8, 1.8], 0.05);
        let p: Vec<f64> = hypergeometric(100, 5).iter().map(|x| 100.0 * x).collect();
        close(&p, &[77.0, 21.1, 1.84, 0.059, 0.0006, 0.0], 0.05);
        assert!((hypergeometric(100, 5).iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }

    /// The sharder reproduces the tables within 0.5 points (200k pairs: the standard error of
    /// the largest bucket is about 0.11 points, so 0.5 is > 4 sigma).
    #[test]
    fn sharder_reproduces_n8_k3() {
        let pct = percent(&simulate_pairs(1, 8, 3, 200_000));
        close(&pct, &[17.9, 53.6, 26.8, 1.8], 0.5);
    }

    #[test]
    fn sharder_reproduces_n100_k5() {
        let pct = percent(&simulate_pairs(1, 100, 5, 200_000));
        close(&pct, &[77.0, 21.1, 1.84, 0.06, 0.0, 0.0], 0.5);
    }

    #[test]
    fn stateful_histogram_has_nothing_above_m() {
        let (counts, placed, err) = simulate_stateful(1, 100, 5, 1, 200);
        assert!(err.is_none(), "{err:?}");
        assert_eq!(placed, 200);
        assert_eq!(counts.iter().sum::<u64>(), 200 * 199 / 2);
        assert!(counts[2..].iter().all(|&c| c == 0), "{counts:?}");
        assert!(counts[1] > 0);
    }

    #[test]
    fn stateful_reports_a_full_fleet() {
        let (counts, placed, err) = simulate_stateful(1, 8, 3, 1, 50);
        assert!(placed <= 8);
        assert!(
            matches!(err, Some(PlaceError::NoPlacement { .. })),
            "{err:?}"
        );
        assert!(counts[2..].iter().all(|&c| c == 0));
    }
}

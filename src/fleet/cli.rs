//! Command-line entry points of the fleet subcommands (kept out of main.rs so that file only
//! grows by one line per subcommand).
use super::sim;
use clap::Args;
use std::process::ExitCode;
use std::time::Instant;

#[derive(Args, Debug)]
pub struct ShardArgs {
    /// Fleet size N.
    #[arg(long, default_value_t = 8)]
    pub nodes: usize,
    /// Shard size k (nodes per tenant).
    #[arg(long, default_value_t = 3)]
    pub k: usize,
    /// Overlap bound: also place --tenants tenants with the stateful sharder, no two sharing
    /// more than M nodes, and show their pair histogram.
    #[arg(long)]
    pub m: Option<usize>,
    /// Tenants placed by the stateful sharder (with --m).
    #[arg(long, default_value_t = 100)]
    pub tenants: usize,
    /// Random tenant pairs for the stateless simulation.
    #[arg(long, default_value_t = 1_000_000)]
    pub trials: u64,
    /// Fleet seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

pub fn shard(a: &ShardArgs) -> ExitCode {
    if a.k == 0 || a.k > a.nodes {
        eprintln!(
            "flowgate shard: need 1 <= k ({}) <= nodes ({})",
            a.k, a.nodes
        );
        return ExitCode::FAILURE;
    }
    let t0 = Instant::now();
    let counts = sim::simulate_pairs(a.seed, a.nodes, a.k, a.trials);
    let title = format!(
        "stateless rendezvous sharder, N={} k={} seed={}: {} random tenant pairs ({:.2} s)",
        a.nodes,
        a.k,
        a.seed,
        a.trials,
        t0.elapsed().as_secs_f64()
    );
    print!("{}", sim::table(&title, &counts, a.nodes, a.k));
    let Some(m) = a.m else {
        return ExitCode::SUCCESS;
    };
    let t0 = Instant::now();
    let (counts, placed, err) = sim::simulate_stateful(a.seed, a.nodes, a.k, m, a.tenants);
    let title = format!(
        "\nstateful sharder, N={} k={} m={m}: {placed} of {} tenants placed, all {} pairs ({:.2} s)",
        a.nodes,
        a.k,
        a.tenants,
        counts.iter().sum::<u64>(),
        t0.elapsed().as_secs_f64()
    );
    print!("{}", sim::table(&title, &counts, a.nodes, a.k));
    let above: u64 = counts.iter().skip(m + 1).sum();
    println!("  pairs sharing more than m={m}: {above}");
    match err {
        None => ExitCode::SUCCESS,
        Some(e) => {
            eprintln!("flowgate shard: {e}");
            ExitCode::FAILURE
        }
    }
}

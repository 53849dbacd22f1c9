//! Command-line entry points of the fleet subcommands (kept out of main.rs so that file only
//! grows by one line per subcommand).
use super::sim;
use super::{agent, controller, fabric};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
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

fn endpoints(etcd: &str) -> Vec<String> {
    etcd.split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn check_id(what: &str, id: &str) -> Result<(), String> {
    if super::keys::valid_id(id) {
        Ok(())
    } else {
        Err(format!("{what} {id:?}: use 1-64 of [A-Za-z0-9._-]"))
    }
}

#[derive(Args, Debug)]
pub struct EtcdArgs {
    /// etcd endpoints, comma-separated (http://127.0.0.1:2379).
    #[arg(long, default_value = "http://127.0.0.1:2379")]
    pub etcd: String,
    /// Fleet name: keys live under /flowgate/<fleet>/.
    #[arg(long)]
    pub fleet: String,
    /// Re-read everything at least this often even without watch events (ms).
    #[arg(long, default_value_t = 1000)]
    pub resync_ms: u64,
}

#[derive(Args, Debug)]
pub struct ControllerArgs {
    #[command(flatten)]
    pub etcd: EtcdArgs,
    /// This controller's name in the election.
    #[arg(long, default_value = "controller")]
    pub id: String,
    /// Fleet seed of the sharder.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Nodes per tenant.
    #[arg(long, default_value_t = 2)]
    pub k: usize,
    /// At most this many nodes shared by any two tenants.
    #[arg(long, default_value_t = 1)]
    pub m: usize,
    /// Leadership lease TTL (s).
    #[arg(long, default_value_t = 3)]
    pub ttl: i64,
    /// Live nodes to wait for before the first placement (default k).
    #[arg(long)]
    pub min_nodes: Option<usize>,
}

pub fn controller(a: ControllerArgs) -> ExitCode {
    if let Err(e) = check_id("fleet", &a.etcd.fleet) {
        eprintln!("flowgate controller: {e}");
        return ExitCode::FAILURE;
    }
    if a.k == 0 {
        eprintln!("flowgate controller: k must be at least 1");
        return ExitCode::FAILURE;
    }
    controller::run(controller::ControllerOpts {
        endpoints: endpoints(&a.etcd.etcd),
        fleet: a.etcd.fleet,
        id: a.id,
        seed: a.seed,
        k: a.k,
        m: a.m,
        ttl: a.ttl,
        min_nodes: a.min_nodes.unwrap_or(a.k),
        resync: Duration::from_millis(a.etcd.resync_ms),
    })
}

#[derive(Args, Debug)]
pub struct NodeAgentArgs {
    #[command(flatten)]
    pub etcd: EtcdArgs,
    /// Node id (key nodes/<id>).
    #[arg(long)]
    pub node: String,
    /// The node's address on the fabric (next hop of its tenants' routes).
    #[arg(long)]
    pub addr: std::net::Ipv4Addr,
    /// Membership lease TTL (s): a dead node's tenants move after this.
    #[arg(long, default_value_t = 3)]
    pub ttl: i64,
    /// State file: the tenants this node serves, with their specs (YAML).
    #[arg(long)]
    pub state: PathBuf,
    /// Status file (Prometheus text format: etcd_up, tenants_served, ...).
    #[arg(long)]
    pub status: Option<PathBuf>,
    /// Base flowgate config of this node; with --config-out, the agent renders the node's
    /// config with its tenants and (with --reload-pid) sends SIGHUP to that flowgate.
    #[arg(long, requires = "config_out")]
    pub base_config: Option<PathBuf>,
    #[arg(long, requires = "base_config")]
    pub config_out: Option<PathBuf>,
    #[arg(long, requires = "config_out")]
    pub reload_pid: Option<i32>,
    /// The supervised flowgate's pid is written here (with a run command).
    #[arg(long)]
    pub flowgate_pid_file: Option<PathBuf>,
    /// The supervised flowgate's output is appended here (with a run command).
    #[arg(long)]
    pub flowgate_log: Option<PathBuf>,
    /// The node's replication address (ip:port of a kernel UDP socket of its flowgate):
    /// published in etcd, rendered into its config with the other live nodes of its shards as
    /// replication peers, which change live with the placements.
    #[arg(long, requires = "config_out")]
    pub repl_listen: Option<std::net::SocketAddr>,
    /// After `--`: the node's data-path command (`flowgate run -c CONFIG_OUT -- EAL...`). The
    /// agent starts it once the config is written, SIGHUPs it on every change, and restarts
    /// it when the reload is refused or the process exits.
    #[arg(last = true, requires = "config_out", conflicts_with = "reload_pid")]
    pub run_cmd: Vec<String>,
}

pub fn node_agent(a: NodeAgentArgs) -> ExitCode {
    for (what, id) in [("fleet", &a.etcd.fleet), ("node", &a.node)] {
        if let Err(e) = check_id(what, id) {
            eprintln!("flowgate node-agent: {e}");
            return ExitCode::FAILURE;
        }
    }
    agent::run(agent::AgentOpts {
        endpoints: endpoints(&a.etcd.etcd),
        fleet: a.etcd.fleet,
        node: a.node,
        addr: a.addr,
        ttl: a.ttl,
        state: a.state,
        status: a.status,
        base_config: a.base_config,
        config_out: a.config_out,
        reload_pid: a.reload_pid,
        resync: Duration::from_millis(a.etcd.resync_ms),
        run_cmd: a.run_cmd,
        flowgate_pid_file: a.flowgate_pid_file,
        flowgate_log: a.flowgate_log,
        repl_listen: a.repl_listen,
    })
}

#[derive(Args, Debug)]
pub struct FabricArgs {
    #[command(flatten)]
    pub etcd: EtcdArgs,
    /// Network namespace of the router in front of the fleet.
    #[arg(long)]
    pub netns: String,
    /// Status file (Prometheus text format).
    #[arg(long)]
    pub status: Option<PathBuf>,
}

pub fn fabric(a: FabricArgs) -> ExitCode {
    if let Err(e) = check_id("fleet", &a.etcd.fleet) {
        eprintln!("flowgate fabric: {e}");
        return ExitCode::FAILURE;
    }
    let r = fabric::run(fabric::FabricOpts {
        endpoints: endpoints(&a.etcd.etcd),
        fleet: a.etcd.fleet,
        netns: a.netns,
        status: a.status,
        resync: Duration::from_millis(a.etcd.resync_ms),
    });
    if let Err(e) = r {
        eprintln!("flowgate fabric: {e}");
    }
    ExitCode::FAILURE
}
